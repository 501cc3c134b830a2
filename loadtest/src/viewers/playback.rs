//! A player's account of its buffer, sans IO: media units arrive (a segment or a part, with
//! their UTC media time), time passes, and the account says when playback started, when it
//! stalled for want of media and for how long, and how far behind real time it plays.

use std::time::Duration;

use tokio::time::Instant;

/// A piece of media to load: a segment or a part.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Unit {
    pub url: String,
    /// UTC seconds of its first sample.
    pub start: f64,
    pub duration: f64,
    /// For the first unit: where playback starts when that is later than the unit's start (an
    /// LL-HLS player loads from a keyframe, then seeks to its target latency).
    pub play_from: Option<f64>,
}

/// The account of one viewer's buffer and playback.
#[derive(Debug, Default)]
pub(super) struct Playback {
    /// When the viewer started, and when playback did.
    pub began: Option<Instant>,
    pub started: Option<Instant>,
    /// Where playback starts, once the first unit has said.
    play_from: Option<f64>,
    /// Media time (UTC seconds) played up to, as of `updated`.
    position: f64,
    buffered_until: f64,
    updated: Option<Instant>,
    pub stalls: u64,
    pub stalled_for: Duration,
}

impl Playback {
    /// The account of a viewer that began at `now`.
    pub fn starting(now: Instant) -> Playback {
        Playback {
            began: Some(now),
            ..Playback::default()
        }
    }

    /// A unit arrived at `now`: playback runs from its last account to now (stalling where
    /// the buffer ran out), then the unit is buffered. Gives the live latency at `now`, once
    /// playback has started: when the buffer holds a unit's length past where it starts.
    pub fn arrived(&mut self, unit: &Unit, now: Instant, utc_now: f64) -> Option<f64> {
        if self.started.is_none() {
            let from = *self
                .play_from
                .get_or_insert(unit.play_from.unwrap_or(unit.start).max(unit.start));
            self.buffered_until = self.buffered_until.max(unit.start) + unit.duration;
            if self.buffered_until < from + unit.duration {
                return None;
            }
            self.started = Some(now);
            self.position = from;
        } else {
            self.play_until(now);
            if unit.start > self.buffered_until {
                // A gap (the viewer skipped forward): playback that waits at the buffer's end
                // jumps to the new unit.
                if self.position >= self.buffered_until {
                    self.position = unit.start;
                }
                self.buffered_until = unit.start;
            }
            self.buffered_until += unit.duration;
        }
        self.updated = Some(now);
        Some(utc_now - self.position)
    }

    /// Plays from the last account to `now`; where the buffer ran out part-way, the rest of
    /// the time was a stall.
    pub fn play_until(&mut self, now: Instant) {
        let Some(updated) = self.updated else {
            return;
        };
        let elapsed = now.saturating_duration_since(updated).as_secs_f64();
        let playable = (self.buffered_until - self.position).max(0.0);
        if elapsed > playable {
            if playable > 0.0 {
                self.stalls += 1;
            }
            self.stalled_for += Duration::from_secs_f64(elapsed - playable);
            self.position = self.buffered_until;
        } else {
            self.position += elapsed;
        }
        self.updated = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_that_runs_dry_is_a_stall() {
        let unit = |start: f64| Unit {
            url: String::new(),
            start,
            duration: 2.0,
            play_from: None,
        };
        let t0 = Instant::now();
        let mut playback = Playback::default();
        // Segment 100 (UTC 200-202 s) arrives when the clock says 203.5: 3.5 s behind.
        assert_eq!(playback.arrived(&unit(200.0), t0, 203.5), Some(3.5));
        // The next arrives 1.5 s later: no stall, 1.5 s played.
        let latency = playback.arrived(&unit(202.0), t0 + Duration::from_millis(1500), 205.0);
        assert!((latency.unwrap() - 3.5).abs() < 1e-9);
        assert_eq!(playback.stalls, 0);
        // The next only 4 s later: the buffer (to 204) ran out after 2.5 s; 1.5 s stalled.
        let latency = playback.arrived(&unit(204.0), t0 + Duration::from_millis(5500), 209.0);
        assert_eq!(playback.stalls, 1);
        assert_eq!(playback.stalled_for, Duration::from_millis(1500));
        assert!((latency.unwrap() - 5.0).abs() < 1e-9, "{latency:?}");
        playback.play_until(t0 + Duration::from_millis(6500));
        assert_eq!(playback.stalls, 1);
        // Nothing more comes: a second stall, counted once however long it lasts.
        playback.play_until(t0 + Duration::from_millis(8500));
        playback.play_until(t0 + Duration::from_millis(9500));
        assert_eq!(playback.stalls, 2);
        assert_eq!(playback.stalled_for, Duration::from_millis(3500));
    }

    #[test]
    fn playback_can_start_past_the_keyframe_it_loaded_from() {
        let part = |start: f64| Unit {
            url: String::new(),
            start,
            duration: 0.5,
            play_from: Some(201.2),
        };
        let t0 = Instant::now();
        let mut playback = Playback::default();
        // Parts from the keyframe at 200, playback from 201.2, once the buffer holds a
        // part's length past it.
        assert_eq!(playback.arrived(&part(200.0), t0, 201.6), None);
        assert_eq!(playback.arrived(&part(200.5), t0, 201.6), None);
        assert_eq!(playback.arrived(&part(201.0), t0, 201.6), None);
        assert_eq!(
            playback.arrived(&part(201.5), t0, 202.1),
            Some(202.1 - 201.2)
        );
        assert_eq!(playback.started, Some(t0));
        assert_eq!(playback.buffered_until, 202.0);
    }
}
