//! `/vod/{channel}/{start}-{end}/…`: the archive as VOD, in the shapes of `/live/…`.

use std::path::Path;

use bytes::Bytes;
use estuary_http::{Body, problem, respond};
use estuary_packager_core::cmaf::{self, Media, TrackHeader};
use estuary_packager_core::hls::{AudioRendition, MasterPlaylist, Variant};
use estuary_packager_core::vod::{Entry, VodPlaylist};
use estuary_proto::url::{ChannelName, TrackName, VodObject, VodRange};
use hyper::{Response, StatusCode};

use super::playlist;
use crate::archive;
use crate::service::Service;

pub async fn serve(
    service: &Service,
    channel: &ChannelName,
    range: VodRange,
    object: VodObject,
) -> Response<Body> {
    let Some(archive) = &service.archive else {
        return problem(
            StatusCode::NOT_FOUND,
            "this packager keeps no archive (start it with --archive DIR)",
        );
    };
    let root = archive.dir();
    // File names are written from the parsed numbers, never taken from the request.
    let (track, file) = match object {
        VodObject::Master => return master(root, channel, range).await,
        VodObject::MediaPlaylist { track } => {
            let text = in_range(root, channel, &track, range)
                .await
                .map(|(header, entries)| {
                    VodPlaylist::build(&entries, header.timescale, range)
                        .map(|playlist| playlist.to_string())
                });
            return playlist(text.flatten(), || {
                format!("{channel}/{track} has nothing archived in that range")
            });
        }
        VodObject::Init { track, number } => (track, format!("init-{number}.mp4")),
        VodObject::Segment { track, msn } => (track, format!("{msn}.m4s")),
    };
    let dir = archive::track_dir(root, channel, &track);
    match tokio::fs::read(dir.join(&file)).await {
        Ok(bytes) => respond(StatusCode::OK, "video/mp4", Body::bytes(Bytes::from(bytes))),
        Err(_) => problem(
            StatusCode::NOT_FOUND,
            format!("{channel}/{track}/{file} is not in the archive"),
        ),
    }
}

/// A track's index entries that start in `range`, with the header of the first of them.
async fn in_range(
    root: &Path,
    channel: &ChannelName,
    track: &TrackName,
    range: VodRange,
) -> Option<(TrackHeader, Vec<Entry>)> {
    let all = archive::read_index(root, channel, track);
    // The timescale comes from a header; any of the track's headers will do to find the range.
    let first_init = all.first()?.init;
    let dir = archive::track_dir(root, channel, track);
    let header = read_header(&dir.join(format!("init-{first_init}.mp4"))).await?;
    let entries: Vec<Entry> = all
        .into_iter()
        .filter(|entry| range.holds(entry.start, header.timescale))
        .collect();
    let first = entries.first()?.init;
    let header = if first == first_init {
        header
    } else {
        read_header(&dir.join(format!("init-{first}.mp4"))).await?
    };
    Some((header, entries))
}

async fn read_header(path: &Path) -> Option<TrackHeader> {
    let bytes = tokio::fs::read(path).await.ok()?;
    cmaf::parse_header(Bytes::from(bytes)).ok()
}

async fn master(root: &Path, channel: &ChannelName, range: VodRange) -> Response<Body> {
    let mut audio = None;
    let mut variants = Vec::new();
    for track in archive::tracks(root, channel) {
        let Some((header, entries)) = in_range(root, channel, &track, range).await else {
            continue;
        };
        let (peak, average) = bandwidth(&entries, header.timescale);
        match header.media {
            Media::Video {
                codec,
                width,
                height,
            } => variants.push(Variant {
                track,
                codec,
                width,
                height,
                frame_rate: 0.0,
                peak_bandwidth: peak,
                average_bandwidth: average,
            }),
            Media::Audio { codec, .. } if audio.is_none() => {
                audio = Some(AudioRendition {
                    track,
                    codec,
                    peak_bandwidth: peak,
                    average_bandwidth: average,
                })
            }
            Media::Audio { .. } => {}
        }
    }
    variants.sort_by_key(|variant| std::cmp::Reverse(variant.height));
    let text = (audio.is_some() || !variants.is_empty())
        .then(|| MasterPlaylist { audio, variants }.to_string());
    playlist(text, || {
        format!("{channel} has nothing archived in that range")
    })
}

/// Peak and average bits per second of archived segments.
fn bandwidth(entries: &[Entry], timescale: u32) -> (u64, u64) {
    let scale = f64::from(timescale.max(1));
    let (mut peak, mut bits, mut seconds) = (0f64, 0f64, 0f64);
    for entry in entries.iter().filter(|entry| entry.duration > 0) {
        let duration = entry.duration as f64 / scale;
        peak = peak.max(entry.bytes as f64 * 8.0 / duration);
        bits += entry.bytes as f64 * 8.0;
        seconds += duration;
    }
    let average = if seconds > 0.0 { bits / seconds } else { 0.0 };
    (peak.ceil() as u64, average.ceil() as u64)
}
