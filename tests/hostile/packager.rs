//! Hostile input to the packager: the demo's, on loopback (where ingest is open, so anyone on
//! the host can send to it), and a few of its own where a case needs another configuration.
//! Every case checks the answer (a 4xx or 503 with the reason) and then that the demo's own
//! channel still plays: ffmpeg decodes two seconds of it from the packager without an error.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mp4_atom::{
    Encode, FourCC, Ftyp, Mdat, Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry, TrunSamples,
};

use crate::support::{Running, Track, estuary, free_port, require_tool};

#[path = "packager_admin.rs"]
mod admin;
use crate::{Cases, Demo};

use estuary_packager::Settings;
use estuary_packager_core::window::WindowConfig;

pub fn run(demo: &Demo, cases: &mut Cases) {
    require_tool("ffmpeg", "ffmpeg");
    let origin = demo
        .origin
        .strip_prefix("http://")
        .expect("the demo prints its origin as http://HOST:PORT")
        .to_owned();
    let packager = Packager { origin, demo };
    // The demo's packager runs with the defaults: these are the bounds the cases run into.
    let defaults = Settings::new(([127, 0, 0, 1], 0).into());
    let window = WindowConfig::default();

    cases.case("packager_crafted_trun_is_refused_at_once", || {
        packager.crafted_trun()
    });
    cases.case("packager_samples_beyond_the_mdat", || {
        packager.samples_beyond_the_mdat()
    });
    cases.case("packager_endless_boxes_before_a_chunk", || {
        packager.endless_side_boxes()
    });
    cases.case("packager_oversized_header", || packager.oversized_header());
    cases.case("packager_future_tfdt_on_a_new_channel", || {
        packager.future_tfdt("neighbour", "v360")
    });
    cases.case("packager_future_tfdt_on_the_demo_track", || {
        packager.future_tfdt("demo", "v360")
    });
    cases.case("packager_admin_needs_a_credential", || {
        packager.admin_without_credentials()
    });
    cases.case("packager_admin_refuses_wrong_credentials", || {
        admin::admin_with_wrong_credentials(&packager)
    });
    cases.case("packager_serves_only_canonical_paths", || {
        packager.non_canonical_paths()
    });
    cases.case("packager_slowloris_is_cut_off", || {
        packager.slowloris(defaults.limits.head_timeout)
    });
    cases.case("packager_half_open_ingest_is_cut_off", || {
        packager.half_open_ingest(defaults.ingest_timeout)
    });
    // These two leave headers-only tracks behind (retired after --retire-after): they come last.
    cases.case("packager_too_many_tracks_in_a_channel", || {
        packager.too_many_tracks(window.max_tracks)
    });
    cases.case("packager_too_many_channels", || {
        packager.too_many_channels(window.max_channels)
    });
    cases.case("packager_refuses_open_ingest_off_loopback", || {
        admin::open_ingest_off_loopback(&packager)
    });
}

/// The demo's packager, as a target.
struct Packager<'a> {
    /// `127.0.0.1:PORT`.
    origin: String,
    demo: &'a Demo,
}

/// An HTTP answer: status, head and body.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn expect(&self, status: u16, reason: &str) -> Result<(), String> {
        if self.status == status && self.text.contains(reason) {
            Ok(())
        } else {
            Err(format!(
                "expected {status} with {reason:?}, got:\n{}",
                self.text
            ))
        }
    }
}

