//! The Secrets service under `<rootUrl>/api/secrets/v1/`: `set`, `get`, `remove`, `list`.
//! A secret is a document of the log (`model::document`); its value is never written to text
//! logs or echoed in error bodies, and no exchange or task history carries it.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::routes::{get, template};
use crate::api::server::State;
use crate::auth::ScopeExpression;
use crate::model::document::{self, MAX_SECRET_BYTES, Secret};
use crate::model::{ApiError, Document, DocumentCommand, DocumentKind, ErrorCode, Json, Timestamp};

static GET: LazyLock<ScopeExpression> = LazyLock::new(|| template(json!("secrets:get:<name>")));
static SET: LazyLock<ScopeExpression> = LazyLock::new(|| template(json!("secrets:set:<name>")));
static LIST: LazyLock<ScopeExpression> = LazyLock::new(|| template(json!("secrets:list-secrets")));

pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(response::not_found));
    config
        .service(
            resource("/secret/{name:.+}")
                .route(web::put().to(set))
                .route(web::delete().to(remove))
                .route(get().to(get_secret)),
        )
        .service(resource("/secrets").route(get().to(list)));
}

/// The `secret` schema: `{secret: object, expires: date-time}`, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretInput {
    secret: Value,
    expires: Timestamp,
}

fn name(call: &Call) -> Result<String, ApiError> {
    let name = call.param("name");
    if document::is_secret_name(name) {
        return Ok(name.to_owned());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequestArguments,
        format!(
            "Invalid URL parameter `name`: a secret's name is 1 to {} bytes without control characters",
            document::MAX_SECRET_NAME
        ),
    ))
}

/// `PUT /secret/<name>`: creates or replaces the secret.
async fn set(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("set", request, body)
        .answer(async |call| {
            call.omit_secret();
            call.authorize_url(&state.access.clients(), &SET)?;
            let name = name(call)?;
            let input: SecretInput = call.input("v1/secret.json")?;
            if !input.secret.is_object() {
                return Err(ApiError::new(
                    ErrorCode::InputValidationError,
                    "the request does not match v1/secret.json: `secret` must be an object",
                ));
            }
            let value = Json::from_value(&input.secret);
            if value.len() > MAX_SECRET_BYTES {
                return Err(ApiError::new(
                    ErrorCode::InputTooLarge,
                    format!(
                        "a secret holds at most {MAX_SECRET_BYTES} bytes of JSON; this one has {}",
                        value.len()
                    ),
                ));
            }
            let secret = Document::Secret(Secret {
                value,
                expires: input.expires,
            });
            state
                .engine
                .execute_document(
                    DocumentKind::Secret,
                    &name,
                    DocumentCommand::Put(secret),
                    call.client_id(),
                )
                .await?;
            Ok(response::json(StatusCode::OK, &json!({})))
        })
        .await
}

/// `DELETE /secret/<name>`: 200 whether or not it was there.
async fn remove(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("remove", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &SET)?;
            let name = name(call)?;
            state
                .engine
                .execute_document(
                    DocumentKind::Secret,
                    &name,
                    DocumentCommand::Remove,
                    call.client_id(),
                )
                .await?;
            Ok(response::json(StatusCode::OK, &json!({})))
        })
        .await
}

/// `GET /secret/<name>`: 404 if there is none, 410 once it has expired.
async fn get_secret(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("get", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET)?;
            let name = name(call)?;
            let found = state.engine.document(DocumentKind::Secret, &name).await?;
            let Some(Document::Secret(secret)) = found else {
                return Err(ApiError::not_found(format!("Secret `{name}` not found")));
            };
            if secret.expires < call.now {
                return Err(ApiError::new(
                    ErrorCode::ResourceExpired,
                    format!("Secret `{name}` expired at {}", secret.expires),
                ));
            }
            let reply = json!({"secret": secret.value.to_value(), "expires": secret.expires});
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /secrets`: the names of the secrets that have not expired, in name order.
async fn list(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("list", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST)?;
            let page = call.page(MAX_LIMIT)?;
            let kind = DocumentKind::Secret;
            let mut last = page.after.clone();
            let mut names = Vec::new();
            let mut more = true;
            // Expired secrets (kept a while to answer 410) are skipped, so a page may take
            // several rounds to fill.
            while more && names.len() < page.limit {
                let after = last.as_deref().map(|name| document::store_key(kind, name));
                let (found, more_found) = state
                    .engine
                    .documents(
                        document::store_key(kind, ""),
                        after,
                        page.limit - names.len(),
                    )
                    .await?;
                more = more_found;
                if let Some((name, _)) = found.last() {
                    last = Some(name.clone());
                }
                names.extend(
                    found
                        .into_iter()
                        .filter(|(_, found)| {
                            found.expires().is_none_or(|expires| expires >= call.now)
                        })
                        .map(|(name, _)| name),
                );
            }
            let mut reply = json!({ "secrets": names });
            if let Some(token) = pagination::token(last.as_deref(), more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}
