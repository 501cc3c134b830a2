//! What control has done lately, for the admin API: recent decisions per client group (with
//! the keycard each redirect carried), redirects per second of the last minute per group and
//! per site, the channels viewers asked for, and the event stream's subscribers. Every map is
//! bounded: groups and sites by the configuration and the GeoIP database, channels by
//! [`MAX_CHANNELS`] (the origins' live channels aside), the rest counted together.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::routing::Decision;

/// Decisions kept per client group.
const RECENT_PER_GROUP: usize = 20;
/// Redirects per group and per site are counted over this many seconds.
const ARRIVALS_SECONDS: u64 = 60;
/// Channels counted by name, besides those an origin has live; any other is counted in
/// `other`. Viewers may ask for any name, and nothing they ask may grow control's memory.
pub const MAX_CHANNELS: usize = 1_000;
/// A channel not asked for this long gives its place up when a new one needs it.
const CHANNEL_MEMORY: Duration = Duration::from_secs(3600);

/// What control has done lately, and who is watching.
pub struct Activity {
    state: Mutex<Recorded>,
    pub(crate) events: broadcast::Sender<String>,
    started: Instant,
}

/// A decision as kept: when, the decision, and the id of the keycard its redirect carried.
pub(crate) type Kept = (f64, Arc<Decision>, Option<Arc<str>>);

#[derive(Default)]
pub(crate) struct Recorded {
    pub(crate) recent: BTreeMap<String, VecDeque<Kept>>,
    pub(crate) channels: Channels,
    /// Redirects per second of the last minute, per group and per site.
    group_arrivals: BTreeMap<String, Arrivals>,
    site_arrivals: BTreeMap<String, Arrivals>,
}

/// The channels viewers asked for.
#[derive(Debug, Default, Serialize)]
pub struct Channels {
    pub named: BTreeMap<String, ChannelSeen>,
    /// The channels past [`MAX_CHANNELS`], together.
    pub other: ChannelSeen,
    /// When names unseen for [`CHANNEL_MEMORY`] were last dropped (seconds since start).
    #[serde(skip)]
    pruned_at: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ChannelSeen {
    pub redirects: u64,
    pub last_unix_seconds: f64,
}

impl ChannelSeen {
    fn count(&mut self, now: f64) {
        self.redirects += 1;
        self.last_unix_seconds = now;
    }
}

impl Channels {
    /// Counts a redirect for `channel`, which the origins have live when `live`, at `now`
    /// (Unix seconds), `second` seconds after start.
    fn count(&mut self, channel: &str, live: bool, now: f64, second: u64) {
        if let Some(seen) = self.named.get_mut(channel) {
            return seen.count(now);
        }
        if self.named.len() >= MAX_CHANNELS
            && !live
            && self.pruned_at.is_none_or(|at| at + 60 <= second)
        {
            // At most once a minute: names nobody asked for in an hour give their places up.
            self.pruned_at = Some(second);
            let oldest = now - CHANNEL_MEMORY.as_secs_f64();
            self.named
                .retain(|_, seen| seen.last_unix_seconds >= oldest);
        }
        if self.named.len() < MAX_CHANNELS || live {
            self.named.entry(channel.to_owned()).or_default().count(now);
        } else {
            self.other.count(now);
        }
    }
}

/// Counts per second, the newest last, for the last [`ARRIVALS_SECONDS`].
#[derive(Default)]
pub(crate) struct Arrivals(VecDeque<(u64, u64)>);

impl Arrivals {
    fn add(&mut self, second: u64) {
        match self.0.back_mut() {
            Some((last, count)) if *last == second => *count += 1,
            _ => self.0.push_back((second, 1)),
        }
        while self
            .0
            .front()
            .is_some_and(|(first, _)| first + ARRIVALS_SECONDS <= second)
        {
            self.0.pop_front();
        }
    }

    fn count(&self, second: u64) -> u64 {
        self.0
            .iter()
            .filter(|(at, _)| at + ARRIVALS_SECONDS > second)
            .map(|(_, count)| count)
            .sum()
    }
}

/// Counts one more in `map[key]`, allocating the key only the first time.
fn count_in(map: &mut BTreeMap<String, Arrivals>, key: &str, second: u64) {
    match map.get_mut(key) {
        Some(arrivals) => arrivals.add(second),
        None => map.entry(key.to_owned()).or_default().add(second),
    }
}

/// A decision as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Recent<'a> {
    pub unix_seconds: f64,
    pub client: std::net::IpAddr,
    pub channel: &'a str,
    pub site: Option<&'a str>,
    pub edge: Option<&'a str>,
    /// The `id=` of the keycard in the redirect: what to list in the edges' `--revoked` file.
    pub keycard_id: Option<&'a str>,
    pub reason: String,
}

