//! A viewer of a continuous stream (`/live/{channel}/stream.{ts,mp4,aac}`): one socket (TLS
//! for `https://`), one request, then the body read as it comes, forever. It keeps no more than a read buffer
//! and a few counters, so that one core drives thousands of them. It records when the first
//! byte came, the gaps between reads, the bytes, and, for fragmented MP4, the live latency of
//! every chunk: from the capture of its first sample (its `tfdt`, which is UTC) to the moment
//! its last byte arrived.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::ViewerError;
use super::fetch::{resolve, strip_query};
use super::tls::{self, Trust};

/// A wait between two reads longer than this is a gap: with the ingest's three parts a second,
/// a chunk comes every third of a second.
pub const GAP: Duration = Duration::from_secs(1);
/// How long the response head may take.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a read may wait before the viewer gives up on the stream.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// What one viewer saw.
#[derive(Debug, Default)]
pub struct Watched {
    /// From connecting to the first byte of the body.
    pub startup: Option<Duration>,
    pub bytes: u64,
    /// Requests made (redirects included).
    pub requests: u64,
    /// Waits between reads longer than [`GAP`], and their total.
    pub gaps: u64,
    pub gap_time: Duration,
    /// Live latency of each MP4 chunk, in seconds.
    pub latencies: Vec<f64>,
    pub failure: Option<String>,
}

/// A viewer's connection: a socket, or TLS over one.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Watches the stream at `url` (http://, or https:// with `trust`; redirects followed) until
/// `stop`.
pub async fn watch(
    url: &str,
    stop: Instant,
    utc_now: impl Fn() -> f64,
    trust: Option<&Trust>,
) -> Watched {
    let mut watched = Watched::default();
    let began = Instant::now();
    let outcome = tokio::time::timeout_at(stop, async {
        let (mut socket, head, rest) = open(url, &mut watched, trust).await?;
        let mp4 = head
            .to_ascii_lowercase()
            .contains("content-type: video/mp4");
        let mut clock = mp4.then(Mp4Clock::default);
        let mut buffer = vec![0u8; 16 * 1024];
        let mut last = None;
        let mut take = |bytes: &[u8], now: Instant, watched: &mut Watched| {
            if bytes.is_empty() {
                return;
            }
            watched.startup.get_or_insert(now - began);
            if let Some(last) = last {
                let waited = now - last;
                if waited > GAP {
                    watched.gaps += 1;
                    watched.gap_time += waited;
                }
            }
            last = Some(now);
            watched.bytes += bytes.len() as u64;
            if let Some(clock) = &mut clock {
                let utc = utc_now();
                for capture in clock.feed(bytes) {
                    watched.latencies.push(utc - capture);
                }
            }
        };
        take(&rest, Instant::now(), &mut watched);
        loop {
            let read = tokio::time::timeout(READ_TIMEOUT, socket.read(&mut buffer))
                .await
                .map_err(|_| ViewerError::NoData(READ_TIMEOUT))?
                .map_err(|error| ViewerError::request(url, error))?;
            if read == 0 {
                return Err::<(), ViewerError>(ViewerError::Ended);
            }
            take(&buffer[..read], Instant::now(), &mut watched);
        }
    })
    .await;
    if let Ok(Err(reason)) = outcome {
        watched.failure = Some(reason.to_string());
    }
    watched
}

/// Connects and sends the request, following redirects: the socket, the response head and
/// the body bytes read with it.
async fn open(
    url: &str,
    watched: &mut Watched,
    trust: Option<&Trust>,
) -> Result<(Box<dyn Connection>, String, Vec<u8>), ViewerError> {
    let mut url = url.to_owned();
    for _ in 0..5 {
        let unusable = |problem: &'static str| ViewerError::Url {
            url: url.clone(),
            problem,
        };
        let uri: hyper::Uri = url.parse().map_err(|_| unusable("not a URL"))?;
        let secure = match (uri.scheme_str(), trust) {
            (Some("http"), _) => None,
            (Some("https"), Some(trust)) => Some(trust),
            (Some("https"), None) => {
                return Err(unusable("https:// needs certificates to trust (--ca-file)"));
            }
            _ => return Err(unusable("only http:// and https:// streams are watched")),
        };
        let host = uri.host().ok_or_else(|| unusable("no host"))?;
        let port = uri
            .port_u16()
            .unwrap_or(if secure.is_some() { 443 } else { 80 });
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let plain = TcpStream::connect((host, port))
            .await
            .map_err(|error| ViewerError::request(&format!("{host}:{port}"), error))?;
        let _ = plain.set_nodelay(true);
        let mut socket: Box<dyn Connection> = match secure {
            Some(trust) => Box::new(
                tls::connect(
                    trust,
                    host.trim_start_matches('[').trim_end_matches(']'),
                    plain,
                )
                .await
                .map_err(|error| ViewerError::request(&url, error))?,
            ),
            None => Box::new(plain),
        };
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: estuary-loadtest-viewer\r\n\r\n"
        );
        watched.requests += 1;
        socket
            .write_all(request.as_bytes())
            .await
            .map_err(|error| ViewerError::request(&url, error))?;
        let (head, rest) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut socket))
            .await
            .map_err(|_| ViewerError::Silent {
                url: url.clone(),
                waited: HEAD_TIMEOUT,
            })?
            .map_err(|problem| ViewerError::Head {
                url: url.clone(),
                problem,
            })?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .unwrap_or(0);
        if (300..400).contains(&status)
            && let Some(location) = header(&head, "location")
        {
            url = resolve(&url, location);
            continue;
        }
        if status != 200 {
            let line = head.lines().next().unwrap_or("");
            return Err(ViewerError::Status {
                url: strip_query(&url).to_owned(),
                status: line.to_owned(),
            });
        }
        return Ok((socket, head, rest));
    }
    Err(ViewerError::Redirects {
        url: url.to_owned(),
    })
}

