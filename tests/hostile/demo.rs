//! The demo every case attacks: `estuary demo --keycards` on an ephemeral port, with the URLs
//! it prints (the edge's, the packager's origin, control's, and the keycard it signed).

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Running, estuary, free_port, wait_until_served};

pub struct Demo {
    /// `http://127.0.0.1:PORT` of the edge.
    pub edge: String,
    /// `http://127.0.0.1:PORT` of the packager, which the demo keeps on loopback.
    pub origin: String,
    /// `http://127.0.0.1:PORT` of control.
    pub control: String,
    /// The keycard the demo's URLs carry (`/live/demo/*`, 24 h).
    pub keycard: String,
    _process: Running,
}

impl Demo {
    /// Starts the demo and waits until the channel plays through the edge.
    pub fn start() -> Demo {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = estuary()
            .args(["demo", "--keycards", "--listen", &listen])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting estuary demo");
        let stdout = child.stdout.take().expect("piped");
        let process = Running(child);
        let (mut keycard, mut origin, mut control) = (None, None, None);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("reading the demo's output");
            let after = |marker: &str| {
                line.split_once(marker)
                    .map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
            };
            if let Some(url) = after("LL-HLS:") {
                keycard = url.split_once("keycard=").map(|(_, card)| card.to_owned());
            }
            if let Some(url) = after("origin: ") {
                origin = Some(url);
            }
            if let Some(url) = after("control: ") {
                control = url.split("/live/").next().map(str::to_owned);
            }
            if line.starts_with("The first segment") {
                break;
            }
        }
        let demo = Demo {
            edge: format!("http://{listen}"),
            origin: origin.expect("the demo prints its origin"),
            control: control.expect("the demo prints control's URL"),
            keycard: keycard.expect("the demo prints a signed URL"),
            _process: process,
        };
        wait_until_served(
            &format!(
                "{}/live/demo/master.m3u8?keycard={}",
                demo.edge, demo.keycard
            ),
            Duration::from_secs(30),
        );
        demo
    }

    /// The demo's process id (every role runs in it).
    pub fn pid(&self) -> u32 {
        self._process.0.id()
    }

    /// `127.0.0.1:PORT` of the edge.
    pub fn edge_address(&self) -> &str {
        self.edge.trim_start_matches("http://")
    }

    /// The edge's URL of `path` with the demo's keycard.
    pub fn signed(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{separator}keycard={}", self.edge, self.keycard)
    }
}
