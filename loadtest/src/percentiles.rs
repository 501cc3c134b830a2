//! Latency and size distributions as the reports show them: HDR histograms with one range for
//! every measurement (1 µs to an hour, three significant digits), and their percentiles.

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of values from 1 to an hour in microseconds, to three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("1 to 3.6e9 with 3 digits are bounds")
}

/// The percentiles of a distribution, in the unit a report gives.
#[derive(Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// The histogram's percentiles, each value divided by `unit` (1000 makes microseconds
    /// milliseconds).
    pub fn of(histogram: &Histogram<u64>, unit: f64) -> Percentiles {
        let ms = |value: u64| value as f64 / unit;
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_in_the_unit_asked_for() {
        let mut latencies = histogram();
        for micros in 1..=1000u64 {
            latencies.record(micros * 1000).unwrap();
        }
        let ms = Percentiles::of(&latencies, 1000.0);
        assert!((ms.p50 - 500.0).abs() < 1.0, "{ms:?}");
        assert!((ms.max - 1000.0).abs() < 1.0, "{ms:?}");
        assert_eq!(Percentiles::of(&histogram(), 1000.0).max, 0.0);
    }
}
