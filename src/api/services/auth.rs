//! The Auth service under `<rootUrl>/api/auth/v1/`: clients and roles (made through the API
//! as documents of the log; the configuration's are static and cannot be changed here),
//! `expandScopes`, `currentScopes`, `testAuthenticate`, `testAuthenticateGet` and
//! `authenticateHawk`. Reads come from the table every service authenticates against
//! (`api::access`); a change is appended, and once durable swapped into that table, so a
//! client made, disabled or deleted, or a role changed, counts from the next request on.

use std::sync::{Arc, LazyLock};

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
use crate::auth::clients::{ClientView, RoleView, derive_access_token, is_valid_client_id};
use crate::auth::credentials::random_seed;
use crate::auth::scopes::{is_grantable_scope, is_valid_scope, scope_compare};
use crate::auth::{self, Client, Clients, RequestToAuthenticate, ScopeExpression, ScopeSet};
use crate::model::document::{ClientRecord, RoleRecord};
use crate::model::{ApiError, Document, DocumentCommand, DocumentKind, ErrorCode, Timestamp};

static GET_CLIENT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:get-client:<clientId>")));
static LIST_CLIENTS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:list-clients")));
static RESET_ACCESS_TOKEN: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:reset-access-token:<clientId>")));
static ENABLE_CLIENT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:enable-client:<clientId>")));
static DISABLE_CLIENT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:disable-client:<clientId>")));
static DELETE_CLIENT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:delete-client:<clientId>")));
static LIST_ROLES: LazyLock<ScopeExpression> = LazyLock::new(|| template(json!("auth:list-roles")));
static GET_ROLE: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:get-role:<roleId>")));
static DELETE_ROLE: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:delete-role:<roleId>")));
static EXPAND_SCOPES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:expand-scopes")));
static CURRENT_SCOPES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("auth:current-scopes")));

/// Longest client id: far longer than any Taskcluster makes (a task's credentials name about
/// a hundred characters), short enough to refuse a name that is a mistake.
const MAX_ID: usize = 1_024;
/// Longest role id: a hook's role names a hook group and id of up to 1,000 characters each.
const MAX_ROLE_ID: usize = 4_096;
/// Longest description of a client or role (Taskcluster's schema).
const MAX_DESCRIPTION: usize = 10_240;
/// How long a repeated createClient of equal content answers with the client it made (as
/// Taskcluster's does), instead of 409.
const SAME_CREATE_MILLIS: i64 = 15 * 60_000;
/// The fake client of testAuthenticate and testAuthenticateGet.
const TESTER: &str = "tester";
const TESTER_TOKEN: &str = "no-secret";

pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(response::not_found));
    let listing = |paths: [&'static str; 2]| {
        web::resource(paths.to_vec()).default_service(web::to(response::not_found))
    };
    config
        .service(listing(["/clients", "/clients/"]).route(get().to(list_clients)))
        .service(resource("/clients/{clientId}/reset").route(web::post().to(reset_access_token)))
        .service(resource("/clients/{clientId}/enable").route(web::post().to(enable_client)))
        .service(resource("/clients/{clientId}/disable").route(web::post().to(disable_client)))
        .service(
            resource("/clients/{clientId}")
                .route(get().to(client))
                .route(web::put().to(create_client))
                .route(web::post().to(update_client))
                .route(web::delete().to(delete_client)),
        )
        .service(listing(["/roles", "/roles/"]).route(get().to(list_roles)))
        .service(listing(["/roles2", "/roles2/"]).route(get().to(list_roles2)))
        .service(listing(["/roleids", "/roleids/"]).route(get().to(list_role_ids)))
        .service(
            resource("/roles/{roleId:.+}")
                .route(get().to(role))
                .route(web::put().to(create_role))
                .route(web::post().to(update_role))
                .route(web::delete().to(delete_role)),
        )
        .service(resource("/scopes/expand").route(web::post().to(expand_scopes)))
        .service(resource("/scopes/current").route(get().to(current_scopes)))
        .service(resource("/test-authenticate").route(web::post().to(test_authenticate)))
        .service(
            listing(["/test-authenticate-get", "/test-authenticate-get/"])
                .route(get().to(test_authenticate_get)),
        )
        .service(resource("/authenticate-hawk").route(web::post().to(authenticate_hawk)));
}

