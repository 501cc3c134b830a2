//! What an io_uring completion of the engine is for, packed into the 64 bits of user data the
//! kernel hands back with it.

/// What a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Doorbell,
    Tick,
    /// A viewer's send (or, zero-copy, the kernel's word that it is done with the bytes).
    Send,
    /// A viewer's wait for room in its socket.
    Poll,
    /// A cancel of a viewer's operation: its own completion says nothing the cancelled
    /// operation's does not.
    Cancel,
}

/// A completion's user data: what it is for, the viewer's slot, and a serial number that
/// tells operations apart (a zero-copy notification can come after the viewer's next send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) slot: u32,
    pub(super) serial: u32,
}

const SERIAL_BITS: u32 = 29;

impl Token {
    pub(super) fn user_data(self) -> u64 {
        let kind = match self.kind {
            Kind::Doorbell => 0u64,
            Kind::Tick => 1,
            Kind::Send => 2,
            Kind::Poll => 3,
            Kind::Cancel => 4,
        };
        let serial = u64::from(self.serial & ((1 << SERIAL_BITS) - 1));
        kind << 61 | serial << 32 | u64::from(self.slot)
    }

    pub(super) fn from_user_data(data: u64) -> Option<Token> {
        let kind = match data >> 61 {
            0 => Kind::Doorbell,
            1 => Kind::Tick,
            2 => Kind::Send,
            3 => Kind::Poll,
            4 => Kind::Cancel,
            _ => return None,
        };
        Some(Token {
            kind,
            slot: data as u32,
            serial: (data >> 32) as u32 & ((1 << SERIAL_BITS) - 1),
        })
    }

    pub(super) fn fixed(kind: Kind) -> u64 {
        Token {
            kind,
            slot: 0,
            serial: 0,
        }
        .user_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_says_what_a_completion_is_for() {
        for kind in [
            Kind::Doorbell,
            Kind::Tick,
            Kind::Send,
            Kind::Poll,
            Kind::Cancel,
        ] {
            let token = Token {
                kind,
                slot: u32::MAX - 3,
                serial: (1 << SERIAL_BITS) - 1,
            };
            assert_eq!(Token::from_user_data(token.user_data()), Some(token));
        }
        let wrapped = Token {
            kind: Kind::Send,
            slot: 7,
            serial: u32::MAX,
        };
        assert_eq!(
            Token::from_user_data(wrapped.user_data()).map(|token| token.serial),
            Some((1 << SERIAL_BITS) - 1),
            "the serial wraps within its bits, leaving the kind alone"
        );
        assert_eq!(Token::from_user_data(7 << 61), None);
    }
}
