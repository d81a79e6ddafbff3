//! Timestamps with Taskcluster's wire format, `YYYY-MM-DDTHH:MM:SS.sssZ`.
//!
//! Stored as milliseconds since the Unix epoch: Taskcluster keeps millisecond precision, and an
//! integer makes events compact and comparisons exact.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An instant with millisecond precision.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Timestamp(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a date-time: {reason}")]
pub struct ParseTimestampError {
    input: String,
    reason: String,
}

impl Timestamp {
    pub fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time. Only commands read the clock; replay never does.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub fn plus_millis(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }

    /// The same wall-clock instant (UTC) one calendar year later, as JavaScript's
    /// `setFullYear(getFullYear() + 1)` computes it: 29 February becomes 1 March. Taskcluster
    /// derives a task's default `expires` this way, and idempotent creation compares it.
    pub fn plus_one_year(self) -> Self {
        let Some(at) = self.to_datetime() else {
            return self.plus_millis(365 * 86_400_000);
        };
        let next = at.with_year(at.year() + 1).or_else(|| {
            // Only 29 February has no counterpart; JavaScript rolls it over to 1 March.
            (at - chrono::Duration::days(1))
                .with_year(at.year() + 1)
                .map(|day_before| day_before + chrono::Duration::days(1))
        });
        next.map_or(self.plus_millis(365 * 86_400_000), |next| {
            Timestamp(next.timestamp_millis())
        })
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(at) => f.write_str(&Wire::of(at)),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

/// The wire form of an instant. Years 0 to 9999 (every date a client can send and far more)
/// are written digit by digit into a fixed buffer: statuses and messages carry several
/// timestamps each, and this sits on every reply's path.
enum Wire {
    Common([u8; 24]),
    Other(String),
}

impl Wire {
    fn of(at: DateTime<Utc>) -> Wire {
        let year = at.year();
        if !(0..=9999).contains(&year) {
            return Wire::Other(at.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        let mut text = *b"0000-00-00T00:00:00.000Z";
        let fields = [
            (0..4, year as u32),
            (5..7, at.month()),
            (8..10, at.day()),
            (11..13, at.hour()),
            (14..16, at.minute()),
            (17..19, at.second()),
            (20..23, at.timestamp_subsec_millis()),
        ];
        for (place, mut value) in fields {
            for digit in text[place].iter_mut().rev() {
                *digit = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        Wire::Common(text)
    }
}

impl std::ops::Deref for Wire {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Wire::Common(text) => {
                std::str::from_utf8(text).expect("digits and separators are ASCII")
            }
            Wire::Other(text) => text,
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// Accepts any RFC 3339 date-time (any offset, any fraction) and keeps whole milliseconds,
    /// as Taskcluster normalizes every date it stores.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(input)
            .map(|at| Timestamp(at.timestamp_millis()))
            .map_err(|error| ParseTimestampError {
                input: input.chars().take(64).collect(),
                reason: error.to_string(),
            })
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match self.to_datetime() {
                Some(at) => serializer.serialize_str(&Wire::of(at)),
                None => serializer.collect_str(self),
            }
        } else {
            serializer.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            i64::deserialize(deserializer).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_taskcluster() {
        let at: Timestamp = "2026-01-01T00:20:00Z".parse().unwrap();
        assert_eq!(at.to_string(), "2026-01-01T00:20:00.000Z");
        let at: Timestamp = "2026-01-01T01:20:00.123456+01:00".parse().unwrap();
        assert_eq!(at.to_string(), "2026-01-01T00:20:00.123Z");
        assert_eq!(
            serde_json::to_string(&at).unwrap(),
            "\"2026-01-01T00:20:00.123Z\""
        );
    }

    #[test]
    fn one_year_later_follows_javascript() {
        let later = |text: &str| {
            text.parse::<Timestamp>()
                .unwrap()
                .plus_one_year()
                .to_string()
        };
        assert_eq!(
            later("2026-11-22T10:00:00.123Z"),
            "2027-11-22T10:00:00.123Z"
        );
        assert_eq!(
            later("2028-02-29T23:59:59.999Z"),
            "2029-03-01T23:59:59.999Z"
        );
        assert_eq!(
            later("2027-02-28T00:00:00.000Z"),
            "2028-02-28T00:00:00.000Z"
        );
    }

    #[test]
    fn formats_every_field_with_its_zeros() {
        let text = |millis| Timestamp::from_millis(millis).to_string();
        assert_eq!(text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(text(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(text(951_782_400_007), "2000-02-29T00:00:00.007Z");
        assert_eq!(text(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Past year 9999 the form gains a sign, as chrono writes it.
        assert_eq!(text(253_402_300_800_000), "+10000-01-01T00:00:00.000Z");
        assert_eq!(
            serde_json::to_string(&Timestamp::from_millis(1_700_000_000_123)).unwrap(),
            "\"2023-11-14T22:13:20.123Z\""
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }
}
