//! DASH viewers: the first video representation of the MPD's number template, each segment
//! loaded once it is whole, starting `suggestedPresentationDelay` behind now.

use std::time::Duration;

use super::fetch::{Fetcher, resolve};
use super::playback::Unit;
use super::{Unreadable, ViewerError, utc_now};

/// The parts of an MPD a viewer needs: the first video representation's number template.
#[derive(Debug, PartialEq)]
struct Manifest {
    availability_start: f64,
    delay: f64,
    /// Seconds per segment.
    duration: f64,
    start_number: u64,
    /// The media URL template, with the representation filled in; `$Number$` left.
    media: String,
}

fn seconds_of_iso_duration(text: &str) -> Option<f64> {
    // PT4S, PT0.5S, PT1M30S: the forms MPDs use for short durations.
    let body = text.strip_prefix("PT")?;
    let (mut total, mut number) = (0.0, String::new());
    for c in body.chars() {
        match c {
            'H' => total += number.parse::<f64>().ok()? * 3600.0,
            'M' => total += number.parse::<f64>().ok()? * 60.0,
            'S' => total += number.parse::<f64>().ok()?,
            c => {
                number.push(c);
                continue;
            }
        }
        number.clear();
    }
    Some(total)
}

fn parse_mpd(text: &str) -> Result<Manifest, Unreadable> {
    let document =
        roxmltree::Document::parse(text).map_err(|e| Unreadable::NotXml(e.to_string()))?;
    let mpd = document.root_element();
    let moment = |text: &str| -> Option<f64> {
        let (whole, fraction) = match text.trim_end_matches('Z').split_once('.') {
            Some((whole, fraction)) => (whole, format!("0.{fraction}").parse::<f64>().ok()?),
            None => (text.trim_end_matches('Z'), 0.0),
        };
        let seconds = estuary_proto::utc::parse_moment(&format!("{whole}Z")).ok()?;
        Some(seconds as f64 + fraction)
    };
    let availability_start = mpd
        .attribute("availabilityStartTime")
        .and_then(moment)
        .ok_or(Unreadable::Manifest(
            "no availabilityStartTime: not a live MPD",
        ))?;
    let delay = mpd
        .attribute("suggestedPresentationDelay")
        .and_then(seconds_of_iso_duration)
        .unwrap_or(4.0);
    let set = mpd
        .descendants()
        .find(|n| {
            n.has_tag_name("AdaptationSet")
                && (n.attribute("contentType") == Some("video")
                    || n.attribute("mimeType")
                        .is_some_and(|m| m.starts_with("video")))
        })
        .ok_or(Unreadable::Manifest("no video adaptation set"))?;
    let template = set
        .descendants()
        .find(|n| n.has_tag_name("SegmentTemplate"))
        .ok_or(Unreadable::Manifest("no SegmentTemplate"))?;
    let representation = set
        .descendants()
        .find(|n| n.has_tag_name("Representation"))
        .and_then(|n| n.attribute("id"))
        .ok_or(Unreadable::Manifest("no Representation"))?;
    let number = |name: &str| template.attribute(name).and_then(|v| v.parse::<f64>().ok());
    let timescale = number("timescale").unwrap_or(1.0);
    let duration =
        number("duration").ok_or(Unreadable::Manifest("no SegmentTemplate@duration"))? / timescale;
    let media = template
        .attribute("media")
        .ok_or(Unreadable::Manifest("no SegmentTemplate@media"))?
        .replace("$RepresentationID$", representation);
    Ok(Manifest {
        availability_start,
        delay,
        duration,
        start_number: number("startNumber").unwrap_or(1.0) as u64,
        media,
    })
}

/// Plays DASH: each segment once it is whole, starting the suggested delay behind now.
pub(super) async fn play_dash(
    fetcher: &mut Fetcher,
    url: &str,
    on_unit: &mut impl FnMut(&Unit),
) -> Result<(), ViewerError> {
    let (mpd_url, text) = fetcher.text(url).await?;
    let manifest = parse_mpd(&text).map_err(|problem| ViewerError::Unplayable {
        url: mpd_url.clone(),
        problem,
    })?;
    let since_start = utc_now() - manifest.delay - manifest.availability_start;
    let mut number =
        manifest.start_number + (since_start / manifest.duration).floor().max(0.0) as u64;
    loop {
        let start = manifest.availability_start
            + (number - manifest.start_number) as f64 * manifest.duration;
        let whole_at = start + manifest.duration;
        let wait = whole_at - utc_now();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
        let unit = Unit {
            url: resolve(
                &mpd_url,
                &manifest.media.replace("$Number$", &number.to_string()),
            ),
            start,
            duration: manifest.duration,
            play_from: None,
        };
        fetcher.get(&unit.url).await?;
        on_unit(&unit);
        number += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpds_give_the_number_template() {
        let text = r#"<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" availabilityStartTime="1970-01-01T00:00:02.000Z" suggestedPresentationDelay="PT4S"><Period start="PT0S"><AdaptationSet contentType="video" mimeType="video/mp4"><SegmentTemplate timescale="3000" duration="6000" startNumber="1" media="$RepresentationID$/$Number$.m4s"/><Representation id="v720"/></AdaptationSet></Period></MPD>"#;
        let manifest = parse_mpd(text).unwrap();
        assert_eq!(
            manifest,
            Manifest {
                availability_start: 2.0,
                delay: 4.0,
                duration: 2.0,
                start_number: 1,
                media: "v720/$Number$.m4s".into(),
            }
        );
        assert_eq!(seconds_of_iso_duration("PT1M30.5S"), Some(90.5));
    }
}
