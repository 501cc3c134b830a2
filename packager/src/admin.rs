//! `/admin/*`: what a channel's operator may do and its viewers may not: setting the title
//! (`GET /admin/metadata`, the Icecast convention radio playout software speaks), with the
//! admin token (`--admin-token`) or a keycard that lets its holder ingest the channel; and
//! reading the configuration again (`POST /admin/reload`), with the admin token alone. With no
//! credential configured, nothing is allowed, and the answer says how to configure one. Edges
//! never forward `/admin/*`.

use std::sync::Arc;

use estuary_http::{Body, problem, respond};
use estuary_proto::url::{BadName, ChannelName};
use estuary_proto::utc::unix_now;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::auth::{AdminRefusal, authorize, authorize_operator, client};
use crate::service::{ReloadError, Service};

/// The longest title accepted (ICY blocks carry at most 4080 bytes of it).
pub const MAX_TITLE: usize = 1024;

/// Why a title request does not say what to set.
#[derive(Debug, thiserror::Error)]
pub enum TitleRequestError {
    #[error("mode must be updinfo")]
    NotUpdinfo,
    #[error("song=TITLE is missing")]
    NoSong,
    #[error("the title is {length} bytes; the longest accepted is {MAX_TITLE}")]
    TooLong { length: usize },
    #[error("mount {mount:?} is not /live/{{channel}}/stream.{{ext}}")]
    BadMount { mount: String },
    #[error(transparent)]
    BadChannel(#[from] BadName),
}

/// The channel and the title a query of `/admin/metadata` names.
fn title_request(query: &str) -> Result<(ChannelName, String), TitleRequestError> {
    let value = |name: &str| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            // Form encoding: a `+` is a space.
            (key == name).then(|| estuary_proto::url::percent_decode(&value.replace('+', " ")))
        })
    };
    if value("mode").as_deref() != Some("updinfo") {
        return Err(TitleRequestError::NotUpdinfo);
    }
    let song = value("song").ok_or(TitleRequestError::NoSong)?;
    if song.len() > MAX_TITLE {
        return Err(TitleRequestError::TooLong { length: song.len() });
    }
    let mount = value("mount").unwrap_or_default();
    let mut names = mount
        .strip_prefix("/live/")
        .ok_or_else(|| TitleRequestError::BadMount {
            mount: mount.clone(),
        })?
        .split('/');
    let channel = ChannelName::new(names.next().unwrap_or(""))?;
    Ok((channel, song))
}

/// `GET /admin/metadata?mount=/live/{channel}/stream.mp3&mode=updinfo&song=TITLE`: a radio's
/// playout sets the channel's "now playing", the way it does on Icecast (the mount names the
/// channel; any of its streams will do).
pub fn set_title(service: &Service, request: &Request<Incoming>) -> Response<Body> {
    // Said before anything else is looked at: no request can succeed.
    let rules = service.rules();
    if rules.admin_token.is_none() && rules.keys.is_empty() {
        return problem(
            StatusCode::FORBIDDEN,
            AdminRefusal::NotConfigured.to_string(),
        );
    }
    let (channel, song) = match title_request(request.uri().query().unwrap_or("")) {
        Ok(asked) => asked,
        Err(error) => return problem(StatusCode::BAD_REQUEST, error.to_string()),
    };
    let now = unix_now().as_secs();
    let allowed = authorize(
        rules.admin_token.as_ref(),
        &rules.keys,
        request.headers(),
        client(request),
        &channel,
        now,
    );
    if let Err(refusal) = allowed {
        tracing::warn!(%channel, reason = %refusal, "title refused");
        return refused(refusal);
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

/// `POST /admin/reload`: what SIGHUP does. 200 with the keys that changed but need a restart,
/// 422 when the configuration does not validate (nothing changed), 409 when the packager was
/// started without a file to read again.
pub async fn reload(service: &Arc<Service>, request: &Request<Incoming>) -> Response<Body> {
    if let Err(refusal) =
        authorize_operator(service.rules().admin_token.as_ref(), request.headers())
    {
        tracing::warn!(reason = %refusal, "reload refused");
        return refused(refusal);
    }
    // Reading the files (the configuration, the player page) blocks: not on a runtime worker.
    let reloading = service.clone();
    let outcome = tokio::task::spawn_blocking(move || reloading.reload())
        .await
        .unwrap_or_else(|_| Err(ReloadError::Invalid("the reload did not finish".into())));
    match outcome {
        Ok(needs_restart) => {
            let keys: Vec<String> = needs_restart
                .iter()
                .map(|key| format!("\"{key}\""))
                .collect();
            respond(
                StatusCode::OK,
                "application/json",
                Body::text(format!(
                    "{{\"reloaded\":true,\"needs_restart\":[{}]}}\n",
                    keys.join(",")
                )),
            )
        }
        Err(error @ ReloadError::NoSource) => problem(StatusCode::CONFLICT, error.to_string()),
        Err(error @ ReloadError::Invalid(_)) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
    }
}

/// The answer to a request without the credential it needs: 401 asks for one.
fn refused(refusal: AdminRefusal) -> Response<Body> {
    let status = refusal.status();
    let mut response = problem(status, refusal.to_string());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_title_request_names_a_channel_and_a_bounded_title() {
        let (channel, song) =
            title_request("mount=/live/radio/stream.mp3&mode=updinfo&song=Night+%26+Day").unwrap();
        assert_eq!(channel.as_str(), "radio");
        assert_eq!(song, "Night & Day");
        let long = format!(
            "mount=/live/radio/stream.mp3&mode=updinfo&song={}",
            "x".repeat(MAX_TITLE + 1)
        );
        for (query, expected) in [
            (
                "mount=/live/radio/stream.mp3&song=x",
                "mode must be updinfo",
            ),
            (
                "mount=/live/radio/stream.mp3&mode=updinfo",
                "song=TITLE is missing",
            ),
            (&*long, "the title is 1025 bytes"),
            (
                "mount=/radio&mode=updinfo&song=x",
                "is not /live/{channel}/stream.{ext}",
            ),
            ("mode=updinfo&song=x", "mount \"\""),
        ] {
            let error = title_request(query).unwrap_err().to_string();
            assert!(error.contains(expected), "{query}: {error}");
        }
        assert!(matches!(
            title_request("mount=/live/../stream.mp3&mode=updinfo&song=x"),
            Err(TitleRequestError::BadChannel(_))
        ));
    }
}