impl Packager<'_> {
    fn connect(&self) -> Result<TcpStream, String> {
        let stream = TcpStream::connect(&self.origin).map_err(|e| format!("connecting: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .map_err(|e| e.to_string())?;
        Ok(stream)
    }

    /// Sends `request` and reads the answer until the packager closes the connection.
    fn exchange(&self, request: &[u8]) -> Result<Answer, String> {
        let mut stream = self.connect()?;
        stream
            .write_all(request)
            .map_err(|e| format!("sending: {e}"))?;
        read_answer(&mut stream)
    }

    fn get(&self, target: &str, headers: &str) -> Result<Answer, String> {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: packager\r\nConnection: close\r\n{headers}\r\n"
        );
        self.exchange(request.as_bytes())
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Answer, String> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: packager\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.exchange(&request)
    }

    /// The demo's own `v360` header, as served (and as its ingest sent it), and its timescale.
    fn demo_header(&self) -> Result<(Vec<u8>, u32), String> {
        let mut stream = self.connect()?;
        stream
            .write_all(
                b"GET /live/demo/v360/init.mp4 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
            )
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no head in the init.mp4 answer")?;
        let body = raw[split + 4..].to_vec();
        let timescale = Track::parse(&body).timescale;
        Ok((body, timescale))
    }

    /// The demo's channel still plays: ffmpeg decodes two seconds of it from the packager.
    fn demo_plays(&self) -> Result<(), String> {
        let url = format!("{}/live/demo/master.m3u8", self.demo.origin);
        let output = Command::new("ffmpeg")
            .args([
                "-nostdin", "-v", "error", "-i", &url, "-t", "2", "-f", "null", "-",
            ])
            .output()
            .map_err(|e| format!("running ffmpeg: {e}"))?;
        let errors = String::from_utf8_lossy(&output.stderr);
        if output.status.success() && errors.trim().is_empty() {
            Ok(())
        } else {
            Err(format!(
                "the demo no longer plays: ffmpeg {}: {errors}",
                output.status
            ))
        }
    }

    fn channel_is_absent(&self, channel: &str) -> Result<(), String> {
        let answer = self.get(&format!("/live/{channel}/master.m3u8"), "")?;
        let metrics = self.get("/metrics", "")?;
        if answer.status != 404 || metrics.text.contains(&format!("channel=\"{channel}\"")) {
            return Err(format!(
                "a refused ingest left channel {channel} behind:\n{}",
                answer.text
            ));
        }
        Ok(())
    }

    /// A run of 2^32 - 1 samples and no per-sample field: twelve bytes that once meant four
    /// billion steps and, in the TS remux, as many samples in memory.
    fn crafted_trun(&self) -> Result<(), String> {
        let (header, timescale) = self.demo_header()?;
        let run = TrunSamples::Inherited {
            count: u32::MAX,
            first_flags: None,
        };
        let chunk = chunk(now_ticks(timescale), run, Some(1), 64);
        let started = Instant::now();
        let answer = self.post("/ingest/trun/v1", &[header, chunk].concat())?;
        let took = started.elapsed();
        answer.expect(400, "declares 4294967295 samples")?;
        println!(
            "    the crafted trun (2^32-1 samples) was refused in {:.2} ms, request to answer",
            took.as_secs_f64() * 1000.0
        );
        if took > Duration::from_millis(500) {
            return Err(format!("the refusal took {took:?}"));
        }
        self.channel_is_absent("trun")?;
        self.demo_plays()
    }

    /// A run whose samples need more bytes than its mdat has.
    fn samples_beyond_the_mdat(&self) -> Result<(), String> {
        let (header, timescale) = self.demo_header()?;
        let entries: Vec<TrunEntry> = (0..100)
            .map(|_| TrunEntry {
                duration: Some(timescale / 30),
                size: Some(1000),
                ..Default::default()
            })
            .collect();
        let chunk = chunk(now_ticks(timescale), entries.into(), None, 5000);
        let answer = self.post("/ingest/beyond/v1", &[header, chunk].concat())?;
        answer.expect(400, "add up to more than the 5000 bytes of the mdat")?;
        self.channel_is_absent("beyond")?;
        self.demo_plays()
    }

    /// A header, then boxes that are never a moof, streamed: refused at the seventeenth.
    fn endless_side_boxes(&self) -> Result<(), String> {
        let (header, _) = self.demo_header()?;
        let mut stream = self.connect()?;
        let head =
            "POST /ingest/endless/v1 HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n";
        let send = |stream: &mut TcpStream, data: &[u8]| -> Result<(), String> {
            let mut piece = format!("{:x}\r\n", data.len()).into_bytes();
            piece.extend_from_slice(data);
            piece.extend_from_slice(b"\r\n");
            stream
                .write_all(&piece)
                .map_err(|e| format!("sending: {e}"))
        };
        stream
            .write_all(head.as_bytes())
            .map_err(|e| e.to_string())?;
        send(&mut stream, &header)?;
        let mut free = 1032u32.to_be_bytes().to_vec();
        free.extend_from_slice(b"free");
        free.resize(1032, 0);
        for _ in 0..17 {
            send(&mut stream, &free)?;
        }
        read_answer(&mut stream)?.expect(400, "more than 16 boxes")?;
        self.channel_is_absent("endless")?;
        self.demo_plays()
    }

    /// An ftyp, then a moov box header that claims 2 MB: refused from its header.
    fn oversized_header(&self) -> Result<(), String> {
        let mut body = Vec::new();
        Ftyp {
            major_brand: FourCC::new(b"cmf2"),
            minor_version: 0,
            compatible_brands: vec![FourCC::new(b"cmfc")],
        }
        .encode(&mut body)
        .map_err(|e| e.to_string())?;
        body.extend_from_slice(&(2u32 << 20).to_be_bytes());
        body.extend_from_slice(b"moov");
        let answer = self.post("/ingest/oversized/v1", &body)?;
        answer.expect(400, "the largest accepted is 1048576")?;
        self.demo_plays()
    }

    /// The demo's own header, then a chunk a day ahead of the clock, to `channel/track`: a
    /// new track of a neighbouring channel, or the demo's own track beside its real ingest.
    fn future_tfdt(&self, channel: &str, track: &str) -> Result<(), String> {
        let (header, timescale) = self.demo_header()?;
        let entries: Vec<TrunEntry> = (0..10)
            .map(|_| TrunEntry {
                duration: Some(timescale / 30),
                size: Some(100),
                ..Default::default()
            })
            .collect();
        let tomorrow = now_ticks(timescale) + 24 * 3600 * u64::from(timescale);
        let chunk = chunk(tomorrow, entries.into(), None, 1000);
        let answer = self.post(
            &format!("/ingest/{channel}/{track}"),
            &[header, chunk].concat(),
        )?;
        answer.expect(400, "ahead of the packager's clock")?;
        if channel != "demo" {
            self.channel_is_absent(channel)?;
        }
        // The track keeps taking its real chunks: its newest part moves on.
        let before = self.get("/live/demo/v360/media.m3u8", "")?.text;
        std::thread::sleep(Duration::from_millis(800));
        let after = self.get("/live/demo/v360/media.m3u8", "")?.text;
        if before == after {
            return Err("the demo's v360 stopped taking parts".into());
        }
        self.demo_plays()
    }

    fn admin_without_credentials(&self) -> Result<(), String> {
        let target = "/admin/metadata?mount=/live/demo/stream.mp3&mode=updinfo&song=Pwned";
        self.get(target, "")?.expect(403, "--admin-token")?;
        self.get(
            target,
            "Authorization: Bearer guessed-token-guessed-token\r\n",
        )?
        .expect(403, "no admin credential configured")?;
        self.demo_plays()
    }

    fn non_canonical_paths(&self) -> Result<(), String> {
        for target in [
            "//live/demo/master.m3u8",
            "/live//demo/master.m3u8",
            "/live/%64emo/master.m3u8",
            "/live/demo/%2e/master.m3u8",
            "/live/%2e%2e/live/demo/master.m3u8",
            "/live/demo/./master.m3u8",
            "/live/demo/master.m3u8;x=1",
            "/live;/demo/master.m3u8",
            "/web/../player.html",
        ] {
            self.get(target, "")?
                .expect(400, "canonical")
                .map_err(|e| format!("{target}: {e}"))?;
        }
        // Spelled with allowed characters, but no object of the layout.
        for target in ["/LIVE/demo/master.m3u8", "/live/demo/v360/0897609600.m4s"] {
            let answer = self.get(target, "")?;
            if answer.status != 404 {
                return Err(format!("{target}: {}", answer.text));
            }
        }
        self.demo_plays()
    }

    /// A request head sent a line a second: the packager closes the connection within its
    /// header timeout. A client that connects and says nothing is closed too.
    fn slowloris(&self, header_timeout: Duration) -> Result<(), String> {
        let silent = self.connect()?;
        let mut stream = self.connect()?;
        stream.set_nonblocking(true).map_err(|e| e.to_string())?;
        let started = Instant::now();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: p\r\n")
            .map_err(|e| e.to_string())?;
        let mut line = 0;
        let cut = loop {
            std::thread::sleep(Duration::from_secs(1));
            line += 1;
            // The packager's close shows on reading (end of stream, or an answer), or on the
            // next write.
            let mut byte = [0u8; 1];
            let open = matches!(stream.read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            if !open
                || stream
                    .write_all(format!("X-Slow-{line}: 1\r\n").as_bytes())
                    .is_err()
            {
                break started.elapsed();
            }
            if started.elapsed() > header_timeout + Duration::from_secs(5) {
                return Err(format!("a slow head was still read after {line} lines"));
            }
        };
        let silent_closed = closed_within(silent, Duration::from_secs(3))?;
        println!(
            "    a slow head (a line a second) was cut off after {:.1} s; the header timeout is {} s",
            cut.as_secs_f64(),
            header_timeout.as_secs()
        );
        if cut > header_timeout + Duration::from_secs(2) || !silent_closed {
            return Err(format!(
                "cut after {cut:?}; silent client closed: {silent_closed}"
            ));
        }
        self.demo_plays()
    }

    /// An ingest that sends its header and then nothing, with the connection kept open: 408
    /// after the ingest timeout, and the connection ends.
    fn half_open_ingest(&self, ingest_timeout: Duration) -> Result<(), String> {
        let (header, _) = self.demo_header()?;
        let mut stream = self.connect()?;
        let mut request =
            b"POST /ingest/halfopen/v1 HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        request.extend_from_slice(format!("{:x}\r\n", header.len()).as_bytes());
        request.extend_from_slice(&header);
        request.extend_from_slice(b"\r\n");
        stream.write_all(&request).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let answer = read_answer(&mut stream)?;
        let took = started.elapsed();
        answer.expect(408, "nothing arrived")?;
        println!(
            "    a silent ingest body was refused after {:.1} s; the ingest timeout is {} s",
            took.as_secs_f64(),
            ingest_timeout.as_secs()
        );
        if took < ingest_timeout || took > ingest_timeout + Duration::from_secs(2) {
            return Err(format!("refused after {took:?}"));
        }
        self.channel_is_absent("halfopen")?;
        self.demo_plays()
    }

    /// Header-only ingests of one channel's tracks: the seventeenth is refused.
    fn too_many_tracks(&self, max_tracks: usize) -> Result<(), String> {
        let (header, _) = self.demo_header()?;
        for track in 0..max_tracks {
            self.post(&format!("/ingest/crowd/t{track}"), &header)?
                .expect(200, "0 chunks taken")?;
        }
        self.post("/ingest/crowd/one-more", &header)?
            .expect(503, &format!("already has {max_tracks} tracks"))?;
        let metrics = self.get("/metrics", "")?.text;
        if metrics.contains("one-more") {
            return Err("the refused track is in the metrics".into());
        }
        self.demo_plays()
    }

    /// Header-only ingests of new channels until the packager is full: the next is refused.
    fn too_many_channels(&self, max_channels: usize) -> Result<(), String> {
        let (header, _) = self.demo_header()?;
        let held = self
            .get("/metrics", "")?
            .text
            .lines()
            .filter(|line| line.starts_with("estuary_packager_mood{") && line.ends_with(" 1"))
            .count();
        for channel in held..max_channels {
            self.post(&format!("/ingest/many{channel}/v1"), &header)?
                .expect(200, "0 chunks taken")?;
        }
        self.post("/ingest/toomany/v1", &header)?
            .expect(503, &format!("already holds {max_channels} channels"))?;
        self.demo_plays()
    }
}

fn wait_for_port(address: &str, limit: Duration) -> Result<(), String> {
    let started = Instant::now();
    while TcpStream::connect(address).is_err() {
        if started.elapsed() > limit {
            return Err(format!("nothing listened on {address} after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Reads an answer until the connection closes (or the read timeout passes).
fn read_answer(stream: &mut TcpStream) -> Result<Answer, String> {
    let mut raw = Vec::new();
    if let Err(error) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(format!("no answer: {error}"));
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok(Answer { status, text })
}

/// Whether the packager closes `stream` within `limit`.
fn closed_within(mut stream: TcpStream, limit: Duration) -> Result<bool, String> {
    stream
        .set_read_timeout(Some(limit))
        .map_err(|e| e.to_string())?;
    let mut sink = Vec::new();
    Ok(stream.read_to_end(&mut sink).is_ok())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Now, in ticks of a `timescale` clock.
fn now_ticks(timescale: u32) -> u64 {
    unix_now() * u64::from(timescale)
}

/// A chunk as a hostile ingest writes one: a moof with one run `samples` starting at `start`,
/// sample sizes from the tfhd when `default_size` is given, and an mdat of `mdat_bytes`.
fn chunk(
    start: u64,
    samples: TrunSamples,
    default_size: Option<u32>,
    mdat_bytes: usize,
) -> Vec<u8> {
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: 1 },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: 1,
                default_base_is_moof: true,
                default_sample_duration: Some(100),
                default_sample_size: default_size,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: start,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples,
            }],
            ..Default::default()
        }],
    };
    let mut sized = Vec::new();
    moof.encode(&mut sized).expect("a moof encodes");
    moof.traf[0].trun[0].data_offset = Some(sized.len() as i32 + 8);
    let mut out = Vec::new();
    moof.encode(&mut out).expect("a moof encodes");
    Mdat {
        data: vec![0; mdat_bytes],
    }
    .encode(&mut out)
    .expect("an mdat encodes");
    out
}
