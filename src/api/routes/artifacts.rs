//! Artifacts (reference §6): `createArtifact`, `finishArtifact`, `getArtifact`,
//! `getLatestArtifact`, `listArtifacts`, `listLatestArtifacts`, `artifactInfo`,
//! `latestArtifactInfo`, `artifact` and `latestArtifact`.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::template;
use crate::api::blobs;
use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::server::State;
use crate::api::sessions;
use crate::auth::ScopeExpression;
use crate::blobs::BlobId;
use crate::model::artifact::is_artifact_name;
use crate::model::task::Command;
use crate::model::{ApiError, Artifact, ErrorCode, Slugid, Storage, Task, Timestamp};

pub(crate) static CREATE_ARTIFACT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:create-artifact:<taskId>/<runId>")));
pub(crate) static GET_ARTIFACT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-artifact:<name>")));
static LIST_ARTIFACTS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-artifacts:<taskId>:<runId>")));
static LIST_LATEST_ARTIFACTS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-artifacts:<taskId>")));

/// The artifact name of the URL.
fn name_param(call: &Call) -> Result<String, ApiError> {
    let name = call.param("name");
    if !is_artifact_name(name) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            "Invalid URL parameter `name`: an artifact name is printable ASCII",
        ));
    }
    Ok(name.to_owned())
}

/// `POST /task/<taskId>/runs/<runId>/artifacts/<name>`.
pub async fn create_artifact(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createArtifact", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &CREATE_ARTIFACT)?;
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let name = name_param(call)?;
            let artifact = Artifact::from_request(&call.json_payload()?)?;
            let command = Command::CreateArtifact {
                run_id,
                name: name.clone(),
                artifact: Box::new(artifact),
            };
            let task = state
                .engine
                .execute(task_id, command, call.client_id())
                .await?;
            let Some(artifact) = task.artifacts.get(&(run_id, name.clone())) else {
                return Err(ApiError::new(
                    ErrorCode::InternalServerError,
                    "the artifact is missing after its creation",
                ));
            };
            let reply = match &artifact.storage {
                Storage::S3 { .. } => {
                    let expires = call.now.plus_millis(blobs::PUT_URL_MILLIS);
                    let blob = BlobId {
                        task_id,
                        run_id,
                        name,
                    };
                    json!({
                        "storageType": "s3",
                        "contentType": artifact.content_type,
                        "expires": expires,
                        "putUrl": state.blobs.url(&blob, Some(("PUT", expires))),
                    })
                }
                storage => json!({ "storageType": storage.type_name() }),
            };
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `PUT /task/<taskId>/runs/<runId>/artifacts/<name>`: only `object` artifacts are finished,
/// and this queue makes none.
pub async fn finish_artifact(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("finishArtifact", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &CREATE_ARTIFACT)?;
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let name = name_param(call)?;
            let task = state.engine.task(task_id).await;
            if task
                .as_ref()
                .and_then(|task| task.artifacts.get(&(run_id, name.clone())))
                .is_none()
            {
                return Err(ApiError::not_found(format!(
                    "Artifact `{name}` of run {run_id} of task `{task_id}` not found"
                )));
            }
            Err(ApiError::input(
                "Only object artifacts are finished; this artifact needs no finishing",
            ))
        })
        .await
}

/// Where a GET of an artifact leads, after following links.
struct Resolved {
    run_id: u32,
    name: String,
    artifact: Artifact,
    /// Whether the task enabled `features.interactive` (its session artifacts mint tickets).
    interactive: bool,
}

/// The task of the URL, or 404.
async fn load_task(state: &State, task_id: Slugid) -> Result<Task, ApiError> {
    state.engine.task(task_id).await.ok_or_else(|| {
        ApiError::not_found(format!("Task `{task_id}` not found"))
            .with_details(json!({ "taskId": task_id }))
    })
}

/// The run of the URL (`None`: the latest), checked to exist.
fn pick_run(task: &Task, run_id: Option<u32>) -> Result<u32, ApiError> {
    match run_id {
        Some(run_id) if (run_id as usize) < task.runs.len() => Ok(run_id),
        Some(run_id) => Err(ApiError::not_found(format!(
            "Run {run_id} of task `{}` not found",
            task.task_id
        ))),
        None => task
            .runs
            .len()
            .checked_sub(1)
            .map(|run| run as u32)
            .ok_or_else(|| {
                ApiError::not_found(format!("Task `{}` doesn't have any runs", task.task_id))
            }),
    }
}

