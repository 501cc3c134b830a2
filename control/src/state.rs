//! Everything control knows, and what it does with it, apart from any HTTP: the routing tables
//! (sites, zones, GeoIP), the registry of edges, the origins' live channels, the policies, the
//! keycard minter, the report intake, and the recent activity. The HTTP layers on top (the
//! front door, axum's API) read requests and write answers; they decide nothing themselves.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use estuary_http::Limits;
use estuary_proto::keycard::{self, KeycardKey};
use estuary_proto::net::{self, Cidr};
use estuary_proto::url::{ChannelName, PublicPath};
use estuary_proto::utc::unix_now;

use crate::activity::Activity;
use crate::config::{Config, PolicyConfig, Timeouts};
use crate::coverage::{self, Coverage, CoverageError};
use crate::geo::GeoDatabase;
use crate::keycards::Minter;
use crate::origins::{BadOrigin, Origins, Presence};
use crate::registry::Registry;
use crate::reports::{Intake, Refusal};
use crate::routing::{Decision, Request, Router};
use crate::viewer::{self, Answer, Ask, Known};

/// Everything control knows and decides with.
pub struct Control {
    /// The routing tables, the minter and the trusted proxies: a reload replaces them whole,
    /// and each answer works with one version from start to end.
    tables: RwLock<Arc<Tables>>,
    registry: Registry,
    /// The policies now (the admin API may change them; a reload sets the file's).
    policies: RwLock<PolicyConfig>,
    intake: Intake,
    origins: Origins,
    limits: Limits,
    admin_token: Option<String>,
    activity: Activity,
    /// What a reload cannot change, as the running control has it.
    fixed: Fixed,
    /// The configuration file a reload reads again, when control was started from one.
    source: OnceLock<PathBuf>,
    reloads: Reloads,
}

/// What a reload replaces whole.
pub struct Tables {
    pub router: Router,
    /// Signs the keycards of redirects; none when keycards are off.
    pub minter: Option<Minter>,
    pub trusted_proxies: Vec<Cidr>,
}

/// The keys of a configuration that only a restart changes: the listening sockets, the
/// packagers watched, the connection timeouts, how long a silent edge is kept, the admin token.
#[derive(Debug, PartialEq)]
struct Fixed {
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    origins: Vec<String>,
    timeouts: Timeouts,
    forget_after: Duration,
    admin_token: Option<String>,
}

impl Fixed {
    fn of(config: &Config) -> Fixed {
        Fixed {
            listen: config.listen,
            admin_listen: config.admin_listen,
            origins: config.origins.clone(),
            timeouts: config.timeouts,
            forget_after: config.reports.forget_after,
            admin_token: config.admin_token.clone(),
        }
    }

    /// The keys that differ in `other`, as the file names them.
    fn differences(&self, other: &Fixed) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differ = |differs: bool, key| {
            if differs {
                keys.push(key);
            }
        };
        differ(self.listen != other.listen, "listen");
        differ(self.admin_listen != other.admin_listen, "admin_listen");
        differ(self.origins != other.origins, "origins");
        differ(self.timeouts != other.timeouts, "timeouts");
        differ(
            self.forget_after != other.forget_after,
            "reports.forget_after",
        );
        differ(self.admin_token != other.admin_token, "admin_token");
        keys
    }
}

/// Reloads so far, and why the last one was refused if it was.
#[derive(Default)]
struct Reloads {
    applied: AtomicU64,
    refused: AtomicU64,
    failure: Mutex<Option<String>>,
}

