//! Why authentication failed. Every variant is a 401 `AuthenticationFailed` for the API; the
//! messages say what was wrong with the request without ever showing the MAC, signature or key
//! the server expected.

use crate::model::{ApiError, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid hawk authorization header: {0}")]
    MalformedHeader(String),
    #[error("authorization header does not use the hawk scheme")]
    NotHawk,
    #[error(
        "cannot use two authentication schemes at once: this request has both a bewit and an authorization header"
    )]
    TwoSchemes,
    #[error("client `{0}` not found")]
    UnknownClient(String),
    #[error("client `{0}` is disabled")]
    DisabledClient(String),
    #[error("client `{0}` has expired")]
    ExpiredClient(String),
    #[error("bad mac: the request signature does not match")]
    BadMac,
    #[error("stale timestamp: ts {ts} is more than {skew} s away from the server's time {now}")]
    StaleTimestamp { ts: i64, now: i64, skew: i64 },
    #[error(
        "invalid payload hash: the hash in the authorization header does not match the request body and content type"
    )]
    PayloadHashMismatch,
    #[error("failed to parse ext: {0}")]
    Ext(String),
    #[error("{0}")]
    Certificate(String),
    #[error("{0}")]
    AuthorizedScopes(String),
    #[error("invalid bewit: {0}")]
    Bewit(String),
    #[error("{0}")]
    Host(String),
    #[error("bewit expired at {expired} (unix seconds)")]
    BewitExpired { expired: i64 },
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError::new(ErrorCode::AuthenticationFailed, error.to_string())
    }
}
