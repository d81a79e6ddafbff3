//! `continuationToken` and `limit` (reference §1): a limit is digits, capped at 1000; a token
//! is opaque to clients. Lists of tasks continue after a task id, a task's history after a log
//! offset, other lists after a name; each is sent as the base64url of that text, so clients
//! see no structure to rely on.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::engine::index::Position;
use crate::model::{ApiError, ErrorCode};

/// The most items one page may hold.
pub const MAX_LIMIT: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The position after which this page starts, decoded from the token.
    pub after: Option<String>,
    pub limit: usize,
}

impl Page {
    /// Reads `continuationToken` and `limit` from a query string; `default_limit` applies
    /// when no limit is given.
    pub fn from_query(query: &str, default_limit: usize) -> Result<Page, ApiError> {
        let mut page = Page {
            after: None,
            limit: default_limit.min(MAX_LIMIT),
        };
        for (name, value) in form_pairs(query) {
            match name.as_str() {
                "limit" => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid(format!("`limit` must be digits, not `{value}`")));
                    }
                    page.limit = value.parse().unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT);
                }
                "continuationToken" if !value.is_empty() => {
                    let decoded = URL_SAFE_NO_PAD
                        .decode(value.as_bytes())
                        .ok()
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                        .ok_or_else(|| {
                            invalid("`continuationToken` is not one this API gave".into())
                        })?;
                    page.after = Some(decoded);
                }
                _ => {}
            }
        }
        Ok(page)
    }

    /// The position in a list of tasks (`<order>.<taskId>`, see [`task_token`]).
    pub fn after_task(&self) -> Result<Option<Position>, ApiError> {
        self.after
            .as_deref()
            .map(|text| {
                let (order, task_id) = text.split_once('.').unwrap_or_default();
                match (order.parse(), task_id.parse()) {
                    (Ok(order), Ok(task_id)) => Ok((order, task_id)),
                    _ => Err(invalid(
                        "`continuationToken` is not one this API gave".into(),
                    )),
                }
            })
            .transpose()
    }

    /// The log offset in a task's history (see [`offset_token`]).
    pub fn after_offset(&self) -> Result<Option<u64>, ApiError> {
        self.after
            .as_deref()
            .map(|text| {
                text.parse()
                    .map_err(|_| invalid("`continuationToken` is not one this API gave".into()))
            })
            .transpose()
    }
}

/// The token of a page that ends at `last`, when more may follow.
pub fn token(last: Option<&str>, more: bool) -> Option<String> {
    last.filter(|_| more)
        .map(|last| URL_SAFE_NO_PAD.encode(last.as_bytes()))
}

/// The token of a page of tasks that ends at `last`, when more may follow.
pub fn task_token(last: Option<Position>, more: bool) -> Option<String> {
    let last = last.map(|(order, task_id)| format!("{order}.{task_id}"));
    token(last.as_deref(), more)
}

/// The token of a page of a task's history that ends at the log offset `last`, when more may
/// follow.
pub fn offset_token(last: Option<u64>, more: bool) -> Option<String> {
    token(last.map(|offset| offset.to_string()).as_deref(), more)
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequestArguments, message)
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space).
fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
}

fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_limits_are_capped() {
        let page = Page::from_query("limit=5000", 10).unwrap();
        assert_eq!(page.limit, MAX_LIMIT);
        let token = token(Some("public/a b"), true).unwrap();
        let page = Page::from_query(&format!("continuationToken={token}&limit=2"), 10).unwrap();
        assert_eq!(page.after.as_deref(), Some("public/a b"));
        assert_eq!(page.limit, 2);
        assert_eq!(super::token(Some("x"), false), None);
        assert!(Page::from_query("limit=-1", 10).is_err());
        assert!(Page::from_query("continuationToken=%%%", 10).is_err());
        assert_eq!(Page::from_query("", 10).unwrap().limit, 10);
    }

    #[test]
    fn offset_tokens_round_trip_and_others_are_refused() {
        let token = offset_token(Some(1234), true).unwrap();
        let page = Page::from_query(&format!("continuationToken={token}"), 10).unwrap();
        assert_eq!(page.after_offset().unwrap(), Some(1234));
        assert_eq!(offset_token(Some(1234), false), None);
        assert_eq!(
            Page::from_query("", 10).unwrap().after_offset().unwrap(),
            None
        );
        let name = super::token(Some("public/a"), true).unwrap();
        let page = Page::from_query(&format!("continuationToken={name}"), 10).unwrap();
        assert!(page.after_offset().is_err());
    }
}
