//! Upgrades that drop no connection: a running edge offers its listening sockets (TCP, and the
//! UDP socket of HTTP/3) on a Unix socket (`takeover_socket`); a new edge started with
//! `--takeover PATH` asks for them there, receives them with SCM_RIGHTS, serves on them, and
//! says it is ready. Only then does the old edge stop accepting and drain: from that moment new
//! connections reach the new process through the same sockets, which never closed, and the old
//! one finishes what it serves (segments and playlists in flight, continuous streams until the
//! drain grace ends) and exits.
//!
//! The exchange, one line each way and the sockets:
//! new → old `ESTUARY-TAKEOVER 1\n`; old → new `LISTENERS tcp[ udp]\n` with the sockets;
//! new → old `READY\n`. The old edge answers only a peer of its own user (SO_PEERCRED), reads
//! at most [`MAX_LINE`] bytes of a line, and keeps serving if the new one goes away before
//! `READY`.

use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

const ASK: &str = "ESTUARY-TAKEOVER 1";
const READY: &str = "READY";
/// The longest line either side reads.
pub const MAX_LINE: usize = 64;
/// How long either side waits for the other's next line.
const PATIENCE: Duration = Duration::from_secs(10);

/// The sockets an edge listens on.
#[derive(Debug)]
pub struct Listeners {
    pub tcp: std::net::TcpListener,
    pub udp: Option<std::net::UdpSocket>,
}

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("cannot reach the running edge at {path}: {error}")]
    Unreachable { path: PathBuf, error: io::Error },
    #[error("the running edge at {path} did not hand over its sockets: {reason}")]
    Refused { path: PathBuf, reason: String },
}

/// The new edge's side, between receiving the sockets and saying it serves on them.
#[derive(Debug)]
pub struct Taken {
    stream: UnixStream,
}

impl Taken {
    /// Tells the old edge to stop accepting: the new one serves.
    pub fn ready(mut self) -> io::Result<()> {
        self.stream.write_all(format!("{READY}\n").as_bytes())
    }
}

/// Asks the edge offering its sockets at `path` for them.
pub fn take(path: &Path) -> Result<(Listeners, Taken), TakeoverError> {
    let unreachable = |error| TakeoverError::Unreachable {
        path: path.to_owned(),
        error,
    };
    let refused = |reason: String| TakeoverError::Refused {
        path: path.to_owned(),
        reason,
    };
    let mut stream = UnixStream::connect(path).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(unreachable)?;
    stream
        .write_all(format!("{ASK}\n").as_bytes())
        .map_err(unreachable)?;
    let (line, mut fds) = receive_with_fds(&stream).map_err(|error| refused(error.to_string()))?;
    let kinds: Vec<&str> = line
        .strip_prefix("LISTENERS ")
        .ok_or_else(|| refused(format!("it answered {line:?}")))?
        .split(' ')
        .collect();
    let expected = match kinds.as_slice() {
        ["tcp"] => 1,
        ["tcp", "udp"] => 2,
        _ => return Err(refused(format!("it answered {line:?}"))),
    };
    if fds.len() != expected {
        return Err(refused(format!(
            "it named {expected} sockets and sent {}",
            fds.len()
        )));
    }
    let udp = (expected == 2).then(|| std::net::UdpSocket::from(fds.pop().expect("counted")));
    let tcp = std::net::TcpListener::from(fds.pop().expect("counted"));
    Ok((Listeners { tcp, udp }, Taken { stream }))
}

/// Offers `listeners` at `path` (replacing whatever is there; the socket is for this user
/// only) until a new edge has taken them and says it serves; returns then. A peer that goes
/// away, or says anything else, is forgotten and the offer stands.
pub fn offer(path: &Path, listeners: &Listeners) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let socket = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = socket.accept()?;
        match hand_over(&stream, listeners) {
            Ok(()) => return Ok(()),
            Err(reason) => tracing::warn!(%reason, "takeover not completed; still serving"),
        }
    }
}

