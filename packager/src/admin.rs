//! `/admin/*`: what a channel's operator may do and its viewers may not. For now that is
//! setting the title (`GET /admin/metadata`, the Icecast convention radio playout software
//! speaks). Every request needs a credential ([`crate::auth`]): the admin token
//! (`--admin-token`), or a keycard that lets its holder ingest the channel. With neither
//! configured, nothing is allowed, and the answer says how to configure one. Edges never
//! forward `/admin/*`.

use estuary_http::{Body, problem, respond};
use estuary_proto::url::ChannelName;
use estuary_proto::utc::unix_now;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::auth::{AdminRefusal, authorize, client};
use crate::service::Service;

/// The longest title accepted (ICY blocks carry at most 4080 bytes of it).
pub const MAX_TITLE: usize = 1024;

/// `GET /admin/metadata?mount=/live/{channel}/stream.mp3&mode=updinfo&song=TITLE`: a radio's
/// playout sets the channel's "now playing", the way it does on Icecast (the mount names the
/// channel; any of its streams will do).
pub fn set_title(service: &Service, request: &Request<Incoming>) -> Response<Body> {
    // Said before anything else is looked at: no request can succeed.
    if service.admin_token.is_none() && service.keys.is_empty() {
        return problem(
            StatusCode::FORBIDDEN,
            AdminRefusal::NotConfigured.to_string(),
        );
    }
    let query = request.uri().query().unwrap_or("");
    let value = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            // Form encoding: a `+` is a space.
            (key == name).then(|| estuary_proto::url::percent_decode(&value.replace('+', " ")))
        })
    };
    if value("mode").as_deref() != Some("updinfo") {
        return problem(StatusCode::BAD_REQUEST, "mode must be updinfo");
    }
    let Some(song) = value("song") else {
        return problem(StatusCode::BAD_REQUEST, "song=TITLE is missing");
    };
    if song.len() > MAX_TITLE {
        return problem(
            StatusCode::BAD_REQUEST,
            format!(
                "the title is {} bytes; the longest accepted is {MAX_TITLE}",
                song.len()
            ),
        );
    }
    let mount = value("mount").unwrap_or_default();
    let channel = match mount.strip_prefix("/live/").map(|rest| rest.split('/')) {
        Some(mut names) => ChannelName::new(names.next().unwrap_or("")).map_err(|e| e.to_string()),
        None => Err(format!(
            "mount {mount:?} is not /live/{{channel}}/stream.{{ext}}"
        )),
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(reason) => return problem(StatusCode::BAD_REQUEST, reason),
    };
    let now = unix_now().as_secs();
    let allowed = authorize(
        service.admin_token.as_ref(),
        &service.keys,
        request.headers(),
        client(request),
        &channel,
        now,
    );
    if let Err(refusal) = allowed {
        tracing::warn!(%channel, reason = %refusal, "title refused");
        let status = refusal.status();
        let mut response = problem(status, refusal.to_string());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
        }
        return response;
    }
    // Titles are kept per channel while it lives: one the packager does not have is refused.
    if service
        .state
        .read(|window| window.tracks(&channel).next().is_none())
    {
        return problem(
            StatusCode::NOT_FOUND,
            format!("channel {channel} is not live on this packager"),
        );
    }
    tracing::info!(%channel, title = %song, "now playing");
    service.streams.set_title(&channel, &song);
    let mut response = respond(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Body::text("Metadata update successful\n"),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}