/// What a reload did.
#[derive(Debug, serde::Serialize)]
pub struct Reloaded {
    /// Keys of the file that changed but take effect only at the next start.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("control was not started from a configuration file, so there is nothing to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The secrets control works with: read from the files the configuration names
/// ([`Control::new`]), or made up by the caller (the demo).
#[derive(Clone, Debug, Default)]
pub struct Keys {
    /// Keycard keys; the first signs. None turns keycards off.
    pub keycards: Vec<KeycardKey>,
    /// How long a redirect's keycard lets its viewer in.
    pub keycard_lifetime: Duration,
    /// The keys edge reports may be signed with. None: every report is refused.
    pub reports: Vec<KeycardKey>,
}

/// Why control cannot start with a configuration: a file it names is unusable.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("GeoIP database {}: {reason}", path.display())]
    GeoIp { path: PathBuf, reason: String },
    #[error("coverage-zone file: {0}")]
    CoverageZones(#[from] CoverageError),
    #[error(transparent)]
    Origin(#[from] BadOrigin),
}

/// The keys of the key file at `path`.
fn read_keys(path: &Path) -> Result<Vec<KeycardKey>, StartError> {
    let failed = |reason: String| StartError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| failed(error.to_string()))?;
    keycard::parse_key_file(&text).map_err(|error| failed(error.to_string()))
}

/// The keys of the key files `config` names.
fn read_key_files(config: &Config) -> Result<Keys, StartError> {
    let mut keys = Keys::default();
    if let Some(keycards) = &config.keycards {
        keys.keycards = read_keys(&keycards.key_file)?;
        keys.keycard_lifetime = keycards.lifetime;
    }
    if let Some(path) = &config.reports.key_file {
        keys.reports = read_keys(path)?;
    }
    Ok(keys)
}

impl Tables {
    /// Opens the GeoIP database and the coverage-zone file `config` names, with `keys`.
    fn open(config: &Config, keys: &Keys) -> Result<Tables, StartError> {
        let geo = match &config.geoip {
            Some(path) => Some(GeoDatabase::open(path).map_err(|reason| StartError::GeoIp {
                path: path.clone(),
                reason,
            })?),
            None => None,
        };
        let mut zones = config.zones.clone();
        if let Some(path) = &config.coverage_zones {
            zones.extend(coverage::read_traffic_control(path)?);
        }
        Ok(Tables {
            router: Router::new(config, Coverage::new(zones), geo),
            minter: Minter::new(&keys.keycards, keys.keycard_lifetime),
            trusted_proxies: config.trusted_proxies.clone(),
        })
    }
}

/// Unix milliseconds now.
fn unix_ms() -> u64 {
    u64::try_from(unix_now().as_millis()).unwrap_or(u64::MAX)
}

impl Control {
    /// Opens what the configuration names (GeoIP database, coverage-zone file, key files).
    pub fn new(config: &Config) -> Result<Arc<Control>, StartError> {
        Control::with_keys(config, read_key_files(config)?)
    }

    /// As [`Control::new`], with the keys given rather than read from the key files.
    pub fn with_keys(config: &Config, keys: Keys) -> Result<Arc<Control>, StartError> {
        let tables = Tables::open(config, &keys)?;
        if keys.reports.is_empty() {
            tracing::warn!(
                "no report key ([reports] key_file): every edge report will be refused (401)"
            );
        }
        Ok(Arc::new(Control {
            tables: RwLock::new(Arc::new(tables)),
            registry: Registry::new(config.reports.forget_after),
            policies: RwLock::new(config.policy.clone()),
            intake: Intake::new(config, keys.reports),
            origins: Origins::new(&config.origins)?,
            limits: config.timeouts.limits(),
            admin_token: config.admin_token.clone().filter(|token| !token.is_empty()),
            activity: Activity::default(),
            fixed: Fixed::of(config),
            source: OnceLock::new(),
            reloads: Reloads::default(),
        }))
    }

    /// Has reloads read the configuration again from `path`.
    pub fn reload_from(&self, path: PathBuf) {
        let _ = self.source.set(path);
    }

