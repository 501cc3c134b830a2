//! `--to URL`: DASH-IF live media ingest, interface 1. Each track is one long HTTP POST with
//! chunked transfer to `{URL}/{channel}/{track}`: the CMAF header, then every chunk as it is
//! produced. When the receiver goes away the POST is started again, with backoff, header first;
//! chunks produced meanwhile are dropped (they are live, and late is worthless).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use estuary_proto::keycard::{self, KeycardKey, KeycardRequest};
use estuary_proto::url::{ChannelName, TrackName, ingest_acl};
use http_body::Frame;
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{TrackEvent, TrackOutput};
use crate::IngestError;
use crate::health::OutputStats;

const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Backoff stops growing here, so a receiver that comes back is found within about a second.
const LONGEST_RETRY: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Chunks waiting for a slow connection; beyond this they are dropped.
const QUEUED_CHUNKS: usize = 64;
/// How long a keycard minted for one connection stays valid.
const KEYCARD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Where and how to send one channel's tracks.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    authority: String,
    base_path: String,
    keycard_key: Option<KeycardKey>,
}

impl HttpTarget {
    /// `url` is the receiver's ingest base, e.g. `http://packager:8080/ingest`.
    pub fn parse(url: &str, keycard_key: Option<KeycardKey>) -> Result<Self, IngestError> {
        let bad = |reason: &str| IngestError::Config(format!("--to {url:?}: {reason}"));
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "scheme {other} is not supported; the ingest speaks plain http:// \
                     (put it on a trusted network or behind a TLS tunnel)"
                )));
            }
            None => return Err(bad("give the scheme, e.g. http://127.0.0.1:8080/ingest")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let authority = if authority.port().is_some() {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            keycard_key,
        })
    }

    fn url(&self, channel: &ChannelName, track: &TrackName) -> String {
        format!(
            "http://{}{}/{channel}/{track}",
            self.authority, self.base_path
        )
    }
}

pub struct HttpOutput {
    chunks: Mutex<Option<mpsc::Sender<Bytes>>>,
    header: watch::Sender<Option<Bytes>>,
    stats: Arc<OutputStats>,
}

impl HttpOutput {
    /// Starts the sender task on the current tokio runtime.
    pub fn start(
        target: &HttpTarget,
        channel: &ChannelName,
        track: &TrackName,
    ) -> (Self, Arc<OutputStats>, JoinHandle<()>) {
        let url = target.url(channel, track);
        let stats = OutputStats::new("http", url.clone(), false);
        let (chunk_sender, chunk_receiver) = mpsc::channel(QUEUED_CHUNKS);
        let (header_sender, header_receiver) = watch::channel(None);
        let sender = Sender {
            target: target.clone(),
            path: format!("{}/{channel}/{track}", target.base_path),
            acl: ingest_acl(channel),
            // Video tracks are named v{height}; every other track is sound.
            content_type: if track.as_str().starts_with('v') {
                "video/mp4"
            } else {
                "audio/mp4"
            },
            url,
            header: header_receiver,
            chunks: chunk_receiver,
            stats: stats.clone(),
            ever_connected: false,
            in_outage: false,
        };
        let task = tokio::spawn(sender.run());
        let output = Self {
            chunks: Mutex::new(Some(chunk_sender)),
            header: header_sender,
            stats: stats.clone(),
        };
        (output, stats, task)
    }
}

