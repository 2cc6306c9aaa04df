//! Gson-style timestamps (`"Jan 6, 2017 3:51:16 AM"`), the format the ZStack REST API emits.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `chrono` pattern for Gson's default `DateFormat.DEFAULT` rendering in the US locale.
const GSON_FORMAT: &str = "%b %-d, %Y %-I:%M:%S %p";

/// A UTC instant that serializes the way ZStack's Gson does. The simulator's "MN timezone" is UTC.
///
/// The same type is used in the persisted state file, so it also parses that format back
/// (second precision is all the wire format keeps, which is all a client can observe anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GsonTime(pub DateTime<Utc>);

impl GsonTime {
    /// The current time, truncated to whole seconds so that a save/load round trip is lossless.
    pub fn now() -> Self {
        let now = Utc::now();
        GsonTime(DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now))
    }

    /// Renders the Gson string.
    pub fn format(&self) -> String {
        self.0.format(GSON_FORMAT).to_string()
    }

    /// Parses a Gson string (interpreted as UTC).
    pub fn parse(s: &str) -> Option<Self> {
        NaiveDateTime::parse_from_str(s, GSON_FORMAT)
            .ok()
            .map(|n| GsonTime(n.and_utc()))
    }
}

impl Default for GsonTime {
    fn default() -> Self {
        GsonTime::now()
    }
}

impl Serialize for GsonTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.format())
    }
}

impl<'de> Deserialize<'de> for GsonTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Also accept RFC 3339 so hand-written fixture files can use the usual notation.
        GsonTime::parse(&s)
            .or_else(|| {
                DateTime::parse_from_rfc3339(&s)
                    .ok()
                    .map(|d| GsonTime(d.with_timezone(&Utc)))
            })
            .ok_or_else(|| serde::de::Error::custom(format!("invalid timestamp {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_gson_and_round_trips() {
        let t = GsonTime(DateTime::from_timestamp(1_483_674_676, 0).unwrap()); // 2017-01-06 03:51:16 UTC
        assert_eq!(t.format(), "Jan 6, 2017 3:51:16 AM");
        assert_eq!(GsonTime::parse(&t.format()), Some(t));
        let pm = GsonTime(DateTime::from_timestamp(1_483_722_000, 0).unwrap()); // 17:00
        assert_eq!(pm.format(), "Jan 6, 2017 5:00:00 PM");
        let json = serde_json::to_string(&t).unwrap();
        let back: GsonTime = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