/// Reads up to the end of the response head: the head, and what came after it.
async fn read_head(socket: &mut (impl AsyncRead + Unpin)) -> Result<(String, Vec<u8>), BadHead> {
    let mut bytes = Vec::with_capacity(1024);
    let mut piece = [0u8; 4096];
    loop {
        let read = socket
            .read(&mut piece)
            .await
            .map_err(|error| BadHead::Read(error.to_string()))?;
        if read == 0 {
            return Err(BadHead::Closed);
        }
        bytes.extend_from_slice(&piece[..read]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = bytes.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&bytes).into_owned(), rest));
        }
        if bytes.len() > 64 * 1024 {
            return Err(BadHead::TooLarge);
        }
    }
}

/// Why a response head could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadHead {
    #[error("{0}")]
    Read(String),
    #[error("closed before the response head")]
    Closed,
    #[error("a response head over 64 KiB")]
    TooLarge,
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Follows a fragmented MP4 stream box by box as its bytes come (sans IO): the `moov` gives
/// each track's timescale, each `moof` its chunk's decode time, and when the `mdat` after it
/// has come whole, the chunk's capture time (UTC seconds) comes out. Only `moov` and `moof`
/// are held (they are small); an `mdat` is counted through.
#[derive(Default)]
pub struct Mp4Clock {
    /// The box being read: its header so far, or its body when it is held.
    held: Vec<u8>,
    /// Bytes of the current box still to come, once its header is known.
    remaining: Option<u64>,
    /// The current box is held whole (`moov`, `moof`) rather than counted through.
    holding: bool,
    is_mdat: bool,
    timescales: HashMap<u32, u32>,
    /// The decode time of the newest `moof`'s first track fragment, in seconds.
    pending: Option<f64>,
}

impl Mp4Clock {
    /// Takes the next bytes of the stream; gives the capture times of the chunks they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<f64> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            match self.remaining {
                None => {
                    // The box header: 8 bytes, or 16 with a 64-bit size.
                    let want = if self.held.len() >= 4 && self.held[..4] == [0, 0, 0, 1] {
                        16
                    } else {
                        8
                    };
                    let take = (want - self.held.len()).min(bytes.len());
                    self.held.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.held.len() < want {
                        continue;
                    }
                    if want == 8 && self.held[..4] == [0, 0, 0, 1] {
                        continue; // a 64-bit size follows
                    }
                    let size = if want == 16 {
                        u64::from_be_bytes(self.held[8..16].try_into().unwrap_or_default())
                    } else {
                        u64::from(u32::from_be_bytes(
                            self.held[..4].try_into().unwrap_or_default(),
                        ))
                    };
                    let kind = [self.held[4], self.held[5], self.held[6], self.held[7]];
                    self.holding = matches!(&kind, b"moov" | b"moof");
                    self.is_mdat = &kind == b"mdat";
                    self.remaining = Some(size.saturating_sub(want as u64));
                    self.held.clear();
                }
                Some(remaining) => {
                    let take = (remaining.min(bytes.len() as u64)) as usize;
                    if self.holding {
                        self.held.extend_from_slice(&bytes[..take]);
                    }
                    bytes = &bytes[take..];
                    self.remaining = Some(remaining - take as u64);
                }
            }
            if self.remaining == Some(0) {
                if self.holding {
                    let body = std::mem::take(&mut self.held);
                    if let Some(trak_list) = children(&body, b"trak") {
                        for trak in trak_list {
                            if let Some((id, timescale)) = track_timescale(trak) {
                                self.timescales.insert(id, timescale);
                            }
                        }
                    } else if let Some(time) = self.fragment_time(&body) {
                        self.pending = Some(time);
                    }
                } else if self.is_mdat
                    && let Some(time) = self.pending.take()
                {
                    done.push(time);
                }
                self.remaining = None;
                self.holding = false;
                self.is_mdat = false;
                self.held.clear();
            }
        }
        done
    }

    /// A `moof` body's first track fragment: its decode time in seconds.
    fn fragment_time(&self, moof: &[u8]) -> Option<f64> {
        let traf = children(moof, b"traf")?.into_iter().next()?;
        let tfhd = children(traf, b"tfhd")?.into_iter().next()?;
        let track_id = u32::from_be_bytes(tfhd.get(4..8)?.try_into().ok()?);
        let tfdt = children(traf, b"tfdt")?.into_iter().next()?;
        let time = match tfdt.first()? {
            1 => u64::from_be_bytes(tfdt.get(4..12)?.try_into().ok()?),
            _ => u64::from(u32::from_be_bytes(tfdt.get(4..8)?.try_into().ok()?)),
        };
        let timescale = *self.timescales.get(&track_id)?;
        Some(time as f64 / f64::from(timescale.max(1)))
    }
}