fn hand_over(stream: &UnixStream, listeners: &Listeners) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream).map_err(|e| e.to_string())?;
    let me = rustix::process::getuid();
    if peer.uid != me {
        return Err(format!("a process of user {} asked", peer.uid.as_raw()));
    }
    stream
        .set_read_timeout(Some(PATIENCE))
        .map_err(|e| e.to_string())?;
    let mut reader = stream;
    let asked = read_line(&mut reader).map_err(|e| e.to_string())?;
    if asked != ASK {
        return Err(format!("it asked {asked:?}"));
    }
    let tcp = listeners.tcp.as_fd();
    let (line, fds) = match &listeners.udp {
        Some(udp) => ("LISTENERS tcp udp\n", vec![tcp, udp.as_fd()]),
        None => ("LISTENERS tcp\n", vec![tcp]),
    };
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(line.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| e.to_string())?;
    let ready = read_line(&mut reader).map_err(|e| e.to_string())?;
    if ready != READY {
        return Err(format!("it said {ready:?}"));
    }
    Ok(())
}

/// One line and the sockets sent with it.
fn receive_with_fds(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut bytes = [0u8; MAX_LINE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut bytes)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let text = std::str::from_utf8(&bytes[..received.bytes])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"))?;
    let line = text
        .strip_suffix('\n')
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no whole line"))?;
    Ok((line.to_owned(), fds))
}

/// One line of at most [`MAX_LINE`] bytes, without its newline.
fn read_line(stream: &mut &UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_LINE {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if byte[0] == b'\n' {
            return String::from_utf8(line)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not text"));
        }
        line.push(byte[0]);
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Until the offering thread has bound `path`.
    fn wait_for(path: &Path) {
        while !path.exists() {
            // A test's own thread, not a runtime worker, waits here.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn listeners() -> Listeners {
        Listeners {
            tcp: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            udp: Some(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()),
        }
    }

    #[test]
    fn the_sockets_pass_to_the_new_edge_once_it_says_it_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takeover");
        let old = listeners();
        let (tcp, udp) = (
            old.tcp.local_addr().unwrap(),
            old.udp.as_ref().unwrap().local_addr().unwrap(),
        );
        let offering = {
            let path = path.clone();
            std::thread::spawn(move || offer(&path, &old).map(|()| old))
        };
        wait_for(&path);
        let (taken, handshake) = take(&path).unwrap();
        assert_eq!(taken.tcp.local_addr().unwrap(), tcp);
        assert_eq!(taken.udp.as_ref().unwrap().local_addr().unwrap(), udp);
        assert!(!offering.is_finished(), "the old edge let go before READY");
        handshake.ready().unwrap();
        let old = offering.join().unwrap().unwrap();
        // The old one's copy closes; the socket lives on in the new one's.
        drop(old);
        let client = std::net::TcpStream::connect(tcp).unwrap();
        let (accepted, _) = taken.tcp.accept().unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), client.local_addr().unwrap());
    }

    #[test]
    fn a_peer_that_asks_wrongly_gets_nothing_and_the_offer_stands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takeover");
        let old = listeners();
        let offering = {
            let path = path.clone();
            std::thread::spawn(move || offer(&path, &old))
        };
        wait_for(&path);
        for attempt in [&b"GIVE ME EVERYTHING\n"[..], &[b'x'; 4096][..], b""] {
            let mut stream = UnixStream::connect(&path).unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let _ = stream.write_all(attempt);
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            assert!(answer.is_empty(), "answered {answer:?}");
        }
        // A new edge that goes away before READY leaves the old one offering.
        drop(take(&path).unwrap());
        assert!(!offering.is_finished());
        let (_, handshake) = take(&path).unwrap();
        handshake.ready().unwrap();
        offering.join().unwrap().unwrap();
    }
}
