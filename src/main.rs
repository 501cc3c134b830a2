//! `estuary`: one binary, one subcommand per role. This file only reads the command line and
//! hands each role its configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod demo;
mod keycards;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use estuary_ingest::IngestRun;
use estuary_ingest::config::{ChannelSpec, ConfigFile};

#[derive(Parser)]
#[command(
    name = "estuary",
    version,
    about = "Live-streaming delivery: capture, package, serve, steer"
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Every role in one process on a test pattern; prints the player URLs.
    Demo(DemoArgs),
    /// Capture and encode live sources into UTC-locked CMAF tracks, to files or a packager.
    Ingest(Box<IngestArgs>),
    /// Receive CMAF tracks and serve them as LL-HLS, DASH and HLS-TS (the origin).
    Packager(PackagerArgs),
    /// Serve viewers: a pull-through cache with coalescing and bouncers before the packager.
    Edge(Box<EdgeArgs>),
    /// Send each viewer to the best edge by location, cost and load (302 redirects).
    Control(ControlArgs),
    /// Sign or check keycards (EdgeAuth 2.0 tokens).
    #[command(subcommand)]
    Keycard(keycards::KeycardCommand),
    /// Measure the system: simulate a request log through control's routing, or make one.
    #[command(subcommand)]
    Loadtest(LoadtestCommand),
}

#[derive(Subcommand)]
enum LoadtestCommand {
    /// Send every request of a log through control's routing and write bandwidth per site
    /// and per client group over time (summary, JSON, CSV, PNG and SVG plots).
    Simulate(SimulateArgs),
    /// Write a synthetic day of viewers' requests in the combined log format.
    GenLog(GenLogArgs),
    /// Send a log's requests to a live system at their logged times (scaled by --speed),
    /// whether or not earlier ones were answered, and report statuses and latencies.
    Replay(ReplayArgs),
    /// Run virtual players of a live stream and report their start-up time, stalls, live
    /// latency and bytes, as percentiles.
    Viewers(ViewersArgs),
}

