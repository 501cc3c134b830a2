//! Upgrades that drop no connection: a running edge offers its listening sockets (TCP, and the
//! UDP socket of HTTP/3) on a Unix socket (`takeover_socket`); a new edge started with
//! `--takeover PATH` asks for them there, receives them with SCM_RIGHTS, serves on them, and
//! says it is ready. Only then does the old edge stop accepting and drain: from that moment new
//! connections reach the new process through the same sockets, which never closed, and the old
//! one finishes what it serves (segments and playlists in flight, continuous streams until the
//! drain grace ends) and exits.
//!
//! Then the continuous-stream viewers follow, so that none of them is cut: the old edge names
//! the streams they watch, the new one opens each (its ring filling from the upstream) and asks
//! for the viewers, and the old one sends them in batches, each viewer's socket with its place
//! in the stream ([`crate::fanout::Baton`]), until none is left.
//!
//! The exchange: new → old `ESTUARY-TAKEOVER 1\n`; old → new `LISTENERS tcp[ udp]\n` with the
//! sockets; new → old `READY\n`. From there every message is a head of exactly [`HEAD`] bytes
//! (a line padded with spaces), any sockets riding on it, then the payload it announces:
//! old → new `STREAMS len` (a JSON list of stream keys); new → old `VIEWERS 0`; old → new
//! `BATCH n len` (n sockets, n records) as often as needed, then `END 0`. The old edge answers
//! only a peer of its own user (SO_PEERCRED), reads at most [`MAX_LINE`] bytes of a line, and
//! keeps serving if the new one goes away before `READY`; either side reads at most the bounds
//! below of a payload.

use std::io::{self, IoSlice, IoSliceMut, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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
/// The size of every message's head after `READY`.
pub const HEAD: usize = 64;
/// The most sockets one batch carries.
pub const BATCH_SOCKETS: usize = 64;
/// The longest payload of a batch: 64 records of at most a head and a pending chunk each.
const MAX_BATCH: usize =
    BATCH_SOCKETS * (4 + crate::fanout::baton::MAX_HEAD + crate::fanout::baton::MAX_PENDING);
/// The longest list of streams.
const MAX_STREAMS: usize = 1 << 20;

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
    /// Tells the old edge to stop accepting: the new one serves. What follows is the viewers.
    pub fn ready(mut self) -> io::Result<Incoming> {
        self.stream.write_all(format!("{READY}\n").as_bytes())?;
        Ok(Incoming {
            stream: self.stream,
        })
    }
}

/// The new edge's side of the viewers' handover.
#[derive(Debug)]
pub struct Incoming {
    stream: UnixStream,
}

impl Incoming {
    /// The streams the old edge's viewers watch.
    pub fn streams(&mut self) -> io::Result<Vec<String>> {
        let (words, fds) = receive_head(&self.stream)?;
        let length = match words.as_slice() {
            [kind, length] if kind == "STREAMS" => parse_length(length, MAX_STREAMS)?,
            _ => return Err(invalid(format!("expected STREAMS, got {words:?}"))),
        };
        if !fds.is_empty() {
            return Err(invalid("sockets with the list of streams".into()));
        }
        let payload = read_payload(&mut self.stream, length)?;
        serde_json::from_slice(&payload).map_err(|error| invalid(error.to_string()))
    }

    /// Asks for the viewers, once their streams are open here.
    pub fn ask_for_viewers(&mut self) -> io::Result<()> {
        send_head(&self.stream, "VIEWERS 0", &[])
    }

    /// The next batch of viewers: their records and their sockets, as many of each; `None`
    /// once the old edge has sent them all.
    pub fn next_batch(&mut self) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let (words, fds) = receive_head(&self.stream)?;
        match words.as_slice() {
            [kind, zero] if kind == "END" && zero == "0" => Ok(None),
            [kind, count, length] if kind == "BATCH" => {
                let count = parse_length(count, BATCH_SOCKETS)?;
                let length = parse_length(length, MAX_BATCH)?;
                if fds.len() != count {
                    return Err(invalid(format!(
                        "a batch named {count} sockets and sent {}",
                        fds.len()
                    )));
                }
                Ok(Some((read_payload(&mut self.stream, length)?, fds)))
            }
            _ => Err(invalid(format!("expected BATCH or END, got {words:?}"))),
        }
    }
}

/// The old edge's side of the viewers' handover, once the new edge serves.
#[derive(Debug)]
pub struct Handover {
    stream: UnixStream,
}

impl Handover {
    /// Names the streams whose viewers follow, then waits until the new edge asks for them
    /// (it opens the streams first).
    pub fn offer_streams(&mut self, keys: &[String]) -> io::Result<()> {
        let payload = serde_json::to_vec(keys).map_err(|error| invalid(error.to_string()))?;
        if payload.len() > MAX_STREAMS {
            return Err(invalid(format!(
                "{} streams are too many to name",
                keys.len()
            )));
        }
        send_head(&self.stream, &format!("STREAMS {}", payload.len()), &[])?;
        self.stream.write_all(&payload)?;
        let (words, _) = receive_head(&self.stream)?;
        if words != ["VIEWERS", "0"] {
            return Err(invalid(format!("expected VIEWERS, got {words:?}")));
        }
        Ok(())
    }

    /// Sends viewers: their records (one after another) and their sockets, in that order.
    pub fn send_batch(&mut self, records: &[u8], sockets: &[BorrowedFd<'_>]) -> io::Result<()> {
        send_head(
            &self.stream,
            &format!("BATCH {} {}", sockets.len(), records.len()),
            sockets,
        )?;
        self.stream.write_all(records)
    }

    /// Says every viewer has been sent.
    pub fn finish(self) -> io::Result<()> {
        send_head(&self.stream, "END 0", &[])
    }
}

fn invalid(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason)
}

