//! Routing: which edge a viewer is sent to, as a pure function of the request, a snapshot of
//! the registry and the policy, given the sites, zones and GeoIP database. The load-test
//! simulator shares its core: [`Router::group`] and [`rank_sites`]. Every decision
//! says why: the client group and how it was found, each candidate site in the policy's order
//! with its distance, cost and load, and why a site was passed over.
//!
//! 1. Client group: the coverage zone with the longest prefix holding the address, else the
//!    country and location GeoIP gives, else the default group.
//! 2. Site: ordered by the channel's policy (`closest`, `least_cost`, `least_loaded`); a site
//!    with no live edge, or whose edges report as much egress as its capacity, is skipped and
//!    the next one overflows in.
//! 3. Edge within the site: consistent hashing with bounded loads on the channel. The edges
//!    are ranked by a hash of (channel, edge) (rendezvous hashing), so one channel keeps going
//!    to the same edge and each edge caches few channels; an edge already holding more than
//!    [`LOAD_BOUND`] times the site's average viewers is passed over for the next in rank.

use std::net::IpAddr;

use estuary_proto::url::ChannelName;
use serde::Serialize;

use crate::config::{Config, Policy, Site};
use crate::coverage::Coverage;
use crate::geo::GeoDatabase;
use crate::registry::{EdgeState, Snapshot};

/// How far above the site's average an edge's viewers may go (Mirrokni, Thorup and
/// Zadimoghaddam's c in "Consistent Hashing with Bounded Loads", 2018).
pub const LOAD_BOUND: f64 = 1.25;

/// Mean Earth radius in km (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// What routing needs that does not change between requests.
#[derive(Debug)]
pub struct Router {
    pub sites: Vec<Site>,
    pub coverage: Coverage,
    pub geo: Option<GeoDatabase>,
    pub default_group: String,
}

/// Who asks for what: the channel is the one a parsed path of the public layout names
/// (`PublicPath::channel`), so routing never sees a name the layout would not take.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    pub client: IpAddr,
    pub channel: &'a ChannelName,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub client: IpAddr,
    pub channel: String,
    pub policy: Policy,
    pub group: Group,
    /// Every site, in the order the policy ranks them.
    pub candidates: Vec<Candidate>,
    pub site: Option<String>,
    pub edge: Option<Chosen>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    /// `zone`, `geoip` or `default`.
    pub source: &'static str,
    pub country: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub site: String,
    /// Great-circle distance from the group's location; none when the group has no location.
    pub distance_km: Option<f64>,
    pub cost_per_gb: f64,
    /// Reported egress of the site's live edges over its capacity.
    pub load: f64,
    pub live_edges: usize,
    /// Why the site was passed over, if it was.
    pub skipped: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chosen {
    pub id: String,
    pub url: String,
    pub clients: u64,
    /// The most viewers an edge of the site may hold before the channel moves on.
    pub bound: u64,
}

impl Router {
    pub fn new(config: &Config, coverage: Coverage, geo: Option<GeoDatabase>) -> Router {
        Router {
            sites: config.sites.clone(),
            coverage,
            geo,
            default_group: config.default_group.clone(),
        }
    }

    /// The client group of `client`.
    pub fn group(&self, client: IpAddr) -> Group {
        if let Some(zone) = self.coverage.zone(client) {
            return Group {
                name: zone.name.clone(),
                source: "zone",
                country: None,
                city: None,
                latitude: zone.latitude,
                longitude: zone.longitude,
            };
        }
        if let Some(place) = self.geo.as_ref().and_then(|geo| geo.place(client)) {
            return Group {
                name: place
                    .country
                    .clone()
                    .unwrap_or_else(|| self.default_group.clone()),
                source: "geoip",
                country: place.country,
                city: place.city,
                latitude: place.latitude,
                longitude: place.longitude,
            };
        }
        Group {
            name: self.default_group.clone(),
            source: "default",
            country: None,
            city: None,
            latitude: None,
            longitude: None,
        }
    }