impl<'a> Recent<'a> {
    pub(crate) fn of(kept: &'a Kept) -> Recent<'a> {
        let (unix_seconds, decision, keycard_id) = kept;
        Recent {
            unix_seconds: *unix_seconds,
            client: decision.client,
            channel: &decision.channel,
            site: decision.site.as_deref(),
            edge: decision.edge.as_ref().map(|edge| edge.id.as_str()),
            keycard_id: keycard_id.as_deref(),
            reason: decision.reason(),
        }
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            state: Mutex::default(),
            events: broadcast::channel(1024).0,
            started: Instant::now(),
        }
    }
}

impl Activity {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn second(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether anyone follows the event stream.
    pub fn watched(&self) -> bool {
        self.events.receiver_count() > 0
    }

    /// Sends `{"kind": KIND, "data": DATA}` to whoever follows the event stream.
    pub fn announce(&self, kind: &str, data: &impl Serialize) {
        if self.watched()
            && let Ok(text) =
                serde_json::to_string(&serde_json::json!({ "kind": kind, "data": data }))
        {
            let _ = self.events.send(text);
        }
    }

    /// Remembers a redirect's decision, the id of the keycard it carried, and whether the
    /// origins have its channel live.
    pub fn record(&self, decision: &Arc<Decision>, keycard_id: Option<&str>, live: bool) {
        let now = unix_seconds();
        let second = self.second();
        let kept: Kept = (now, decision.clone(), keycard_id.map(Arc::from));
        {
            let mut state = self.lock();
            let group = decision.group.name.as_str();
            let recent = match state.recent.get_mut(group) {
                Some(recent) => recent,
                None => state.recent.entry(group.to_owned()).or_default(),
            };
            if recent.len() == RECENT_PER_GROUP {
                recent.pop_back();
            }
            recent.push_front(kept.clone());
            state.channels.count(&decision.channel, live, now, second);
            count_in(&mut state.group_arrivals, group, second);
            if let Some(site) = &decision.site {
                count_in(&mut state.site_arrivals, site, second);
            }
        }
        if self.watched() {
            self.announce(
                "decision",
                &serde_json::json!({
                    "group": decision.group.name,
                    "decision": Recent::of(&kept),
                }),
            );
        }
    }

    /// Redirects of the last minute, per group and per site.
    pub(crate) fn arrivals(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let state = self.lock();
        let second = self.second();
        let counts = |map: &BTreeMap<String, Arrivals>| {
            map.iter()
                .map(|(key, arrivals)| (key.clone(), arrivals.count(second)))
                .collect()
        };
        (counts(&state.group_arrivals), counts(&state.site_arrivals))
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_count_the_last_minute() {
        let mut arrivals = Arrivals::default();
        for second in [0, 0, 1, 30, 59] {
            arrivals.add(second);
        }
        assert_eq!(arrivals.count(59), 5);
        assert_eq!(arrivals.count(60), 3);
        arrivals.add(90);
        assert_eq!(arrivals.count(90), 2);
        assert_eq!(arrivals.0.len(), 2, "older seconds are dropped");
    }

    /// A name of 12 characters from a small generator (no randomness crate needed).
    fn random_name(state: &mut u64) -> String {
        (0..12)
            .map(|_| {
                // xorshift64
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                char::from(b'a' + (*state % 26) as u8)
            })
            .collect()
    }

    #[test]
    fn thousands_of_channel_names_stay_bounded() {
        let mut channels = Channels::default();
        let mut state = 0x2545_f491_4f6c_dd1d;
        let now = 1_800_000_000.0;
        channels.count("news", false, now, 0);
        for _ in 0..5_000 {
            channels.count(&random_name(&mut state), false, now, 0);
        }
        assert_eq!(channels.named.len(), MAX_CHANNELS);
        assert_eq!(channels.other.redirects, 5_001 - MAX_CHANNELS as u64);
        // A channel already counted keeps its name; a live one gets one past the cap.
        channels.count("news", false, now, 1);
        assert_eq!(channels.named["news"].redirects, 2);
        channels.count("sport", true, now, 1);
        assert_eq!(channels.named["sport"].redirects, 1);
        // An hour later, names nobody asked for since give their places up, at most once a
        // minute.
        let later = now + 3601.0;
        channels.count("news", false, later, 3601);
        channels.count("weather", false, later, 3601);
        assert!(channels.named.len() <= 3, "{}", channels.named.len());
        assert!(channels.named.contains_key("weather"));
        assert!(channels.named.contains_key("news"));
    }
}