#[derive(Args)]
struct ViewersArgs {
    /// The stream: a multivariant playlist (hls, llhls), an MPD (dash) or a continuous stream
    /// (continuous: stream.ts, stream.mp4, stream.aac), on an edge or on control (its redirect
    /// is followed, as players do).
    #[arg(long)]
    url: String,
    /// How many viewers.
    #[arg(long, default_value_t = 10)]
    count: usize,
    /// What they play: hls (whole segments), llhls (parts, blocking playlist reloads), dash, or
    /// continuous (one endless response read as it comes).
    #[arg(long, default_value = "llhls")]
    kind: estuary_loadtest::viewers::Kind,
    /// How long each viewer watches, e.g. 60s.
    #[arg(long, default_value = "30s")]
    duration: String,
    /// Start the viewers spread evenly over this long, e.g. 10s, rather than all at once.
    #[arg(long, default_value = "0s")]
    ramp: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayArgs {
    /// The request log: common, combined (Apache, nginx, Estuary's edge) or nginx JSON lines;
    /// gzip-compressed or not.
    #[arg(long)]
    log: PathBuf,
    /// The system to send the requests to, e.g. http://127.0.0.1:8090 (an edge, control or a
    /// packager).
    #[arg(long)]
    target: String,
    /// How many times faster than logged to send the requests (50 sends an hour of log in
    /// 72 s).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Move the log's paths onto the target's content, tried in order, first match wins:
    /// `FROM=TO` replaces the path prefix FROM with TO; `FROM=live:CHANNEL` sends a request
    /// for the channel's media playlist (logged answer under 16 KiB) or its newest segment
    /// (larger), as a viewer of it would now. E.g. `--map /=live:demo`.
    #[arg(long = "map")]
    maps: Vec<estuary_loadtest::replay::Map>,
    /// Stop sending after this long, e.g. 60s [default: at the end of the log].
    #[arg(long)]
    duration: Option<String>,
    /// The most requests waiting for an answer at once; a request past it is not sent and
    /// counts as a client-side failure, so that the arrivals stay the log's.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: usize,
    /// The log's format: common, combined, estuary or json [default: found from its first
    /// lines].
    #[arg(long)]
    format: Option<estuary_loadtest::log::Format>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct SimulateArgs {
    /// The request log: common, combined (Apache, nginx, Estuary's edge) or nginx JSON lines;
    /// gzip-compressed or not.
    #[arg(long)]
    log: PathBuf,
    /// Control's configuration (TOML), as `estuary control` reads it: sites, zones, GeoIP,
    /// policies.
    #[arg(long)]
    config: PathBuf,
    /// Policies to compare, comma-separated (closest, least_cost, least_loaded), each
    /// simulated over the whole log [default: the configuration's policies per channel].
    #[arg(long, value_delimiter = ',')]
    policy: Vec<estuary_control::config::Policy>,
    /// The length of a time bucket, e.g. 60s or 5m: rates, loads and the 95th percentile are
    /// taken per bucket.
    #[arg(long, default_value = "60s")]
    bucket: String,
    /// The folder to write summary.txt, summary.json, series.json, sites.csv, groups.csv and
    /// the plots (sites.png, sites.svg, groups.png, groups.svg) into; made if missing.
    #[arg(long)]
    out: PathBuf,
    /// The log's format: common, combined, estuary (the edge's access log, combined) or json
    /// [default: found from its first lines].
    #[arg(long)]
    format: Option<estuary_loadtest::log::Format>,
    /// How many threads read a plain (not compressed) log [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// The TrueType font for the plots' text.
    #[arg(long, default_value = estuary_loadtest::plot::DEFAULT_FONT)]
    font: PathBuf,
}

#[derive(Args)]
struct GenLogArgs {
    /// How many request lines to write.
    #[arg(long)]
    lines: u64,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// A MaxMind DB (city or country) whose IPv4 networks the clients come from [default: a
    /// built-in spread of public ranges].
    #[arg(long)]
    geoip: Option<PathBuf>,
    /// How many channels viewers watch (popularity follows a Zipf law).
    #[arg(long, default_value_t = 50)]
    channels: u32,
    /// The seed of the draws: the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The day the log covers (UTC).
    #[arg(long, default_value = "2026-11-21")]
    date: String,
}

#[derive(Args)]
struct ControlArgs {
    /// The configuration file (TOML): sites, coverage zones, GeoIP, keycards, policy.
    #[arg(long, env = "ESTUARY_CONTROL_CONFIG")]
    config: PathBuf,
    /// Address viewers and edges connect to [default: the file's `listen`, else
    /// 127.0.0.1:8070].
    #[arg(long, env = "ESTUARY_CONTROL_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address of the admin API and dashboard on their own (edges may report there too); the
    /// public address then serves only redirects, reports and health [default: the file's
    /// `admin_listen`, else none: everything on --listen].
    #[arg(long, env = "ESTUARY_CONTROL_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
}

#[derive(Args)]
struct EdgeArgs {
    /// Address viewers connect to.
    #[arg(long, env = "ESTUARY_EDGE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Base URL(s) of the packager or parent edges, comma-separated, tried in turn.
    #[arg(
        long,
        env = "ESTUARY_EDGE_UPSTREAM",
        value_delimiter = ',',
        required = true
    )]
    upstream: Vec<String>,
    /// Memory for cached bodies, e.g. 256MiB or 2GiB.
    #[arg(long, env = "ESTUARY_EDGE_CACHE_SIZE", default_value = "256MiB")]
    cache_size: String,
    /// Key file (lines of HEX or ID HEX): turns on the token bouncer (keycards) for /live
    /// and /vod.
    #[arg(long, env = "ESTUARY_EDGE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// File of revoked keycard ids (one a line, # comments), read again when it changes: a
    /// keycard whose id= is listed is refused, and its continuous-stream viewers disconnected.
    #[arg(long, env = "ESTUARY_EDGE_REVOKED")]
    revoked: Option<PathBuf>,
    /// GeoIP database (MaxMind DB, country.iso_code or country_code records): turns on the
    /// country bouncer with --allow-countries and/or --deny-countries.
    #[arg(long, env = "ESTUARY_EDGE_GEOIP")]
    geoip: Option<PathBuf>,
    /// Countries let in (ISO 3166-1 codes, comma-separated); all others are turned away.
    #[arg(long, env = "ESTUARY_EDGE_ALLOW_COUNTRIES", value_delimiter = ',')]
    allow_countries: Vec<String>,
    /// Countries turned away.
    #[arg(long, env = "ESTUARY_EDGE_DENY_COUNTRIES", value_delimiter = ',')]
    deny_countries: Vec<String>,
    /// What clients the GeoIP database does not place get: allow or deny.
    #[arg(long, env = "ESTUARY_EDGE_UNKNOWN_COUNTRY", default_value = "allow")]
    unknown_country: Admission,
    /// Client ranges let in (CIDR, comma-separated): turns on the network bouncer.
    #[arg(long, env = "ESTUARY_EDGE_ALLOW_NETWORKS", value_delimiter = ',')]
    allow_networks: Vec<String>,
    /// Client ranges turned away (checked before --allow-networks).
    #[arg(long, env = "ESTUARY_EDGE_DENY_NETWORKS", value_delimiter = ',')]
    deny_networks: Vec<String>,
    /// htpasswd file (bcrypt or SHA-256 crypt hashes): turns on the password bouncer (HTTP
    /// Basic).
    #[arg(long, env = "ESTUARY_EDGE_HTPASSWD")]
    htpasswd: Option<PathBuf>,
    /// Let viewers in only from this moment (Unix seconds or 2026-11-21T20:00:00Z).
    #[arg(long, env = "ESTUARY_EDGE_OPEN_AT")]
    open_at: Option<String>,
    /// Turn viewers away from this moment on.
    #[arg(long, env = "ESTUARY_EDGE_CLOSE_AT")]
    close_at: Option<String>,
    /// How the bouncers combine, e.g. 'all(token, country)' or 'any(token, password)'
    /// (names: token, country, network, window, password) [default: all of those configured].
    #[arg(long, env = "ESTUARY_EDGE_BOUNCERS")]
    bouncers: Option<String>,
    /// Proxies (CIDR, comma-separated) whose X-Forwarded-For names the client.
    #[arg(long, env = "ESTUARY_EDGE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<String>,
    /// Control's base URL: a report (clients, egress, cache hits, CPU, mood) goes to
    /// URL/api/v1/reports every second.
    #[arg(long, env = "ESTUARY_EDGE_CONTROL")]
    control: Option<String>,
    /// Report key file (lines of ID HEX or HEX, as control's [reports] key_file): the first
    /// key signs every report; without one, reports go unsigned and control refuses them.
    #[arg(long, env = "ESTUARY_EDGE_REPORT_KEY")]
    report_key: Option<PathBuf>,
    /// This edge's name in its reports [default: the host name and port].
    #[arg(long, env = "ESTUARY_EDGE_ID")]
    id: Option<String>,
    /// The site this edge is in, as control's configuration names it.
    #[arg(long, env = "ESTUARY_EDGE_SITE", default_value = "default")]
    site: String,
    /// Where viewers reach this edge, for control's redirects [default: http://LISTEN].
    #[arg(long, env = "ESTUARY_EDGE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key.
    #[arg(long, env = "ESTUARY_EDGE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "ESTUARY_EDGE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a certificate made up at start for localhost and the listen address
    /// (its fingerprint is logged).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// With HTTPS, do not serve HTTP/3 (QUIC on the same port number, UDP, advertised in
    /// Alt-Svc).
    #[arg(long, env = "ESTUARY_EDGE_NO_HTTP3")]
    no_http3: bool,
    /// Trusted proxies may start connections with a PROXY protocol header (v1 or v2).
    #[arg(long, env = "ESTUARY_EDGE_PROXY_PROTOCOL")]
    proxy_protocol: bool,
    /// Write a combined-format access log to FILE (- for standard output).
    #[arg(long, env = "ESTUARY_EDGE_ACCESS_LOG")]
    access_log: Option<PathBuf>,
    /// How long viewers share one fetch of a playlist the packager marks max-age=0.
    #[arg(long, env = "ESTUARY_EDGE_PLAYLIST_TTL", default_value = "100ms")]
    playlist_ttl: String,
    /// How old a playlist may be and still be served when every upstream fails.
    #[arg(long, env = "ESTUARY_EDGE_STALE_LIMIT", default_value = "60s")]
    stale_limit: String,
    /// What happens to a viewer of a continuous stream that falls behind: skip (moved on to
    /// the newest keyframe) or drop (disconnected).
    #[arg(long, env = "ESTUARY_EDGE_SLOW_CLIENTS", default_value = "skip")]
    slow_clients: estuary_edge::fanout::SlowPolicy,
    /// A continuous-stream viewer this far behind the newest chunk (media time) is slow.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG", default_value = "5s")]
    max_lag: String,
    /// A continuous-stream viewer whose reader takes nothing for this long is disconnected,
    /// whatever --slow-clients says.
    #[arg(long, env = "ESTUARY_EDGE_CLIENT_TIMEOUT", default_value = "30s")]
    client_timeout: String,
    /// A continuous-stream viewer this many bytes behind is slow, e.g. 8MiB.
    #[arg(long, env = "ESTUARY_EDGE_MAX_LAG_BYTES", default_value = "8MiB")]
    max_lag_bytes: String,
    /// Bytes of recent stream a new continuous-stream viewer gets at once, from a keyframe
    /// (0: start on the newest keyframe), e.g. 256KiB.
    #[arg(long, env = "ESTUARY_EDGE_BURST", default_value = "0")]
    burst: String,
    /// Viewers per continuous stream beyond which new ones are turned away [default: no limit].
    #[arg(long, env = "ESTUARY_EDGE_STREAM_VIEWERS")]
    stream_viewers: Option<usize>,
    /// Where viewers beyond --stream-viewers are redirected (a base URL: the same path there);
    /// without it they get 503.
    #[arg(long, env = "ESTUARY_EDGE_OVERFLOW", requires = "stream_viewers")]
    overflow: Option<String>,
    /// What writes continuous streams to plain HTTP/1 viewers: io_uring (threads that batch
    /// every viewer's send into one system call per wake-up, zero-copy for large sends where
    /// the kernel offers it), epoll (a tokio task per viewer), or auto (io_uring when the kernel
    /// offers it, else epoll). HTTPS, HTTP/2 and HTTP/3 viewers are relayed on tokio either way.
    #[arg(
        long,
        env = "ESTUARY_EDGE_FANOUT",
        default_value = "auto",
        value_name = "ENGINE"
    )]
    fanout: estuary_edge::fanout::EngineChoice,
    /// Threads of the io_uring engine [default: one per CPU the edge may run on].
    #[arg(
        long,
        env = "ESTUARY_EDGE_FANOUT_THREADS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    fanout_threads: Option<u16>,
    /// A mount with continuous-stream settings of its own, PREFIX:KEY=VALUE,..., e.g.
    /// '/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000'. Keys: slow-clients,
    /// max-lag, max-lag-bytes, client-timeout, burst, stream-viewers, overflow; the others
    /// keep the edge-wide values. A stream takes the first mount its path starts with.
    /// Repeatable.
    #[arg(long = "mount", value_name = "PREFIX:SETTINGS")]
    mounts: Vec<String>,
}

