//! Synthetic logs: a day of viewers in the combined format, as an edge would log it. The
//! request rate follows a diurnal curve (peak in the evening, trough in the morning, UTC),
//! channel popularity a Zipf law, and each viewer's player asks for parts, segments and
//! playlists of Estuary's public URL layout in the proportions of its kind (LL-HLS, HLS or
//! DASH). Client addresses come from the networks of a GeoIP database, or from a built-in
//! spread of public ranges. The same seed gives the same file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::clock::{civil_from_days, days_from_civil};
use crate::progress;

/// Seconds in the generated day.
const DAY: usize = 86_400;
/// The hour (UTC) of the most requests.
pub const PEAK_HOUR: f64 = 20.5;
/// Requests per second at the trough over those at the peak.
pub const TROUGH_RATIO: f64 = 0.1;
/// Channel k (from 1) is watched in proportion to 1 / k^ZIPF_EXPONENT.
pub const ZIPF_EXPONENT: f64 = 1.0;
/// The length of a segment, and the number of parts in it.
const SEGMENT_SECONDS: i64 = 2;
const PARTS_PER_SEGMENT: u64 = 4;
const LINES_PER_VIEWER: u64 = 400;
const MAX_VIEWERS: u64 = 200_000;

/// Networks clients come from when no GeoIP database is given: ranges announced on several
/// continents (Europe, North and South America, Asia, Africa, Oceania).
const PUBLIC_RANGES: [(&str, u8); 12] = [
    ("81.2.0.0", 16),
    ("85.214.0.0", 15),
    ("2.16.0.0", 13),
    ("90.0.0.0", 9),
    ("3.0.0.0", 9),
    ("24.0.0.0", 12),
    ("177.0.0.0", 12),
    ("41.0.0.0", 11),
    ("49.0.0.0", 12),
    ("110.0.0.0", 12),
    ("1.128.0.0", 11),
    ("202.0.0.0", 14),
];

/// Tracks: name, bit rate in bit/s, and the share of viewers watching it (video only).
const VIDEO: [(&str, f64, f64); 3] = [
    ("v1080", 6_000_000.0, 0.25),
    ("v720", 3_000_000.0, 0.5),
    ("v360", 800_000.0, 0.25),
];
const AUDIO: (&str, f64) = ("a128", 128_000.0);

const USER_AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 hls.js/1.5",
    "AppleCoreMedia/1.0.0.22A3354 (iPhone; U; CPU OS 18_0 like Mac OS X; en_gb)",
    "ExoPlayerLib/2.19.1 (Linux; Android 14) ExoPlayerLib/2.19.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0 dash.js/4.7",
    "VLC/3.0.20 LibVLC/3.0.20",
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct Options {
    pub lines: u64,
    pub out: PathBuf,
    /// A MaxMind DB whose IPv4 networks the clients come from.
    pub geoip: Option<PathBuf>,
    pub channels: u32,
    pub seed: u64,
    /// The day, as seconds since the epoch of its midnight (UTC).
    pub day: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the GeoIP database {path}: {reason}")]
    Geo { path: PathBuf, reason: String },
    #[error("the GeoIP database {path} has no IPv4 network to draw clients from")]
    NoNetworks { path: PathBuf },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("give at least one channel")]
    NoChannels,
}

/// SplitMix64: small, fast and good enough to draw from; the same seed, the same draws.
#[derive(Clone, Debug)]
pub struct Draw(u64);

