//! Loadtest will own measuring the system: streaming request-log parsing, log replay against a
//! live system, virtual viewers, the offline simulator over control's routing, plots, and the
//! side-by-side benchmarks against peers.
