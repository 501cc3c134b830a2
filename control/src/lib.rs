//! Control will own the CDN's decisions: the registry of sites and edges fed by edge reports,
//! client groups from coverage zones and GeoIP, the routing policies behind each 302 redirect,
//! keycard minting, the admin API and the live dashboard.