impl TrackOutput for HttpOutput {
    fn push(&self, event: &TrackEvent) {
        match event {
            TrackEvent::Header(header) => {
                // A restarted pipeline sends its header again; only a different one matters.
                self.header.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(header);
                    if changed {
                        *current = Some(header.clone());
                    }
                    changed
                });
            }
            TrackEvent::Chunk { data, .. } => {
                let chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(chunks) = chunks.as_ref()
                    && chunks.try_send(data.clone()).is_err()
                {
                    self.stats.chunks_dropped.fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn finish(&self) {
        // Closing the channel ends the POST once what is queued has been sent.
        self.chunks.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

struct Sender {
    target: HttpTarget,
    url: String,
    path: String,
    acl: String,
    content_type: &'static str,
    header: watch::Receiver<Option<Bytes>>,
    chunks: mpsc::Receiver<Bytes>,
    stats: Arc<OutputStats>,
    ever_connected: bool,
    in_outage: bool,
}

/// How one POST ended.
enum Ended {
    /// The pipeline finished and the POST was closed.
    Finished,
    /// The receiver went away or refused; try again.
    Lost(String),
    /// A new CMAF header: start a new POST with it at once.
    HeaderChanged,
}

impl Sender {
    async fn run(mut self) {
        let mut retry = FIRST_RETRY;
        loop {
            // Nothing can be sent before the muxer has written the header.
            if !self.wait_for_header().await {
                return;
            }
            let started = Instant::now();
            let ended = self.post().await;
            match ended {
                Ended::Finished => {
                    self.stats.connected.store(false, Relaxed);
                    return;
                }
                Ended::HeaderChanged => continue,
                Ended::Lost(reason) => {
                    // Once per outage; the retries that follow are routine.
                    if !std::mem::replace(&mut self.in_outage, true) {
                        tracing::warn!(url = %self.url, %reason, "receiver unavailable, retrying");
                    } else {
                        tracing::debug!(url = %self.url, %reason, "retrying");
                    }
                    self.stats.set_error(Some(reason));
                }
            }
            if started.elapsed() > LONGEST_RETRY * 5 {
                retry = FIRST_RETRY;
            }
            if !self.drop_chunks_for(retry).await {
                return;
            }
            retry = (retry * 2).min(LONGEST_RETRY);
        }
    }

    /// Waits until the muxer has written a header; false when the pipeline finished first.
    async fn wait_for_header(&mut self) -> bool {
        loop {
            if self.header.borrow().is_some() {
                return true;
            }
            // The header is published before the first chunk is queued, so when both are ready
            // the header must win: an unbiased choice would take (and drop) the first chunk,
            // the one that starts on a keyframe, half the time.
            tokio::select! {
                biased;
                changed = self.header.changed() => if changed.is_err() { return false },
                chunk = self.chunks.recv() => if chunk.is_none() { return false },
            }
        }
    }

    /// Waits `period`, dropping chunks as they come; false when the pipeline has finished.
    async fn drop_chunks_for(&mut self, period: Duration) -> bool {
        let deadline = tokio::time::sleep(period);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => return true,
                chunk = self.chunks.recv() => match chunk {
                    Some(_) => { self.stats.chunks_dropped.fetch_add(1, Relaxed); }
                    None => return false,
                },
            }
        }
    }

    async fn post(&mut self) -> Ended {
        let connect = TcpStream::connect(&self.target.authority);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Ended::Lost(format!("cannot connect: {error}")),
            Err(_) => return Ended::Lost("cannot connect: timed out".into()),
        };
        let _ = stream.set_nodelay(true);
        let (mut requester, connection) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(error) => return Ended::Lost(format!("handshake failed: {error}")),
            };
        let connection = tokio::spawn(connection);
        self.in_outage = false;
        if std::mem::replace(&mut self.ever_connected, true) {
            self.stats.reconnects.fetch_add(1, Relaxed);
            tracing::info!(url = %self.url, "receiver back, sending the track again");
        }

        let (body_sender, body_receiver) = mpsc::channel(4);
        let mut request = Request::post(&self.path)
            .header(HOST, &self.target.authority)
            .header(CONTENT_TYPE, self.content_type);
        if let Some(key) = &self.target.keycard_key {
            request = request.header(AUTHORIZATION, self.keycard(key));
        }
        let request = match request.body(ChannelBody(body_receiver)) {
            Ok(request) => request,
            Err(error) => return Ended::Lost(format!("bad request: {error}")),
        };
        let response = requester.send_request(request);
        tokio::pin!(response);

        // Taking the header marks it seen: only a later change ends this POST.
        let header = self.header.borrow_and_update().clone().unwrap_or_default();
        let _ = body_sender.send(header.clone()).await;
        self.stats.sent(header.len());
        self.stats.set_error(None);

        let ended = loop {
            tokio::select! {
                Ok(()) = self.header.changed() => {
                    // The encoder's parameters changed: a receiver needs the new header first.
                    drop(body_sender);
                    let _ = tokio::time::timeout(CONNECT_TIMEOUT, &mut response).await;
                    break Ended::HeaderChanged;
                }
                answer = &mut response => break Ended::Lost(match answer {
                    Ok(answer) => format!("receiver answered {} before the end", answer.status()),
                    Err(error) => format!("connection failed: {error}"),
                }),
                chunk = self.chunks.recv() => match chunk {
                    Some(chunk) => {
                        let length = chunk.len();
                        if body_sender.send(chunk).await.is_err() {
                            break Ended::Lost("connection closed".into());
                        }
                        self.stats.sent(length);
                    }
                    None => {
                        drop(body_sender);
                        break match tokio::time::timeout(CONNECT_TIMEOUT, &mut response).await {
                            Ok(Ok(answer)) if answer.status().is_success() => Ended::Finished,
                            Ok(Ok(answer)) => {
                                self.stats.set_error(Some(format!("receiver answered {}", answer.status())));
                                Ended::Finished
                            }
                            _ => Ended::Finished,
                        };
                    }
                },
            }
        };
        connection.abort();
        ended
    }