fn parse_length(text: &str, limit: usize) -> io::Result<usize> {
    match text.parse::<usize>() {
        Ok(length) if length <= limit => Ok(length),
        _ => Err(invalid(format!("{text:?} is no length up to {limit}"))),
    }
}

/// A message's head (`text` padded to [`HEAD`] bytes) with `fds` riding on it.
fn send_head(stream: &UnixStream, text: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    debug_assert!(text.len() < HEAD && fds.len() <= BATCH_SOCKETS);
    let mut head = [b' '; HEAD];
    head[..text.len()].copy_from_slice(text.as_bytes());
    head[HEAD - 1] = b'\n';
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(&head)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The sockets went with the first byte; the rest of the head follows plainly.
    (&*stream).write_all(&head[sent..])
}

/// A message's head, split into words, and the sockets that rode on it. Reads exactly
/// [`HEAD`] bytes, so that a payload is never read with a head's ancillary data.
fn receive_head(stream: &UnixStream) -> io::Result<(Vec<String>, Vec<OwnedFd>)> {
    let mut head = [0u8; HEAD];
    let (received, fds) = receive(stream, &mut head)?;
    if received == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    (&*stream).read_exact(&mut head[received..])?;
    let text = std::str::from_utf8(&head)
        .ok()
        .and_then(|text| text.strip_suffix('\n'))
        .ok_or_else(|| invalid("a head that is no line".into()))?;
    Ok((text.split_whitespace().map(str::to_owned).collect(), fds))
}

/// Exactly `length` bytes of payload.
fn read_payload(stream: &mut UnixStream, length: usize) -> io::Result<Vec<u8>> {
    let mut payload = Vec::new();
    // Read as it comes rather than allocated up front: a length is only a claim.
    (&*stream).take(length as u64).read_to_end(&mut payload)?;
    if payload.len() != length {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(payload)
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
/// only) until a new edge has taken them and says it serves; returns then, with the
/// connection on which the viewers follow. A peer that goes away, or says anything else, is
/// forgotten and the offer stands.
pub fn offer(path: &Path, listeners: &Listeners) -> io::Result<Handover> {
    let _ = std::fs::remove_file(path);
    let socket = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = socket.accept()?;
        match hand_over(&stream, listeners) {
            Ok(()) => return Ok(Handover { stream }),
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

/// One read of at most `into.len()` bytes, and the sockets (at most [`BATCH_SOCKETS`]) that
/// came with them: the bytes read and the sockets.
fn receive(stream: &UnixStream, into: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(BATCH_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(into)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok((received.bytes, fds))
}

/// One line and the sockets sent with it.
fn receive_with_fds(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let mut bytes = [0u8; MAX_LINE];
    let (received, fds) = receive(stream, &mut bytes)?;
    let text = std::str::from_utf8(&bytes[..received])
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
            std::thread::spawn(move || offer(&path, &old).map(|_| old))
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
    fn viewers_follow_in_batches_with_their_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("takeover");
        let old = listeners();
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = server.local_addr().unwrap();
        let offering = {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut handover = offer(&path, &old).unwrap();
                handover
                    .offer_streams(&["/live/a/stream.mp3".to_owned()])
                    .unwrap();
                // Two viewers' sockets, their records one after the other.
                let viewers: Vec<_> = (0..2).map(|_| server.accept().unwrap().0).collect();
                let sockets: Vec<_> = viewers.iter().map(|viewer| viewer.as_fd()).collect();
                handover.send_batch(b"first|second", &sockets).unwrap();
                handover.finish().unwrap();
            })
        };
        wait_for(&path);
        let clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(address).unwrap())
            .collect();
        let (_, handshake) = take(&path).unwrap();
        let mut incoming = handshake.ready().unwrap();
        assert_eq!(incoming.streams().unwrap(), ["/live/a/stream.mp3"]);
        incoming.ask_for_viewers().unwrap();
        let (records, sockets) = incoming.next_batch().unwrap().unwrap();
        assert_eq!(records, b"first|second");
        assert_eq!(sockets.len(), 2);
        assert!(incoming.next_batch().unwrap().is_none());
        offering.join().unwrap();
        // The sockets are the viewers' connections, open in this process.
        for (socket, mut client) in sockets.into_iter().zip(clients) {
            let mut socket = std::net::TcpStream::from(socket);
            socket.write_all(b"on").unwrap();
            let mut heard = [0u8; 2];
            client.read_exact(&mut heard).unwrap();
            assert_eq!(&heard, b"on");
        }
    }

    #[test]
    fn a_batch_that_lies_about_its_sockets_or_length_is_refused() {
        for head in [
            "BATCH 3 5",
            "BATCH 1 99999999999999",
            "BATCH 65 0",
            "STREAMS 1",
            "END",
        ] {
            let (old, new) = UnixStream::pair().unwrap();
            send_head(&old, head, &[]).unwrap();
            (&old).write_all(b"hello").unwrap();
            let mut incoming = Incoming { stream: new };
            assert!(incoming.next_batch().is_err(), "{head}");
        }
        // A head cut short, and a head that is no line.
        let (old, new) = UnixStream::pair().unwrap();
        (&old).write_all(b"BATCH 0 0").unwrap();
        drop(old);
        assert!(Incoming { stream: new }.next_batch().is_err());
        let (old, new) = UnixStream::pair().unwrap();
        (&old).write_all(&[b'x'; HEAD]).unwrap();
        assert!(Incoming { stream: new }.next_batch().is_err());
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
