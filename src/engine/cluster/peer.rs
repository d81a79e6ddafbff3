//! Calls to other nodes, at their advertised URLs, authenticated by the cluster's shared
//! secret (a bearer token on a route clients never use; see `api::node`). Hawk is checked once,
//! on the node a client reached, which then speaks for the client here.

use std::time::Duration;

use super::wire::{self, Call, Reply};
use crate::log::codec;

/// Why a call reached no answer; the caller looks for the owner again.
#[derive(Debug)]
pub struct Unreachable(pub String);

thread_local! {
    /// One client per thread (actix's client is tied to its thread), keeping connections.
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().limit(256))
        .disable_timeout()
        .finish();
}

/// Calls `call` on the node at `url`; `timeout` bounds the whole call.
pub async fn call(
    url: &str,
    secret: &str,
    call: &Call,
    timeout: Duration,
) -> Result<Reply, Unreachable> {
    let target = format!("{}{}", url.trim_end_matches('/'), wire::PATH);
    let body = codec::encode(call).map_err(|error| Unreachable(format!("{target}: {error}")))?;
    let request = CLIENT.with(|client| {
        client
            .post(&target)
            .timeout(timeout)
            .insert_header(("authorization", format!("Bearer {secret}")))
            .content_type("application/octet-stream")
            .send_body(body)
    });
    let mut response = request
        .await
        .map_err(|error| Unreachable(format!("{target}: {error}")))?;
    if !response.status().is_success() {
        return Err(Unreachable(format!("{target}: HTTP {}", response.status())));
    }
    let bytes = response
        .body()
        .limit(256 * 1024 * 1024)
        .await
        .map_err(|error| Unreachable(format!("{target}: {error}")))?;
    codec::decode::<Reply>(&bytes).map_err(|error| Unreachable(format!("{target}: {error}")))
}