    fn keycard(&self, key: &KeycardKey) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let request = KeycardRequest {
            start: Some(now.saturating_sub(60)),
            expires: now + KEYCARD_LIFETIME.as_secs(),
            acl: self.acl.clone(),
            ..KeycardRequest::default()
        };
        format!(
            "{} {}",
            keycard::AUTHORIZATION_SCHEME,
            keycard::sign(&request, key)
        )
    }
}

/// A request body fed chunk by chunk; with no length known, hyper sends it chunked.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(context)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    /// A receiver that takes one POST and returns everything that came on the connection.
    async fn receive_one_post(listener: tokio::net::TcpListener) -> Vec<u8> {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        // The POST ends with the chunked body's last chunk.
        while !received.ends_with(b"0\r\n\r\n") {
            let mut piece = [0u8; 4096];
            match stream.read(&mut piece).await.unwrap() {
                0 => break,
                count => received.extend_from_slice(&piece[..count]),
            }
        }
        received
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_chunk_follows_the_header() {
        // The muxer pushes its header and first chunk back to back, before the sender has
        // looked: the chunk that starts on a keyframe must not be lost. Many tries, since
        // losing it was a matter of which of two ready events the sender picked.
        for _ in 0..40 {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/ingest", listener.local_addr().unwrap());
            let target = HttpTarget::parse(&url, None).unwrap();
            let channel = ChannelName::new("demo").unwrap();
            let (output, _, task) = HttpOutput::start(&target, &channel, &TrackName::video(360));
            let receiving = tokio::spawn(receive_one_post(listener));
            // The sender is waiting for the header when both come.
            tokio::time::sleep(Duration::from_millis(5)).await;
            output.push(&TrackEvent::Header(Bytes::from_static(b"HEADER")));
            for chunk in [&b"FIRST"[..], b"SECOND"] {
                output.push(&TrackEvent::Chunk {
                    data: Bytes::from_static(chunk),
                    fragment_start: false,
                });
            }
            output.finish();
            let received = String::from_utf8_lossy(&receiving.await.unwrap()).into_owned();
            task.await.unwrap();
            let order: Vec<usize> = ["HEADER", "FIRST", "SECOND"]
                .iter()
                .map(|part| received.find(part).unwrap_or(usize::MAX))
                .collect();
            assert!(
                order.windows(2).all(|w| w[0] < w[1]) && order[2] != usize::MAX,
                "{received}"
            );
        }
    }

    #[test]
    fn targets_name_their_problem() {
        let target = HttpTarget::parse("http://127.0.0.1:8080/ingest/", None).unwrap();
        let channel = ChannelName::new("demo").unwrap();
        assert_eq!(
            target.url(&channel, &TrackName::video(720)),
            "http://127.0.0.1:8080/ingest/demo/v720"
        );
        assert_eq!(
            HttpTarget::parse("http://host/x", None).unwrap().authority,
            "host:80"
        );
        for (url, needle) in [
            ("https://a/b", "https"),
            ("localhost:1", "scheme"),
            ("::", "URL"),
        ] {
            let message = HttpTarget::parse(url, None).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
        }
    }
}
