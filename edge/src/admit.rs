//! Who may come in. A request for media (`/live`, `/vod`) meets the revocation list, then the
//! bouncers, on its canonical path; everything else of the layout is open. The decision is
//! sans IO ([`judge`]: what the request presents, and the time, in; admitted or refused out);
//! [`Gate::admit`] runs it off the async workers when it may have to hash a password, a few at
//! a time, so that a flood of wrong passwords costs the edge a bounded share of its CPU and
//! never stalls the viewers being served.

use std::net::IpAddr;
use std::sync::Arc;

use estuary_proto::url::PublicPath;
use hyper::header::{self, HeaderMap};
use hyper::{StatusCode, Uri};
use tokio::sync::Semaphore;

use crate::bouncer::{Bouncer, Verdict, Visitor};
use crate::revoked::Revoked;
use crate::{carry, htpasswd};

/// Password checks that may run at once; more wait their turn.
const PASSWORD_CHECKS: usize = 4;

/// What a request presents to be let in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A keycard, from the query, a cookie or `Authorization: Bearer`.
    pub keycard: Option<String>,
    /// User and password of `Authorization: Basic`.
    pub basic: Option<(String, String)>,
}

impl Credentials {
    pub fn of(uri: &Uri, headers: &HeaderMap) -> Credentials {
        let text =
            |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok());
        Credentials {
            keycard: carry::find_keycard(
                uri.query(),
                text(header::COOKIE),
                text(header::AUTHORIZATION),
            ),
            basic: text(header::AUTHORIZATION).and_then(htpasswd::basic_credentials),
        }
    }
}

/// A viewer let in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admitted {
    /// The keycard that let the viewer in, to carry into the URIs of a playlist.
    pub carried: Option<String>,
    /// When the viewer's credentials stop working (Unix seconds).
    pub until: Option<u64>,
    /// The id of the keycard presented, watched for revocation.
    pub keycard_id: Option<String>,
}

/// A request turned away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    /// Whether the answer asks for HTTP Basic credentials (`WWW-Authenticate`).
    pub fn asks_for_password(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }
}

/// The bouncers and the revocation list of an edge.
pub struct Gate {
    bouncer: Option<Arc<Bouncer>>,
    revoked: Option<Arc<Revoked>>,
    /// Whether a bouncer checks passwords, which may take tens of milliseconds of hashing.
    checks_passwords: bool,
    password_checks: Arc<Semaphore>,
}

impl Gate {
    pub fn new(bouncer: Option<Bouncer>, revoked: Option<Arc<Revoked>>) -> Gate {
        Gate {
            checks_passwords: bouncer.as_ref().is_some_and(Bouncer::checks_passwords),
            bouncer: bouncer.map(Arc::new),
            revoked,
            password_checks: Arc::new(Semaphore::new(PASSWORD_CHECKS)),
        }
    }

    pub fn revoked(&self) -> Option<&Arc<Revoked>> {
        self.revoked.as_ref()
    }

    /// Judges a request for `path` from `client` at Unix second `now`.
    pub async fn admit(
        &self,
        path: &PublicPath,
        client: IpAddr,
        credentials: Credentials,
        now: u64,
    ) -> Result<Admitted, Refusal> {
        if !path.is_media() {
            return Ok(Admitted::default());
        }
        let path = path.path();
        if !(self.checks_passwords && credentials.basic.is_some()) {
            return judge(
                self.bouncer.as_deref(),
                self.revoked.as_deref(),
                &path,
                client,
                &credentials,
                now,
            );
        }
        let permit = self.password_checks.clone().acquire_owned().await;
        let (bouncer, revoked) = (self.bouncer.clone(), self.revoked.clone());
        let judged = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            judge(
                bouncer.as_deref(),
                revoked.as_deref(),
                &path,
                client,
                &credentials,
                now,
            )
        })
        .await;
        judged.unwrap_or_else(|_| {
            Err(Refusal {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                reason: "the password check failed".into(),
            })
        })
    }
}

/// The revocation list, then the bouncers, on a request for media at `path` (canonical).
pub fn judge(
    bouncer: Option<&Bouncer>,
    revoked: Option<&Revoked>,
    path: &str,
    client: IpAddr,
    credentials: &Credentials,
    now: u64,
) -> Result<Admitted, Refusal> {
    // A revoked keycard is refused whatever the bouncers would say. (Its id is read only when
    // there is a revocation list.)
    let keycard_id = credentials
        .keycard
        .as_deref()
        .filter(|_| revoked.is_some())
        .and_then(|card| estuary_proto::Keycard::parse(card).ok())
        .and_then(|card| card.id);
    if let (Some(revoked), Some(id)) = (revoked, &keycard_id)
        && revoked.contains(id)
    {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: format!("keycard {id} is revoked"),
        });
    }
    let Some(bouncer) = bouncer else {
        return Ok(Admitted::default());
    };
    let visitor = Visitor {
        path,
        keycard: credentials.keycard.as_deref(),
        client,
        basic: credentials
            .basic
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str())),
        now,
    };
    match bouncer.judge(&visitor) {
        Verdict::Allow { until } => Ok(Admitted {
            carried: credentials.keycard.clone(),
            until,
            keycard_id,
        }),
        Verdict::Deny { status, reason } => Err(Refusal {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            reason,
        }),
    }
}