#[derive(Args)]
struct DemoArgs {
    /// Address viewers connect to (the edge; the packager gets a port of its own).
    #[arg(long, env = "ESTUARY_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Stop after this long, e.g. 5m [default: run until stopped].
    #[arg(long)]
    duration: Option<String>,
    /// Folder of the player page (player.html and node_modules/hls.js).
    #[arg(long, env = "ESTUARY_WEB", default_value = "web")]
    web: PathBuf,
    /// Keep every segment in DIR too, served as VOD at /vod/{channel}/{start}-{end}/.
    #[arg(long, env = "ESTUARY_DEMO_ARCHIVE")]
    archive: Option<PathBuf>,
    /// Make the edge ask for keycards (a key is made up for the run; the URLs printed carry
    /// a keycard).
    #[arg(long)]
    keycards: bool,
}

#[derive(Args)]
struct PackagerArgs {
    /// Address for ingest (/ingest/{channel}/{track}) and players (/live/...).
    #[arg(
        long,
        env = "ESTUARY_PACKAGER_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,
    /// Segment duration the ingests use; segment numbers are floor(utc / segment).
    #[arg(long, env = "ESTUARY_PACKAGER_SEGMENT", default_value = "2s")]
    segment: String,
    /// How much recent media each track keeps.
    #[arg(long, env = "ESTUARY_PACKAGER_WINDOW", default_value = "60s")]
    window: String,
    /// Hex key ingest keycards must be signed with; without it ingest is open, which the
    /// packager allows only on a loopback --listen address (or with --open-ingest).
    #[arg(long, env = "ESTUARY_KEYCARD_SECRET", hide_env_values = true)]
    keycard_secret: Option<String>,
    /// Key id of --keycard-secret (keycards naming another key are refused).
    #[arg(long, env = "ESTUARY_KEYCARD_KEY_ID")]
    keycard_key_id: Option<String>,
    /// Accept ingest without keycards on a --listen address that is not loopback: only for a
    /// network where everyone who can reach the port may publish channels.
    #[arg(long, env = "ESTUARY_PACKAGER_OPEN_INGEST")]
    open_ingest: bool,
    /// Token that /admin/metadata accepts (Authorization: Bearer TOKEN), at least 16
    /// characters; an ingest keycard for the channel is accepted too. Without either, /admin
    /// refuses every request.
    #[arg(long, env = "ESTUARY_PACKAGER_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The most tracks a channel may have; an ingest of one more is refused (503).
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_TRACKS", default_value_t = 16)]
    max_tracks: usize,
    /// The most channels the packager holds; an ingest of one more is refused (503).
    #[arg(long, env = "ESTUARY_PACKAGER_MAX_CHANNELS", default_value_t = 64)]
    max_channels: usize,
    /// A track that takes no header or new chunk for this long is retired (its streams end,
    /// its counters go); a channel goes with its last track.
    #[arg(long, env = "ESTUARY_PACKAGER_RETIRE_AFTER", default_value = "120s")]
    retire_after: String,
    /// A request head must be whole within this long of the connection opening (and, in
    /// HTTP/1.1, of the previous response): slow clients are cut off.
    #[arg(long, env = "ESTUARY_PACKAGER_HEADER_TIMEOUT", default_value = "10s")]
    header_timeout: String,
    /// An ingest body that brings nothing for this long is refused (408) and its connection
    /// closed; the ingest sends a chunk every part.
    #[arg(long, env = "ESTUARY_PACKAGER_INGEST_TIMEOUT", default_value = "10s")]
    ingest_timeout: String,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "ESTUARY_PACKAGER_IDLE_TIMEOUT", default_value = "60s")]
    idle_timeout: String,
    /// Folder of the player page served at / and /play/{channel}.
    #[arg(long, env = "ESTUARY_WEB", default_value = "web")]
    web: PathBuf,
    /// Keep every segment in DIR too, served as VOD at /vod/{channel}/{start}-{end}/
    /// (start and end in UTC seconds).
    #[arg(long, env = "ESTUARY_PACKAGER_ARCHIVE")]
    archive: Option<PathBuf>,
}