    /// Where `request` goes by `policy`, given what the registry knows now.
    pub fn route(&self, request: Request<'_>, snapshot: &Snapshot, policy: Policy) -> Decision {
        let group = self.group(request.client);
        let location = group.latitude.zip(group.longitude);
        let edges: Vec<Vec<&EdgeState>> = self
            .sites
            .iter()
            .map(|site| {
                snapshot
                    .edges
                    .iter()
                    .filter(|edge| edge.report.site == site.name && edge.is_live())
                    .collect()
            })
            .collect();
        let states: Vec<SiteState> = self
            .sites
            .iter()
            .zip(&edges)
            .map(|(site, edges)| {
                let egress: u64 = edges.iter().map(|edge| edge.report.egress_bps).sum();
                SiteState {
                    live_edges: edges.len(),
                    load: egress as f64 / (site.capacity_mbps * 1e6),
                }
            })
            .collect();
        let distances: Vec<Option<f64>> = self.distances(location).collect();
        let mut order: Vec<usize> = (0..self.sites.len()).collect();
        let chosen = rank_sites(&self.sites, &distances, &states, policy, &mut order);
        let candidates: Vec<Candidate> = order
            .iter()
            .map(|&index| {
                let (site, state) = (&self.sites[index], states[index]);
                Candidate {
                    site: site.name.clone(),
                    distance_km: distances[index],
                    cost_per_gb: site.cost_per_gb,
                    load: state.load,
                    live_edges: state.live_edges,
                    skipped: state.unusable().map(|why| match why {
                        Unusable::NoLiveEdge => "no live edge".to_owned(),
                        Unusable::Full => {
                            format!("full: egress at {:.0} % of capacity", state.load * 100.0)
                        }
                    }),
                }
            })
            .collect();
        let (site, edge) = match chosen {
            Some(position) => {
                let index = order[position];
                (
                    Some(self.sites[index].name.clone()),
                    Some(pick_edge(request.channel.as_str(), &edges[index])),
                )
            }
            None => (None, None),
        };
        Decision {
            client: request.client,
            channel: request.channel.to_string(),
            policy,
            group,
            candidates,
            site,
            edge,
        }
    }

    /// The great-circle distance from `location` to each site, in the order of `sites`; none
    /// when there is no location.
    pub fn distances(
        &self,
        location: Option<(f64, f64)>,
    ) -> impl Iterator<Item = Option<f64>> + '_ {
        self.sites.iter().map(move |site| {
            location.map(|(latitude, longitude)| {
                great_circle_km(latitude, longitude, site.latitude, site.longitude)
            })
        })
    }
}

/// What site ranking needs to know about a site now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SiteState {
    pub live_edges: usize,
    /// Egress of the site's live edges over its capacity.
    pub load: f64,
}

/// Why a site cannot take a viewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    NoLiveEdge,
    /// Its egress is at or above its capacity.
    Full,
}

impl SiteState {
    pub fn unusable(self) -> Option<Unusable> {
        if self.live_edges == 0 {
            Some(Unusable::NoLiveEdge)
        } else if self.load >= 1.0 {
            Some(Unusable::Full)
        } else {
            None
        }
    }
}

/// The site choice at the heart of routing, shared by [`Router::route`] and the load-test
/// simulator, and allocation-free so that the simulator can call it for every logged request.
/// Sorts `order` (indices into `sites`, `distances` and `states`, one each per site) by
/// `policy`, ties broken by the other criterion, then by name and index; returns the position
/// in `order` of the first site that can take the viewer, if any. Every site before it was
/// skipped: an overflow when the first was full.
pub fn rank_sites(
    sites: &[Site],
    distances: &[Option<f64>],
    states: &[SiteState],
    policy: Policy,
    order: &mut [usize],
) -> Option<usize> {
    let distance = |index: usize| distances[index].unwrap_or(f64::INFINITY);
    // An unstable sort does not allocate; the index makes the order total, as stable.
    order.sort_unstable_by(|&a, &b| {
        let (first, second) = match policy {
            Policy::Closest => (
                distance(a).total_cmp(&distance(b)),
                sites[a].cost_per_gb.total_cmp(&sites[b].cost_per_gb),
            ),
            Policy::LeastCost => (
                sites[a].cost_per_gb.total_cmp(&sites[b].cost_per_gb),
                distance(a).total_cmp(&distance(b)),
            ),
            Policy::LeastLoaded => (
                states[a].load.total_cmp(&states[b].load),
                distance(a).total_cmp(&distance(b)),
            ),
        };
        first
            .then(second)
            .then_with(|| sites[a].name.cmp(&sites[b].name))
            .then(a.cmp(&b))
    });
    order
        .iter()
        .position(|&index| states[index].unusable().is_none())
}