    /// Reads the configuration file again and applies what can change while control runs:
    /// sites, zones, GeoIP, keycard and report keys, pinned edges, trusted proxies, policies.
    /// A file that does not validate changes nothing; the refusal is logged, counted and shown
    /// in `/healthz` until a reload succeeds.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let outcome = self.try_reload();
        let mut failure = self
            .reloads
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match &outcome {
            Ok(reloaded) => {
                self.reloads.applied.fetch_add(1, Ordering::Relaxed);
                *failure = None;
                tracing::info!(needs_restart = ?reloaded.needs_restart, "configuration reloaded");
            }
            Err(error) => {
                self.reloads.refused.fetch_add(1, Ordering::Relaxed);
                *failure = Some(error.to_string());
                tracing::warn!(%error, "reload refused; the configuration in use is unchanged");
            }
        }
        outcome
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.source.get().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path)?;
        let keys = read_key_files(&config)?;
        // Everything is opened and checked before anything is replaced.
        let tables = Tables::open(&config, &keys)?;
        *self.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tables);
        self.intake.reconfigure(&config, keys.reports);
        self.set_policies(config.policy.clone());
        Ok(Reloaded {
            needs_restart: self.fixed.differences(&Fixed::of(&config)),
        })
    }

    /// Reloads applied and refused so far, and why the last one was refused while no reload
    /// has succeeded since.
    pub fn reload_counts(&self) -> (u64, u64, Option<String>) {
        (
            self.reloads.applied.load(Ordering::Relaxed),
            self.reloads.refused.load(Ordering::Relaxed),
            self.reloads
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// The routing tables, minter and trusted proxies in use now.
    pub fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn origins(&self) -> &Origins {
        &self.origins
    }

    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// What every connection is kept to: the configured timeouts and estuary-http's bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The admin API's bearer token, if one is configured.
    pub fn admin_token(&self) -> Option<&str> {
        self.admin_token.as_deref()
    }

    /// Where the viewer at `peer` (or the client its `X-Forwarded-For` names, when `peer` is
    /// a trusted proxy) asking for `path` goes now; the decision is remembered for the admin
    /// API and told to the event stream.
    pub fn answer(&self, peer: IpAddr, path: &PublicPath, forwarded_for: Option<&str>) -> Answer {
        let tables = self.tables();
        let client = net::client_address(peer, forwarded_for, &tables.trusted_proxies);
        let now = Instant::now();
        let presence = match path.channel() {
            Some(channel) => self.origins.presence(channel.as_str(), now),
            None => Presence::Unknown,
        };
        let snapshot = self.registry.shared(now);
        let policy = match path.channel() {
            Some(channel) => self.policies().policy_for(channel.as_str()),
            None => self.policies().default,
        };
        let known = Known {
            router: &tables.router,
            snapshot: &snapshot,
            presence,
            minter: tables.minter.as_ref(),
        };
        let answer = viewer::answer(Ask { client, path }, known, policy, unix_now().as_secs());
        if let Some(decision) = answer.decision() {
            let keycard_id = match &answer {
                Answer::Redirect(redirect) => redirect.keycard_id.as_deref(),
                _ => None,
            };
            self.activity
                .record(decision, keycard_id, presence == Presence::Live);
        }
        if let Answer::Redirect(redirect) = &answer {
            let decision = &redirect.decision;
            tracing::debug!(
                %client,
                channel = %decision.channel,
                edge = ?decision.edge.as_ref().map(|edge| &edge.id),
                site = ?decision.site,
                keycard = ?redirect.keycard_id,
                "redirect"
            );
        }
        answer
    }

    /// Where `client` asking for `channel` would go now, recording nothing.
    pub fn decide(&self, client: IpAddr, channel: &ChannelName) -> Decision {
        let snapshot = self.registry.shared(Instant::now());
        let policy = self.policies().policy_for(channel.as_str());
        self.tables()
            .router
            .route(Request { client, channel }, &snapshot, policy)
    }

    /// Takes an edge's report: `signature` is its signature header, `body` the bytes as sent.
    /// A refused report changes nothing.
    pub fn take_report(&self, signature: Option<&[u8]>, body: &[u8]) -> Result<(), Refusal> {
        let tables = self.tables();
        let known = |site: &str| tables.router.sites.iter().any(|s| s.name == site);
        let admitted = self.intake.check(signature, body, unix_ms(), known)?;
        let id = admitted.report.id.clone();
        self.intake.commit(admitted, |report| {
            self.registry
                .hear(report, Instant::now())
                .map_err(|full| Refusal {
                    status: hyper::StatusCode::SERVICE_UNAVAILABLE,
                    reason: full.to_string(),
                })
        })?;
        self.announce_edge(&id);
        Ok(())
    }

    /// Takes a report that crossed no network (tests): only its bounds are checked.
    #[cfg(test)]
    pub(crate) fn hear(&self, report: estuary_proto::report::EdgeReport) {
        report.check().expect("a test report within bounds");
        let id = report.id.clone();
        self.registry
            .hear(report, Instant::now())
            .expect("room for a test edge");
        self.announce_edge(&id);
    }

    /// Tells the event stream what control knows of edge `id` now.
    fn announce_edge(&self, id: &str) {
        if self.activity.watched() {
            let snapshot = self.registry.snapshot(Instant::now());
            if let Some(edge) = snapshot.edges.iter().find(|edge| edge.report.id == id) {
                self.activity.announce("edge", edge);
            }
        }
    }

    /// Forgets the edges silent for the configured `forget_after`, and the signature times
    /// that the clock window now refuses anyway. Called every second.
    pub fn sweep(&self) {
        for id in self.registry.forget_silent(Instant::now()) {
            tracing::info!(edge = %id, "edge forgotten: silent for reports.forget_after");
            self.activity
                .announce("forgotten", &serde_json::json!({ "id": id }));
        }
        self.intake.prune(unix_ms());
    }

    pub fn policies(&self) -> PolicyConfig {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_policies(&self, policies: PolicyConfig) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = policies.clone();
        self.activity.announce("policy", &policies);
    }

    /// Forgets edge `id` until it reports again; whether it was known.
    pub fn forget(&self, id: &str) -> bool {
        let forgotten = self.registry.forget(id);
        if forgotten {
            self.activity
                .announce("forgotten", &serde_json::json!({ "id": id }));
        }
        forgotten
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Control with one site, lon, and its edge lon-1 heard from.
    pub fn control(extra: &str, keys: Keys) -> Arc<Control> {
        let config = Config::parse(&format!(
            "{extra}\n[[sites]]\nname = \"lon\"\nlatitude = 51.5\nlongitude = -0.13\ncost_per_gb = 0.02\ncapacity_mbps = 1000\n",
        ))
        .unwrap();
        let control = Control::with_keys(&config, keys).unwrap();
        control.hear(crate::registry::tests::report("lon-1", "lon"));
        control
    }

    #[test]
    fn each_redirect_carries_its_own_keycard_and_the_decision_keeps_its_id() {
        let key = KeycardKey::from_hex(Some("k1"), &"11".repeat(16)).unwrap();
        let keys = Keys {
            keycards: vec![key],
            keycard_lifetime: Duration::from_secs(300),
            reports: Vec::new(),
        };
        let control = control("", keys);
        let peer = IpAddr::from([192, 0, 2, 7]);
        let path = PublicPath::parse("/live/demo/master.m3u8", None).unwrap();
        let ids: Vec<String> = (0..2)
            .map(|_| {
                let Answer::Redirect(redirect) = control.answer(peer, &path, None) else {
                    panic!("a redirect");
                };
                redirect.keycard_id.unwrap()
            })
            .collect();
        assert_ne!(ids[0], ids[1], "every redirect has a keycard of its own");
        let state = control.activity.lock();
        let recent = &state.recent["default"];
        let kept: Vec<&str> = recent
            .iter()
            .filter_map(|(_, _, id)| id.as_deref())
            .collect();
        assert_eq!(kept, [ids[1].as_str(), ids[0].as_str()], "newest first");
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_others_do_not() {
        let control = control("trusted_proxies = [\"127.0.0.1/32\"]", Keys::default());
        let path = PublicPath::parse("/live/demo/master.m3u8", None).unwrap();
        let client = |peer: [u8; 4]| {
            let answer = control.answer(IpAddr::from(peer), &path, Some("198.51.100.4"));
            answer.decision().unwrap().client
        };
        assert_eq!(client([127, 0, 0, 1]), IpAddr::from([198, 51, 100, 4]));
        assert_eq!(client([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 1]));
    }
}