impl Draw {
    pub fn new(seed: u64) -> Draw {
        Draw(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, bound).
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// The relative request rate at `second` of the day: a cosine from [`TROUGH_RATIO`] at
/// 12 hours from the peak to 1 at [`PEAK_HOUR`].
pub fn diurnal_rate(second: f64) -> f64 {
    let hours = second / 3600.0;
    let phase = (hours - PEAK_HOUR) / 24.0 * std::f64::consts::TAU;
    TROUGH_RATIO + (1.0 - TROUGH_RATIO) * (1.0 + phase.cos()) / 2.0
}

/// How many of `lines` fall in each second of the day, following [`diurnal_rate`]; they add
/// up to `lines` exactly.
pub fn lines_per_second(lines: u64) -> Vec<u64> {
    let rates: Vec<f64> = (0..DAY)
        .map(|second| diurnal_rate(second as f64 + 0.5))
        .collect();
    let total: f64 = rates.iter().sum();
    let mut cumulative = 0.0;
    let mut given = 0;
    rates
        .iter()
        .map(|rate| {
            cumulative += rate;
            let due = ((cumulative / total) * lines as f64).round() as u64;
            let due = due.min(lines);
            let now = due - given;
            given = due;
            now
        })
        .collect()
}

/// Cumulative weights of a Zipf law over `count` ranks, for drawing.
pub fn zipf_cumulative(count: u32) -> Vec<f64> {
    let mut sum = 0.0;
    (1..=count)
        .map(|rank| {
            sum += 1.0 / f64::from(rank).powf(ZIPF_EXPONENT);
            sum
        })
        .collect()
}

fn pick(cumulative: &[f64], draw: &mut Draw) -> usize {
    let target = draw.unit() * cumulative.last().copied().unwrap_or(0.0);
    cumulative
        .partition_point(|&weight| weight <= target)
        .min(cumulative.len() - 1)
}

/// The IPv4 networks of a MaxMind DB, as (first address, prefix length).
pub fn networks_of(path: &Path) -> Result<Vec<(u32, u8)>, GenerateError> {
    let error = |reason: String| GenerateError::Geo {
        path: path.to_owned(),
        reason,
    };
    let reader = maxminddb::Reader::open_readfile(path).map_err(|e| error(e.to_string()))?;
    let everything = ipnetwork::IpNetwork::V4(
        ipnetwork::Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("0.0.0.0/0 is a network"),
    );
    let mut networks = Vec::new();
    let within = reader
        .within(everything, maxminddb::WithinOptions::default())
        .map_err(|e| error(e.to_string()))?;
    for found in within {
        let network = found
            .and_then(|found| found.network())
            .map_err(|e| error(e.to_string()))?;
        if let ipnetwork::IpNetwork::V4(network) = network {
            networks.push((u32::from(network.network()), network.prefix()));
        }
    }
    if networks.is_empty() {
        return Err(GenerateError::NoNetworks {
            path: path.to_owned(),
        });
    }
    Ok(networks)
}

/// How a viewer's player asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Player {
    LowLatencyHls,
    Hls,
    Dash,
}

#[derive(Clone, Debug)]
struct Viewer {
    address: Vec<u8>,
    channel: u32,
    video: usize,
    player: Player,
    user_agent: usize,
}

/// What one request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Master,
    Manifest,
    MediaPlaylist,
    Init,
    Segment,
    Part,
}

impl Player {
    /// Cumulative shares of what this kind of player asks for: LL-HLS players reload the
    /// media playlist for every part; HLS ones once a segment; DASH ones fetch segments off a
    /// manifest they reload now and then.
    fn asks(self) -> &'static [(Ask, f64)] {
        match self {
            Player::LowLatencyHls => &[
                (Ask::Part, 0.55),
                (Ask::MediaPlaylist, 0.95),
                (Ask::Segment, 0.97),
                (Ask::Init, 0.99),
                (Ask::Master, 1.0),
            ],
            Player::Hls => &[
                (Ask::Segment, 0.47),
                (Ask::MediaPlaylist, 0.95),
                (Ask::Init, 0.975),
                (Ask::Master, 1.0),
            ],
            Player::Dash => &[(Ask::Segment, 0.9), (Ask::Manifest, 0.98), (Ask::Init, 1.0)],
        }
    }
}