/// Resolves the artifact `name` of a run, following links; the caller needs
/// `queue:get-artifact:<name>` for every name on the way (the first is checked before the
/// task is loaded). Missing → 404, expired → 410, a link cycle → 400.
async fn resolve(
    state: &State,
    call: &mut Call,
    run_id: Option<u32>,
) -> Result<Resolved, ApiError> {
    let mut name = call.param("name").to_owned();
    call.authorize(&state.access.clients(), &GET_ARTIFACT, &[("name", &name)])?;
    let task_id = call.slugid_param("taskId")?;
    name_param(call)?;
    let task = load_task(state, task_id).await?;
    let run_id = pick_run(&task, run_id)?;
    let mut visited = BTreeSet::new();
    loop {
        let Some(artifact) = task.artifacts.get(&(run_id, name.clone())) else {
            return Err(ApiError::not_found(format!(
                "Artifact `{name}` not found on run {run_id} of task `{task_id}`"
            )));
        };
        if artifact.expires < call.now {
            return Err(ApiError::new(
                ErrorCode::ResourceExpired,
                format!("Artifact `{name}` expired at {}", artifact.expires),
            ));
        }
        visited.insert(name.clone());
        let Storage::Link { artifact: target } = &artifact.storage else {
            return Ok(Resolved {
                run_id,
                name,
                artifact: artifact.clone(),
                interactive: task.definition.interactive(),
            });
        };
        call.authorize(&state.access.clients(), &GET_ARTIFACT, &[("name", target)])?;
        if visited.contains(target) {
            return Err(ApiError::input("Artifact leads to a link cycle"));
        }
        name = target.clone();
    }
}

/// Where the content of a resolved `s3` or `reference` artifact is: public blobs by their
/// plain URL, others by a URL signed for half an hour; an interactive run's session artifact
/// (`schemas/interactive.md`) leads to a new session, with a ticket minted for `client_id`.
fn content_url(
    state: &State,
    task_id: Slugid,
    resolved: &Resolved,
    now: Timestamp,
    client_id: Option<String>,
) -> Option<String> {
    match &resolved.artifact.storage {
        Storage::Reference { url } => Some(
            sessions::session_artifact_url(
                state,
                (task_id, resolved.run_id),
                &resolved.name,
                resolved.interactive,
                client_id,
            )
            .unwrap_or_else(|| url.clone()),
        ),
        Storage::S3 { .. } => {
            let blob = BlobId {
                task_id,
                run_id: resolved.run_id,
                name: resolved.name.clone(),
            };
            let signed = (!blobs::is_public(&resolved.name))
                .then(|| ("GET", now.plus_millis(blobs::GET_URL_MILLIS)));
            Some(state.blobs.url(&blob, signed))
        }
        Storage::Link { .. } | Storage::Error { .. } => None,
    }
}

/// getArtifact and getLatestArtifact: 303 to the content, with `{storageType, url}` for
/// clients that do not follow redirects; 424 with `{reason, message}` for an error artifact.
async fn redirect(
    state: &State,
    call: &mut Call,
    run_id: Option<u32>,
) -> Result<HttpResponse, ApiError> {
    let resolved = resolve(state, call, run_id).await?;
    let task_id = call.slugid_param("taskId")?;
    let storage_type = resolved.artifact.storage.type_name();
    if let Storage::Error { reason, message } = &resolved.artifact.storage {
        return Ok(response::json(
            StatusCode::FAILED_DEPENDENCY,
            &json!({"reason": reason, "message": message}),
        ));
    }
    let url =
        content_url(state, task_id, &resolved, call.now, call.client_id()).unwrap_or_default();
    let mut reply = response::json(
        StatusCode::SEE_OTHER,
        &json!({"storageType": storage_type, "url": url}),
    );
    let headers = reply.headers_mut();
    if let Ok(location) = header::HeaderValue::from_str(&url) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        header::HeaderName::from_static("x-taskcluster-artifact-storage-type"),
        header::HeaderValue::from_static(storage_type),
    );
    Ok(reply)
}

/// `GET /task/<taskId>/runs/<runId>/artifacts/<name>`.
pub async fn get_artifact(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getArtifact", request, body)
        .answer(async |call| {
            let run_id = call.run_id_param()?;
            redirect(&state, call, Some(run_id)).await
        })
        .await
}

