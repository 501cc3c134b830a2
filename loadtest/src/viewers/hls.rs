//! HLS and LL-HLS viewers: the first variant of the multivariant playlist, then whole segments
//! three behind the newest (`hls`), or parts from the independent part nearest PART-HOLD-BACK
//! behind the live edge, each next one asked for with a blocking playlist reload (`llhls`).

use std::time::Duration;

use super::fetch::{Fetcher, resolve};
use super::playback::Unit;
use super::{Unreadable, ViewerError};

/// Whole segments a HLS viewer starts behind the newest (HLS's default hold-back is three
/// target durations).
const HLS_SEGMENTS_BEHIND: usize = 3;

/// What a media playlist says, as far as a viewer needs it.
#[derive(Debug, Default, PartialEq)]
struct MediaPlaylist {
    target_duration: f64,
    part_hold_back: Option<f64>,
    /// Whole segments: (media sequence number, URI, duration).
    segments: Vec<(u64, String, f64)>,
    /// Parts: (msn, part index, URI, duration, independent).
    parts: Vec<(u64, u32, String, f64, bool)>,
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next(),
        None => rest.split(',').next(),
    }
}

fn parse_media_playlist(text: &str) -> Result<MediaPlaylist, Unreadable> {
    let bad = Unreadable::Playlist;
    let mut playlist = MediaPlaylist::default();
    let mut msn = None;
    let mut duration = None;
    let mut part_index = 0;
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            playlist.target_duration =
                value.parse().map_err(|_| bad("bad EXT-X-TARGETDURATION"))?;
        } else if let Some(value) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| bad("bad EXT-X-MEDIA-SEQUENCE"))?,
            );
        } else if let Some(tag) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            playlist.part_hold_back = attribute(tag, "PART-HOLD-BACK").and_then(|v| v.parse().ok());
        } else if let Some(tag) = line.strip_prefix("#EXT-X-PART:") {
            let msn = msn.ok_or(bad("a part before EXT-X-MEDIA-SEQUENCE"))?;
            let uri = attribute(tag, "URI").ok_or(bad("a part without URI"))?;
            let length = attribute(tag, "DURATION")
                .and_then(|v| v.parse().ok())
                .ok_or(bad("a part without DURATION"))?;
            let independent = attribute(tag, "INDEPENDENT") == Some("YES");
            playlist
                .parts
                .push((msn, part_index, uri.to_owned(), length, independent));
            part_index += 1;
        } else if let Some(value) = line.strip_prefix("#EXTINF:") {
            duration = value.split(',').next().and_then(|v| v.parse::<f64>().ok());
        } else if !line.is_empty() && !line.starts_with('#') {
            let number = msn.ok_or(bad("a segment before EXT-X-MEDIA-SEQUENCE"))?;
            playlist.segments.push((
                number,
                line.to_owned(),
                duration.take().ok_or(bad("a segment without EXTINF"))?,
            ));
            msn = Some(number + 1);
            part_index = 0;
        }
    }
    if playlist.target_duration <= 0.0 {
        return Err(bad("no EXT-X-TARGETDURATION"));
    }
    Ok(playlist)
}

/// The first variant's URI of a multivariant playlist.
fn first_variant(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("#EXT-X-STREAM-INF") {
            return lines.find(|l| !l.is_empty() && !l.starts_with('#'));
        }
    }
    None
}

