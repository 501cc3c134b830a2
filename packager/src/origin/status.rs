//! `/healthz` and `/metrics`: the packager's moods and counters. Per-track counters live with
//! their track in the window and go when it is retired; refused ingests are counted by reason
//! alone, so nothing a refused request named ever becomes a label.

use std::fmt::Write as _;

use estuary_http::problem::json_string;
use estuary_http::{Body, respond};
use estuary_packager_core::window::TrackCounters;
use estuary_proto::Mood;
use estuary_proto::url::StreamFormat;
use hyper::{Response, StatusCode};

use crate::service::Service;
use crate::tally::Refusal;

pub fn healthz(service: &Service) -> Response<Body> {
    let moods = service.state.moods();
    let overall = if moods.iter().any(|(_, mood)| *mood == Mood::Happy) {
        "happy"
    } else {
        "hungry"
    };
    let mut text = format!("{{\"role\":\"packager\",\"mood\":\"{overall}\",\"channels\":[");
    for (index, (channel, mood)) in moods.iter().enumerate() {
        let separator = if index > 0 { "," } else { "" };
        let _ = write!(
            text,
            "{separator}{{\"channel\":\"{channel}\",\"mood\":\"{mood}\"}}"
        );
    }
    let (applied, refused, because) = service.reload_record();
    let _ = write!(
        text,
        "],\"reloads\":{{\"applied\":{applied},\"refused\":{refused}}}"
    );
    if let Some(because) = because {
        // A refused reload leaves the packager working as it was: the mood stands.
        text.push_str(",\"reload_refused\":");
        json_string(
            &mut text,
            &format!("the last reload changed nothing: {because}"),
        );
    }
    text.push_str("}\n");
    respond(StatusCode::OK, "application/json", Body::text(text))
}

pub fn metrics(service: &Service) -> Response<Body> {
    let mut text = String::new();
    type Family = (&'static str, &'static str, fn(&TrackCounters) -> u64);
    let families: [Family; 4] = [
        (
            "estuary_packager_parts_total",
            "Parts taken into the window.",
            |c| c.parts,
        ),
        (
            "estuary_packager_duplicate_chunks_total",
            "Chunks dropped as copies of parts already held (redundant ingest).",
            |c| c.duplicates,
        ),
        (
            "estuary_packager_gaps_total",
            "Times segments were missing from a track.",
            |c| c.gaps,
        ),
        (
            "estuary_packager_timeline_resets_total",
            "Times a track went back further than its window holds and began a new timeline.",
            |c| c.timeline_resets,
        ),
    ];
    let tracks: Vec<(String, TrackCounters)> = service.state.read(|window| {
        window
            .all_tracks()
            .map(|(channel, track, window)| {
                (
                    format!("channel=\"{channel}\",track=\"{track}\""),
                    window.counters(),
                )
            })
            .collect()
    });
    for (name, help, value) in families {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, counters) in &tracks {
            let _ = writeln!(text, "{name}{{{labels}}} {}", value(counters));
        }
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_tracks Tracks held now.\n# TYPE estuary_packager_tracks gauge\nestuary_packager_tracks {}",
        tracks.len()
    );
    let _ = writeln!(
        text,
        "# HELP estuary_packager_ingest_refused_total Ingest requests refused, by reason.\n# TYPE estuary_packager_ingest_refused_total counter"
    );
    for reason in Refusal::ALL {
        let _ = writeln!(
            text,
            "estuary_packager_ingest_refused_total{{reason=\"{}\"}} {}",
            reason.label(),
            service.refusals.get(reason)
        );
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_requests_total Requests for media and playlists, by kind.\n# TYPE estuary_packager_requests_total counter"
    );
    for (kind, count) in service.requests.get() {
        let _ = writeln!(
            text,
            "estuary_packager_requests_total{{kind=\"{kind}\"}} {count}"
        );
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_continuous_viewers Viewers of continuous streams now, by format.\n# TYPE estuary_packager_continuous_viewers gauge"
    );
    let viewers = service.streams.viewers();
    for format in StreamFormat::ALL {
        let _ = writeln!(
            text,
            "estuary_packager_continuous_viewers{{format=\"{}\"}} {}",
            format.extension(),
            viewers.get(&format).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        text,
        "# HELP estuary_packager_mood 1 for each channel's current mood.\n# TYPE estuary_packager_mood gauge"
    );
    for (channel, current) in service.state.moods() {
        for mood in Mood::ALL {
            let _ = writeln!(
                text,
                "estuary_packager_mood{{channel=\"{channel}\",mood=\"{mood}\"}} {}",
                u8::from(mood == current)
            );
        }
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        Body::text(text),
    )
}
