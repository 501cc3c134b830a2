//! The offline simulator: every request of a log goes through control's routing (the same
//! client groups and site ranking as `estuary control`), and bytes and requests add up per
//! site and per client group in time buckets, for each policy asked for. Each site behaves as
//! if it had one live edge whose egress is what the simulation has sent from it in the current
//! bucket, so a site fills up, overflows, and `least_loaded` sees its load.

mod report;
pub mod timeline;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use estuary_control::config::{Config, Policy, PolicyConfig};
use estuary_control::coverage::{self, Coverage};
use estuary_control::geo::GeoDatabase;
use estuary_control::routing::{Router, SiteState, rank_sites};
use estuary_proto::url::{ChannelName, PublicPath};

use crate::log::{Format, LogError, LogReader, Record, Tally, line_boundaries};
use crate::progress;
pub use report::{Report, write_outputs};
use timeline::{Cell, Timeline, TooLong};

/// Seconds in a minute, for the busiest minute.
const MINUTE: i64 = 60;
/// Below this size a log is read by one thread.
const SPLIT_ABOVE: u64 = 16 << 20;
/// How far past a split point the next bucket's first line is looked for.
const ALIGN_WINDOW: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("control's configuration: {0}")]
    Config(#[from] estuary_control::ConfigError),
    #[error("the GeoIP database {path} that control's configuration names: {reason}")]
    GeoIp { path: PathBuf, reason: String },
    #[error("the coverage zones control's configuration names: {0}")]
    CoverageZones(#[from] estuary_control::coverage::CoverageError),
    #[error("control's configuration {path} has no [[sites]]: there is nowhere to send viewers")]
    NoSites { path: PathBuf },
    #[error(
        "the log spans buckets {first} to {last} of {bucket} s, more than the simulator keeps; \
         give a larger --bucket"
    )]
    TooLong { first: i64, last: i64, bucket: i64 },
    #[error("{what} {path}")]
    Write {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plotting {path}: {source}")]
    Plot {
        path: PathBuf,
        source: crate::plot::PlotError,
    },
}

/// How sites are chosen in one run of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The policies of control's configuration, per channel.
    Configured,
    Fixed(Policy),
}

impl Choice {
    pub fn name(self) -> &'static str {
        match self {
            Choice::Configured => "configured",
            Choice::Fixed(policy) => policy.as_str(),
        }
    }
}

/// What a simulation runs with.
#[derive(Debug)]
pub struct Setup {
    pub router: Router,
    pub policies: PolicyConfig,
    /// Each is simulated separately over the same log.
    pub choices: Vec<Choice>,
    /// The bucket length, in seconds.
    pub bucket: i64,
}

impl Setup {
    /// Reads control's configuration at `config` (and the GeoIP database and coverage-zone
    /// file it names) as `estuary control` does.
    pub fn load(config: &Path, policies: &[Policy], bucket: i64) -> Result<Setup, SimulateError> {
        let file = Config::load(config)?;
        if file.sites.is_empty() {
            return Err(SimulateError::NoSites {
                path: config.to_owned(),
            });
        }
        let geo = match &file.geoip {
            Some(path) => Some(
                GeoDatabase::open(path).map_err(|reason| SimulateError::GeoIp {
                    path: path.clone(),
                    reason,
                })?,
            ),
            None => None,
        };
        let mut zones = file.zones.clone();
        if let Some(path) = &file.coverage_zones {
            zones.extend(coverage::read_traffic_control(path)?);
        }
        let mut choices: Vec<Choice> = policies.iter().copied().map(Choice::Fixed).collect();
        choices.dedup();
        if choices.is_empty() {
            choices.push(Choice::Configured);
        }
        Ok(Setup {
            router: Router::new(&file, Coverage::new(zones), geo),
            policies: file.policy.clone(),
            choices,
            bucket: bucket.max(1),
        })
    }

