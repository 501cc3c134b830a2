//! Addresses: CIDR ranges, and who the client is. The client is the peer of the socket, unless
//! that peer is a trusted proxy: then it is what the proxy says, in the PROXY protocol header
//! or, failing that, the nearest untrusted address of `X-Forwarded-For`.

use std::net::IpAddr;
use std::str::FromStr;

/// An address range, `192.0.2.0/24` or `2001:db8::/32` (a bare address is a range of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?,
            None => bits,
        };
        Ok(Cidr { network, prefix })
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// The range's first address (the address as written, with the host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(network) => IpAddr::V4(
                (u32::from(network)
                    & u32::MAX
                        .checked_shl(32 - u32::from(self.prefix))
                        .unwrap_or(0))
                .into(),
            ),
            IpAddr::V6(network) => IpAddr::V6(
                (u128::from(network)
                    & u128::MAX
                        .checked_shl(128 - u32::from(self.prefix))
                        .unwrap_or(0))
                .into(),
            ),
        }
    }

    /// How many leading bits of an address the range fixes.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        // An IPv4 client seen on an IPv6 socket (::ffff:a.b.c.d) is that IPv4 client.
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

pub fn any_contains(ranges: &[Cidr], address: IpAddr) -> bool {
    ranges.iter().any(|range| range.contains(address))
}

/// The client behind `peer`: the nearest address of `X-Forwarded-For` (read from the right)
/// that is not itself a trusted proxy, when `peer` is trusted; else `peer`.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    if !any_contains(trusted, peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break; // a hop that is not an address ends what can be believed
        };
        client = address;
        if !any_contains(trusted, address) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        assert!(cidr("192.0.2.0/24").contains("192.0.2.77".parse().unwrap()));
        assert!(!cidr("192.0.2.0/24").contains("192.0.3.1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(cidr("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(cidr("2001:db8::/32").contains("2001:db8:1::1".parse().unwrap()));
        assert!(!cidr("2001:db8::/32").contains("192.0.2.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.com".parse::<Cidr>().is_err());
    }

    #[test]
    fn the_client_is_believed_only_from_trusted_proxies() {
        let trusted = [cidr("127.0.0.1/32"), cidr("10.0.0.0/8")];
        let peer = "127.0.0.1".parse().unwrap();
        let said = |header| client_address(peer, Some(header), &trusted).to_string();
        assert_eq!(said("81.2.69.142"), "81.2.69.142");
        // A client cannot plant an address in front of its own: the nearest untrusted wins.
        assert_eq!(said("1.1.1.1, 81.2.69.142, 10.1.2.3"), "81.2.69.142");
        assert_eq!(said("garbage, 81.2.69.142"), "81.2.69.142");
        let stranger = "203.0.113.9".parse().unwrap();
        assert_eq!(
            client_address(stranger, Some("81.2.69.142"), &trusted).to_string(),
            "203.0.113.9"
        );
    }
}
