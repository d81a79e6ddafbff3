//! How the API answers: JSON pretty-printed with two spaces, Taskcluster's error body, and the
//! headers every Taskcluster API response carries.

use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::model::{ApiError, Timestamp};

/// What an error body tells about the call that failed (Taskcluster's `requestInfo`).
#[derive(Clone, Debug, Default)]
pub struct CallInfo {
    /// The API method's name, e.g. `createTask`.
    pub method: &'static str,
    /// The URL parameters, decoded.
    pub params: serde_json::Map<String, Value>,
    /// The request body's JSON text, checked to parse (`None`, shown as `{}`, when there was
    /// none). Echoed as it came rather than parsed again.
    pub payload: Option<Bytes>,
}

/// A JSON reply, formatted as Taskcluster formats them.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    match serde_json::to_string_pretty(value) {
        Ok(body) => HttpResponse::build(status)
            .content_type("application/json; charset=utf-8")
            .body(body),
        Err(error) => {
            tracing::error!(%error, "a reply does not serialize");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// Taskcluster's error body: the code, the message followed by a summary block, and what the
/// call was.
pub fn error(error: &ApiError, call: &CallInfo, now: Timestamp) -> HttpResponse {
    let status = error.status();
    let message = format!(
        "{}\n\n---\n\n* method:     {}\n* errorCode:  {}\n* statusCode: {status}\n* time:       {now}",
        error.message, call.method, error.code
    );
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody<'a> {
        code: &'a str,
        message: String,
        request_info: RequestInfo<'a>,
    }
    #[derive(Serialize)]
    struct RequestInfo<'a> {
        method: &'a str,
        params: &'a serde_json::Map<String, Value>,
        payload: &'a RawValue,
        time: Timestamp,
    }
    let empty: &RawValue = serde_json::from_str("{}").expect("`{}` is JSON");
    let payload = call
        .payload
        .as_deref()
        .and_then(|text| serde_json::from_slice(text).ok())
        .unwrap_or(empty);
    let body = ErrorBody {
        code: error.code.as_str(),
        message,
        request_info: RequestInfo {
            method: call.method,
            params: &call.params,
            payload,
            time: now,
        },
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &body)
}

/// What no route answers (an unknown path, or a known one with another method, since
/// Taskcluster's router knows no 405): Taskcluster's `ResourceNotFound`, in its error shape.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    let error = ApiError::not_found(format!(
        "no such resource: {} {}",
        request.method(),
        request.path()
    ));
    let call = CallInfo {
        method: "unknown",
        ..CallInfo::default()
    };
    self::error(&error, &call, Timestamp::now())
}

/// Headers on every API response: no caching, and CORS open to any origin.
pub fn api_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("Cache-Control", "no-store no-cache must-revalidate"))
        .add(("Access-Control-Allow-Origin", "*"))
        .add(("Access-Control-Max-Age", "900"))
        .add((
            "Access-Control-Allow-Methods",
            "OPTIONS,GET,HEAD,POST,PUT,DELETE,TRACE,CONNECT",
        ))
        .add((
            "Access-Control-Allow-Headers",
            "X-Requested-With,Content-Type,Authorization,Accept,Origin,Cache-Control",
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ErrorCode;
    use actix_web::body::MessageBody;
    use serde_json::json;

    #[test]
    fn error_body_has_taskclusters_shape() {
        let call = CallInfo {
            method: "task",
            params: [("taskId".to_owned(), json!("fN1SbArXTPSVFNUvaOlinQ"))]
                .into_iter()
                .collect(),
            payload: None,
        };
        let response = error(
            &ApiError::new(ErrorCode::ResourceNotFound, "task not found"),
            &call,
            "2026-11-22T10:00:00Z".parse().unwrap(),
        );
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = response.into_body().try_into_bytes().unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["code"], "ResourceNotFound");
        assert_eq!(
            body["message"],
            "task not found\n\n---\n\n* method:     task\n* errorCode:  ResourceNotFound\n* statusCode: 404\n* time:       2026-11-22T10:00:00.000Z"
        );
        assert_eq!(
            body["requestInfo"]["params"]["taskId"],
            "fN1SbArXTPSVFNUvaOlinQ"
        );
        assert_eq!(body["requestInfo"]["time"], "2026-11-22T10:00:00.000Z");
        assert_eq!(body["requestInfo"]["payload"], json!({}));

        let call = CallInfo {
            payload: Some(Bytes::from_static(b" {\"a\": [1, {\"b\": null}]}")),
            ..call
        };
        let response = error(
            &ApiError::new(ErrorCode::InputError, "no"),
            &call,
            "2026-11-22T10:00:00Z".parse().unwrap(),
        );
        let bytes = response.into_body().try_into_bytes().unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body["requestInfo"]["payload"],
            json!({"a": [1, {"b": null}]})
        );
    }
}