    fn sites(&self) -> usize {
        self.router.sites.len()
    }
}

/// A client group's traffic.
#[derive(Clone, Debug)]
pub struct GroupStats {
    pub name: String,
    pub timeline: Timeline,
    /// Bytes per (choice, site): `choice * sites + site`.
    pub by_site: Vec<u64>,
}

/// Requests that went to a site other than their first choice because it was full.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overflows {
    pub requests: u64,
    pub bytes: u64,
    /// Requests per (first choice, site taken): `first * sites + taken`.
    pub moves: Vec<u64>,
}

/// Where a client is: its group and its distance to each site.
#[derive(Clone, Copy, Debug)]
struct Place {
    group: u32,
    /// Index of its first distance in `Simulation::distances`.
    distances: u32,
}

/// The simulation of a stretch of log, added to record by record.
#[derive(Debug)]
pub struct Simulation<'a> {
    setup: &'a Setup,
    /// Groups and distances are looked up once per client address.
    clients: HashMap<IpAddr, Place, BuildHasherDefault<AddressHasher>>,
    places: HashMap<(String, u64, u64), Place>,
    distances: Vec<Option<f64>>,
    pub groups: Vec<GroupStats>,
    /// `choice * sites + site` cells per bucket.
    pub sites: Timeline,
    /// Every request, per minute.
    pub minutes: Timeline,
    /// Per choice.
    pub overflows: Vec<Overflows>,
    /// Requests no site could take, per choice.
    pub refused: Vec<Cell>,
    pub tally: Tally,
    pub format: Format,
    states: Vec<SiteState>,
    order: Vec<usize>,
    too_long: Option<TooLong>,
}

