//! The nodes' own route (`engine::cluster::wire::PATH`), answered only to a caller with the
//! cluster's secret; `__cluster__`, where operators see which node serves what; and the
//! forwarding of requests whose data lives on the node serving the task (live logs, blobs on
//! that node's disk).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures::future::LocalBoxFuture;
use subtle::ConstantTimeEq;

use super::response;
use super::server::State;
use crate::engine::cluster::wire::{Call, Reply};
use crate::log::codec;

/// A call of another node.
pub async fn call(state: web::Data<State>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some(cluster) = state.engine.cluster() else {
        return response::not_found(request).await;
    };
    let expected = format!("Bearer {}", cluster.settings.secret);
    let given = request
        .headers()
        .get("authorization")
        .map(|value| value.as_bytes())
        .unwrap_or_default();
    if !bool::from(given.ct_eq(expected.as_bytes())) {
        return response::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"code": "AuthenticationFailed", "message": "not a node of this cluster"}),
        );
    }
    let call: Call = match codec::decode(&body) {
        Ok(call) => call,
        Err(error) => {
            tracing::warn!(%error, "a node call that does not parse");
            return response::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"code": "InputError", "message": format!("not a node call: {error}")}),
            );
        }
    };
    let reply: Reply = state.engine.answer(call).await;
    match codec::encode(&reply) {
        Ok(bytes) => HttpResponse::Ok()
            .content_type("application/octet-stream")
            .body(bytes),
        Err(error) => {
            tracing::error!(%error, "a node reply does not encode");
            response::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"code": "InternalServerError", "message": error.to_string()}),
            )
        }
    }
}

/// `GET /api/queue/v1/__cluster__`: the nodes, their partitions and each partition's lag.
pub async fn cluster(state: web::Data<State>) -> HttpResponse {
    response::json(StatusCode::OK, &state.engine.cluster_view().await)
}

/// The header a request forwarded by another node carries (that node's id); such a request is
/// answered here, never forwarded again.
const FORWARDED: &str = "x-taskfold-forwarded-by";

/// For routes whose data lives on the node that owns the task's partition (live logs, blobs
/// on local disk): a request for another node's task is streamed there and its answer back.
pub fn to_owner<B: MessageBody + 'static, S>(
    request: ServiceRequest,
    service: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<BoxBody>, actix_web::Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
{
    let owner = request.app_data::<web::Data<State>>().and_then(|state| {
        let cluster = state.engine.cluster()?;
        if request.headers().contains_key(FORWARDED) {
            return None;
        }
        // Blobs in a shared store are served by whichever node a client reaches.
        if request.path().starts_with("/blobs/") && !state.blobs.store().is_local() {
            return None;
        }
        let task_id = request.match_info().get("taskId")?;
        let owner = state.engine.remote_owner(task_id)?;
        Some((owner, cluster.node_id().to_owned()))
    });
    match owner {
        None => {
            let answer = service.call(request);
            Box::pin(async move { answer.await.map(ServiceResponse::map_into_boxed_body) })
        }
        Some((owner, me)) => Box::pin(proxy(request, owner, me)),
    }
}

/// Streams `request` to the node at `owner` and its answer back.
async fn proxy(
    mut request: ServiceRequest,
    owner: String,
    me: String,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    crate::metrics::METRICS.forwarded_calls.inc();
    let target = format!(
        "{}{}",
        owner.trim_end_matches('/'),
        request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str())
    );
    let payload = request.take_payload();
    let mut forwarded = awc::Client::builder()
        .disable_timeout()
        .finish()
        .request(request.method().clone(), &target)
        .insert_header((FORWARDED, me));
    for (name, value) in request.headers() {
        if !is_hop_by_hop(name.as_str()) && name != "content-length" {
            forwarded = forwarded.insert_header((name.clone(), value.clone()));
        }
    }
    // A body of known length goes on with its length (a blob upload is checked against it),
    // any other chunked.
    let length = request
        .headers()
        .get("content-length")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let (http_request, _) = request.into_parts();
    let sent = match length {
        Some(length) => {
            forwarded
                .send_body(actix_web::body::SizedStream::new(length, payload))
                .await
        }
        None => forwarded.send_stream(payload).await,
    };
    let answer = match sent {
        Ok(answer) => {
            let mut reply = HttpResponse::build(answer.status());
            for (name, value) in answer.headers() {
                if !is_hop_by_hop(name.as_str()) && name != "content-length" {
                    reply.insert_header((name.clone(), value.clone()));
                }
            }
            reply.streaming(answer)
        }
        Err(error) => response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({
                "code": "ServiceUnavailable",
                "message": format!("the node serving this task did not answer: {error}"),
            }),
        ),
    };
    Ok(ServiceResponse::new(http_request, answer))
}

fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "host"
    )
}
