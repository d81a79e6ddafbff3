//! The one place that turns values into log bytes and back: bincode (serde, standard config)
//! behind a leading format-version byte, so the encoding can change without rewriting history.
//!
//! Each stored type names the version it is written in ([`Versioned`]); a type whose encoding
//! changes takes a new version and keeps decoding the older ones, so that a data directory
//! written by an older build still replays.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::{Envelope, Event, HistoryRecord, TaskDefinition, TaskGroup, Timestamp, Worker};

/// The version of every type whose encoding has not changed since the first format.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on what one decode may claim, so a corrupt length prefix is an error instead of
/// a giant allocation. Generous enough for any record or stored value.
const DECODE_LIMIT_BYTES: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("empty record: no codec version byte")]
    Empty,
    #[error("unknown codec version {found}")]
    UnknownVersion { found: u8 },
    #[error("record does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("record has {0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("value does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// A type the log (or a snapshot) stores, with the format version this build writes it in.
pub trait Versioned: Serialize + DeserializeOwned {
    /// The version written; older ones are read through [`Versioned::decode_older`].
    const VERSION: u8 = FORMAT_VERSION;

    /// Decodes `body`, written in `version`, which is older than [`Versioned::VERSION`].
    fn decode_older(version: u8, body: &[u8]) -> Result<Self, Error> {
        let _ = body;
        Err(Error::UnknownVersion { found: version })
    }
}

/// Version 2 added who caused the event (`client_id`); version 1 records were written by the
/// queue before it kept that, so they read as caused by no one known.
impl Versioned for Envelope {
    const VERSION: u8 = 2;

    fn decode_older(version: u8, body: &[u8]) -> Result<Self, Error> {
        match version {
            1 => {
                let EnvelopeVersion1 { key, at, event } = decode_body(body)?;
                Ok(Envelope {
                    key,
                    at,
                    client_id: None,
                    event,
                })
            }
            found => Err(Error::UnknownVersion { found }),
        }
    }
}

/// [`Envelope`] as format version 1 wrote it.
#[derive(Deserialize)]
struct EnvelopeVersion1 {
    key: String,
    at: Timestamp,
    event: Event,
}

impl Versioned for TaskDefinition {}
impl Versioned for HistoryRecord {}
impl Versioned for TaskGroup {}
impl Versioned for Worker {}
impl Versioned for crate::model::Document {}

/// Encodes `value` at the end of `buffer`.
pub fn encode_into<T: Versioned>(value: &T, buffer: &mut Vec<u8>) -> Result<(), Error> {
    buffer.push(T::VERSION);
    bincode::serde::encode_into_std_write(value, buffer, config())?;
    Ok(())
}

/// Encodes `view`, a borrowed form of `T` that serializes exactly as `T` does, as a `T`: for
/// writing part of a larger value without copying it first.
pub fn encode_as<T: Versioned, V: Serialize>(view: &V) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::with_capacity(256);
    buffer.push(T::VERSION);
    bincode::serde::encode_into_std_write(view, &mut buffer, config())?;
    Ok(buffer)
}

pub fn encode<T: Versioned>(value: &T) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::with_capacity(256);
    encode_into(value, &mut buffer)?;
    Ok(buffer)
}

/// Decodes a whole record, in its type's version or an older one it still reads; a record
/// with bytes left over is an error, not a silent success.
pub fn decode<T: Versioned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    match version {
        version if version == T::VERSION => decode_body(body),
        version if (FORMAT_VERSION..T::VERSION).contains(&version) => {
            T::decode_older(version, body)
        }
        found => Err(Error::UnknownVersion { found }),
    }
}

