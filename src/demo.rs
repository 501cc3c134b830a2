//! `estuary demo`: every role that exists, in one process, on a test pattern. The ingest sends
//! its CMAF over loopback HTTP to the packager, exactly as separate processes would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use estuary_ingest::IngestRun;
use estuary_ingest::config::{ChannelSpec, OutputSpec};
use estuary_packager::PackagerConfig;
use estuary_packager::server::{self, Shared};

pub struct DemoConfig {
    pub listen: SocketAddr,
    pub duration: Option<Duration>,
    pub web: PathBuf,
    pub archive: Option<PathBuf>,
}

pub async fn run(
    config: DemoConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let packager = PackagerConfig {
        listen: config.listen,
        window: Default::default(),
        keys: Vec::new(),
        web: Some(config.web),
        archive: config.archive,
    };
    let listener = server::bind(&packager).await?;
    let address = listener.local_addr().context("reading the bound address")?;
    tokio::spawn(server::serve(listener, Shared::new(&packager)?));

    let channel = ChannelSpec {
        text: Some("Estuary demo".into()),
        ..Default::default()
    }
    .validate()?;
    let base = format!("http://{address}");
    println!(
        "Estuary demo: a test channel (720p and 360p H.264, AAC) through ingest and packager."
    );
    println!("  player:  {base}/play/demo");
    println!("  LL-HLS:  {base}/live/demo/master.m3u8");
    println!("  DASH:    {base}/live/demo/manifest.mpd");
    println!("  HLS-TS:  {base}/live/demo/ts/master.m3u8");
    println!("  watch:   ffplay {base}/live/demo/master.m3u8");
    println!("  health:  {base}/healthz   metrics: {base}/metrics");
    println!("The first segment is ready about 3 s after start. Ctrl-C stops.");
    let run = IngestRun {
        channels: vec![channel],
        outputs: OutputSpec {
            to: Some(format!("{base}/ingest")),
            ..Default::default()
        },
        duration: config.duration,
    };
    estuary_ingest::run(run, shutdown).await?;
    Ok(())
}