/// When a static client "expires": never, shown as Taskcluster shows its static clients'.
fn far_future(now: Timestamp) -> Timestamp {
    Timestamp::from_millis(now.millis() + 1_000 * 365 * 86_400_000)
}

/// Taskcluster's get-client-response.
fn client_json(view: &ClientView, table: &Clients, now: Timestamp) -> Value {
    let (description, created, modified, rotated, delete) = match &view.record {
        Some(record) => (
            record.description.clone(),
            record.created,
            record.last_modified,
            record.last_rotated,
            record.delete_on_expiration,
        ),
        None => {
            let since = table.configured_at();
            let text = "A static client of the server's configuration; the API cannot change it.";
            (text.to_owned(), since, since, since, false)
        }
    };
    json!({
        "clientId": view.client_id,
        "description": description,
        "expires": view.expires.unwrap_or_else(|| far_future(now)),
        "deleteOnExpiration": delete,
        "created": created,
        "lastModified": modified,
        "lastDateUsed": created,
        "lastRotated": rotated,
        "scopes": view.scopes,
        "expandedScopes": view.expanded_scopes.as_slice(),
        "disabled": view.disabled,
    })
}

/// Taskcluster's get-role-response.
fn role_json(view: &RoleView, clients: &Clients) -> Value {
    let since = clients.configured_at();
    let (description, created, modified) = match &view.record {
        Some(record) => (
            record.description.clone(),
            record.created,
            record.last_modified,
        ),
        None => (
            "A role of the server's configuration; the API cannot change it.".to_owned(),
            since,
            since,
        ),
    };
    let expanded = clients
        .roles()
        .expand(&ScopeSet::new([format!("assume:{}", view.role_id)]));
    json!({
        "roleId": view.role_id,
        "scopes": view.scopes,
        "description": description,
        "created": created,
        "lastModified": modified,
        "expandedScopes": expanded.as_slice(),
    })
}

fn client_id_param(call: &Call) -> Result<String, ApiError> {
    let client_id = call.param("clientId");
    if is_valid_client_id(client_id) && client_id.len() <= MAX_ID {
        return Ok(client_id.to_owned());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequestArguments,
        format!(
            "Invalid URL parameter `clientId`: it must match `^[A-Za-z0-9!@/:.+|_-]+$` and hold \
             at most {MAX_ID} characters"
        ),
    ))
}

fn role_id_param(call: &Call) -> Result<String, ApiError> {
    let role_id = call.param("roleId");
    if !role_id.is_empty() && is_valid_scope(role_id) && role_id.len() <= MAX_ROLE_ID {
        return Ok(role_id.to_owned());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequestArguments,
        format!(
            "Invalid URL parameter `roleId`: it must match `^[\\x20-\\x7e]+$` and hold at \
             most {MAX_ROLE_ID} characters"
        ),
    ))
}

/// The static clients are the configuration's: the API changes none of them.
fn refuse_static_client(state: &State, client_id: &str) -> Result<(), ApiError> {
    if client_id.starts_with("static/") || state.access.clients().is_static_client(client_id) {
        return Err(ApiError::input(format!(
            "clientId `{client_id}` is a static client (`static/` is reserved for them, and \
             the configuration's clients are static): the API cannot change it"
        )));
    }
    Ok(())
}

fn refuse_static_role(state: &State, role_id: &str) -> Result<(), ApiError> {
    if state.access.clients().is_static_role(role_id) {
        return Err(ApiError::input(format!(
            "role `{role_id}` is a role of the server's configuration: the API cannot change it"
        )));
    }
    Ok(())
}

/// Scopes given to a client or role: valid, and none ending in `**` (`InputError`, as
/// Taskcluster's).
fn check_scopes(schema: &str, scopes: &[String]) -> Result<(), ApiError> {
    if let Some(scope) = scopes.iter().find(|scope| !is_valid_scope(scope)) {
        return Err(ApiError::new(
            ErrorCode::InputValidationError,
            format!("the request does not match {schema}: scope `{scope}` is not printable ASCII"),
        ));
    }
    if scopes.iter().any(|scope| !is_grantable_scope(scope)) {
        return Err(ApiError::input("scopes must not end with `**`"));
    }
    Ok(())
}