impl<'a> Simulation<'a> {
    pub fn new(setup: &'a Setup) -> Simulation<'a> {
        let (choices, sites) = (setup.choices.len(), setup.sites());
        Simulation {
            setup,
            clients: HashMap::default(),
            places: HashMap::new(),
            distances: Vec::new(),
            groups: Vec::new(),
            sites: Timeline::new(choices * sites),
            minutes: Timeline::new(1),
            overflows: vec![
                Overflows {
                    moves: vec![0; sites * sites],
                    ..Overflows::default()
                };
                choices
            ],
            refused: vec![Cell::default(); choices],
            tally: Tally::default(),
            format: Format::Combined,
            states: vec![
                SiteState {
                    live_edges: 1,
                    load: 0.0
                };
                sites
            ],
            order: (0..sites).collect(),
            too_long: None,
        }
    }

    /// Sends one request through routing for every choice, and counts it.
    pub fn observe(&mut self, record: &Record<'_>) {
        if self.too_long.is_some() {
            return;
        }
        if let Err(too_long) = self.add(record) {
            self.too_long = Some(too_long);
        }
    }

    fn add(&mut self, record: &Record<'_>) -> Result<(), TooLong> {
        let setup = self.setup;
        let count = Cell {
            requests: 1,
            bytes: record.bytes,
        };
        let place = self.place(record.client);
        let bucket = record.time.div_euclid(setup.bucket);
        self.minutes.at(record.time.div_euclid(MINUTE))?[0] += count;
        self.groups[place.group as usize].timeline.at(bucket)?[0] += count;
        let sites = setup.sites();
        let distances = &self.distances[place.distances as usize..][..sites];
        let cells = self.sites.at(bucket)?;
        // Only the configured policies depend on the channel.
        let channel = if setup.choices.contains(&Choice::Configured) {
            channel_of(record.target)
        } else {
            None
        };
        let channel = channel.as_ref().map_or("", ChannelName::as_str);
        for (choice_index, choice) in setup.choices.iter().enumerate() {
            let policy = match choice {
                Choice::Fixed(policy) => *policy,
                Choice::Configured => setup.policies.policy_for(channel),
            };
            let cells = &mut cells[choice_index * sites..][..sites];
            for ((state, site), cell) in
                self.states.iter_mut().zip(&setup.router.sites).zip(&*cells)
            {
                let egress_bps = cell.bytes as f64 * 8.0 / setup.bucket as f64;
                state.load = egress_bps / (site.capacity_mbps * 1e6);
            }
            for (index, slot) in self.order.iter_mut().enumerate() {
                *slot = index;
            }
            let ranked = rank_sites(
                &setup.router.sites,
                distances,
                &self.states,
                policy,
                &mut self.order,
            );
            let Some(position) = ranked else {
                self.refused[choice_index] += count;
                continue;
            };
            let site = self.order[position];
            cells[site] += count;
            self.groups[place.group as usize].by_site[choice_index * sites + site] += record.bytes;
            if position > 0 {
                let overflows = &mut self.overflows[choice_index];
                overflows.requests += 1;
                overflows.bytes += record.bytes;
                overflows.moves[self.order[0] * sites + site] += 1;
            }
        }
        Ok(())
    }

    /// The client's group and distances, looked up in control's coverage zones and GeoIP the
    /// first time the address is seen.
    fn place(&mut self, client: IpAddr) -> Place {
        if let Some(place) = self.clients.get(&client) {
            return *place;
        }
        let router = &self.setup.router;
        let group = router.group(client);
        let location = group.latitude.zip(group.longitude);
        let key = (
            group.name,
            location.map_or(u64::MAX, |(latitude, _)| latitude.to_bits()),
            location.map_or(u64::MAX, |(_, longitude)| longitude.to_bits()),
        );
        let place = match self.places.get(&key) {
            Some(place) => *place,
            None => {
                let group = match self.groups.iter().position(|g| g.name == key.0) {
                    Some(index) => index,
                    None => {
                        self.groups.push(GroupStats {
                            name: key.0.clone(),
                            timeline: Timeline::new(1),
                            by_site: vec![0; self.setup.choices.len() * self.setup.sites()],
                        });
                        self.groups.len() - 1
                    }
                };
                let place = Place {
                    group: group as u32,
                    distances: self.distances.len() as u32,
                };
                self.distances.extend(router.distances(location));
                self.places.insert(key, place);
                place
            }
        };
        self.clients.insert(client, place);
        place
    }

    /// Adds `later`, the simulation of the stretch of log after this one.
    pub fn merge(&mut self, later: Simulation<'_>) -> Result<(), TooLong> {
        if let Some(too_long) = later.too_long {
            return Err(too_long);
        }
        self.sites.merge(&later.sites)?;
        self.minutes.merge(&later.minutes)?;
        for group in later.groups {
            match self.groups.iter_mut().find(|g| g.name == group.name) {
                Some(mine) => {
                    mine.timeline.merge(&group.timeline)?;
                    for (mine, theirs) in mine.by_site.iter_mut().zip(&group.by_site) {
                        *mine += theirs;
                    }
                }
                None => self.groups.push(group),
            }
        }
        for (mine, theirs) in self.overflows.iter_mut().zip(later.overflows) {
            mine.requests += theirs.requests;
            mine.bytes += theirs.bytes;
            for (mine, theirs) in mine.moves.iter_mut().zip(theirs.moves) {
                *mine += theirs;
            }
        }
        for (mine, theirs) in self.refused.iter_mut().zip(later.refused) {
            *mine += theirs;
        }
        self.tally.merge(later.tally);
        Ok(())
    }

    fn finish(self) -> Result<Simulation<'a>, TooLong> {
        match self.too_long {
            Some(too_long) => Err(too_long),
            None => Ok(self),
        }
    }
}

/// The channel of a logged request target, when it is a media path of the public layout as
/// control reads it (`PublicPath::parse`: `/live/CHANNEL/…`, `/vod/CHANNEL/…` in their one
/// canonical spelling); none for any other, which gets the default policy, as control would
/// send it no viewer.
pub fn channel_of(target: &str) -> Option<ChannelName> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let path = PublicPath::parse(path, query).ok()?;
    path.is_media().then(|| path.channel().cloned()).flatten()
}