/// Plays HLS (whole segments) or LL-HLS (parts, blocking reloads) until stopped from outside.
pub(super) async fn play_hls(
    fetcher: &mut Fetcher,
    url: &str,
    low_latency: bool,
    on_unit: &mut impl FnMut(&Unit),
) -> Result<(), ViewerError> {
    let (master_url, master) = fetcher.text(url).await?;
    let variant = first_variant(&master).ok_or_else(|| ViewerError::Unplayable {
        url: master_url.clone(),
        problem: Unreadable::Playlist("the multivariant playlist names no variant"),
    })?;
    let media_url = resolve(&master_url, variant);
    let (media_url, text) = fetcher.text(&media_url).await?;
    let mut playlist = parse_media_playlist(&text).map_err(|problem| ViewerError::Unplayable {
        url: media_url.clone(),
        problem,
    })?;
    let target = playlist.target_duration;
    let with_query = |base: &str, query: &str| {
        if base.contains('?') {
            format!("{base}&{query}")
        } else {
            format!("{base}?{query}")
        }
    };
    if low_latency {
        if playlist.parts.is_empty() {
            return Err(ViewerError::Unplayable {
                url: media_url.clone(),
                problem: Unreadable::Playlist("no parts: not a low-latency playlist"),
            });
        }
        let hold_back = playlist.part_hold_back.unwrap_or(3.0 * target / 6.0);
        // The live edge: the end of the newest part. Load from the newest independent part
        // at least PART-HOLD-BACK behind it, and start playing PART-HOLD-BACK behind it, as
        // players seek to their target latency once they hold a keyframe before it.
        let unit_of = |(msn, index, uri, duration, _): &(u64, u32, String, f64, bool),
                       playlist: &MediaPlaylist| {
            let offset: f64 = playlist
                .parts
                .iter()
                .filter(|p| p.0 == *msn && p.1 < *index)
                .map(|p| p.3)
                .sum();
            Unit {
                url: resolve(&media_url, uri),
                start: *msn as f64 * target + offset,
                duration: *duration,
                play_from: None,
            }
        };
        // A channel that has just started may list parts but no independent one yet: wait
        // for the next part with a blocking reload, as a player waits for a keyframe.
        let (first, live_edge) = loop {
            let last = playlist
                .parts
                .last()
                .cloned()
                .ok_or_else(|| ViewerError::Unplayable {
                    url: media_url.clone(),
                    problem: Unreadable::Playlist("no parts"),
                })?;
            let edge = unit_of(&last, &playlist);
            let live_edge = edge.start + edge.duration;
            let first = playlist
                .parts
                .iter()
                .rev()
                .find(|part| part.4 && unit_of(part, &playlist).start <= live_edge - hold_back)
                .or_else(|| playlist.parts.iter().find(|part| part.4))
                .cloned();
            if let Some(first) = first {
                break (first, live_edge);
            }
            let next = if playlist.segments.iter().any(|s| s.0 == last.0) {
                (last.0 + 1, 0)
            } else {
                (last.0, last.1 + 1)
            };
            let reload = with_query(
                &media_url,
                &format!("_HLS_msn={}&_HLS_part={}", next.0, next.1),
            );
            let (_, text) = fetcher.text(&reload).await?;
            playlist = parse_media_playlist(&text).map_err(|problem| ViewerError::Unplayable {
                url: reload.clone(),
                problem,
            })?;
        };
        let (mut msn, mut index) = (first.0, first.1);
        loop {
            let found = playlist
                .parts
                .iter()
                .find(|p| p.0 == msn && p.1 == index)
                .cloned();
            match found {
                Some(part) => {
                    let mut unit = unit_of(&part, &playlist);
                    unit.play_from = Some(live_edge - hold_back);
                    fetcher.get(&unit.url).await?;
                    on_unit(&unit);
                    index += 1;
                }
                None if playlist.segments.iter().any(|s| s.0 == msn) => {
                    // The segment is whole and has no more parts: the next segment's first.
                    msn += 1;
                    index = 0;
                }
                None => {
                    let reload =
                        with_query(&media_url, &format!("_HLS_msn={msn}&_HLS_part={index}"));
                    let (_, text) = fetcher.text(&reload).await?;
                    playlist =
                        parse_media_playlist(&text).map_err(|problem| ViewerError::Unplayable {
                            url: reload.clone(),
                            problem,
                        })?;
                    let older = playlist.parts.first().is_some_and(|p| p.0 > msn);
                    if older {
                        return Err(ViewerError::FellBehind {
                            url: media_url.clone(),
                        });
                    }
                }
            }
        }
    }
    // Whole segments, three behind the newest.
    // A channel that has just started may have no whole segment yet: reload until it has.
    while playlist.segments.is_empty() {
        tokio::time::sleep(Duration::from_secs_f64(target / 2.0)).await;
        let (_, text) = fetcher.text(&media_url).await?;
        playlist = parse_media_playlist(&text).map_err(|problem| ViewerError::Unplayable {
            url: media_url.clone(),
            problem,
        })?;
    }
    let start = playlist.segments.len().saturating_sub(HLS_SEGMENTS_BEHIND);
    let mut next = playlist.segments[start].0;
    loop {
        match playlist.segments.iter().find(|s| s.0 == next).cloned() {
            Some((msn, uri, duration)) => {
                let unit = Unit {
                    url: resolve(&media_url, &uri),
                    start: msn as f64 * target,
                    duration,
                    play_from: None,
                };
                fetcher.get(&unit.url).await?;
                on_unit(&unit);
                next += 1;
            }
            None => {
                if playlist.segments.first().is_some_and(|s| s.0 > next) {
                    return Err(ViewerError::FellBehind {
                        url: media_url.clone(),
                    });
                }
                // Not made yet: reload after half a target duration, as players do.
                tokio::time::sleep(Duration::from_secs_f64(target / 2.0)).await;
                let (_, text) = fetcher.text(&media_url).await?;
                playlist =
                    parse_media_playlist(&text).map_err(|problem| ViewerError::Unplayable {
                        url: media_url.clone(),
                        problem,
                    })?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_playlists_give_segments_and_parts() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.001\n#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:2.0,\n100.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"101.0.m4s\",INDEPENDENT=YES\n#EXT-X-PART:DURATION=1.0,URI=\"101.1.m4s\"\n#EXTINF:2.0,\n101.m4s\n#EXT-X-PART:DURATION=1.0,URI=\"102.0.m4s\",INDEPENDENT=YES\n";
        let playlist = parse_media_playlist(text).unwrap();
        assert_eq!(playlist.target_duration, 2.0);
        assert_eq!(playlist.part_hold_back, Some(1.001));
        assert_eq!(
            playlist.segments,
            vec![(100, "100.m4s".into(), 2.0), (101, "101.m4s".into(), 2.0)]
        );
        assert_eq!(playlist.parts.len(), 3);
        assert_eq!(playlist.parts[1], (101, 1, "101.1.m4s".into(), 1.0, false));
        assert_eq!(playlist.parts[2].0, 102);
        assert!(parse_media_playlist("#EXTM3U\n").is_err());
    }
}
