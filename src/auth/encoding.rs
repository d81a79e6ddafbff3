//! The base64 and HMAC-SHA256 primitives every part of Hawk and temporary credentials uses.
//!
//! Taskcluster's server decodes with Node's `Buffer.from(text, 'base64')`, which takes both the
//! standard and the URL-safe alphabet, with or without `=` padding, and the official clients do
//! use both (the JS client sends standard base64, the Python client URL-safe), so
//! [`decode_base64_lenient`] accepts all of those.

use base64::Engine;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Decodes either alphabet, padding optional, with Node's tolerance for non-zero trailing bits.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes standard or URL-safe base64, padded or not; `None` for anything else.
pub(crate) fn decode_base64_lenient(text: &str) -> Option<Vec<u8>> {
    // Node stops at the first `=`, so surplus padding is harmless there too.
    let standard: String = text
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    LENIENT.decode(standard).ok()
}

pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub(crate) fn encode_base64_url_no_pad(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC-SHA256 of `message` under `key` (the key's UTF-8 bytes, as every client uses it).
pub(crate) fn hmac_sha256(key: &str, message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("hmac accepts keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Compares two strings in time independent of where they differ (not of their lengths, which
/// are public: a MAC is always 44 characters).
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_base64_accepts_both_alphabets_with_or_without_padding() {
        // 0xfb 0xff 0xbf encodes to "+/+/" in the standard alphabet, "-_-_" in the URL-safe one.
        for text in ["+/+/", "-_-_", "+_-/"] {
            assert_eq!(decode_base64_lenient(text).unwrap(), [0xfb, 0xff, 0xbf]);
        }
        for text in ["e30=", "e30", "e30=="] {
            assert_eq!(
                decode_base64_lenient(text).as_deref(),
                Some(&b"{}"[..]),
                "{text}"
            );
        }
        for bad in ["e3 0", "e30!", "a", "=e30", "e3=0"] {
            assert_eq!(decode_base64_lenient(bad), None, "{bad}");
        }
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231, test case 2 (hex 5bdcc146…ec3843), in base64 from Python's `hmac` and `base64`.
        let mac = hmac_sha256("Jefe", b"what do ya want for nothing?");
        assert_eq!(
            encode_base64(&mac),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }
}
