//! Signatures of blob URLs: the PUT URL `createArtifact` hands a worker for an `s3` artifact,
//! and the short-lived GET URL a reader of a non-public artifact is redirected to. The query
//! carries `expires` (milliseconds since the epoch) and `signature`, an HMAC-SHA256 under the
//! queue's access token of the method, the blob's path and `expires`; so a URL cannot be
//! reused for another blob, method or time.

use super::encoding::{constant_time_eq, encode_base64_url_no_pad, hmac_sha256};
use crate::model::Timestamp;

/// The signature of `method` (GET for GET and HEAD) on `path` until `expires`.
pub fn sign(secret: &str, method: &str, path: &str, expires: Timestamp) -> String {
    let message = format!("{method}\n{path}\n{}", expires.millis());
    encode_base64_url_no_pad(&hmac_sha256(secret, message.as_bytes()))
}

/// Whether `signature` is the signature of `method` on `path` until `expires`, and `expires`
/// is still ahead of `now`.
pub fn verify(
    secret: &str,
    method: &str,
    path: &str,
    expires: Timestamp,
    signature: &str,
    now: Timestamp,
) -> bool {
    let expected = sign(secret, method, path, expires);
    constant_time_eq(&expected, signature) && expires > now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_covers_method_path_and_time() {
        let at = Timestamp::from_millis(10_000);
        let signature = sign("secret", "PUT", "a/0/public/x", at);
        let now = Timestamp::from_millis(5_000);
        assert!(verify("secret", "PUT", "a/0/public/x", at, &signature, now));
        assert!(!verify(
            "secret",
            "GET",
            "a/0/public/x",
            at,
            &signature,
            now
        ));
        assert!(!verify(
            "secret",
            "PUT",
            "a/0/public/y",
            at,
            &signature,
            now
        ));
        assert!(!verify("other", "PUT", "a/0/public/x", at, &signature, now));
        let later = Timestamp::from_millis(10_001);
        assert!(!verify(
            "secret",
            "PUT",
            "a/0/public/x",
            later,
            &signature,
            now
        ));
        assert!(!verify(
            "secret",
            "PUT",
            "a/0/public/x",
            at,
            &signature,
            later
        ));
    }
}
