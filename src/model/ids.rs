//! Slugids: Taskcluster's 22-character URL-safe base64 encoding of a version-4 UUID.
//!
//! Stored as the 16 raw bytes (compact in the log), shown as the 22-character string in JSON.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A task, task group or other entity id in Taskcluster's slugid form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slugid([u8; 16]);

/// Why a string is not a slugid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a slugid: {reason}")]
pub struct ParseSlugidError {
    input: String,
    reason: &'static str,
}

impl Slugid {
    /// A new random "nice" slugid: a v4 UUID whose first bit is clear, so that the string never
    /// starts with `-` (Taskcluster's clients generate the same kind, to keep them safe on
    /// command lines).
    pub fn nice() -> Self {
        let mut bytes: [u8; 16] = rand::random();
        bytes[0] &= 0x7f;
        Self::from_random_bytes(bytes)
    }

    /// The v4 UUID made of `bytes`, with the version and variant bits forced.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Slugid(bytes)
    }

    /// The least and greatest values in `Slugid`'s order (not valid v4 UUIDs): bounds for
    /// range queries over ordered collections.
    pub const MIN: Slugid = Slugid([0; 16]);
    pub const MAX: Slugid = Slugid([0xff; 16]);

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The slugid whose raw bytes are `bytes`, as [`Slugid::as_bytes`] gave them.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Slugid(bytes)
    }
}

impl fmt::Display for Slugid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 22];
        // 16 bytes always encode to exactly 22 unpadded characters.
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut text)
            .map_err(|_| fmt::Error)?;
        let text = std::str::from_utf8(&text[..written]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

impl fmt::Debug for Slugid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slugid({self})")
    }
}

impl FromStr for Slugid {
    type Err = ParseSlugidError;

    /// Accepts exactly what Taskcluster's slugid pattern accepts:
    /// `^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| ParseSlugidError {
            input: input.chars().take(64).collect(),
            reason,
        };
        if input.len() != 22 {
            return Err(error("must be 22 characters long"));
        }
        let mut bytes = [0u8; 16];
        // The decoder rejects non-canonical trailing bits, which is the `[AQgw]` rule.
        match URL_SAFE_NO_PAD.decode_slice(input, &mut bytes) {
            Ok(16) => {}
            _ => return Err(error("not URL-safe base64 of 16 bytes")),
        }
        if bytes[6] >> 4 != 4 || bytes[8] >> 6 != 2 {
            return Err(error("not a version 4 UUID"));
        }
        Ok(Slugid(bytes))
    }
}

impl Serialize for Slugid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Slugid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(deserializer).map(Slugid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        for _ in 0..1000 {
            let id = Slugid::nice();
            let text = id.to_string();
            assert_eq!(text.len(), 22);
            assert!(!text.starts_with('-'));
            assert_eq!(text.parse::<Slugid>().unwrap(), id);
        }
    }

    #[test]
    fn accepts_taskcluster_examples_and_rejects_others() {
        assert!("fN1SbArXTPSVFNUvaOlinQ".parse::<Slugid>().is_ok());
        for bad in [
            "",
            "fN1SbArXTPSVFNUvaOlin",   // too short
            "fN1SbArXTPSVFNUvaOlinR",  // trailing bits set
            "fN1SbArXAPSVFNUvaOlinQ",  // version nibble not 4
            "fN1SbArXTPSVFNUvaOlin+Q", // wrong alphabet and length
            "fN1SbArXTP/VFNUvaOlinQ",  // standard alphabet
        ] {
            assert!(bad.parse::<Slugid>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn json_is_the_string_form() {
        let id: Slugid = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"fN1SbArXTPSVFNUvaOlinQ\""
        );
    }
}
