//! The nodes' own route (`engine::cluster::wire::PATH`), answered only to a caller with the
//! cluster's secret, and `__cluster__`, where operators see which node serves what.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use super::response;
use super::server::State;
use crate::engine::cluster::wire::{Call, Reply};

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
    let call: Call = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(error) => {
            return response::json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({"code": "InputError", "message": format!("not a node call: {error}")}),
            );
        }
    };
    let reply: Reply = state.engine.answer(call).await;
    HttpResponse::Ok()
        .content_type("application/json")
        .body(serde_json::to_vec(&reply).unwrap_or_default())
}

/// `GET /api/queue/v1/__cluster__`: the nodes, their partitions and each partition's lag.
pub async fn cluster(state: web::Data<State>) -> HttpResponse {
    response::json(StatusCode::OK, &state.engine.cluster_view().await)
}