/// Writes the log; returns the body bytes it logged.
pub fn generate(options: &Options) -> Result<u64, GenerateError> {
    if options.channels == 0 {
        return Err(GenerateError::NoChannels);
    }
    let networks = match &options.geoip {
        Some(path) => networks_of(path)?,
        None => PUBLIC_RANGES
            .iter()
            .map(|(address, prefix)| {
                let address: Ipv4Addr = address.parse().expect("a built-in range");
                (u32::from(address), *prefix)
            })
            .collect(),
    };
    let write_error = |source| GenerateError::Write {
        path: options.out.clone(),
        source,
    };
    let file = File::create(&options.out).map_err(write_error)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut draw = Draw::new(options.seed);
    let viewers = make_viewers(options, &networks, &mut draw);
    let per_second = lines_per_second(options.lines);
    let bar = progress::counter(options.lines, "generating");
    let mut line = Vec::with_capacity(512);
    let mut written = 0u64;
    let mut body_bytes = 0u64;
    for (second, &count) in per_second.iter().enumerate() {
        let now = options.day + second as i64;
        let stamp = clf_time(now);
        let msn = second as i64 / SEGMENT_SECONDS + 1;
        for _ in 0..count {
            let viewer = &viewers[draw.below(viewers.len() as u64) as usize];
            line.clear();
            body_bytes += request_line(&mut line, viewer, &stamp, msn, &mut draw);
            out.write_all(&line).map_err(write_error)?;
            written += 1;
            if written.is_multiple_of(65_536) {
                bar.set_position(written);
            }
        }
    }
    out.flush().map_err(write_error)?;
    bar.finish_and_clear();
    Ok(body_bytes)
}

fn make_viewers(options: &Options, networks: &[(u32, u8)], draw: &mut Draw) -> Vec<Viewer> {
    let count = (options.lines / LINES_PER_VIEWER).clamp(1, MAX_VIEWERS);
    let channels = zipf_cumulative(options.channels);
    let video: Vec<f64> = VIDEO
        .iter()
        .scan(0.0, |sum, (_, _, share)| {
            *sum += share;
            Some(*sum)
        })
        .collect();
    (0..count)
        .map(|_| {
            let (base, prefix) = networks[draw.below(networks.len() as u64) as usize];
            let size = 1u64 << (32 - u32::from(prefix));
            let address = Ipv4Addr::from(base.wrapping_add(draw.below(size) as u32));
            let player = match draw.unit() {
                share if share < 0.6 => Player::LowLatencyHls,
                share if share < 0.9 => Player::Hls,
                _ => Player::Dash,
            };
            Viewer {
                address: address.to_string().into_bytes(),
                channel: pick(&channels, draw) as u32 + 1,
                video: pick(&video, draw),
                player,
                user_agent: draw.below(USER_AGENTS.len() as u64) as usize,
            }
        })
        .collect()
}

/// `22/Nov/2026:13:05:07 +0000`.
fn clf_time(seconds: i64) -> Vec<u8> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let in_day = seconds.rem_euclid(86_400);
    format!(
        "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
    .into_bytes()
}