fn check_description(schema: &str, description: &str) -> Result<(), ApiError> {
    if description.len() > MAX_DESCRIPTION {
        return Err(ApiError::new(
            ErrorCode::InputValidationError,
            format!(
                "the request does not match {schema}: `description` is longer than {MAX_DESCRIPTION}"
            ),
        ));
    }
    Ok(())
}

/// `{AllOf: [<fixed>, ...granted]}`: the caller needs the method's scope and every scope it
/// grants.
fn granting(fixed: String, granted: &[String]) -> Result<ScopeExpression, ApiError> {
    let all: Vec<Value> = std::iter::once(fixed)
        .chain(granted.iter().cloned())
        .map(Value::from)
        .collect();
    ScopeExpression::from_json(&json!({ "AllOf": all }))
        .map_err(|error| ApiError::input(error.to_string()))
}

fn not_found_client(client_id: &str) -> ApiError {
    ApiError::not_found(format!("Client `{client_id}` not found"))
}

fn not_found_role(role_id: &str) -> ApiError {
    ApiError::not_found(format!("Role `{role_id}` not found"))
}

/// The create-client-request schema (createClient and updateClient).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClientInput {
    expires: Timestamp,
    description: String,
    #[serde(default)]
    delete_on_expiration: bool,
    scopes: Option<Vec<String>>,
}

const CLIENT_SCHEMA: &str = "v1/create-client-request.json";

fn client_input(call: &Call) -> Result<ClientInput, ApiError> {
    let input: ClientInput = call.input(CLIENT_SCHEMA)?;
    check_description(CLIENT_SCHEMA, &input.description)?;
    check_scopes(CLIENT_SCHEMA, input.scopes.as_deref().unwrap_or_default())?;
    Ok(input)
}

/// Puts the client's record through the log; once durable, the table has it (`Access::watch`).
async fn record_client(
    state: &State,
    call: &Call,
    client_id: &str,
    command: DocumentCommand,
) -> Result<(), ApiError> {
    state
        .engine
        .execute_document(DocumentKind::Client, client_id, command, call.client_id())
        .await?;
    Ok(())
}

/// The API-made client `client_id` (404 if there is none).
fn api_client(state: &State, client_id: &str) -> Result<Arc<ClientRecord>, ApiError> {
    state
        .access
        .clients()
        .client(client_id)
        .and_then(|view| view.record)
        .ok_or_else(|| not_found_client(client_id))
}

fn client_reply(
    state: &State,
    client_id: &str,
    now: Timestamp,
    token: bool,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .access
        .clients()
        .client(client_id)
        .ok_or_else(|| not_found_client(client_id))?;
    let mut reply = client_json(&view, &state.access.clients(), now);
    if token && let Some(record) = &view.record {
        reply["accessToken"] = json!(derive_access_token(
            &state.access.token_key,
            &record.token_seed
        ));
    }
    Ok(response::json(StatusCode::OK, &reply))
}

/// `PUT /clients/<clientId>`: a new client with a new access token, answered once.
async fn create_client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createClient", request, body)
        .answer(async |call| {
            let client_id = client_id_param(call)?;
            refuse_static_client(&state, &client_id)?;
            let input = client_input(call)?;
            let scopes = input.scopes.unwrap_or_default();
            let required = granting(format!("auth:create-client:{client_id}"), &scopes)?;
            call.authorize(&state.access.clients(), &required, &[])?;
            if let Ok(existing) = api_client(&state, &client_id) {
                let same = existing.scopes == scopes
                    && existing.expires == input.expires
                    && existing.description == input.description
                    && !existing.disabled
                    && existing.created.millis() + SAME_CREATE_MILLIS > call.now.millis();
                if same {
                    return client_reply(&state, &client_id, call.now, true);
                }
                return Err(ApiError::new(
                    ErrorCode::RequestConflict,
                    "Client already exists",
                ));
            }
            let record = ClientRecord {
                description: input.description,
                token_seed: random_seed(),
                scopes,
                expires: input.expires,
                delete_on_expiration: input.delete_on_expiration,
                disabled: false,
                created: call.now,
                last_modified: call.now,
                last_rotated: call.now,
            };
            let command = DocumentCommand::Create(Document::Client(record));
            record_client(&state, call, &client_id, command).await?;
            client_reply(&state, &client_id, call.now, true)
        })
        .await
}

