//! Moods: Flumotion's word for a component's health, shared by every role's `/healthz`, metrics
//! and the dashboard.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a component is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mood {
    /// Starting: nothing has flowed yet.
    Waking,
    /// Working.
    Happy,
    /// Waiting for input that does not come.
    Hungry,
    /// Failed; the component says why next to its mood.
    Sad,
    /// Not heard from (said by an observer, never by the component itself).
    Lost,
    /// Finishing what it serves before it stops: it takes no one new (control sends it no
    /// viewer), and who it serves is served on.
    Draining,
}

impl Mood {
    pub const ALL: [Mood; 6] = [
        Mood::Waking,
        Mood::Happy,
        Mood::Hungry,
        Mood::Sad,
        Mood::Lost,
        Mood::Draining,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mood::Waking => "waking",
            Mood::Happy => "happy",
            Mood::Hungry => "hungry",
            Mood::Sad => "sad",
            Mood::Lost => "lost",
            Mood::Draining => "draining",
        }
    }
}

impl fmt::Display for Mood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown mood {0:?} (expected waking, happy, hungry, sad or lost)")]
pub struct UnknownMood(String);

impl FromStr for Mood {
    type Err = UnknownMood;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Mood::ALL
            .into_iter()
            .find(|mood| mood.as_str() == text)
            .ok_or_else(|| UnknownMood(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for mood in Mood::ALL {
            assert_eq!(mood.to_string().parse::<Mood>().unwrap(), mood);
        }
        assert!("grumpy".parse::<Mood>().is_err());
    }
}
