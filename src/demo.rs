//! `estuary demo`: every role that exists, in one process, on a test pattern. The ingest sends
//! its CMAF over loopback HTTP to the packager, viewers reach the packager through an edge, and
//! the edge reports to a control with one site, which redirects viewers to it, exactly as
//! separate processes would: its reports signed with a report key made up for the run, and the
//! dashboard behind an admin token made up too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use estuary_edge::EdgeConfig;
use estuary_edge::bouncer::Bouncer;
use estuary_ingest::IngestRun;
use estuary_ingest::config::{ChannelSpec, OutputSpec};
use estuary_packager::Settings;
use estuary_packager::service::Service;
use estuary_proto::keycard::{self, KeycardKey, KeycardRequest};

/// How long the demo's printed keycard works.
const KEYCARD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub struct DemoConfig {
    /// Where viewers connect: the edge.
    pub listen: SocketAddr,
    pub duration: Option<Duration>,
    pub web: PathBuf,
    pub archive: Option<PathBuf>,
    /// Turn on the edge's token bouncer, with a key made up for this run.
    pub keycards: bool,
}

pub async fn run(
    config: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // On loopback, where open ingest is allowed: only the demo's own ingest reaches it.
    let packager = Settings {
        web: Some(config.web),
        archive: config.archive,
        ..Settings::new(SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let listener = estuary_packager::run::bind(&packager).await?;
    let origin = listener.local_addr().context("reading the bound address")?;
    tokio::spawn(estuary_packager::run::serve(
        listener,
        Service::new(&packager)?,
        estuary_http::listen::Connections::new(),
        std::future::pending(),
    ));
    let origin = format!("http://{origin}");

    let mut edge = EdgeConfig::new(config.listen, vec![origin.clone()]);
    let mut keycard = None;
    let mut keys = Vec::new();
    if config.keycards {
        let (key, _) = KeycardKey::generate(Some("demo"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        keycard = Some(keycard::sign(
            &KeycardRequest {
                expires: now + KEYCARD_LIFETIME.as_secs(),
                acl: "/live/demo/*".into(),
                ..KeycardRequest::default()
            },
            &key,
        ));
        keys.push(key.clone());
        edge.bouncer = Some(Bouncer::Token(vec![key]));
    }
    let edge_listener = estuary_edge::listen::bind(&edge).await?;
    let address = edge_listener
        .local_addr()
        .context("reading the bound address")?;
    let base = format!("http://{address}");

    // Control, with one site: the edge reports to it (signed with a report key made up for the
    // run, as only that edge may), and it sends viewers there; it asks the packager which
    // channels exist. Its admin token is made up too, and printed in the dashboard's URL.
    let (report_key, _) = KeycardKey::generate(Some("demo"));
    let (_, admin_token) = KeycardKey::generate(None);
    let control_config = estuary_control::Config::parse(&format!(
        "origins = [\"{origin}\"]\nadmin_token = \"{admin_token}\"\n\n\
         [reports]\npinned_only = true\n\n\
         [[edges]]\nid = \"demo-edge\"\nsite = \"local\"\nurl = \"{base}\"\nkey_id = \"demo\"\n\n\
         [[sites]]\nname = \"local\"\nlatitude = 0\nlongitude = 0\ncost_per_gb = 0\ncapacity_mbps = 10000\n",
    ))
    .map_err(anyhow::Error::msg)?;
    let control = estuary_control::Control::with_keys(
        &control_config,
        estuary_control::Keys {
            keycards: keys,
            keycard_lifetime: KEYCARD_LIFETIME,
            reports: vec![report_key.clone()],
        },
    )
    .map_err(anyhow::Error::msg)?;
    let control_listener = estuary_http::listen(SocketAddr::from(([127, 0, 0, 1], 0)))
        .context("binding control's listener")?;
    let control_url = format!(
        "http://{}",
        control_listener
            .local_addr()
            .context("reading the bound address")?
    );
    tokio::spawn(estuary_control::server::serve(
        control_listener,
        None,
        control,
        std::future::pending(),
    ));
    let edge = estuary_edge::Edge::new(edge)?;
    tokio::spawn(estuary_edge::report::run(
        edge.clone(),
        control_url.clone(),
        estuary_edge::report::Identity {
            id: "demo-edge".into(),
            site: "local".into(),
            url: base.clone(),
            key: Some(report_key),
        },
    ));
    tokio::spawn(estuary_edge::listen::serve(
        edge_listener,
        edge,
        estuary_http::listen::Connections::new(),
        std::future::pending(),
    ));

    let channel = ChannelSpec {
        text: Some("Estuary demo".into()),
        // An MP3 track too, for radio players of stream.mp3.
        audio: Some("aac,mp3".parse().map_err(anyhow::Error::msg)?),
        ..Default::default()
    }
    .validate()?;
    let signed = |url: String| match &keycard {
        Some(card) => format!("{url}?keycard={card}"),
        None => url,
    };
    println!(
        "Estuary demo: a test channel (720p and 360p H.264, AAC, and MP3 for radio) through ingest, packager, edge and control."
    );
    println!("  player:  {}", signed(format!("{base}/play/demo")));
    println!(
        "  LL-HLS:  {}",
        signed(format!("{base}/live/demo/master.m3u8"))
    );
    println!(
        "  DASH:    {}",
        signed(format!("{base}/live/demo/manifest.mpd"))
    );
    println!(
        "  HLS-TS:  {}",
        signed(format!("{base}/live/demo/ts/master.m3u8"))
    );
    println!(
        "  stream:  {} (also stream.mp4, stream.aac, stream.mp3: one endless response)",
        signed(format!("{base}/live/demo/stream.ts"))
    );
    if keycard.is_some() {
        println!("  (the edge wants a keycard for /live/demo/*: these URLs carry one for 24 h)");
    }
    println!(
        "  control: {control_url}/live/demo/master.m3u8 (redirects to the edge{}; why: {control_url}/api/v1/route?ip=127.0.0.1&path=/live/demo/master.m3u8)",
        if keycard.is_some() {
            ", with a fresh keycard"
        } else {
            ""
        }
    );
    println!(
        "  dashboard: {control_url}/dashboard#token={admin_token} (control's, with its admin token)"
    );
    println!("  health:  {base}/healthz   metrics: {base}/metrics   origin: {origin}");
    println!("The first segment is ready about 3 s after start. Ctrl-C stops.");
    let run = IngestRun {
        channels: vec![channel],
        outputs: OutputSpec {
            to: Some(format!("{origin}/ingest")),
            ..Default::default()
        },
        duration: config.duration,
    };
    estuary_ingest::run(run, shutdown).await?;
    Ok(())
}