#[derive(Args)]
struct IngestArgs {
    /// TOML file with outputs and [[channel]] tables (see deploy/ingest.toml); flags below
    /// override its outputs.
    #[arg(long, env = "ESTUARY_INGEST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    channel: ChannelSpec,
    /// Write one file per track into DIR (v720.mp4, v360.mp4, a128.mp4).
    #[arg(long, env = "ESTUARY_INGEST_OUT")]
    out: Option<PathBuf>,
    /// Send each track as a chunked POST to URL/{channel}/{track}, e.g. http://127.0.0.1:8080/ingest.
    #[arg(long, env = "ESTUARY_INGEST_TO")]
    to: Option<String>,
    /// Hex key that signs the keycard sent with each POST.
    #[arg(long, env = "ESTUARY_KEYCARD_SECRET", hide_env_values = true)]
    keycard_secret: Option<String>,
    /// Key id written into the keycard (kid=), for key rotation.
    #[arg(long, env = "ESTUARY_KEYCARD_KEY_ID")]
    keycard_key_id: Option<String>,
    /// Serve /healthz and /metrics on this address, e.g. 127.0.0.1:9101.
    #[arg(long, env = "ESTUARY_INGEST_ADMIN")]
    admin: Option<SocketAddr>,
    /// Stop after this long, e.g. 12s or 5m (the last fragment is finished first).
    #[arg(long)]
    duration: Option<String>,
    /// Print which sources, devices and encoders this machine has, then exit.
    #[arg(long)]
    probe: bool,
    /// Print each channel's pipeline as a gst-launch-1.0 line, then exit.
    #[arg(long)]
    print_pipeline: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESTUARY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files and pipes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.role {
        Role::Demo(args) => demo(args),
        Role::Ingest(args) => ingest(*args),
        Role::Packager(args) => packager(args),
        Role::Edge(args) => edge(*args),
        Role::Control(args) => control(args),
        Role::Keycard(command) => match keycards::run(command) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(error) => Err(error),
        },
        Role::Loadtest(LoadtestCommand::Simulate(args)) => simulate(args),
        Role::Loadtest(LoadtestCommand::GenLog(args)) => gen_log(args),
        Role::Loadtest(LoadtestCommand::Replay(args)) => replay(args),
        Role::Loadtest(LoadtestCommand::Viewers(args)) => viewers(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if args.probe {
        return print_out(&estuary_ingest::probe_report()?);
    }
    let (mut outputs, specs) = match &args.config {
        Some(path) => {
            if args.channel.has_any_field() {
                bail!(
                    "channel flags (--source, --renditions, …) go into the [[channel]] tables of {} \
                     when --config is given",
                    path.display()
                );
            }
            let file = ConfigFile::load(path)?;
            if file.channels.is_empty() {
                bail!("{} has no [[channel]] table", path.display());
            }
            (file.outputs, file.channels)
        }
        None => (Default::default(), vec![args.channel.clone()]),
    };
    let channels = specs
        .iter()
        .map(ChannelSpec::validate)
        .collect::<Result<Vec<_>, _>>()?;
    if args.print_pipeline {
        let mut text = String::from(
            "# cmafmux is built into estuary (gst-plugin-fmp4); gst-launch-1.0 finds it only where\n\
             # that plugin is installed (libgstfmp4.so in GST_PLUGIN_PATH).\n",
        );
        for (name, launch) in estuary_ingest::describe(&channels)? {
            text.push_str(&format!("# channel {name}\ngst-launch-1.0 -e {launch}\n"));
        }
        return print_out(&text);
    }
    outputs.out = args.out.or(outputs.out);
    outputs.to = args.to.or(outputs.to);
    outputs.keycard_secret = args.keycard_secret.or(outputs.keycard_secret);
    outputs.keycard_key_id = args.keycard_key_id.or(outputs.keycard_key_id);
    outputs.admin = args.admin.or(outputs.admin);
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    let run = IngestRun {
        channels,
        outputs,
        duration,
    };
    runtime()?.block_on(async { estuary_ingest::run(run, shutdown_signal()).await })?;
    Ok(())
}

fn parse_duration(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    estuary_proto::duration::parse_duration(text).with_context(|| flag.to_owned())
}

fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let bucket = parse_duration("--bucket", &args.bucket)?;
    if bucket.as_secs() == 0 || bucket.subsec_nanos() != 0 {
        bail!("--bucket must be a whole number of seconds, at least 1 s");
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let options = estuary_loadtest::simulate::Options {
        log: args.log,
        config: args.config,
        policies: args.policy,
        bucket: bucket.as_secs() as i64,
        out: args.out,
        format: args.format,
        threads,
        font: args.font,
    };
    let report = estuary_loadtest::simulate::run(&options)?;
    print!("{}", report.text());
    println!("written to {}", options.out.display());
    Ok(())
}

fn gen_log(args: GenLogArgs) -> anyhow::Result<()> {
    let day = estuary_loadtest::generate::parse_day(&args.date)
        .map_err(anyhow::Error::msg)
        .context("--date")?;
    let options = estuary_loadtest::generate::Options {
        lines: args.lines,
        out: args.out,
        geoip: args.geoip,
        channels: args.channels,
        seed: args.seed,
        day,
    };
    let bytes = estuary_loadtest::generate::generate(&options)?;
    println!(
        "{} lines, {bytes} body bytes, written to {}",
        options.lines,
        options.out.display()
    );
    Ok(())
}

fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    let options = estuary_loadtest::replay::Options {
        log: args.log,
        format: args.format,
        target: args.target,
        speed: args.speed,
        maps: args.maps,
        duration,
        max_in_flight: args.max_in_flight.max(1),
    };
    let spinner = estuary_loadtest::progress::spinner("replaying");
    let report = runtime()?.block_on(estuary_loadtest::replay::run(&options, |sent, logged| {
        spinner.set_message(format!(
            "replaying: {sent} requests sent, log at +{logged} s"
        ));
        spinner.tick();
    }))?;
    spinner.finish_and_clear();
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn viewers(args: ViewersArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    // A socket per viewer (and a few for a player's requests), as many as the system allows.
    let files = estuary_http::sealed::raise_file_limit();
    if args.count as u64 + 64 > files {
        bail!(
            "--count {} needs more open files than this process may have ({files}): raise the hard limit (ulimit -Hn) first",
            args.count
        );
    }
    let options = estuary_loadtest::viewers::Options {
        url: args.url,
        kind: args.kind,
        count: args.count,
        duration: parse_duration("--duration", &args.duration)?,
        ramp: parse_duration("--ramp", &args.ramp)?,
    };
    let bar = estuary_loadtest::progress::counter(options.count as u64, "viewers done");
    let report = runtime()?.block_on(estuary_loadtest::viewers::run(&options, {
        let bar = bar.clone();
        move |done| bar.set_position(done as u64)
    }));
    bar.finish_and_clear();
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.started == 0 {
        bail!("no viewer started playing");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let duration = args
        .duration
        .as_deref()
        .map(|d| parse_duration("--duration", d))
        .transpose()?;
    let config = demo::DemoConfig {
        listen: args.listen,
        duration,
        web: args.web,
        archive: args.archive,
        keycards: args.keycards,
    };
    runtime()?.block_on(async { demo::run(config, shutdown_signal()).await })
}

fn packager(args: PackagerArgs) -> anyhow::Result<()> {
    let window = estuary_packager::window::WindowConfig {
        segment: parse_duration("--segment", &args.segment)?,
        window: parse_duration("--window", &args.window)?,
        max_tracks: args.max_tracks,
        max_channels: args.max_channels,
        retire_after: parse_duration("--retire-after", &args.retire_after)?,
    };
    if window.segment.is_zero() || window.window < window.segment {
        bail!(
            "--window ({:?}) must hold at least one --segment ({:?})",
            window.window,
            window.segment
        );
    }
    if window.max_tracks == 0 || window.max_channels == 0 {
        bail!("--max-tracks and --max-channels must be at least 1");
    }
    if window.retire_after < window.segment {
        bail!(
            "--retire-after ({:?}) must be at least one --segment ({:?})",
            window.retire_after,
            window.segment
        );
    }
    let keys = match &args.keycard_secret {
        Some(secret) => vec![
            estuary_proto::KeycardKey::from_hex(args.keycard_key_id.as_deref(), secret)
                .context("--keycard-secret")?,
        ],
        None => Vec::new(),
    };
    let admin_token = args
        .admin_token
        .as_deref()
        .map(estuary_packager::admin::AdminToken::new)
        .transpose()
        .map_err(anyhow::Error::msg)
        .context("--admin-token")?;
    let timeouts = estuary_packager::Timeouts {
        header: parse_duration("--header-timeout", &args.header_timeout)?,
        ingest: parse_duration("--ingest-timeout", &args.ingest_timeout)?,
        idle: parse_duration("--idle-timeout", &args.idle_timeout)?,
    };
    if timeouts.header.is_zero() || timeouts.ingest.is_zero() || timeouts.idle.is_zero() {
        bail!("--header-timeout, --ingest-timeout and --idle-timeout must be longer than zero");
    }
    let config = estuary_packager::PackagerConfig {
        listen: args.listen,
        window,
        keys,
        open_ingest: args.open_ingest,
        admin_token,
        timeouts,
        web: Some(args.web),
        archive: args.archive,
    };
    runtime()?
        .block_on(async { estuary_packager::server::run(config, shutdown_signal()).await })?;
    Ok(())
}

fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let mut config = estuary_edge::EdgeConfig::new(args.listen, args.upstream.clone());
    config.cache_bytes = parse_size("--cache-size", &args.cache_size)?;
    config.playlist_floor = parse_duration("--playlist-ttl", &args.playlist_ttl)?;
    config.stale_limit = parse_duration("--stale-limit", &args.stale_limit)?;
    let policy = estuary_edge::fanout::MountPolicy {
        slow: args.slow_clients,
        max_lag: parse_duration("--max-lag", &args.max_lag)?,
        client_timeout: parse_duration("--client-timeout", &args.client_timeout)?,
        max_lag_bytes: parse_size("--max-lag-bytes", &args.max_lag_bytes)?,
        burst_bytes: parse_size("--burst", &args.burst)?,
        max_viewers: args.stream_viewers,
        overflow: args.overflow.clone(),
    };
    let mounts = args
        .mounts
        .iter()
        .map(|mount| parse_mount(mount, &policy))
        .collect::<anyhow::Result<_>>()?;
    config.fanout = estuary_edge::fanout::FanoutConfig {
        policy,
        mounts,
        engine: args.fanout,
        engine_threads: args.fanout_threads.map(usize::from),
        ..estuary_edge::fanout::FanoutConfig::default()
    };
    config.access_log = args.access_log.clone();
    config.revoked = args.revoked.clone();
    config.trusted_proxies = cidrs("--trusted-proxies", &args.trusted_proxies)?;
    config.proxy_protocol = args.proxy_protocol;
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => Some(estuary_edge::listen::tls::TlsSource::Files {
            certificate: certificate.clone(),
            key: key.clone(),
        }),
        _ if args.tls_self_signed => {
            let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
                .into_iter()
                .map(str::to_owned)
                .collect();
            let listen = args.listen.ip().to_string();
            if !names.contains(&listen) && !args.listen.ip().is_unspecified() {
                names.push(listen);
            }
            Some(estuary_edge::listen::tls::TlsSource::SelfSigned { names })
        }
        _ => None,
    };
    config.http3 = !args.no_http3;
    if config.proxy_protocol && config.trusted_proxies.is_empty() {
        bail!("--proxy-protocol needs --trusted-proxies (whose headers to believe)");
    }
    config.bouncer = edge_bouncer(&args)?;
    if let Some(control) = &args.control {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "edge".into());
        let key = match &args.report_key {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--report-key {}", path.display()))?;
                let keys = estuary_proto::keycard::parse_key_file(&text)
                    .map_err(|error| anyhow::anyhow!("--report-key {}: {error}", path.display()))?;
                keys.into_iter().next()
            }
            None => {
                tracing::warn!("no --report-key: reports go unsigned, and control refuses them");
                None
            }
        };
        let identity = estuary_edge::report::Identity {
            id: args
                .id
                .clone()
                .unwrap_or_else(|| format!("{host}:{}", args.listen.port())),
            site: args.site.clone(),
            url: args.public_url.clone().unwrap_or_else(|| {
                let scheme = if config.tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}", args.listen)
            }),
            key,
        };
        // Control would refuse every report of an identity out of bounds: say so now.
        estuary_proto::report::check_name(&identity.id)
            .map_err(|error| anyhow::anyhow!("--id: {error}"))?;
        estuary_proto::report::check_url(&identity.url)
            .map_err(|error| anyhow::anyhow!("--public-url {:?} {error}", identity.url))?;
        config.control = Some((control.clone(), identity));
    }
    runtime()?.block_on(async { estuary_edge::run(config, shutdown_signal()).await })?;
    Ok(())
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Admission {
    Allow,
    Deny,
}

