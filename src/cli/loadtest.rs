//! `estuary loadtest …`: simulate, gen-log, replay and viewers.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{parse_duration, runtime};

#[derive(Subcommand)]
pub(crate) enum LoadtestCommand {
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
pub(crate) struct ViewersArgs {
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
    /// Certificates (PEM) trusted for https:// URLs, e.g. a test deployment's own CA; by
    /// default the system's bundle (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
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
pub(crate) struct SimulateArgs {
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
pub(crate) struct GenLogArgs {
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

/// Runs a load-test command.
pub(crate) fn run(command: LoadtestCommand) -> anyhow::Result<()> {
    match command {
        LoadtestCommand::Simulate(args) => simulate(args),
        LoadtestCommand::GenLog(args) => gen_log(args),
        LoadtestCommand::Replay(args) => replay(args),
        LoadtestCommand::Viewers(args) => viewers(args),
    }
}

pub(crate) fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
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

pub(crate) fn gen_log(args: GenLogArgs) -> anyhow::Result<()> {
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

pub(crate) fn replay(args: ReplayArgs) -> anyhow::Result<()> {
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

/// What viewers trust for https://: the bundle named, else the system's when there is one.
fn trust(
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<estuary_loadtest::viewers::tls::Trust>> {
    use estuary_loadtest::viewers::tls;
    match ca_file {
        Some(path) => Ok(Some(tls::trust(path).context("--ca-file")?)),
        None => Ok(tls::trust(std::path::Path::new(tls::SYSTEM_BUNDLE)).ok()),
    }
}

pub(crate) fn viewers(args: ViewersArgs) -> anyhow::Result<()> {
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
        trust: trust(args.ca_file.as_deref())?,
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