/// A fast hash for client addresses (FxHash's mixing): they are not chosen by an adversary
/// here, and SipHash would cost more than the rest of a lookup.
#[derive(Default)]
pub struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl AddressHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// What `simulate` is asked to do.
#[derive(Debug)]
pub struct Options {
    pub log: PathBuf,
    pub config: PathBuf,
    /// Empty: the configuration's policies.
    pub policies: Vec<Policy>,
    pub bucket: i64,
    pub out: PathBuf,
    pub format: Option<Format>,
    /// How many threads read the log (a gzip log is read by one).
    pub threads: usize,
    /// The TrueType font for the plots' text.
    pub font: PathBuf,
}

/// Runs the simulation and writes its outputs; returns the report.
pub fn run(options: &Options) -> Result<Report, SimulateError> {
    // A missing font is found before the log is read, not after.
    crate::plot::register_font(&options.font).map_err(|source| SimulateError::Plot {
        path: options.font.clone(),
        source,
    })?;
    let setup = Setup::load(&options.config, &options.policies, options.bucket)?;
    let simulation = simulate(&setup, &options.log, options.format, options.threads)?;
    let report = Report::new(&setup, &options.log, simulation);
    write_outputs(&report, &options.out, &options.font)?;
    Ok(report)
}

/// Reads the log at `path` (in parts on several threads when it is a large plain file) and
/// simulates every record.
pub fn simulate<'a>(
    setup: &'a Setup,
    path: &Path,
    format: Option<Format>,
    threads: usize,
) -> Result<Simulation<'a>, SimulateError> {
    let too_long = |too_long: TooLong| SimulateError::TooLong {
        first: too_long.first,
        last: too_long.last,
        bucket: setup.bucket,
    };
    let first = LogReader::open(path, format)?;
    let size = std::fs::metadata(path)
        .map_err(|source| LogError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    let bar = progress::bar(size, "simulating");
    if first.is_compressed() || threads <= 1 || size < SPLIT_ABOVE {
        let mut reader = first;
        let counter = bar.clone();
        reader.on_progress(move |bytes| counter.inc(bytes));
        let mut simulation = Simulation::new(setup);
        reader.for_each(|record| simulation.observe(record))?;
        simulation.format = reader.format();
        simulation.tally = reader.into_tally();
        bar.finish_and_clear();
        return simulation.finish().map_err(too_long);
    }
    let format = first.format();
    drop(first);
    let read_error = |source| LogError::Read {
        path: path.to_owned(),
        source,
    };
    let mut boundaries = line_boundaries(path, threads).map_err(read_error)?;
    for index in 1..boundaries.len() - 1 {
        let end = boundaries[index + 1];
        boundaries[index] = align_to_bucket(path, format, boundaries[index], end, setup.bucket)
            .map_err(read_error)?;
    }
    boundaries.dedup();
    let parts: Vec<Result<Simulation<'a>, SimulateError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = boundaries
            .windows(2)
            .map(|range| {
                let (start, end) = (range[0], range[1]);
                let counter = bar.clone();
                scope.spawn(move || {
                    let mut reader = LogReader::open_range(path, format, start..end)?;
                    reader.on_progress(move |bytes| counter.inc(bytes));
                    let mut simulation = Simulation::new(setup);
                    reader.for_each(|record| simulation.observe(record))?;
                    simulation.format = format;
                    simulation.tally = reader.into_tally();
                    Ok(simulation)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a simulation thread panicked"))
            .collect()
    });
    bar.finish_and_clear();
    let mut parts = parts.into_iter();
    let mut simulation = parts.next().expect("at least one part")?;
    for part in parts {
        simulation.merge(part?).map_err(too_long)?;
    }
    simulation.finish().map_err(too_long)
}

/// The start of the first line at or after `boundary` (a line start) whose bucket differs
/// from the line before it, so that in a log in time order each bucket is simulated by one
/// thread, with its load whole. Stays at `boundary` when no change shows within
/// [`ALIGN_WINDOW`].
fn align_to_bucket(
    path: &Path,
    format: Format,
    boundary: u64,
    end: u64,
    bucket: i64,
) -> std::io::Result<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(boundary))?;
    let mut window = Vec::new();
    file.take(ALIGN_WINDOW.min(end - boundary))
        .read_to_end(&mut window)?;
    let mut offset = 0;
    let mut previous = None;
    while let Some(length) = memchr::memchr(b'\n', &window[offset..]) {
        let line = &window[offset..offset + length];
        if let Ok(record) = crate::log::parse(format, line) {
            let this = record.time.div_euclid(bucket);
            if previous.is_some_and(|previous| previous != this) {
                return Ok(boundary + offset as u64);
            }
            previous = Some(this);
        }
        offset += length + 1;
    }
    Ok(boundary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use estuary_control::config::Site;

    fn site(name: &str, latitude: f64, longitude: f64, cost: f64, capacity: f64) -> Site {
        Site {
            name: name.into(),
            latitude,
            longitude,
            cost_per_gb: cost,
            capacity_mbps: capacity,
        }
    }

    fn setup(dir: &Path, choices: Vec<Choice>, capacity: f64) -> Setup {
        let path = dir.join("city.mmdb");
        std::fs::write(
            &path,
            estuary_control::geo::test_database(&[
                ("81.2.69.0/24", "GB", "London", 51.51, -0.09),
                ("216.160.83.0/24", "US", "Milton", 47.25, -122.31),
            ]),
        )
        .unwrap();
        let config = Config::parse("").unwrap();
        let mut router = Router::new(&config, Coverage::new(Vec::new()), None);
        router.sites = vec![
            site("lon", 51.5, -0.13, 0.02, capacity),
            site("fra", 50.1, 8.7, 0.01, capacity),
            site("nyc", 40.7, -74.0, 0.03, capacity),
        ];
        router.geo = Some(GeoDatabase::open(&path).unwrap());
        Setup {
            router,
            policies: PolicyConfig::default(),
            choices,
            bucket: 60,
        }
    }

    fn record(time: i64, client: &str, bytes: u64) -> Record<'static> {
        Record {
            line: 0,
            time,
            client: client.parse().unwrap(),
            method: "GET",
            target: "/live/demo/v720/1.m4s",
            status: 200,
            bytes,
            user_agent: None,
        }
    }

    #[test]
    fn each_policy_sends_bytes_to_its_site_and_full_sites_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let choices = vec![
            Choice::Fixed(Policy::Closest),
            Choice::Fixed(Policy::LeastCost),
        ];
        // 1 Mbit/s over a 60 s bucket is 7.5 MB.
        let setup = setup(dir.path(), choices, 1.0);
        let mut simulation = Simulation::new(&setup);
        for second in 0..10 {
            simulation.observe(&record(600 + second, "81.2.69.10", 1_000_000));
        }
        simulation.observe(&record(600, "216.160.83.1", 5));
        let cells = simulation.sites.get(10).unwrap();
        // closest: London to lon until 7.5 MB, then the next closest, fra.
        let closest: Vec<u64> = cells[..3].iter().map(|c| c.bytes).collect();
        assert_eq!(closest, [8_000_000, 2_000_000, 5]);
        // least_cost: fra first, then lon (cheaper than nyc), Milton's 5 bytes too.
        let cheapest: Vec<u64> = cells[3..].iter().map(|c| c.bytes).collect();
        assert_eq!(cheapest, [2_000_005, 8_000_000, 0]);
        assert_eq!(simulation.overflows[0].requests, 2);
        assert_eq!(simulation.overflows[0].moves[1], 2, "lon to fra");
        assert_eq!(simulation.overflows[1].moves[3], 3, "fra to lon");
        // The next bucket starts empty again.
        simulation.observe(&record(660, "81.2.69.10", 1));
        assert_eq!(simulation.sites.get(11).unwrap()[0].bytes, 1);
        let names: Vec<&str> = simulation.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["GB", "US"]);
        assert_eq!(simulation.groups[0].by_site[..3], [8_000_001, 2_000_000, 0]);
    }

    #[test]
    fn least_loaded_spreads_and_refusals_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup(dir.path(), vec![Choice::Fixed(Policy::LeastLoaded)], 1.0);
        let mut simulation = Simulation::new(&setup);
        for _ in 0..40 {
            simulation.observe(&record(0, "81.2.69.10", 1_000_000));
        }
        let bytes: Vec<u64> = simulation
            .sites
            .get(0)
            .unwrap()
            .iter()
            .map(|c| c.bytes)
            .collect();
        // Each site takes 8 MB before it is full (7.5 MB); the 16 requests after are refused.
        assert_eq!(bytes, [8_000_000, 8_000_000, 8_000_000]);
        assert_eq!(
            simulation.refused[0],
            Cell {
                requests: 16,
                bytes: 16_000_000
            }
        );
    }

    #[test]
    fn the_configured_policy_is_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let mut setup = setup(dir.path(), vec![Choice::Configured], 1000.0);
        setup
            .policies
            .channels
            .insert("cheap".into(), Policy::LeastCost);
        let mut simulation = Simulation::new(&setup);
        simulation.observe(&record(0, "81.2.69.10", 10));
        let mut cheap = record(0, "81.2.69.10", 1);
        cheap.target = "/live/cheap/master.m3u8";
        simulation.observe(&cheap);
        let bytes: Vec<u64> = simulation
            .sites
            .get(0)
            .unwrap()
            .iter()
            .map(|c| c.bytes)
            .collect();
        assert_eq!(bytes, [10, 1, 0]);
        let channel = |target: &str| channel_of(target).map(|channel| channel.to_string());
        assert_eq!(channel("/vod/a/0-10/master.m3u8").as_deref(), Some("a"));
        assert_eq!(
            channel("/live/b/v720/media.m3u8?_HLS_msn=3&cb=1").as_deref(),
            Some("b")
        );
        for other in [
            "/live?x=/live/b",
            "/index.html",
            "/vod/a/0-10/x",
            "//live/b/master.m3u8",
            "/live/%62/master.m3u8",
            "/play/b",
        ] {
            assert_eq!(channel(other), None, "{other}");
        }
    }

    #[test]
    fn parts_merge_into_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let setup = setup(dir.path(), vec![Choice::Fixed(Policy::Closest)], 1.0);
        let records: Vec<Record> = (0..300)
            .map(|i| {
                record(
                    i * 2,
                    if i % 2 == 0 {
                        "81.2.69.1"
                    } else {
                        "216.160.83.9"
                    },
                    1_000_000,
                )
            })
            .collect();
        let mut whole = Simulation::new(&setup);
        records.iter().for_each(|r| whole.observe(r));
        // Split at a bucket boundary (t = 300 s, record 150).
        let (mut first, mut second) = (Simulation::new(&setup), Simulation::new(&setup));
        records[..150].iter().for_each(|r| first.observe(r));
        records[150..].iter().for_each(|r| second.observe(r));
        first.merge(second).unwrap();
        for bucket in 0..10 {
            assert_eq!(
                first.sites.get(bucket),
                whole.sites.get(bucket),
                "bucket {bucket}"
            );
        }
        assert_eq!(first.overflows, whole.overflows);
        assert!(whole.overflows[0].requests > 0);
        assert_eq!(first.groups[1].by_site, whole.groups[1].by_site);
    }
}
