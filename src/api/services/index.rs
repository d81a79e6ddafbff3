//! The Index service under `<rootUrl>/api/index/v1/`: `findTask`, `findTasksAtIndex`,
//! `listNamespaces`, `listTasks` (GET and the deprecated POST forms), `insertTask`,
//! `deleteTask`, `findArtifactFromTask`. Entries are documents of the log
//! (`model::document`), keyed by index path; completed tasks' `index.` routes insert theirs
//! when reportCompleted is answered (`Engine::index_completed`).

use std::sync::LazyLock;

use actix_web::http::{StatusCode, Uri, header};
use actix_web::web::{self, Data};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT, Page};
use crate::api::response;
use crate::api::routes::{get, template};
use crate::api::server::State;
use crate::auth::{ScopeExpression, bewit};
use crate::model::artifact;
use crate::model::document::{self, IndexedTask};
use crate::model::{
    ApiError, Document, DocumentCommand, DocumentKind, ErrorCode, Json, Slugid, Timestamp,
};

static FIND_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("index:find-task:<indexPath>")));
static INSERT_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("index:insert-task:<namespace>")));
static DELETE_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("index:delete-task:<namespace>")));
static LIST_NAMESPACES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("index:list-namespaces:<namespace>")));
static LIST_TASKS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("index:list-tasks:<namespace>")));
static GET_ARTIFACT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-artifact:<name>")));

/// How long the signed URL of a private artifact that findArtifactFromTask answers with
/// works (Taskcluster's: 15 minutes).
const SIGNED_ARTIFACT_SECONDS: i64 = 15 * 60;

pub fn configure(config: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path).default_service(web::to(response::not_found));
    config
        .service(
            resource("/task/{indexPath}/artifacts/{name:.+}")
                .route(get().to(find_artifact_from_task)),
        )
        .service(
            resource("/task/{namespace}")
                .route(get().to(find_task))
                .route(web::put().to(insert_task))
                .route(web::delete().to(delete_task)),
        )
        .service(resource("/tasks/indexes").route(web::post().to(find_tasks_at_index)))
        // An empty namespace (the top of the index) comes with or without its slash.
        .service(
            web::resource(["/namespaces", "/namespaces/"])
                .route(get().to(list_namespaces))
                .route(web::post().to(list_namespaces_post))
                .default_service(web::to(response::not_found)),
        )
        .service(
            resource("/namespaces/{namespace}")
                .route(get().to(list_namespaces))
                .route(web::post().to(list_namespaces_post)),
        )
        .service(
            web::resource(["/tasks", "/tasks/"])
                .route(get().to(list_tasks))
                .route(web::post().to(list_tasks_post))
                .default_service(web::to(response::not_found)),
        )
        .service(
            resource("/tasks/{namespace}")
                .route(get().to(list_tasks))
                .route(web::post().to(list_tasks_post)),
        );
}

/// The URL parameter `name` as an index path (`InvalidRequestArguments` if it is not one);
/// an empty one is allowed where `empty` says so (the top of the index).
fn index_path(call: &Call, name: &str, empty: bool) -> Result<String, ApiError> {
    let path = call.param(name);
    if (empty && path.is_empty()) || document::is_index_path(path) {
        return Ok(path.to_owned());
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequestArguments,
        format!(
            "Invalid URL parameter `{name}`: `{path}` is not dot-separated segments of \
             `[a-zA-Z0-9_!~*'()%-]`, at most {} characters",
            document::MAX_INDEX_PATH
        ),
    ))
}

/// Taskcluster's indexed-task-response.
fn entry_json(path: &str, entry: &IndexedTask) -> Value {
    json!({
        "namespace": path,
        "taskId": entry.task_id,
        "rank": entry.rank,
        "data": entry.data.to_value(),
        "expires": entry.expires,
    })
}

/// The live entry at `path`, or 404.
async fn find(state: &State, path: &str, now: Timestamp) -> Result<IndexedTask, ApiError> {
    match state
        .engine
        .document(DocumentKind::IndexedTask, path)
        .await?
    {
        Some(Document::IndexedTask(entry)) if entry.expires > now => Ok(entry),
        _ => Err(ApiError::not_found(format!(
            "Indexed task not found at `{path}`"
        ))),
    }
}

/// `GET /task/<indexPath>`.
async fn find_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("findTask", request, body)
        .answer(async |call| {
            let path = index_path(call, "namespace", false)?;
            call.authorize(&state.access.clients(), &FIND_TASK, &[("indexPath", &path)])?;
            let entry = find(&state, &path, call.now).await?;
            Ok(response::json(StatusCode::OK, &entry_json(&path, &entry)))
        })
        .await
}

/// The insert-task-request schema.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InsertTask {
    task_id: Slugid,
    rank: serde_json::Number,
    data: Value,
    expires: Timestamp,
}