/// Appends one combined-format line for `viewer`; returns its body bytes.
fn request_line(
    line: &mut Vec<u8>,
    viewer: &Viewer,
    stamp: &[u8],
    msn: i64,
    draw: &mut Draw,
) -> u64 {
    let roll = draw.unit();
    let asks = viewer.player.asks();
    let ask = asks
        .iter()
        .find(|(_, share)| roll < *share)
        .map_or(asks[asks.len() - 1].0, |(ask, _)| *ask);
    // A quarter of media requests are for the audio track.
    let (track, bit_rate) = if draw.unit() < 0.25 {
        AUDIO
    } else {
        let (name, rate, _) = VIDEO[viewer.video];
        (name, rate)
    };
    let jitter = 0.8 + 0.4 * draw.unit();
    line.extend_from_slice(&viewer.address);
    line.extend_from_slice(b" - - [");
    line.extend_from_slice(stamp);
    line.extend_from_slice(b"] \"GET /live/channel-");
    push_number(line, u64::from(viewer.channel));
    line.push(b'/');
    let mut bytes = match ask {
        Ask::Master => {
            line.extend_from_slice(b"master.m3u8");
            700.0
        }
        Ask::Manifest => {
            line.extend_from_slice(b"manifest.mpd");
            2600.0
        }
        Ask::MediaPlaylist | Ask::Init | Ask::Segment | Ask::Part => {
            line.extend_from_slice(track.as_bytes());
            line.push(b'/');
            match ask {
                Ask::MediaPlaylist => {
                    line.extend_from_slice(b"media.m3u8");
                    if viewer.player == Player::LowLatencyHls {
                        line.extend_from_slice(b"?_HLS_msn=");
                        push_number(line, msn as u64);
                        line.extend_from_slice(b"&_HLS_part=");
                        push_number(line, draw.below(PARTS_PER_SEGMENT));
                        3200.0
                    } else {
                        2400.0
                    }
                }
                Ask::Init => {
                    line.extend_from_slice(b"init.mp4");
                    800.0
                }
                Ask::Segment => {
                    push_number(line, (msn - 1) as u64);
                    line.extend_from_slice(b".m4s");
                    bit_rate / 8.0 * SEGMENT_SECONDS as f64
                }
                _ => {
                    push_number(line, msn as u64);
                    line.push(b'.');
                    push_number(line, draw.below(PARTS_PER_SEGMENT));
                    line.extend_from_slice(b".m4s");
                    bit_rate / 8.0 * SEGMENT_SECONDS as f64 / PARTS_PER_SEGMENT as f64
                }
            }
        }
    } * jitter;
    // A few requests fail: 404 for a segment gone from the window, 304 for a playlist.
    let status = match draw.below(1000) {
        0..2 => {
            bytes = 150.0;
            404
        }
        2..6 if matches!(ask, Ask::Master | Ask::Manifest) => {
            bytes = 0.0;
            304
        }
        _ => 200,
    };
    let bytes = bytes.round() as u64;
    line.extend_from_slice(b" HTTP/1.1\" ");
    push_number(line, status);
    line.push(b' ');
    push_number(line, bytes);
    line.extend_from_slice(b" \"-\" \"");
    line.extend_from_slice(USER_AGENTS[viewer.user_agent].as_bytes());
    line.extend_from_slice(b"\"\n");
    bytes
}

fn push_number(line: &mut Vec<u8>, value: u64) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(line, "{value}");
}

/// A date that is not `YYYY-MM-DD`, or no day of the calendar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date YYYY-MM-DD")]
pub struct BadDay(pub String);

