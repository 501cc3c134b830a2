//! `/live/{channel}/stream.{ts,mp4,webm,aac,mp3}`: the route of continuous streams. It picks
//! the stream's tracks and joins the viewer to it ([`crate::streams`]); the response is
//! never-ending, fed from the viewer's queue. An edge asks for the stream framed
//! ([`chunks::CONTENT_TYPE`]); a radio player that asks for ICY metadata (`Icy-MetaData: 1`)
//! of stream.mp3 or stream.aac gets the title in the audio, every [`icy::INTERVAL`] bytes.

use estuary_http::{Body, problem, respond};
use estuary_packager_core::continuous::Feed;
use estuary_proto::chunks;
use estuary_proto::icy;
use estuary_proto::url::{ChannelName, StreamFormat, TrackName};
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use crate::service::Service;
use crate::streams::{Asked, Joined, pick_tracks};

/// Answers a viewer of the stream `format` of `channel` (with the track `wanted` by its
/// `?track=`), as it `asked`: ICY metadata only of radio streams, and never framed.
pub fn serve(
    service: &Service,
    channel: &ChannelName,
    format: StreamFormat,
    wanted: Option<&TrackName>,
    asked: Asked,
) -> Response<Body> {
    let asked = Asked {
        icy: asked.icy && !asked.framed && format.is_radio(),
        ..asked
    };
    let wanted = wanted.map(TrackName::as_str);
    let key = match service
        .state
        .read(|window| pick_tracks(window, channel, format, wanted))
    {
        Ok(key) => key,
        Err(reason) => return problem(StatusCode::NOT_FOUND, reason.to_string()),
    };
    let joined = service.streams.join(&key, asked, || {
        service.state.read(|window| {
            let track = |name: &Option<TrackName>| {
                name.as_ref().and_then(|name| window.track(channel, name))
            };
            Feed::from_window(format, track(&key.video), track(&key.audio))
        })
    });
    let (mime, queue, pieces, started) = match joined {
        Err(error) => return problem(StatusCode::NOT_FOUND, error.to_string()),
        Ok(Joined::Head { mime }) => return headers(&mime, asked.framed, Body::empty()),
        Ok(Joined::Viewer {
            mime,
            queue,
            pieces,
            started,
        }) => (mime, queue, pieces, started),
    };
    tracing::info!(%channel, %format, pieces, started, framed = asked.framed, icy = asked.icy, video = ?key.video, audio = ?key.audio, "viewer joined a continuous stream");
    let mut response = headers(&mime, asked.framed, Body::streaming(queue));
    if asked.icy {
        let interval = HeaderValue::from(icy::INTERVAL);
        response
            .headers_mut()
            .insert(icy::INTERVAL_HEADER, interval);
        if let Ok(name) = HeaderValue::from_str(channel.as_str()) {
            response.headers_mut().insert("icy-name", name);
        }
    }
    response
}

/// The response head of a stream of media type `mime` (for MP4 and WebM with its codecs, which
/// MSE needs: `video/mp4; codecs="avc1.64001f,mp4a.40.2"`).
fn headers(mime: &str, framed: bool, body: Body) -> Response<Body> {
    if !framed {
        return respond(StatusCode::OK, mime, body);
    }
    let mut response = respond(StatusCode::OK, chunks::CONTENT_TYPE, body);
    if let Ok(mime) = HeaderValue::from_str(mime) {
        response.headers_mut().insert(chunks::STREAM_TYPE, mime);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Channel, TrackSpec};

    /// What `serve` answers for `format` of a fixture channel, without a viewer staying.
    fn answer(channel: Channel, format: StreamFormat) -> (StatusCode, String, String) {
        let settings = crate::Settings::new(([127, 0, 0, 1], 0).into());
        let service = Service::new(&settings).unwrap();
        service.state.apply(|window| {
            *window = channel.window;
            Vec::new()
        });
        let asked = Asked {
            head: true,
            ..Asked::default()
        };
        let response = serve(&service, &channel.name, format, None, asked);
        let status = response.status();
        let content_type = response.headers()[hyper::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let mut body = response.into_body();
        let pieces = body
            .take_ready()
            .expect("a HEAD or a refusal has its whole body at once");
        let body: Vec<u8> = pieces.into_iter().flatten().collect();
        (status, content_type, String::from_utf8(body).unwrap())
    }

    #[test]
    fn a_channel_in_h264_has_no_webm_stream_and_is_told_why() {
        let mut channel = Channel::new(60);
        channel.feed("v720", &TrackSpec::video(), 0..2);
        channel.feed("a64", &TrackSpec::opus(), 0..2);
        let (status, content_type, reason) = answer(channel, StreamFormat::Webm);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(content_type, estuary_http::problem::PROBLEM_JSON);
        assert!(
            reason.contains(
                "\"detail\":\"stream.webm cannot carry video in avc1.64001f (it takes VP8 or VP9)\""
            ),
            "{reason}"
        );

        let mut aac = Channel::new(60);
        aac.feed("a128", &TrackSpec::audio(), 0..2);
        let (status, _, reason) = answer(aac, StreamFormat::Webm);
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            reason.contains("needs VP8 or VP9 video or Opus audio"),
            "{reason}"
        );

        let mut vp8 = Channel::new(60);
        vp8.feed("v720", &TrackSpec::vp8(), 0..2);
        vp8.feed("a64", &TrackSpec::opus(), 0..2);
        let (status, content_type, _) = answer(vp8, StreamFormat::Webm);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "video/webm; codecs=\"vp8,opus\"");
    }
}