fn cidrs(flag: &str, list: &[String]) -> anyhow::Result<Vec<estuary_edge::net::Cidr>> {
    list.iter()
        .map(|text| {
            text.parse()
                .map_err(|reason| anyhow::anyhow!("{flag}: {reason}"))
        })
        .collect()
}

/// The bouncers the flags configure, combined by --bouncers (all of them by default).
fn edge_bouncer(args: &EdgeArgs) -> anyhow::Result<Option<estuary_edge::bouncer::Bouncer>> {
    use estuary_edge::bouncer::{Bouncer, CountryRule, compose};
    let mut named = std::collections::BTreeMap::new();
    if let Some(path) = &args.key_file {
        named.insert("token", Bouncer::Token(keycards::read_key_file(path)?));
    }
    let countries = !args.allow_countries.is_empty() || !args.deny_countries.is_empty();
    match (&args.geoip, countries) {
        (Some(path), true) => {
            let database = estuary_edge::geo::CountryDatabase::open(path)
                .map_err(|reason| anyhow::anyhow!("--geoip: {reason}"))?;
            named.insert(
                "country",
                Bouncer::Country(CountryRule {
                    database: std::sync::Arc::new(database),
                    allow: args.allow_countries.clone(),
                    deny: args.deny_countries.clone(),
                    unknown_allowed: matches!(args.unknown_country, Admission::Allow),
                }),
            );
        }
        (Some(_), false) => bail!("--geoip needs --allow-countries or --deny-countries"),
        (None, true) => bail!("--allow-countries and --deny-countries need --geoip"),
        (None, false) => {}
    }
    if !args.allow_networks.is_empty() || !args.deny_networks.is_empty() {
        named.insert(
            "network",
            Bouncer::Network {
                allow: cidrs("--allow-networks", &args.allow_networks)?,
                deny: cidrs("--deny-networks", &args.deny_networks)?,
            },
        );
    }
    if let Some(path) = &args.htpasswd {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the htpasswd file {}", path.display()))?;
        let users = estuary_edge::htpasswd::Htpasswd::parse(&text)
            .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))?;
        named.insert("password", Bouncer::Password(std::sync::Arc::new(users)));
    }
    if args.open_at.is_some() || args.close_at.is_some() {
        let moment = |flag: &str, text: &Option<String>| {
            text.as_deref()
                .map(estuary_proto::utc::parse_moment)
                .transpose()
                .map_err(|reason| anyhow::anyhow!("{flag}: {reason}"))
        };
        named.insert(
            "window",
            Bouncer::Window {
                from: moment("--open-at", &args.open_at)?,
                until: moment("--close-at", &args.close_at)?,
            },
        );
    }
    let rule = match &args.bouncers {
        Some(rule) => rule.clone(),
        None if named.is_empty() => return Ok(None),
        None => format!(
            "all({})",
            named.keys().copied().collect::<Vec<_>>().join(",")
        ),
    };
    Ok(Some(compose(&rule, &named).map_err(|reason| {
        anyhow::anyhow!("--bouncers: {reason}")
    })?))
}