/// `GET /task/<taskId>/artifacts/<name>`.
pub async fn get_latest_artifact(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("getLatestArtifact", request, body)
        .answer(async |call| redirect(&state, call, None).await)
        .await
}

/// artifact and latestArtifact: the same resolution, answered 200 with where the content is.
async fn content(
    state: &State,
    call: &mut Call,
    run_id: Option<u32>,
) -> Result<HttpResponse, ApiError> {
    let resolved = resolve(state, call, run_id).await?;
    let task_id = call.slugid_param("taskId")?;
    let reply = match &resolved.artifact.storage {
        Storage::Error { reason, message } => {
            json!({"storageType": "error", "reason": reason, "message": message})
        }
        storage => json!({
            "storageType": storage.type_name(),
            "url": content_url(state, task_id, &resolved, call.now, call.client_id()),
        }),
    };
    Ok(response::json(StatusCode::OK, &reply))
}

/// `GET /task/<taskId>/runs/<runId>/artifact-content/<name>`.
pub async fn artifact(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("artifact", request, body)
        .answer(async |call| {
            let run_id = call.run_id_param()?;
            content(&state, call, Some(run_id)).await
        })
        .await
}

/// `GET /task/<taskId>/artifact-content/<name>`.
pub async fn latest_artifact(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("latestArtifact", request, body)
        .answer(async |call| content(&state, call, None).await)
        .await
}

/// A page of a run's artifacts, in name order.
async fn list(state: &State, call: &Call, run_id: Option<u32>) -> Result<HttpResponse, ApiError> {
    let page = call.page(MAX_LIMIT)?;
    let task = load_task(state, call.slugid_param("taskId")?).await?;
    let run_id = pick_run(&task, run_id)?;
    let after = page.after.clone().unwrap_or_default();
    let entries: Vec<(&String, &Artifact)> = task
        .artifacts
        .range((run_id, after.clone())..(run_id + 1, String::new()))
        .filter(|((_, name), _)| page.after.is_none() || *name != after)
        .take(page.limit + 1)
        .map(|((_, name), artifact)| (name, artifact))
        .collect();
    let more = entries.len() > page.limit;
    let entries = &entries[..entries.len().min(page.limit)];
    let mut reply = json!({
        "artifacts": entries.iter()
            .map(|(name, artifact)| artifact.to_json(name))
            .collect::<Vec<Value>>(),
    });
    let last = entries.last().map(|(name, _)| name.as_str());
    if let Some(token) = pagination::token(last, more) {
        reply["continuationToken"] = json!(token);
    }
    Ok(response::json(StatusCode::OK, &reply))
}

/// `GET /task/<taskId>/runs/<runId>/artifacts`.
pub async fn list_artifacts(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listArtifacts", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_ARTIFACTS)?;
            let run_id = call.run_id_param()?;
            list(&state, call, Some(run_id)).await
        })
        .await
}

/// `GET /task/<taskId>/artifacts`.
pub async fn list_latest_artifacts(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listLatestArtifacts", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_LATEST_ARTIFACTS)?;
            list(&state, call, None).await
        })
        .await
}

/// artifactInfo and latestArtifactInfo: the artifact's own entry, links not followed.
async fn info(state: &State, call: &Call, run_id: Option<u32>) -> Result<HttpResponse, ApiError> {
    let name = name_param(call)?;
    let task = load_task(state, call.slugid_param("taskId")?).await?;
    let run_id = pick_run(&task, run_id)?;
    let artifact = task.artifacts.get(&(run_id, name.clone())).ok_or_else(|| {
        ApiError::not_found(format!("Artifact `{name}` not found on run {run_id}"))
    })?;
    Ok(response::json(StatusCode::OK, &artifact.to_json(&name)))
}

/// `GET /task/<taskId>/runs/<runId>/artifact-info/<name>`.
pub async fn artifact_info(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("artifactInfo", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_ARTIFACTS)?;
            let run_id = call.run_id_param()?;
            info(&state, call, Some(run_id)).await
        })
        .await
}

/// `GET /task/<taskId>/artifact-info/<name>`.
pub async fn latest_artifact_info(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("latestArtifactInfo", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_LATEST_ARTIFACTS)?;
            info(&state, call, None).await
        })
        .await
}