/// Decodes the body of a record (what follows its version byte) as `T`, all of it: for a
/// type's [`Versioned::decode_older`], reading the shape an older version wrote.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    match body.len() - read {
        0 => Ok(value),
        extra => Err(Error::TrailingBytes(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Envelope, Event, Slugid, Timestamp};
    use std::sync::Arc;

    fn sample() -> Envelope {
        let task_id = Slugid::nice();
        Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1_763_800_000_000),
            client_id: None,
            event: Event::TaskDefined {
                task_id,
                definition: Arc::new(sample_definition(task_id)),
            },
        }
    }

    #[test]
    fn round_trips_an_envelope() {
        let mut envelope = sample();
        let bytes = encode(&envelope).unwrap();
        assert_eq!(bytes[0], Envelope::VERSION);
        assert_eq!(decode::<Envelope>(&bytes).unwrap(), envelope);
        envelope.client_id = Some("static/taskcluster/root".into());
        assert_eq!(
            decode::<Envelope>(&encode(&envelope).unwrap()).unwrap(),
            envelope
        );
    }

    /// The old shape, as version 1 wrote it; defined here again so that the test does not
    /// depend on the decoder's own copy.
    #[derive(Serialize)]
    struct OldEnvelope {
        key: String,
        at: Timestamp,
        event: Event,
    }

    #[test]
    fn version_1_envelopes_still_decode() {
        let task_id: Slugid = "dSlITZ4yQgmvxxAi4A8fHQ".parse().unwrap();
        let event = Event::RunClaimed {
            run_id: 2,
            worker_group: "wg".into(),
            worker_id: "w1".into(),
            taken_until: Timestamp::from_millis(1_763_801_200_000),
        };
        let expected = Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1_763_800_000_000),
            client_id: None,
            event: event.clone(),
        };
        // Bytes a version-1 build wrote for that record.
        let written: Vec<u8> = (0..GOLDEN_VERSION_1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&GOLDEN_VERSION_1[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(decode::<Envelope>(&written).unwrap(), expected);
        // The old shape encoded now, for every kind of event a test has at hand.
        let old = OldEnvelope {
            key: task_id.to_string(),
            at: expected.at,
            event,
        };
        let mut bytes = vec![1];
        bincode::serde::encode_into_std_write(&old, &mut bytes, config()).unwrap();
        assert_eq!(bytes, written);
        let definition = sample();
        let mut bytes = vec![1];
        let old = OldEnvelope {
            key: definition.key.clone(),
            at: definition.at,
            event: definition.event.clone(),
        };
        bincode::serde::encode_into_std_write(&old, &mut bytes, config()).unwrap();
        assert_eq!(decode::<Envelope>(&bytes).unwrap(), definition);
        // A version-1 record is still checked whole.
        bytes.push(0);
        assert!(matches!(
            decode::<Envelope>(&bytes),
            Err(Error::TrailingBytes(1))
        ));
    }

    const GOLDEN_VERSION_1: &str = "011664536c49545a347951676d7678784169344138664851fd004c5855350300000202027767027731fd00eb7c5535030000";

    #[test]
    fn types_that_never_changed_stay_at_version_1() {
        let definition = sample_definition(Slugid::nice());
        let bytes = encode(&definition).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<TaskDefinition>(&bytes).unwrap(), definition);
        let mut newer = bytes.clone();
        newer[0] = 2;
        assert!(matches!(
            decode::<TaskDefinition>(&newer),
            Err(Error::UnknownVersion { found: 2 })
        ));
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(decode::<Envelope>(&[]), Err(Error::Empty)));
        let mut future = bytes.clone();
        future[0] = 9;
        let mut zero = bytes.clone();
        zero[0] = 0;
        assert!(matches!(
            decode::<Envelope>(&zero),
            Err(Error::UnknownVersion { found: 0 })
        ));
        assert!(matches!(
            decode::<Envelope>(&future),
            Err(Error::UnknownVersion { found: 9 })
        ));
        for cut in 1..bytes.len() {
            assert!(decode::<Envelope>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<Envelope>(&longer),
            Err(Error::TrailingBytes(1))
        ));
        // Arbitrary garbage after a valid version byte must not panic either.
        for seed in 0u8..=255 {
            let garbage: Vec<u8> = (0..64u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            for version in [FORMAT_VERSION, Envelope::VERSION] {
                let mut record = vec![version];
                record.extend(&garbage);
                let _ = decode::<Envelope>(&record);
            }
        }
    }
}