/// `PUT /task/<namespace>`: puts the entry unless one of a higher rank is there; answers the
/// entry that stands.
async fn insert_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("insertTask", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &INSERT_TASK)?;
            let path = index_path(call, "namespace", false)?;
            let input: InsertTask = call.input("v1/insert-task-request.json")?;
            let problem = |text: &str| {
                ApiError::new(
                    ErrorCode::InputValidationError,
                    format!("the request does not match v1/insert-task-request.json: {text}"),
                )
            };
            if !input.data.is_object() {
                return Err(problem("`data` must be an object"));
            }
            let rank = input
                .rank
                .as_i64()
                .or_else(|| input.rank.as_f64().map(|rank| rank as i64))
                .ok_or_else(|| problem("`rank` must be a number"))?;
            let entry = IndexedTask {
                task_id: input.task_id,
                rank,
                data: Json::from_value(&input.data),
                expires: input.expires,
            };
            let standing = state
                .engine
                .execute_document(
                    DocumentKind::IndexedTask,
                    &path,
                    DocumentCommand::Put(Document::IndexedTask(entry)),
                    call.client_id(),
                )
                .await?;
            let Some(Document::IndexedTask(standing)) = standing else {
                return Err(ApiError::new(
                    ErrorCode::InternalServerError,
                    "the entry was not put",
                ));
            };
            Ok(response::json(
                StatusCode::OK,
                &entry_json(&path, &standing),
            ))
        })
        .await
}

/// `DELETE /task/<namespace>`: 200 whether or not it was there.
async fn delete_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("deleteTask", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &DELETE_TASK)?;
            let path = index_path(call, "namespace", false)?;
            state
                .engine
                .execute_document(
                    DocumentKind::IndexedTask,
                    &path,
                    DocumentCommand::Remove,
                    call.client_id(),
                )
                .await?;
            Ok(response::json(StatusCode::OK, &json!({})))
        })
        .await
}

/// `POST /tasks/indexes`: the live entries at the given paths (at most one each), paged
/// through the list of paths.
async fn find_tasks_at_index(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("findTasksAtIndex", request, body)
        .answer(async |call| {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Indexes {
                #[serde(default)]
                indexes: Vec<String>,
            }
            let input: Indexes = call.input("v1/list-tasks-at-index.json")?;
            let scopes: Vec<Value> = input
                .indexes
                .iter()
                .map(|path| json!(format!("index:find-task:{path}")))
                .collect();
            let required = ScopeExpression::from_json(&json!({ "AllOf": scopes }))
                .map_err(|error| ApiError::input(error.to_string()))?;
            call.authorize(&state.access.clients(), &required, &[])?;
            let page = call.page(MAX_LIMIT)?;
            let start: usize = match page.after.as_deref() {
                None => 0,
                Some(after) => after.parse().map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidRequestArguments,
                        "`continuationToken` is not one this API gave",
                    )
                })?,
            };
            let end = (start + page.limit).min(input.indexes.len());
            let paths = input.indexes.get(start..end).unwrap_or_default();
            let lookups = paths
                .iter()
                .filter(|path| document::is_index_path(path))
                .map(|path| async {
                    find(&state, path, call.now)
                        .await
                        .ok()
                        .map(|entry| entry_json(path, &entry))
                });
            let tasks: Vec<Value> = futures::future::join_all(lookups)
                .await
                .into_iter()
                .flatten()
                .collect();
            let mut reply = json!({ "tasks": tasks });
            let next = end.to_string();
            if let Some(token) = pagination::token(Some(&next), end < input.indexes.len()) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// The page of a POST list form: `limit` and `continuationToken` from the body, if sent.
fn body_page(call: &Call) -> Result<Page, ApiError> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct PageInput {
        limit: Option<usize>,
        continuation_token: Option<String>,
    }
    let input: PageInput = call.lenient_input().unwrap_or_default();
    let mut query = String::new();
    if let Some(limit) = input.limit {
        query.push_str(&format!("limit={limit}&"));
    }
    if let Some(token) = input.continuation_token {
        query.push_str("continuationToken=");
        query.push_str(&token);
    }
    Page::from_query(&query, MAX_LIMIT)
}

async fn namespaces(state: &State, call: &mut Call, page: Page) -> Result<HttpResponse, ApiError> {
    let parent = index_path(call, "namespace", true)?;
    call.authorize(
        &state.access.clients(),
        &LIST_NAMESPACES,
        &[("namespace", &parent)],
    )?;
    let mut last = page.after.clone();
    let mut found = Vec::new();
    let mut more = true;
    // Expired namespaces not swept yet are skipped, so a page may take several rounds.
    while more && found.len() < page.limit {
        let (part, more_found) = state
            .engine
            .namespaces(&parent, last.clone(), page.limit - found.len())
            .await?;
        more = more_found;
        if let Some((name, _)) = part.last() {
            last = Some(name.clone());
        }
        found.extend(part.into_iter().filter(|(_, expires)| *expires > call.now));
    }
    let namespaces: Vec<Value> = found
        .iter()
        .map(|(name, expires)| {
            json!({
                "namespace": document::join_index_path(&parent, name),
                "name": name,
                "expires": expires,
            })
        })
        .collect();
    let mut reply = json!({ "namespaces": namespaces });
    if let Some(token) = pagination::token(last.as_deref(), more) {
        reply["continuationToken"] = json!(token);
    }
    Ok(response::json(StatusCode::OK, &reply))
}

