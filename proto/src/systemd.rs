//! Telling a service manager how a role is doing (systemd's `sd_notify` protocol, which
//! `Type=notify` units wait for): `READY=1` once the role serves, `RELOADING=1` while it reads
//! its configuration again (then `READY=1`), `STOPPING=1` when it begins to stop, and `STATUS=`
//! lines a person reads in `systemctl status`. The manager says where to write in
//! `NOTIFY_SOCKET` (a path, or an abstract socket written `@name`); without it, nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// What a role tells its service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State<'a> {
    /// It serves: a `Type=notify` unit counts as started.
    Ready,
    /// It is reading its configuration again; `Ready` follows.
    Reloading,
    /// It is stopping (draining).
    Stopping,
    /// A line for `systemctl status`.
    Status(&'a str),
}

impl State<'_> {
    /// The datagram's text.
    pub fn message(&self) -> String {
        match self {
            State::Ready => "READY=1".into(),
            State::Reloading => format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_micros()),
            State::Stopping => "STOPPING=1".into(),
            // A status is one line: a newline would start another assignment.
            State::Status(text) => format!("STATUS={}", text.replace('\n', " ")),
        }
    }
}

/// Tells the service manager, if there is one, how the role is doing. Errors are ignored: a
/// role runs the same whether or not anyone listens.
pub fn notify(state: State<'_>) {
    let Some(address) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let message = state.message();
    let address = PathBuf::from(address);
    let sent = match address.to_str().and_then(|text| text.strip_prefix('@')) {
        Some(name) => send_abstract(&socket, name, message.as_bytes()),
        None => socket.send_to(message.as_bytes(), &address).map(|_| ()),
    };
    // Nobody listening, or a manager gone: the role runs on the same.
    let _ = sent;
}

fn send_abstract(socket: &UnixDatagram, name: &str, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message, &address).map(|_| ())
}

/// `CLOCK_MONOTONIC` in microseconds, which `RELOADING=1` carries for systemd 253 and later.
fn monotonic_micros() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel writes the time into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64) * 1_000_000 + (now.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_reads_what_the_role_says() {
        let dir = std::env::temp_dir().join(format!("estuary-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let listener = UnixDatagram::bind(&dir).unwrap();
        // SAFETY: this test alone sets the variable, before anything reads it.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &dir) };
        let mut buffer = [0u8; 256];
        for (state, expected) in [
            (State::Ready, "READY=1"),
            (State::Stopping, "STOPPING=1"),
            (
                State::Status("serving\n2 channels"),
                "STATUS=serving 2 channels",
            ),
        ] {
            notify(state);
            let length = listener.recv(&mut buffer).unwrap();
            assert_eq!(std::str::from_utf8(&buffer[..length]).unwrap(), expected);
        }
        notify(State::Reloading);
        let length = listener.recv(&mut buffer).unwrap();
        let text = std::str::from_utf8(&buffer[..length]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        let _ = std::fs::remove_file(&dir);
    }
}
