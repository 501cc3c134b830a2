//! Loadtest measures the system: streaming request-log reading ([`log`]), the offline
//! simulator that sends every logged request through control's routing ([`simulate`]), and
//! synthetic logs of a day of viewers ([`generate`]), replay of a log against a live system as
//! an open model ([`replay`]), and virtual viewers that play a live stream as players do and
//! report start-up, stalls and latency ([`viewers`]), with their distributions as
//! [`percentiles`].

pub mod clock;
pub mod generate;
pub mod log;
pub mod percentiles;
pub mod plot;
pub mod progress;
pub mod replay;
pub mod simulate;
pub mod viewers;