/// `GET /namespaces/<namespace>`: the namespaces directly under it.
async fn list_namespaces(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listNamespaces", request, body)
        .answer(async |call| {
            let page = call.page(MAX_LIMIT)?;
            namespaces(&state, call, page).await
        })
        .await
}

/// `POST /namespaces/<namespace>` (deprecated): the same, paged by the body.
async fn list_namespaces_post(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listNamespacesPost", request, body)
        .answer(async |call| {
            let page = body_page(call)?;
            namespaces(&state, call, page).await
        })
        .await
}

async fn tasks(state: &State, call: &mut Call, page: Page) -> Result<HttpResponse, ApiError> {
    let namespace = index_path(call, "namespace", true)?;
    call.authorize(
        &state.access.clients(),
        &LIST_TASKS,
        &[("namespace", &namespace)],
    )?;
    let kind = DocumentKind::IndexedTask;
    let prefix = document::index_namespace_prefix(&namespace);
    let mut last = page.after.clone();
    let mut tasks = Vec::new();
    let mut more = true;
    while more && tasks.len() < page.limit {
        let after = last
            .as_deref()
            .map(|name| document::store_key(kind, &document::join_index_path(&namespace, name)));
        let (part, more_found) = state
            .engine
            .documents(prefix.clone(), after, page.limit - tasks.len())
            .await?;
        more = more_found;
        if let Some((path, _)) = part.last() {
            last = Some(document::split_index_path(path).1.to_owned());
        }
        tasks.extend(part.into_iter().filter_map(|(path, found)| match found {
            Document::IndexedTask(entry) if entry.expires > call.now => {
                Some(entry_json(&path, &entry))
            }
            _ => None,
        }));
    }
    let mut reply = json!({ "tasks": tasks });
    if let Some(token) = pagination::token(last.as_deref(), more) {
        reply["continuationToken"] = json!(token);
    }
    Ok(response::json(StatusCode::OK, &reply))
}

/// `GET /tasks/<namespace>`: the tasks indexed directly in it.
async fn list_tasks(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listTasks", request, body)
        .answer(async |call| {
            let page = call.page(MAX_LIMIT)?;
            tasks(&state, call, page).await
        })
        .await
}

/// `POST /tasks/<namespace>` (deprecated): the same, paged by the body.
async fn list_tasks_post(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listTasksPost", request, body)
        .answer(async |call| {
            let page = body_page(call)?;
            tasks(&state, call, page).await
        })
        .await
}

/// `GET /task/<indexPath>/artifacts/<name>`: 303 to the queue's latest artifact of the
/// indexed task, signed (for 15 minutes) unless the anonymous role may read it.
async fn find_artifact_from_task(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("findArtifactFromTask", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_ARTIFACT)?;
            let path = index_path(call, "indexPath", false)?;
            let name = call.param("name").to_owned();
            let entry = find(&state, &path, call.now).await?;
            let url = latest_artifact_url(&state, entry.task_id, &name, call.now)?;
            let mut reply = response::json(StatusCode::SEE_OTHER, &json!({ "url": url }));
            if let Ok(location) = header::HeaderValue::from_str(&url) {
                reply.headers_mut().insert(header::LOCATION, location);
            }
            Ok(reply)
        })
        .await
}

/// The queue's getLatestArtifact URL of `name` of `task_id`, with a bewit of the queue's own
/// credentials unless the artifact is public (the anonymous role may read it).
fn latest_artifact_url(
    state: &State,
    task_id: Slugid,
    name: &str,
    now: Timestamp,
) -> Result<String, ApiError> {
    let root = state.root_url.trim_end_matches('/');
    let encoded = percent_encoding::utf8_percent_encode(name, artifact::NAME_ENCODING);
    let url = format!("{root}/api/queue/v1/task/{task_id}/artifacts/{encoded}");
    let public = state
        .access
        .clients()
        .anonymous_scopes()
        .satisfies_scope(&format!("queue:get-artifact:{name}"));
    if public {
        return Ok(url);
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::InternalServerError, "the root URL is not a URL"))?;
    let https = uri.scheme_str() == Some("https");
    let place = bewit::Place {
        resource_without_bewit: uri.path_and_query().map_or("/", |target| target.as_str()),
        host: uri.host().unwrap_or_default(),
        port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
    };
    let expires = now.millis() / 1000 + SIGNED_ARTIFACT_SECONDS;
    let signed = bewit::sign_resource(&state.access.queue_credentials, &place, expires)
        .map_err(|error| ApiError::new(ErrorCode::InternalServerError, error.to_string()))?;
    let origin = url
        .strip_suffix(place.resource_without_bewit)
        .unwrap_or(root);
    Ok(format!("{origin}{signed}"))
}