impl Decision {
    /// The decision in a sentence: the group, the policy, the sites passed over and why, the
    /// site and the edge. Made when asked for, not for every redirect.
    pub fn reason(&self) -> String {
        let group = format!(
            "group {} ({}) by {}",
            self.group.name,
            self.group.source,
            self.policy.as_str()
        );
        let (Some(site), Some(edge)) = (&self.site, &self.edge) else {
            return format!("{group}: no site can take viewers");
        };
        let passed: Vec<String> = self
            .candidates
            .iter()
            .take_while(|candidate| &candidate.site != site)
            .map(|c| format!("{} ({})", c.site, c.skipped.as_deref().unwrap_or("")))
            .collect();
        let overflow = if passed.is_empty() {
            String::new()
        } else {
            format!(", after passing over {}", passed.join(", "))
        };
        format!(
            "{group}: site {site}{overflow}; edge {} for channel {}",
            edge.id, self.channel
        )
    }
}

/// A decision with its reason, as the route API and the admin API show it.
#[derive(Serialize)]
pub struct Explained<'a> {
    #[serde(flatten)]
    pub decision: &'a Decision,
    pub reason: String,
}

impl<'a> From<&'a Decision> for Explained<'a> {
    fn from(decision: &'a Decision) -> Explained<'a> {
        Explained {
            reason: decision.reason(),
            decision,
        }
    }
}

/// Consistent hashing with bounded loads over `edges` (at least one) for `channel`.
fn pick_edge(channel: &str, edges: &[&EdgeState]) -> Chosen {
    let total: u64 = edges.iter().map(|edge| edge.report.clients).sum();
    let bound = (LOAD_BOUND * (total + 1) as f64 / edges.len() as f64).ceil() as u64;
    let mut ranked: Vec<&EdgeState> = edges.to_vec();
    ranked.sort_by_key(|edge| {
        std::cmp::Reverse((rank(channel, &edge.report.id), edge.report.id.clone()))
    });
    // Some edge is always under the bound: were every one at it, they would hold at least
    // LOAD_BOUND times more viewers than they do.
    let edge = ranked
        .iter()
        .find(|edge| edge.report.clients < bound)
        .unwrap_or(&ranked[0]);
    Chosen {
        id: edge.report.id.clone(),
        url: edge.report.url.clone(),
        clients: edge.report.clients,
        bound,
    }
}