/// `POST /clients/<clientId>`: the caller needs the scopes the update adds.
async fn update_client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("updateClient", request, body)
        .answer(async |call| {
            let client_id = client_id_param(call)?;
            refuse_static_client(&state, &client_id)?;
            let input = client_input(call)?;
            let existing = api_client(&state, &client_id)?;
            let added: Vec<String> = input
                .scopes
                .iter()
                .flatten()
                .filter(|scope| !existing.scopes.contains(scope))
                .cloned()
                .collect();
            let required = granting(format!("auth:update-client:{client_id}"), &added)?;
            call.authorize(&state.access.clients(), &required, &[])?;
            let mut record = ClientRecord::clone(&*existing);
            record.description = input.description;
            record.expires = input.expires;
            record.delete_on_expiration = input.delete_on_expiration;
            if let Some(scopes) = input.scopes {
                record.scopes = scopes;
            }
            record.last_modified = call.now;
            let command = DocumentCommand::Put(Document::Client(record));
            record_client(&state, call, &client_id, command).await?;
            client_reply(&state, &client_id, call.now, false)
        })
        .await
}

/// Changes an API-made client with `change`, authorized by `scope`.
async fn change_client(
    state: &State,
    call: &mut Call,
    scope: &ScopeExpression,
    token: bool,
    change: impl FnOnce(&mut ClientRecord, Timestamp),
) -> Result<HttpResponse, ApiError> {
    let client_id = client_id_param(call)?;
    refuse_static_client(state, &client_id)?;
    call.authorize_url(&state.access.clients(), scope)?;
    let mut record = ClientRecord::clone(&*api_client(state, &client_id)?);
    change(&mut record, call.now);
    let command = DocumentCommand::Put(Document::Client(record));
    record_client(state, call, &client_id, command).await?;
    client_reply(state, &client_id, call.now, token)
}

/// `POST /clients/<clientId>/reset`: a new access token, answered once; the old one stops
/// working at once.
async fn reset_access_token(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("resetAccessToken", request, body)
        .answer(async |call| {
            change_client(&state, call, &RESET_ACCESS_TOKEN, true, |record, now| {
                record.token_seed = random_seed();
                record.last_rotated = now;
                record.last_modified = now;
            })
            .await
        })
        .await
}

async fn enable_client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("enableClient", request, body)
        .answer(async |call| {
            change_client(&state, call, &ENABLE_CLIENT, false, |record, now| {
                record.disabled = false;
                record.last_modified = now;
            })
            .await
        })
        .await
}

async fn disable_client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("disableClient", request, body)
        .answer(async |call| {
            change_client(&state, call, &DISABLE_CLIENT, false, |record, now| {
                record.disabled = true;
                record.last_modified = now;
            })
            .await
        })
        .await
}

/// `DELETE /clients/<clientId>`: 204 whether or not it was there.
async fn delete_client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("deleteClient", request, body)
        .answer(async |call| {
            let client_id = client_id_param(call)?;
            refuse_static_client(&state, &client_id)?;
            call.authorize_url(&state.access.clients(), &DELETE_CLIENT)?;
            record_client(&state, call, &client_id, DocumentCommand::Remove).await?;
            Ok(HttpResponse::NoContent().finish())
        })
        .await
}

/// `GET /clients/<clientId>`.
async fn client(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("client", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_CLIENT)?;
            let client_id = client_id_param(call)?;
            client_reply(&state, &client_id, call.now, false)
        })
        .await
}

