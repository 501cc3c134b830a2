//! The packager's state: the core's window behind a lock, shared by the receiver (which
//! changes it) and the origin (which reads it), the wake-ups that answer blocked requests the
//! moment a part lands, and the window's events handed to whoever subscribed (the continuous
//! streams, the archive). The state knows nothing of its subscribers.

use std::sync::RwLock;
use std::time::Duration;

use estuary_packager_core::cmaf::TrackHeader;
use estuary_packager_core::window::{Accepted, Event, Window, WindowConfig};
use estuary_proto::Mood;
use estuary_proto::url::{ChannelName, TrackName};
use estuary_proto::utc::unix_now;
use tokio::sync::watch;

/// Without a part for this long, a channel is hungry.
const HUNGRY_AFTER: Duration = Duration::from_secs(3);

/// Called with each of the window's events, in order, on the task that changed the window,
/// once its lock is released.
type Subscriber = Box<dyn Fn(&Event) + Send + Sync>;

pub struct State {
    window: RwLock<Window>,
    /// Bumped on every change of the window: blocked requests wake and look again.
    changes: watch::Sender<u64>,
    subscribers: RwLock<Vec<Subscriber>>,
}

impl State {
    pub fn new(config: WindowConfig) -> State {
        State {
            window: RwLock::new(Window::new(config)),
            changes: watch::channel(0).0,
            subscribers: RwLock::default(),
        }
    }

    /// Has `subscriber` told of every event from now on. A subscriber must not subscribe
    /// others, and may read the window (its lock is released) but not change it.
    pub fn subscribe(&self, subscriber: impl Fn(&Event) + Send + Sync + 'static) {
        self.subscribers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(subscriber));
    }

    pub fn read<R>(&self, look: impl FnOnce(&Window) -> R) -> R {
        look(&self.window.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn config(&self) -> WindowConfig {
        self.read(Window::config)
    }

    pub fn header(&self, channel: &ChannelName, track: &TrackName) -> Option<TrackHeader> {
        self.read(|window| window.track(channel, track).map(|t| t.header.clone()))
    }

    /// Changes the window and tells whoever waits or subscribed.
    pub fn apply(&self, change: impl FnOnce(&mut Window) -> Vec<Event>) {
        let events = change(&mut self.window.write().unwrap_or_else(|e| e.into_inner()));
        self.publish(&events);
    }

    /// Changes the window with a change that may be refused; its events, when it was not.
    pub fn try_apply<T, E>(&self, change: impl FnOnce(&mut Window) -> Result<T, E>) -> Result<T, E>
    where
        T: EventsOf,
    {
        let outcome = change(&mut self.window.write().unwrap_or_else(|e| e.into_inner()));
        if let Ok(value) = &outcome {
            self.publish(value.events());
        }
        outcome
    }

    fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let subscribers = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
        for event in events {
            for subscriber in subscribers.iter() {
                subscriber(event);
            }
        }
        drop(subscribers);
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Waits until `ready` holds for the window, at most `limit`; says whether it came true.
    pub async fn wait_until(&self, limit: Duration, ready: impl Fn(&Window) -> bool) -> bool {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            changes.borrow_and_update();
            if self.read(&ready) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.read(&ready),
            }
        }
    }

    /// Each channel's mood: happy while parts arrive, hungry when they stop.
    pub fn moods(&self) -> Vec<(ChannelName, Mood)> {
        let now = unix_now();
        self.read(|window| {
            window
                .channels()
                .map(|channel| {
                    let last_part = window
                        .tracks(channel)
                        .filter_map(|(_, track)| track.last_part())
                        .max();
                    let mood = if last_part.is_some_and(|at| now.saturating_sub(at) < HUNGRY_AFTER)
                    {
                        Mood::Happy
                    } else {
                        Mood::Hungry
                    };
                    (channel.clone(), mood)
                })
                .collect()
        })
    }
}

/// What a change of the window reported.
pub trait EventsOf {
    fn events(&self) -> &[Event];
}

impl EventsOf for Vec<Event> {
    fn events(&self) -> &[Event] {
        self
    }
}

impl EventsOf for Accepted {
    fn events(&self) -> &[Event] {
        match self {
            Accepted::New(events) => events,
            Accepted::Duplicate => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::testing::{DAY_START_SECONDS, TrackSpec, parsed_chunk, parsed_header};

    /// Subscribers hear every event of a change, in order, once the window is changed (they
    /// may read it), and a blocked wait wakes at once.
    #[tokio::test]
    async fn subscribers_hear_each_change_after_it_is_made() {
        let state = Arc::new(State::new(WindowConfig::default()));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (seen, reader) = (heard.clone(), Arc::downgrade(&state));
        state.subscribe(move |event| {
            let Some(state) = reader.upgrade() else {
                return;
            };
            let (channel, track, kind) = match event {
                Event::TrackStarted { channel, track, .. } => (channel, track, "started"),
                Event::PartAdded { channel, track, .. } => (channel, track, "part"),
                _ => return,
            };
            let held = state.read(|window| window.track(channel, track).is_some());
            seen.lock().unwrap().push((kind, held));
        });
        let waiting = {
            let state = state.clone();
            tokio::spawn(async move {
                state
                    .wait_until(Duration::from_secs(5), |window| {
                        window.channels().next().is_some()
                    })
                    .await
            })
        };
        let spec = TrackSpec::video();
        let header = parsed_header(&spec);
        let (channel, track) = (
            ChannelName::new("demo").unwrap(),
            TrackName::new("v720").unwrap(),
        );
        let now = Duration::from_secs(DAY_START_SECONDS + 3600);
        state
            .try_apply(|window| window.push_header(&channel, &track, header.clone(), now))
            .unwrap();
        let chunk = parsed_chunk(&spec, &header, 0);
        state
            .try_apply(|window| window.push_chunk(&channel, &track, chunk, now))
            .unwrap();
        assert!(waiting.await.unwrap());
        assert_eq!(*heard.lock().unwrap(), [("started", true), ("part", true)]);
    }
}