/// A stable 64-bit hash of (channel, edge): FNV-1a, then SplitMix64's finalizer to spread it.
fn rank(channel: &str, edge: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in channel.bytes().chain([0xff]).chain(edge.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The great-circle distance between two points (haversine), in km.
pub fn great_circle_km(
    latitude_a: f64,
    longitude_a: f64,
    latitude_b: f64,
    longitude_b: f64,
) -> f64 {
    let (phi_a, phi_b) = (latitude_a.to_radians(), latitude_b.to_radians());
    let d_phi = phi_b - phi_a;
    let d_lambda = (longitude_b - longitude_a).to_radians();
    let h =
        (d_phi / 2.0).sin().powi(2) + phi_a.cos() * phi_b.cos() * (d_lambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Zone;
    use estuary_proto::Mood;
    use estuary_proto::report::EdgeReport;

    fn site(name: &str, latitude: f64, longitude: f64, cost: f64) -> Site {
        Site {
            name: name.into(),
            latitude,
            longitude,
            cost_per_gb: cost,
            capacity_mbps: 1000.0,
        }
    }

    fn edge(id: &str, site: &str, clients: u64, egress_bps: u64) -> EdgeState {
        EdgeState {
            report: EdgeReport {
                id: id.into(),
                site: site.into(),
                url: format!("http://{id}:8090"),
                clients,
                egress_bps,
                cache_hit_ratio: 1.0,
                cpu: 0.1,
                mood: Mood::Happy,
                reason: None,
            },
            age_seconds: 0.5,
            mood: Mood::Happy,
        }
    }

    /// The three sites of the acceptance criteria, a GeoIP database that places London and
    /// Milton (WA) as MaxMind's test database does, and a coverage zone.
    fn router(dir: &std::path::Path) -> Router {
        let path = dir.join("city.mmdb");
        std::fs::write(
            &path,
            crate::geo::test_database(&[
                ("81.2.69.142/31", "GB", "London", 51.5142, -0.0931),
                ("216.160.83.56/29", "US", "Milton", 47.2513, -122.3149),
            ]),
        )
        .unwrap();
        Router {
            sites: vec![
                site("lon", 51.5, -0.13, 0.02),
                site("fra", 50.1, 8.7, 0.01),
                site("nyc", 40.7, -74.0, 0.03),
            ],
            coverage: Coverage::new(vec![Zone {
                name: "office".into(),
                networks: vec!["81.2.69.142/32".parse().unwrap()],
                latitude: Some(40.7),
                longitude: Some(-74.0),
            }]),
            geo: Some(GeoDatabase::open(&path).unwrap()),
            default_group: "default".into(),
        }
    }

    fn demo() -> ChannelName {
        ChannelName::new("demo").unwrap()
    }

    fn ask(router: &Router, policy: Policy, client: &str, snapshot: &Snapshot) -> Decision {
        router.route(
            Request {
                client: client.parse().unwrap(),
                channel: &demo(),
            },
            snapshot,
            policy,
        )
    }

    #[test]
    fn sites_are_chosen_by_policy_with_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let mut snapshot = Snapshot {
            edges: vec![
                edge("lon-1", "lon", 0, 0),
                edge("fra-1", "fra", 0, 0),
                edge("nyc-1", "nyc", 0, 0),
            ],
        };
        let router = router(dir.path());
        let (closest, cheapest) = (Policy::Closest, Policy::LeastCost);
        let london = "81.2.69.143";
        let decision = ask(&router, closest, london, &snapshot);
        assert_eq!(decision.group.source, "geoip");
        assert_eq!(decision.group.city.as_deref(), Some("London"));
        assert_eq!(
            decision.site.as_deref(),
            Some("lon"),
            "{}",
            decision.reason()
        );
        assert_eq!(decision.edge.as_ref().unwrap().id, "lon-1");
        assert_eq!(
            ask(&router, cheapest, london, &snapshot).site.as_deref(),
            Some("fra")
        );
        assert_eq!(
            ask(&router, closest, "216.160.83.58", &snapshot)
                .site
                .as_deref(),
            Some("nyc")
        );

        // fra reports more than its capacity: least_cost overflows to the next cheapest.
        snapshot.edges[1].report.egress_bps = 1_200_000_000;
        let decision = ask(&router, cheapest, london, &snapshot);
        assert_eq!(
            decision.site.as_deref(),
            Some("lon"),
            "{}",
            decision.reason()
        );
        assert_eq!(decision.candidates[0].site, "fra");
        assert!(
            decision.candidates[0]
                .skipped
                .as_deref()
                .unwrap()
                .starts_with("full")
        );
        assert!(
            decision.reason().contains("passing over fra"),
            "{}",
            decision.reason()
        );

        // A lost edge gets nobody.
        snapshot.edges[1].report.egress_bps = 0;
        snapshot.edges[0].mood = Mood::Lost;
        let decision = ask(&router, closest, london, &snapshot);
        assert_eq!(
            decision.site.as_deref(),
            Some("fra"),
            "{}",
            decision.reason()
        );
        assert_eq!(
            decision.candidates[0].skipped.as_deref(),
            Some("no live edge")
        );
    }

    #[test]
    fn a_coverage_zone_comes_before_geoip() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot = Snapshot {
            edges: vec![edge("lon-1", "lon", 0, 0), edge("nyc-1", "nyc", 0, 0)],
        };
        let decision = ask(
            &router(dir.path()),
            Policy::Closest,
            "81.2.69.142",
            &snapshot,
        );
        assert_eq!(
            (decision.group.name.as_str(), decision.group.source),
            ("office", "zone")
        );
        assert_eq!(decision.site.as_deref(), Some("nyc"));
        // Unplaced clients have no distance: the cheapest site with room takes them.
        let decision = ask(&router(dir.path()), Policy::Closest, "192.0.2.1", &snapshot);
        assert_eq!(decision.group.source, "default");
        assert_eq!(decision.site.as_deref(), Some("lon"));
        assert!(decision.candidates.iter().all(|c| c.distance_km.is_none()));
    }

    #[test]
    fn nobody_is_sent_anywhere_when_no_site_can_take_them() {
        let dir = tempfile::tempdir().unwrap();
        let decision = ask(
            &router(dir.path()),
            Policy::LeastLoaded,
            "81.2.69.143",
            &Snapshot::default(),
        );
        assert_eq!((&decision.site, &decision.edge), (&None, &None));
        assert!(
            decision.reason().contains("no site"),
            "{}",
            decision.reason()
        );
        assert_eq!(decision.candidates.len(), 3);
    }

    #[test]
    fn channels_stick_to_edges_and_no_edge_takes_more_than_its_share() {
        let edges: Vec<EdgeState> = (0..4)
            .map(|i| edge(&format!("e{i}"), "lon", 0, 0))
            .collect();
        let refs: Vec<&EdgeState> = edges.iter().collect();
        // The same channel goes to the same edge; different channels spread out.
        let first = pick_edge("news", &refs).id;
        assert_eq!(pick_edge("news", &refs).id, first);
        let spread: std::collections::BTreeSet<String> = (0..40)
            .map(|i| pick_edge(&format!("channel-{i}"), &refs).id)
            .collect();
        assert_eq!(spread.len(), 4);
        // Removing an edge moves only the channels it had.
        let before: Vec<String> = (0..40)
            .map(|i| pick_edge(&format!("channel-{i}"), &refs).id)
            .collect();
        let without: Vec<&EdgeState> = refs
            .iter()
            .copied()
            .filter(|e| e.report.id != "e0")
            .collect();
        for (i, was) in before.iter().enumerate() {
            let now = pick_edge(&format!("channel-{i}"), &without).id;
            if was != "e0" {
                assert_eq!(&now, was, "channel-{i} moved although its edge stayed");
            }
        }
        // Viewers of one channel arrive one by one: the favourite edge fills to the bound,
        // then the next in rank takes them, and none exceeds the bound.
        let mut edges = edges.clone();
        for _ in 0..200 {
            let refs: Vec<&EdgeState> = edges.iter().collect();
            let chosen = pick_edge("news", &refs);
            assert!(chosen.clients < chosen.bound);
            let target = edges.iter_mut().find(|e| e.report.id == chosen.id).unwrap();
            target.report.clients += 1;
        }
        let most = edges.iter().map(|e| e.report.clients).max().unwrap();
        assert!(most as f64 <= LOAD_BOUND * 200.0 / 4.0 + 1.0, "{most}");
    }

    #[test]
    fn the_shared_ranking_is_the_order_route_explains() {
        let dir = tempfile::tempdir().unwrap();
        let router = router(dir.path());
        let mut snapshot = Snapshot {
            edges: vec![
                edge("lon-1", "lon", 0, 0),
                edge("fra-1", "fra", 0, 900_000_000),
                edge("nyc-1", "nyc", 0, 1_000_000_000),
            ],
        };
        let london = "81.2.69.143".parse().unwrap();
        let location = Some((51.5142, -0.0931));
        let distances: Vec<Option<f64>> = router.distances(location).collect();
        for policy in [Policy::Closest, Policy::LeastCost, Policy::LeastLoaded] {
            for fra_egress in [0, 1_000_000_000] {
                snapshot.edges[1].report.egress_bps = fra_egress;
                let states: Vec<SiteState> = snapshot
                    .edges
                    .iter()
                    .map(|edge| SiteState {
                        live_edges: 1,
                        load: edge.report.egress_bps as f64 / 1e9,
                    })
                    .collect();
                let mut order = [0, 1, 2];
                let chosen = rank_sites(&router.sites, &distances, &states, policy, &mut order);
                let decision = router.route(
                    Request {
                        client: london,
                        channel: &demo(),
                    },
                    &snapshot,
                    policy,
                );
                let ranked: Vec<&str> = order
                    .iter()
                    .map(|&index| router.sites[index].name.as_str())
                    .collect();
                let explained: Vec<&str> = decision
                    .candidates
                    .iter()
                    .map(|c| c.site.as_str())
                    .collect();
                assert_eq!(ranked, explained, "{policy:?}");
                assert_eq!(
                    chosen.map(|position| router.sites[order[position]].name.as_str()),
                    decision.site.as_deref(),
                    "{policy:?}"
                );
            }
        }
        // nyc is full in every case above; with fra full too, least_cost overflows to lon.
        let states = [
            SiteState {
                live_edges: 1,
                load: 0.2,
            },
            SiteState {
                live_edges: 1,
                load: 1.0,
            },
            SiteState {
                live_edges: 1,
                load: 1.5,
            },
        ];
        let mut order = [0, 1, 2];
        let chosen = rank_sites(
            &router.sites,
            &distances,
            &states,
            Policy::LeastCost,
            &mut order,
        );
        assert_eq!((order, chosen), ([1, 0, 2], Some(1)));
        let full = [SiteState {
            live_edges: 1,
            load: 1.0,
        }; 3];
        assert_eq!(
            rank_sites(
                &router.sites,
                &distances,
                &full,
                Policy::Closest,
                &mut order
            ),
            None
        );
    }

    #[test]
    fn distances_are_great_circles() {
        // London to Frankfurt is about 640 km, London to New York about 5,570 km.
        let lon_fra = great_circle_km(51.5, -0.13, 50.1, 8.7);
        let lon_nyc = great_circle_km(51.5, -0.13, 40.7, -74.0);
        assert!((630.0..650.0).contains(&lon_fra), "{lon_fra}");
        assert!((5550.0..5600.0).contains(&lon_nyc), "{lon_nyc}");
        assert_eq!(great_circle_km(10.0, 10.0, 10.0, 10.0), 0.0);
    }
}
