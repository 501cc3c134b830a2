//! Loadtest measures the system: streaming request-log reading ([`log`]), the offline
//! simulator that sends every logged request through control's routing ([`simulate`]), and
//! synthetic logs of a day of viewers ([`generate`]). Replay against a live system and virtual
//! viewers build on the same log reader.

pub mod clock;
pub mod generate;
pub mod log;
pub mod plot;
pub mod progress;
pub mod simulate;
