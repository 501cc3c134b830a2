//! Counters per time bucket, growing both ways as times arrive, and the maths on them: rates,
//! the 95th percentile that CDNs bill by.

use std::ops::AddAssign;

use serde::Serialize;

/// The most buckets one timeline may span (about two years of minutes): a log that spans more
/// needs a larger bucket.
pub const MAX_BUCKETS: i64 = 1 << 20;

/// Requests and body bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cell {
    pub requests: u64,
    pub bytes: u64,
}

impl AddAssign for Cell {
    fn add_assign(&mut self, other: Cell) {
        self.requests += other.requests;
        self.bytes += other.bytes;
    }
}

impl Cell {
    /// The bit rate of these bytes over `seconds`, in Mbit/s.
    pub fn mbps(self, seconds: i64) -> f64 {
        self.bytes as f64 * 8.0 / seconds as f64 / 1e6
    }
}

/// `width` cells for each bucket from the first seen to the last.
#[derive(Clone, Debug)]
pub struct Timeline {
    width: usize,
    first: i64,
    cells: Vec<Cell>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLong {
    pub first: i64,
    pub last: i64,
}

impl Timeline {
    pub fn new(width: usize) -> Timeline {
        Timeline {
            width,
            first: 0,
            cells: Vec::new(),
        }
    }

    /// The cells of `bucket`, made (zero) if needed.
    pub fn at(&mut self, bucket: i64) -> Result<&mut [Cell], TooLong> {
        if self.cells.is_empty() {
            self.first = bucket;
            self.cells.resize(self.width, Cell::default());
        } else if bucket < self.first {
            let last = self.last();
            if last - bucket >= MAX_BUCKETS {
                return Err(TooLong {
                    first: bucket,
                    last,
                });
            }
            let missing = (self.first - bucket) as usize * self.width;
            self.cells
                .splice(0..0, std::iter::repeat_n(Cell::default(), missing));
            self.first = bucket;
        } else if bucket > self.last() {
            if bucket - self.first >= MAX_BUCKETS {
                return Err(TooLong {
                    first: self.first,
                    last: bucket,
                });
            }
            let length = (bucket - self.first + 1) as usize * self.width;
            self.cells.resize(length, Cell::default());
        }
        let start = (bucket - self.first) as usize * self.width;
        Ok(&mut self.cells[start..start + self.width])
    }

    /// The cells of `bucket`, zero outside the timeline.
    pub fn get(&self, bucket: i64) -> Option<&[Cell]> {
        if self.cells.is_empty() || bucket < self.first || bucket > self.last() {
            return None;
        }
        let start = (bucket - self.first) as usize * self.width;
        Some(&self.cells[start..start + self.width])
    }

    /// The first and last buckets, if any.
    pub fn span(&self) -> Option<(i64, i64)> {
        (!self.cells.is_empty()).then(|| (self.first, self.last()))
    }

    fn last(&self) -> i64 {
        self.first + (self.cells.len() / self.width) as i64 - 1
    }

    /// Adds every cell of `other` (of the same width).
    pub fn merge(&mut self, other: &Timeline) -> Result<(), TooLong> {
        let Some((first, last)) = other.span() else {
            return Ok(());
        };
        self.at(first)?;
        self.at(last)?;
        for bucket in first..=last {
            let from = other.get(bucket).unwrap_or_default();
            let into = self.at(bucket)?;
            for (into, from) in into.iter_mut().zip(from) {
                *into += *from;
            }
        }
        Ok(())
    }
}

/// The 95th percentile of `samples` by nearest rank (the smallest sample at or above 95 % of
/// them), as burstable billing takes it; 0 for none.
pub fn percentile_95(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (0.95 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(bytes: u64) -> Cell {
        Cell { requests: 1, bytes }
    }

    #[test]
    fn timelines_grow_both_ways_and_merge() {
        let mut timeline = Timeline::new(2);
        timeline.at(10).unwrap()[1] += cell(5);
        timeline.at(12).unwrap()[0] += cell(7);
        timeline.at(8).unwrap()[0] += cell(1);
        assert_eq!(timeline.span(), Some((8, 12)));
        assert_eq!(timeline.get(10).unwrap(), [Cell::default(), cell(5)]);
        assert_eq!(timeline.get(9).unwrap(), [Cell::default(); 2]);
        assert_eq!(timeline.get(13), None);
        let mut other = Timeline::new(2);
        other.at(12).unwrap()[0] += cell(3);
        other.at(14).unwrap()[1] += cell(4);
        timeline.merge(&other).unwrap();
        assert_eq!(timeline.span(), Some((8, 14)));
        assert_eq!(
            timeline.get(12).unwrap()[0],
            Cell {
                requests: 2,
                bytes: 10
            }
        );
        assert_eq!(timeline.get(14).unwrap()[1], cell(4));
        assert!(timeline.at(8 + MAX_BUCKETS).is_err());
        assert!(timeline.at(14 - MAX_BUCKETS).is_err());
    }

    #[test]
    fn the_95th_percentile_is_by_nearest_rank() {
        // 100 samples 1..=100: the 95th is 95; 20 samples: the 19th.
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_95(&hundred), 95.0);
        let mut twenty: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile_95(&twenty), 19.0);
        twenty.truncate(1);
        assert_eq!(percentile_95(&twenty), 20.0);
        assert_eq!(percentile_95(&[]), 0.0);
        // One burst in 5 % of the time is not billed.
        let mut bursty = vec![10.0; 95];
        bursty.extend([1000.0; 5]);
        assert_eq!(percentile_95(&bursty), 10.0);
        assert_eq!(cell(7_500_000).mbps(60), 1.0);
    }
}