/// `GET /clients/`: in id order, those starting with `prefix` if given.
async fn list_clients(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listClients", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_CLIENTS)?;
            let page = call.page(MAX_LIMIT)?;
            let prefix = call.query("prefix").unwrap_or_default();
            let table = state.access.clients();
            let ids: Vec<&str> = table
                .client_ids(&prefix)
                .into_iter()
                .filter(|id| page.after.as_deref().is_none_or(|after| *id > after))
                .collect();
            let shown = &ids[..ids.len().min(page.limit)];
            let clients: Vec<Value> = shown
                .iter()
                .filter_map(|id| table.client(id))
                .map(|view| client_json(&view, &table, call.now))
                .collect();
            let mut reply = json!({ "clients": clients });
            if let Some(token) = pagination::token(shown.last().copied(), ids.len() > shown.len()) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// The create-role-request schema.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleInput {
    scopes: Vec<String>,
    description: String,
}

const ROLE_SCHEMA: &str = "v1/create-role-request.json";

fn role_input(call: &Call) -> Result<RoleInput, ApiError> {
    let mut input: RoleInput = call.input(ROLE_SCHEMA)?;
    check_description(ROLE_SCHEMA, &input.description)?;
    check_scopes(ROLE_SCHEMA, &input.scopes)?;
    input.scopes.sort_by(|a, b| scope_compare(a, b));
    input.scopes.dedup();
    Ok(input)
}

/// The table with the role as `record` says, or why it cannot be (a cycle, a bad scope):
/// `InputError`, as Taskcluster's.
fn check_role(state: &State, role_id: &str, record: &RoleRecord) -> Result<(), ApiError> {
    state
        .access
        .clients()
        .with_api_role(role_id, Some(Arc::new(record.clone())))
        .map(|_| ())
        .map_err(|error| ApiError::input(error.to_string()))
}

/// Puts the role through the log; once durable, the table has it (`Access::watch`).
async fn record_role(
    state: &State,
    call: &Call,
    role_id: &str,
    command: DocumentCommand,
) -> Result<(), ApiError> {
    state
        .engine
        .execute_document(DocumentKind::Role, role_id, command, call.client_id())
        .await?;
    Ok(())
}

fn role_reply(state: &State, role_id: &str) -> Result<HttpResponse, ApiError> {
    let table = state.access.clients();
    let view = table
        .role_view(role_id)
        .ok_or_else(|| not_found_role(role_id))?;
    Ok(response::json(StatusCode::OK, &role_json(&view, &table)))
}

/// `PUT /roles/<roleId>`: the caller needs every scope of the role.
async fn create_role(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createRole", request, body)
        .answer(async |call| {
            let role_id = role_id_param(call)?;
            refuse_static_role(&state, &role_id)?;
            let input = role_input(call)?;
            let required = granting(format!("auth:create-role:{role_id}"), &input.scopes)?;
            call.authorize(&state.access.clients(), &required, &[])?;
            if let Some(existing) = state.access.clients().role_view(&role_id) {
                let same = existing.record.as_ref().is_some_and(|record| {
                    record.description == input.description && record.scopes == input.scopes
                });
                if same {
                    return role_reply(&state, &role_id);
                }
                return Err(ApiError::new(
                    ErrorCode::RequestConflict,
                    format!("Role with roleId `{role_id}` already exists"),
                ));
            }
            let record = RoleRecord {
                description: input.description,
                scopes: input.scopes,
                created: call.now,
                last_modified: call.now,
            };
            check_role(&state, &role_id, &record)?;
            let command = DocumentCommand::Create(Document::Role(record));
            record_role(&state, call, &role_id, command).await?;
            role_reply(&state, &role_id)
        })
        .await
}