/// `256MiB`, `2GiB`, `500MB`, `1000000`: a number of bytes.
/// `--mount PREFIX:KEY=VALUE,...`: the edge-wide `policy` with the settings given changed.
fn parse_mount(
    text: &str,
    policy: &estuary_edge::fanout::MountPolicy,
) -> anyhow::Result<(String, estuary_edge::fanout::MountPolicy)> {
    let (prefix, settings) = text
        .split_once(':')
        .filter(|(prefix, _)| prefix.starts_with('/'))
        .with_context(|| format!("--mount {text:?}: expected PREFIX:KEY=VALUE,..., with PREFIX a path such as /live/radio/"))?;
    let mut policy = policy.clone();
    for setting in settings.split(',').filter(|s| !s.is_empty()) {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--mount {text:?}: {setting:?} is not KEY=VALUE"))?;
        let flag = format!("--mount {prefix} {key}");
        match key {
            "slow-clients" => {
                policy.slow = value
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{flag}: {e}"))?
            }
            "max-lag" => policy.max_lag = parse_duration(&flag, value)?,
            "max-lag-bytes" => policy.max_lag_bytes = parse_size(&flag, value)?,
            "client-timeout" => policy.client_timeout = parse_duration(&flag, value)?,
            "burst" => policy.burst_bytes = parse_size(&flag, value)?,
            "stream-viewers" => {
                policy.max_viewers = Some(
                    value
                        .parse()
                        .with_context(|| format!("{flag}: {value:?} is not a number"))?,
                )
            }
            "overflow" => policy.overflow = Some(value.to_owned()),
            _ => bail!(
                "--mount {text:?}: unknown setting {key:?} (slow-clients, max-lag, max-lag-bytes, client-timeout, burst, stream-viewers, overflow)"
            ),
        }
    }
    Ok((prefix.to_owned(), policy))
}

