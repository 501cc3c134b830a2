//! The routing function on its own: three sites with an edge each, 100 coverage zones, and
//! MaxMind's GeoIP2 city test database (from ../shared/geoip, or $GEOIP_CITY). Clients in a
//! zone, placed by GeoIP, and placed by neither. Then what a redirect adds: minting its
//! keycard (a random id, an HMAC).
//!
//! cargo bench -p estuary-control --bench routing

use std::hint::black_box;
use std::net::IpAddr;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use estuary_control::config::{Policy, Site, Zone};
use estuary_control::coverage::Coverage;
use estuary_control::geo::GeoDatabase;
use estuary_control::registry::{EdgeState, Snapshot};
use estuary_control::routing::{Request, Router};
use estuary_proto::Mood;
use estuary_proto::report::EdgeReport;

fn geoip_path() -> PathBuf {
    std::env::var_os("GEOIP_CITY")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/geoip/GeoIP2-City-Test.mmdb")
        })
}

/// 100 zones of three /24 networks each, as a coverage-zone file of a regional ISP might have.
fn zones() -> Vec<Zone> {
    (0..100u32)
        .map(|i| Zone {
            name: format!("zone-{i}"),
            networks: (0..3u32)
                .map(|j| format!("10.{}.{}.0/24", i, j * 50).parse().unwrap())
                .collect(),
            latitude: Some(40.0 + f64::from(i % 20)),
            longitude: Some(-10.0 + f64::from(i % 30)),
        })
        .collect()
}

fn edge(site: &str) -> EdgeState {
    EdgeState {
        report: EdgeReport {
            id: format!("{site}-1"),
            site: site.into(),
            url: format!("http://{site}-1.example:8090"),
            clients: 10,
            egress_bps: 50_000_000,
            cache_hit_ratio: 0.99,
            cpu: 0.2,
            mood: Mood::Happy,
            reason: None,
        },
        age_seconds: 0.4,
        mood: Mood::Happy,
    }
}

fn routing(c: &mut Criterion) {
    let path = geoip_path();
    if !path.exists() {
        eprintln!(
            "routing bench: {} is not here; set GEOIP_CITY to MaxMind's GeoIP2-City-Test.mmdb",
            path.display()
        );
        return;
    }
    let geo = GeoDatabase::open(&path).unwrap_or_else(|error| panic!("{error}"));
    let site = |name: &str, latitude: f64, longitude: f64, cost_per_gb: f64| Site {
        name: name.into(),
        latitude,
        longitude,
        cost_per_gb,
        capacity_mbps: 10_000.0,
    };
    let router = Router {
        sites: vec![
            site("lon", 51.5, -0.13, 0.02),
            site("fra", 50.1, 8.7, 0.01),
            site("nyc", 40.7, -74.0, 0.03),
        ],
        coverage: Coverage::new(zones()),
        geo: Some(geo),
        default_group: "default".into(),
    };
    let snapshot = Snapshot {
        edges: vec![edge("lon"), edge("fra"), edge("nyc")],
    };
    let mut group = c.benchmark_group("route");
    for (name, client) in [
        ("zone", "10.57.100.9"),
        ("geoip", "81.2.69.142"),
        ("default", "192.0.2.1"),
    ] {
        let client: IpAddr = client.parse().unwrap();
        let channel = estuary_proto::url::ChannelName::new("demo").unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                router.route(
                    black_box(Request {
                        client,
                        channel: &channel,
                    }),
                    &snapshot,
                    Policy::Closest,
                )
            })
        });
    }
    group.finish();
}

fn keycards(c: &mut Criterion) {
    let key = estuary_proto::KeycardKey::from_hex(Some("k1"), &"5a".repeat(32)).unwrap();
    let minter =
        estuary_control::keycards::Minter::new(&[key], std::time::Duration::from_secs(300))
            .unwrap();
    c.bench_function("keycard/mint", |b| {
        b.iter(|| minter.mint("live", black_box("demo"), 1_800_000_000))
    });
}

criterion_group!(benches, routing, keycards);
criterion_main!(benches);