/// The bodies of the boxes of kind `kind` directly inside `body`; `None` when there is none.
fn children<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<Vec<&'a [u8]>> {
    let mut found = Vec::new();
    let mut at = 0;
    while at + 8 <= body.len() {
        let size = u32::from_be_bytes(body[at..at + 4].try_into().ok()?) as usize;
        if size < 8 || at + size > body.len() {
            break;
        }
        if &body[at + 4..at + 8] == kind {
            found.push(&body[at + 8..at + size]);
        }
        at += size;
    }
    (!found.is_empty()).then_some(found)
}

/// A `trak` body's track id (from `tkhd`) and timescale (from `mdia`'s `mdhd`).
fn track_timescale(trak: &[u8]) -> Option<(u32, u32)> {
    let tkhd = children(trak, b"tkhd")?.into_iter().next()?;
    // Full box: version, flags; then the times (4 or 8 bytes each) and the track id.
    let id_at = if tkhd.first()? == &1 { 20 } else { 12 };
    let id = u32::from_be_bytes(tkhd.get(id_at..id_at + 4)?.try_into().ok()?);
    let mdia = children(trak, b"mdia")?.into_iter().next()?;
    let mdhd = children(mdia, b"mdhd")?.into_iter().next()?;
    let scale_at = if mdhd.first()? == &1 { 20 } else { 12 };
    let timescale = u32::from_be_bytes(mdhd.get(scale_at..scale_at + 4)?.try_into().ok()?);
    Some((id, timescale))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(version: u8, rest: &[u8]) -> Vec<u8> {
        let mut out = vec![version, 0, 0, 0];
        out.extend_from_slice(rest);
        out
    }

    /// A `moov` with track 1 at 90 kHz (version 0 boxes) and track 2 at 48 kHz (version 1).
    fn moov() -> Vec<u8> {
        let trak = |id: u32, timescale: u32, version: u8| {
            let times = if version == 1 { 16 } else { 8 };
            let mut tkhd = vec![0u8; times];
            tkhd.extend_from_slice(&id.to_be_bytes());
            let mut mdhd = vec![0u8; times];
            mdhd.extend_from_slice(&timescale.to_be_bytes());
            let mdia = atom(b"mdia", &atom(b"mdhd", &full(version, &mdhd)));
            atom(
                b"trak",
                &[atom(b"tkhd", &full(version, &tkhd)), mdia].concat(),
            )
        };
        atom(b"moov", &[trak(1, 90_000, 0), trak(2, 48_000, 1)].concat())
    }

    fn fragment(track: u32, time: u64, payload: usize) -> Vec<u8> {
        let tfhd = atom(b"tfhd", &full(0, &track.to_be_bytes()));
        let tfdt = atom(b"tfdt", &full(1, &time.to_be_bytes()));
        let moof = atom(b"moof", &atom(b"traf", &[tfhd, tfdt].concat()));
        [moof, atom(b"mdat", &vec![7u8; payload])].concat()
    }

    #[test]
    fn chunk_capture_times_come_out_when_their_mdat_is_whole() {
        let utc = 1_796_000_000u64;
        let stream = [
            atom(b"ftyp", b"iso6"),
            moov(),
            fragment(1, utc * 90_000, 5000),
            fragment(2, utc * 48_000 + 16_000, 300),
        ]
        .concat();
        for step in [1, 7, 100, stream.len()] {
            let mut clock = Mp4Clock::default();
            let mut times = Vec::new();
            let mut fed = 0;
            for piece in stream.chunks(step) {
                fed += piece.len();
                let done = clock.feed(piece);
                if fed < stream.len() - 300 - 8 {
                    // Nothing of the second fragment's mdat can be done yet.
                    assert!(times.len() + done.len() <= 1);
                }
                times.extend(done);
            }
            assert_eq!(
                times,
                [utc as f64, utc as f64 + 1.0 / 3.0],
                "in pieces of {step}"
            );
        }
    }

    #[test]
    fn headers_are_found_whatever_their_case() {
        let head = "HTTP/1.1 302 Found\r\nLocation: http://a/b\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(header(head, "location"), Some("http://a/b"));
        assert_eq!(header(head, "content-type"), None);
    }
}