/// Midnight (UTC) of `YYYY-MM-DD`, in seconds since the epoch.
pub fn parse_day(text: &str) -> Result<i64, BadDay> {
    let expected = || BadDay(text.to_owned());
    let mut parts = text.splitn(3, '-');
    let mut number = || -> Result<i64, BadDay> {
        parts
            .next()
            .and_then(|part| part.parse().ok())
            .ok_or_else(expected)
    };
    let (year, month, day) = (number()?, number()?, number()?);
    let days = days_from_civil(year, month, day);
    if civil_from_days(days) != (year, month, day) {
        return Err(expected());
    }
    Ok(days * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Format, LogReader};

    #[test]
    fn the_day_follows_the_diurnal_curve() {
        let per_second = lines_per_second(1_000_000);
        assert_eq!(per_second.iter().sum::<u64>(), 1_000_000);
        let hours: Vec<u64> = per_second
            .chunks(3600)
            .map(|hour| hour.iter().sum())
            .collect();
        let busiest = hours.iter().enumerate().max_by_key(|(_, n)| **n).unwrap().0;
        let quietest = hours.iter().enumerate().min_by_key(|(_, n)| **n).unwrap().0;
        assert_eq!((busiest, quietest), (20, 8), "{hours:?}");
        let ratio = hours[quietest] as f64 / hours[busiest] as f64;
        assert!((0.09..0.13).contains(&ratio), "{ratio}");
        assert!((diurnal_rate(PEAK_HOUR * 3600.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn channel_popularity_follows_zipf() {
        let cumulative = zipf_cumulative(100);
        let mut draw = Draw::new(7);
        let mut counts = vec![0u32; 100];
        for _ in 0..200_000 {
            counts[pick(&cumulative, &mut draw)] += 1;
        }
        let ratio = |a: usize, b: usize| f64::from(counts[a]) / f64::from(counts[b]);
        assert!((1.85..2.15).contains(&ratio(0, 1)), "{counts:?}");
        assert!((8.5..11.5).contains(&ratio(0, 9)), "{counts:?}");
    }

    #[test]
    fn a_generated_log_reads_back_and_repeats_for_a_seed() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            lines: 20_000,
            out: dir.path().join("a.log"),
            geoip: None,
            channels: 20,
            seed: 1,
            day: parse_day("2026-11-21").unwrap(),
        };
        let bytes = generate(&options).unwrap();
        let mut reader = LogReader::open(&options.out, None).unwrap();
        assert_eq!(reader.format(), Format::Combined);
        let (mut channels, mut parts, mut playlists, mut segments) = (vec![0u32; 21], 0, 0, 0);
        let mut previous = i64::MIN;
        reader
            .for_each(|record| {
                assert!(record.time >= previous, "in time order");
                previous = record.time;
                // Every line is a media path of the public layout.
                let channel = crate::simulate::channel_of(record.target).unwrap();
                let number: usize = channel
                    .as_str()
                    .strip_prefix("channel-")
                    .unwrap()
                    .parse()
                    .unwrap();
                channels[number] += 1;
                let path = record.target.split('?').next().unwrap();
                if path.ends_with(".m3u8") {
                    playlists += 1;
                } else if path.matches('.').count() == 2 {
                    parts += 1;
                } else if path.ends_with(".m4s") {
                    segments += 1;
                }
            })
            .unwrap();
        let tally = reader.tally();
        assert_eq!((tally.records, tally.bad, tally.bytes), (20_000, 0, bytes));
        assert!(
            channels[1] > channels[2] && channels[2] > channels[10],
            "{channels:?}"
        );
        // Players ask for more playlists and parts than segments.
        assert!(
            parts > segments && playlists > segments,
            "{parts} {playlists} {segments}"
        );
        let first = std::fs::read(&options.out).unwrap();
        generate(&options).unwrap();
        assert_eq!(std::fs::read(&options.out).unwrap(), first);
        let other = Options {
            seed: 2,
            ..options.clone()
        };
        generate(&other).unwrap();
        assert_ne!(std::fs::read(&options.out).unwrap(), first);
        assert_eq!(
            parse_day("2026-02-30").unwrap_err().to_string(),
            "\"2026-02-30\" is not a date YYYY-MM-DD"
        );
    }

    #[test]
    fn clients_come_from_the_databases_networks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.mmdb");
        std::fs::write(
            &path,
            estuary_control::geo::test_database(&[
                ("81.2.69.0/24", "GB", "London", 51.51, -0.09),
                ("216.160.83.56/29", "US", "Milton", 47.25, -122.31),
            ]),
        )
        .unwrap();
        let mut networks = networks_of(&path).unwrap();
        networks.sort();
        assert_eq!(
            networks,
            [
                (u32::from(Ipv4Addr::new(81, 2, 69, 0)), 24),
                (u32::from(Ipv4Addr::new(216, 160, 83, 56)), 29)
            ]
        );
        let options = Options {
            lines: 2_000,
            out: dir.path().join("b.log"),
            geoip: Some(path),
            channels: 3,
            seed: 9,
            day: 0,
        };
        generate(&options).unwrap();
        let mut reader = LogReader::open(&options.out, None).unwrap();
        reader
            .for_each(|record| {
                let text = record.client.to_string();
                assert!(
                    text.starts_with("81.2.69.") || text.starts_with("216.160.83."),
                    "{text}"
                );
            })
            .unwrap();
    }
}