fn parse_size(flag: &str, text: &str) -> anyhow::Result<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .with_context(|| format!("{flag}: {text:?} does not start with a number"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => bail!("{flag}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB or GiB)"),
    };
    number
        .checked_mul(scale)
        .with_context(|| format!("{flag}: {text} is too large"))
}

/// Writes a report to stdout; a reader that stopped early (`| head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

/// Ctrl-C or SIGTERM.
fn control(args: ControlArgs) -> anyhow::Result<()> {
    let config = estuary_control::Config::load(&args.config).map_err(anyhow::Error::msg)?;
    let listen = match (args.listen, &config.listen) {
        (Some(listen), _) => listen,
        (None, Some(text)) => text.parse().with_context(|| {
            format!(
                "{}: listen = {text:?} is not an address",
                args.config.display()
            )
        })?,
        (None, None) => "127.0.0.1:8070".parse()?,
    };
    let admin_listen = match (args.admin_listen, &config.admin_listen) {
        (Some(listen), _) => Some(listen),
        (None, Some(text)) => Some(text.parse().with_context(|| {
            format!(
                "{}: admin_listen = {text:?} is not an address",
                args.config.display()
            )
        })?),
        (None, None) => None,
    };
    let control = estuary_control::Control::new(&config).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let listener = estuary_http::listen(listen)
            .with_context(|| format!("cannot listen on {listen}"))?;
        let admin = match admin_listen {
            Some(address) => {
                let admin = estuary_http::listen(address)
                    .with_context(|| format!("cannot listen on {address} (admin)"))?;
                tracing::info!(address = %admin.local_addr()?, "control's admin API listening");
                Some(admin)
            }
            None => None,
        };
        tracing::info!(address = %listener.local_addr()?, sites = config.sites.len(), "control listening");
        estuary_control::server::serve(listener, admin, control, shutdown).await?;
        anyhow::Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a role binds its port before it waits for the signal, and a signal
/// in between would otherwise kill the process instead of stopping it. Call it inside the
/// runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};
    async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
    let interrupt = received(signal(SignalKind::interrupt()).ok());
    let terminate = received(signal(SignalKind::terminate()).ok());
    async move {
        tokio::select! {
            () = interrupt => {}
            () = terminate => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_change_the_settings_they_name_and_keep_the_rest() {
        let policy = estuary_edge::fanout::MountPolicy::default();
        let (prefix, radio) = parse_mount(
            "/live/radio/:slow-clients=drop,max-lag=10s,stream-viewers=5000",
            &policy,
        )
        .unwrap();
        assert_eq!(prefix, "/live/radio/");
        assert_eq!(radio.slow, estuary_edge::fanout::SlowPolicy::Drop);
        assert_eq!(radio.max_lag, std::time::Duration::from_secs(10));
        assert_eq!(radio.max_viewers, Some(5000));
        assert_eq!(radio.client_timeout, policy.client_timeout);
        for (bad, says) in [
            ("radio:max-lag=1s", "expected PREFIX:KEY=VALUE"),
            ("/live/:max-lag", "is not KEY=VALUE"),
            ("/live/:speed=2", "unknown setting \"speed\""),
            ("/live/:slow-clients=maybe", "neither skip nor drop"),
        ] {
            let error = parse_mount(bad, &policy).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