/// `POST /roles/<roleId>`: the caller needs the scopes the old role did not already grant.
async fn update_role(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("updateRole", request, body)
        .answer(async |call| {
            let role_id = role_id_param(call)?;
            refuse_static_role(&state, &role_id)?;
            let input = role_input(call)?;
            let table = state.access.clients();
            let existing = table
                .role_view(&role_id)
                .and_then(|view| view.record)
                .ok_or_else(|| not_found_role(&role_id))?;
            let granted = table
                .roles()
                .expand(&ScopeSet::new(existing.scopes.iter().cloned()));
            let added: Vec<String> = input
                .scopes
                .iter()
                .filter(|scope| !granted.satisfies_scope(scope))
                .cloned()
                .collect();
            let required = granting(format!("auth:update-role:{role_id}"), &added)?;
            call.authorize(&table, &required, &[])?;
            let record = RoleRecord {
                description: input.description,
                scopes: input.scopes,
                created: existing.created,
                last_modified: call.now,
            };
            check_role(&state, &role_id, &record)?;
            let command = DocumentCommand::Put(Document::Role(record));
            record_role(&state, call, &role_id, command).await?;
            role_reply(&state, &role_id)
        })
        .await
}

/// `DELETE /roles/<roleId>`: 204 whether or not it was there.
async fn delete_role(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("deleteRole", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &DELETE_ROLE)?;
            let role_id = role_id_param(call)?;
            refuse_static_role(&state, &role_id)?;
            record_role(&state, call, &role_id, DocumentCommand::Remove).await?;
            Ok(HttpResponse::NoContent().finish())
        })
        .await
}

/// `GET /roles/<roleId>`.
async fn role(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("role", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_ROLE)?;
            let role_id = role_id_param(call)?;
            role_reply(&state, &role_id)
        })
        .await
}

/// `GET /roles/`: every role, as a bare array.
async fn list_roles(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listRoles", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_ROLES)?;
            let table = state.access.clients();
            let roles: Vec<Value> = table
                .role_views()
                .iter()
                .map(|view| role_json(view, &table))
                .collect();
            Ok(response::json(StatusCode::OK, &roles))
        })
        .await
}

/// The roles after the page's token, up to its limit (all when no `limit` is given, as in
/// Taskcluster), and the token of the next page.
fn role_page(call: &Call, table: &Clients) -> Result<(Vec<RoleView>, Option<String>), ApiError> {
    let limited = call.query("limit").is_some();
    let page = call.page(MAX_LIMIT)?;
    let views: Vec<RoleView> = table
        .role_views()
        .into_iter()
        .filter(|view| {
            page.after
                .as_deref()
                .is_none_or(|after| view.role_id.as_str() > after)
        })
        .collect();
    let take = if limited { page.limit } else { views.len() };
    let more = views.len() > take;
    let shown: Vec<RoleView> = views.into_iter().take(take).collect();
    let token = pagination::token(shown.last().map(|view| view.role_id.as_str()), more);
    Ok((shown, token))
}

