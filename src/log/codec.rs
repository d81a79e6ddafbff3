//! The one place that turns values into log bytes and back: bincode (serde, standard config)
//! behind a leading format-version byte, so the encoding can change without rewriting history.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format this build writes. Readers accept exactly the versions they know.
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
    #[error("unknown codec version {found} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("record does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("record has {0} trailing bytes after the value")]
    TrailingBytes(usize),
    #[error("value does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Encodes `value` at the end of `buffer`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buffer: &mut Vec<u8>) -> Result<(), Error> {
    buffer.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, buffer, config())?;
    Ok(())
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::with_capacity(256);
    encode_into(value, &mut buffer)?;
    Ok(buffer)
}

/// Decodes a whole record; a record with bytes left over is an error, not a silent success.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    if version != FORMAT_VERSION {
        return Err(Error::UnknownVersion { found: version });
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    match body.len() - read {
        0 => Ok(value),
        extra => Err(Error::TrailingBytes(extra)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::tests::sample_definition;
    use crate::model::{Envelope, Event, Slugid, Timestamp};
    use std::sync::Arc;

    fn sample() -> Envelope {
        let task_id = Slugid::nice();
        Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1_763_800_000_000),
            event: Event::TaskDefined {
                task_id,
                definition: Arc::new(sample_definition(task_id)),
            },
        }
    }

    #[test]
    fn round_trips_an_envelope() {
        let envelope = sample();
        let bytes = encode(&envelope).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Envelope>(&bytes).unwrap(), envelope);
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(decode::<Envelope>(&[]), Err(Error::Empty)));
        let mut future = bytes.clone();
        future[0] = 9;
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
            let mut record = vec![FORMAT_VERSION];
            record.extend(garbage);
            let _ = decode::<Envelope>(&record);
        }
    }
}