/// `GET /roles2/`.
async fn list_roles2(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listRoles2", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_ROLES)?;
            let table = state.access.clients();
            let (views, token) = role_page(call, &table)?;
            let roles: Vec<Value> = views.iter().map(|view| role_json(view, &table)).collect();
            let mut reply = json!({ "roles": roles });
            if let Some(token) = token {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /roleids/`.
async fn list_role_ids(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listRoleIds", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_ROLES)?;
            let table = state.access.clients();
            let (views, token) = role_page(call, &table)?;
            let ids: Vec<&str> = views.iter().map(|view| view.role_id.as_str()).collect();
            let mut reply = json!({ "roleIds": ids });
            if let Some(token) = token {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesInput {
    scopes: Vec<String>,
}

/// `POST /scopes/expand`: the scopes with everything the roles grant (without `anonymous`).
async fn expand_scopes(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("expandScopes", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &EXPAND_SCOPES)?;
            let input: ScopesInput = call.input("v1/scopeset.json")?;
            check_scopes("v1/scopeset.json", &input.scopes)?;
            let expanded = state
                .access
                .clients()
                .roles()
                .expand(&ScopeSet::new(input.scopes));
            Ok(response::json(
                StatusCode::OK,
                &json!({ "scopes": expanded.as_slice() }),
            ))
        })
        .await
}

/// `GET /scopes/current`: the caller's scopes, expanded.
async fn current_scopes(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("currentScopes", request, body)
        .answer(async |call| {
            let authenticated = call.authorize_url(&state.access.clients(), &CURRENT_SCOPES)?;
            let scopes = authenticated.scopes.as_slice().to_vec();
            Ok(response::json(StatusCode::OK, &json!({ "scopes": scopes })))
        })
        .await
}

/// The table of testAuthenticate: only the client `tester` (token `no-secret`) with
/// `scopes`, unexpanded; no roles.
fn tester_table(scopes: Vec<String>) -> Result<Clients, ApiError> {
    let tester = Client {
        client_id: TESTER.to_owned(),
        access_token: TESTER_TOKEN.to_owned(),
        scopes,
        expires: None,
        disabled: false,
    };
    Clients::new([tester], Vec::new()).map_err(|error| ApiError::input(error.to_string()))
}

fn tested(authenticated: &auth::Authenticated) -> HttpResponse {
    response::json(
        StatusCode::OK,
        &json!({
            "clientId": authenticated.client_id,
            "scopes": authenticated.scopes.as_slice(),
        }),
    )
}

/// `POST /test-authenticate`: authenticates as `tester` with `clientScopes`, then checks
/// `requiredScopes`.
async fn test_authenticate(request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("testAuthenticate", request, body)
        .answer(async |call| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct TestInput {
                #[serde(default)]
                client_scopes: Vec<String>,
                #[serde(default)]
                required_scopes: Vec<String>,
            }
            let input: TestInput = call.input("v1/test-authenticate-request.json")?;
            check_scopes("v1/test-authenticate-request.json", &input.client_scopes)?;
            let table = tester_table(input.client_scopes)?;
            let required = ScopeExpression::from_json(&json!({ "AllOf": input.required_scopes }))
                .map_err(|error| ApiError::input(error.to_string()))?;
            let authenticated = call.authorize(&table, &required, &[])?.clone();
            Ok(tested(&authenticated))
        })
        .await
}

/// `GET /test-authenticate-get/`: as `tester` with `test:*` and `auth:create-client:test:*`,
/// needing `test:authenticate-get` (for signed URLs).
async fn test_authenticate_get(request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("testAuthenticateGet", request, body)
        .answer(async |call| {
            let table = tester_table(vec!["test:*".into(), "auth:create-client:test:*".into()])?;
            let required = ScopeExpression::scope("test:authenticate-get");
            let authenticated = call.authorize(&table, &required, &[])?.clone();
            Ok(tested(&authenticated))
        })
        .await
}

/// `POST /authenticate-hawk`: checks the signature of a request another server received,
/// answering `auth-success`, `auth-failed` or `no-auth` (never an error for bad credentials).
async fn authenticate_hawk(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("authenticateHawk", request, body)
        .answer(async |call| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, rename_all = "camelCase")]
            struct HawkInput {
                method: String,
                resource: String,
                host: String,
                port: u16,
                authorization: Option<String>,
                #[allow(dead_code)]
                source_ip: Option<String>,
            }
            let input: HawkInput = call.input("v1/authenticate-hawk-request.json")?;
            let host = format!("{}:{}", input.host, input.port);
            let request = RequestToAuthenticate {
                method: &input.method,
                resource: &input.resource,
                host: Some(&host),
                authorization: input.authorization.as_deref(),
                ..RequestToAuthenticate::default()
            };
            let table = state.access.clients();
            let expires_default = call.now.plus_millis(15 * 60_000);
            let reply = match auth::authenticate_signature(&request, &table, call.now) {
                Ok((authenticated, _)) if authenticated.client_id.is_none() => json!({
                    "status": "no-auth",
                    "scheme": "none",
                    "scopes": authenticated.scopes.as_slice(),
                    "expires": expires_default,
                }),
                Ok((authenticated, hash)) => {
                    let mut reply = json!({
                        "status": "auth-success",
                        "scheme": "hawk",
                        "scopes": authenticated.scopes.as_slice(),
                        "clientId": authenticated.client_id,
                        "expires": authenticated.expires.unwrap_or_else(|| far_future(call.now)),
                    });
                    if let Some(hash) = hash {
                        reply["hash"] = json!(hash);
                    }
                    reply
                }
                Err(error) => json!({ "status": "auth-failed", "message": error.to_string() }),
            };
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}
