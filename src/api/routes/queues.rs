//! Task queues and workers: `taskQueueCounts`, `listPendingTasks`, `listClaimedTasks`,
//! `listTaskQueues`, `getTaskQueue`, `listWorkers`, `getWorker`, `quarantineWorker`,
//! `declareWorker`, `taskQueueCountsBatch`, and the deprecated `listProvisioners`, `getProvisioner`,
//! `listWorkerTypes`, `getWorkerType`.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{input_problems, template};
use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::server::State;
use crate::auth::ScopeExpression;
use crate::engine::index::Listing;
use crate::engine::workers::{
    ListProvisioners, ListTaskQueues, ListWorkers, WorkerInfo, WorkerName, task_queue_expires,
};
use crate::model::task::is_worker_identifier;
use crate::model::{ApiError, ErrorCode, Timestamp, WorkerCommand};

static COUNTS: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!({"AllOf": [
        "queue:pending-count:<taskQueueId>",
        "queue:claimed-count:<taskQueueId>",
    ]}))
});
static PENDING_LIST: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:pending-list:<taskQueueId>")));
pub(super) static CLAIMED_LIST: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:claimed-list:<taskQueueId>")));
static LIST_TASK_QUEUES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-task-queues")));
static GET_TASK_QUEUE: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-task-queue:<taskQueueId>")));
static LIST_PROVISIONERS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-provisioners")));
static GET_PROVISIONER: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-provisioner:<provisionerId>")));
static LIST_WORKER_TYPES: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-worker-types:<provisionerId>")));
static GET_WORKER_TYPE: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-worker-type:<provisionerId>/<workerType>")));
static LIST_WORKERS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-workers:<provisionerId>/<workerType>")));
static GET_WORKER: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!(
        "queue:get-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>"
    ))
});
static QUARANTINE_WORKER: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!(
        "queue:quarantine-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>"
    ))
});
static DECLARE_WORKER: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!(
        "queue:declare-worker:<provisionerId>/<workerType>/<workerGroup>/<workerId>#expires"
    ))
});

/// Longest `quarantineInfo`.
const MAX_QUARANTINE_INFO_CHARS: usize = 4000;

/// `GET /task-queues/<taskQueueId>/counts`: pending and claimed runs of the queue.
pub async fn task_queue_counts(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("taskQueueCounts", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &COUNTS)?;
            let task_queue_id = call.task_queue_id_param()?;
            Ok(response::json(
                StatusCode::OK,
                &counts_json(&state, task_queue_id).await,
            ))
        })
        .await
}

/// Most task queues one taskQueueCountsBatch may ask for (`task-queue-counts-request.yml`).
const MAX_COUNTS_BATCH: usize = 1000;

/// The body of taskQueueCountsBatch.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CountsBatchRequest {
    task_queue_ids: Vec<String>,
}

/// `POST /task-queues/counts`: [`task_queue_counts`] for up to 1000 queues at once, in the
/// order asked. The caller needs both scopes of every queue, or gets none of them.
pub async fn task_queue_counts_batch(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("taskQueueCountsBatch", request, body)
        .answer(async |call| {
            let input: CountsBatchRequest = call.input("task-queue-counts-request")?;
            let ids = &input.task_queue_ids;
            let mut problems = Vec::new();
            if ids.len() > MAX_COUNTS_BATCH {
                problems.push(format!(
                    "`taskQueueIds` may hold at most {MAX_COUNTS_BATCH}"
                ));
            }
            if ids.iter().collect::<std::collections::HashSet<_>>().len() != ids.len() {
                problems.push("`taskQueueIds` must not repeat a task queue".to_owned());
            }
            for id in ids {
                if crate::model::split_task_queue_id(id).is_none() {
                    problems.push(format!(
                        "`{id}` is not a `<provisionerId>/<workerType>` task queue id"
                    ));
                }
            }
            input_problems("task-queue-counts-request", problems)?;
            let scopes = ids
                .iter()
                .map(|id| COUNTS.render(&[("taskQueueId", id)]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| {
                    ApiError::new(ErrorCode::InternalServerError, error.to_string())
                })?;
            call.authorize(
                &state.access.clients(),
                &ScopeExpression::all_of(scopes),
                &[],
            )?;
            let counts =
                futures::future::join_all(ids.iter().map(|id| counts_json(&state, id.clone())))
                    .await;
            Ok(response::json(
                StatusCode::OK,
                &json!({ "taskQueueCounts": counts }),
            ))
        })
        .await
}

/// `task-queue-counts-response`: the queue's pending and claimed runs.
async fn counts_json(state: &State, task_queue_id: String) -> Value {
    let pending = state.engine.pending_count(&task_queue_id).await;
    let claimed = state
        .engine
        .count(Listing::Running(task_queue_id.clone()))
        .await;
    let (provisioner_id, worker_type) =
        crate::model::split_task_queue_id(&task_queue_id).unwrap_or_default();
    json!({
        "provisionerId": provisioner_id,
        "workerType": worker_type,
        "taskQueueId": task_queue_id,
        "pendingTasks": pending,
        "claimedTasks": claimed,
    })
}

/// `GET /task-queues/<taskQueueId>/pending`: the queue's pending runs, a page at a time.
pub async fn list_pending_tasks(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listPendingTasks", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &PENDING_LIST)?;
            let task_queue_id = call.task_queue_id_param()?;
            task_page(
                &state,
                call,
                Listing::Pending(task_queue_id),
                |task, run| {
                    json!({
                        "taskId": task.task_id,
                        "runId": task.runs.len() - 1,
                        "task": task.definition,
                        "inserted": run.scheduled,
                    })
                },
            )
            .await
        })
        .await
}

/// `GET /task-queues/<taskQueueId>/claimed`: the queue's running runs, a page at a time.
pub async fn list_claimed_tasks(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listClaimedTasks", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &CLAIMED_LIST)?;
            let task_queue_id = call.task_queue_id_param()?;
            task_page(
                &state,
                call,
                Listing::Running(task_queue_id),
                |task, run| {
                    json!({
                        "taskId": task.task_id,
                        "runId": task.runs.len() - 1,
                        "workerGroup": run.worker_group,
                        "workerId": run.worker_id,
                        "claimed": run.started,
                        "task": task.definition,
                    })
                },
            )
            .await
        })
        .await
}

/// `{tasks, continuationToken?}` of a listing, each task (with its latest run) by `entry`.
async fn task_page(
    state: &State,
    call: &Call,
    listing: Listing,
    entry: impl Fn(&crate::model::Task, &crate::model::Run) -> Value,
) -> Result<HttpResponse, ApiError> {
    let page = call.page(MAX_LIMIT)?;
    let (tasks, more) = state
        .engine
        .list(listing, page.after_task()?, page.limit)
        .await;
    let entries: Vec<Value> = tasks
        .iter()
        .filter_map(|(_, task)| task.runs.last().map(|run| entry(task, run)))
        .collect();
    let mut reply = json!({ "tasks": entries });
    let last = tasks.last().map(|(position, _)| *position);
    if let Some(token) = pagination::task_token(last, more) {
        reply["continuationToken"] = json!(token);
    }
    Ok(response::json(StatusCode::OK, &reply))
}

fn task_queue_json(task_queue_id: &str, last_date_active: Timestamp) -> Value {
    directory_entry_json("taskQueueId", task_queue_id, last_date_active)
}

/// What Taskcluster says of a task queue or provisioner: it keeps no description or stability
/// for either any more, and each expires a day after it was last active.
fn directory_entry_json(id_field: &str, id: &str, last_date_active: Timestamp) -> Value {
    json!({
        id_field: id,
        "stability": "experimental",
        "description": "",
        "expires": task_queue_expires(last_date_active),
        "lastDateActive": last_date_active,
    })
}

/// `GET /task-queues`: every task queue a worker has asked for work from.
pub async fn list_task_queues(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listTaskQueues", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_TASK_QUEUES)?;
            let page = call.page(MAX_LIMIT)?;
            let queues = state
                .engine
                .list_task_queues(ListTaskQueues {
                    provisioner_id: None,
                    after: page.after.clone(),
                    limit: page.limit + 1,
                })
                .await;
            Ok(listing("taskQueues", queues, page.limit, task_queue_json))
        })
        .await
}

/// A page of the directory's `(name, lastDateActive)` entries (one more than `limit` was asked
/// for, to know whether more follow) as `{<key>: [...], continuationToken?}`.
fn listing(
    key: &str,
    entries: Vec<(String, Timestamp)>,
    limit: usize,
    entry_json: impl Fn(&str, Timestamp) -> Value,
) -> HttpResponse {
    let more = entries.len() > limit;
    let entries = &entries[..entries.len().min(limit)];
    let mut reply = json!({
        key: entries.iter().map(|(name, at)| entry_json(name, *at)).collect::<Vec<_>>(),
    });
    let last = entries.last().map(|(name, _)| name.as_str());
    if let Some(token) = pagination::token(last, more) {
        reply["continuationToken"] = json!(token);
    }
    response::json(StatusCode::OK, &reply)
}

/// `GET /task-queues/<taskQueueId>`.
pub async fn get_task_queue(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getTaskQueue", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_TASK_QUEUE)?;
            let task_queue_id = call.task_queue_id_param()?;
            let found = state.engine.lookup_task_queue(task_queue_id.clone()).await;
            let Some(last_date_active) = found else {
                return Err(ApiError::not_found(format!(
                    "Task queue `{task_queue_id}` not found"
                )));
            };
            Ok(response::json(
                StatusCode::OK,
                &task_queue_json(&task_queue_id, last_date_active),
            ))
        })
        .await
}

/// A provisioner as the deprecated provisioner endpoints describe it: Taskcluster keeps no
/// provisioners any more and makes them up from the task queues, as Taskfold does.
fn provisioner_json(provisioner_id: &str, last_date_active: Timestamp) -> Value {
    directory_entry_json("provisionerId", provisioner_id, last_date_active)
}

/// A task queue as a worker type: with its two halves.
fn worker_type_json(task_queue_id: &str, last_date_active: Timestamp) -> Value {
    let mut entry = task_queue_json(task_queue_id, last_date_active);
    let (provisioner_id, worker_type) =
        crate::model::split_task_queue_id(task_queue_id).unwrap_or_default();
    entry["provisionerId"] = json!(provisioner_id);
    entry["workerType"] = json!(worker_type);
    entry
}

/// `GET /provisioners` (deprecated): the provisioners of the task queues seen.
pub async fn list_provisioners(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listProvisioners", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_PROVISIONERS)?;
            let page = call.page(MAX_LIMIT)?;
            let provisioners = state
                .engine
                .list_provisioners(ListProvisioners {
                    after: page.after.clone(),
                    limit: page.limit + 1,
                })
                .await;
            Ok(listing(
                "provisioners",
                provisioners,
                page.limit,
                provisioner_json,
            ))
        })
        .await
}

/// The task queues of the URL's provisioner, at most `limit` after `after`.
async fn provisioner_queues(
    state: &State,
    call: &Call,
    after: Option<String>,
    limit: usize,
) -> Result<(String, Vec<(String, Timestamp)>), ApiError> {
    let provisioner_id = call.param("provisionerId").to_owned();
    if !is_worker_identifier(&provisioner_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!(
                "Invalid URL parameter `provisionerId`: `{provisioner_id}` does not match \
                 `^[a-zA-Z0-9-_]{{1,38}}$`"
            ),
        ));
    }
    let queues = state
        .engine
        .list_task_queues(ListTaskQueues {
            provisioner_id: Some(provisioner_id.clone()),
            after,
            limit,
        })
        .await;
    Ok((provisioner_id, queues))
}

/// `GET /provisioners/<provisionerId>` (deprecated).
pub async fn get_provisioner(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getProvisioner", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_PROVISIONER)?;
            let (provisioner_id, queues) =
                provisioner_queues(&state, call, None, usize::MAX).await?;
            let Some(last_date_active) = queues.iter().map(|(_, at)| *at).max() else {
                return Err(ApiError::not_found(format!(
                    "Provisioner `{provisioner_id}` not found. Are you sure it was created?"
                )));
            };
            Ok(response::json(
                StatusCode::OK,
                &provisioner_json(&provisioner_id, last_date_active),
            ))
        })
        .await
}

/// `GET /provisioners/<provisionerId>/worker-types` (deprecated): the provisioner's task
/// queues, as worker types.
pub async fn list_worker_types(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listWorkerTypes", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_WORKER_TYPES)?;
            let page = call.page(MAX_LIMIT)?;
            let (_, queues) =
                provisioner_queues(&state, call, page.after.clone(), page.limit + 1).await?;
            Ok(listing("workerTypes", queues, page.limit, worker_type_json))
        })
        .await
}

/// `GET /provisioners/<provisionerId>/worker-types/<workerType>` (deprecated).
pub async fn get_worker_type(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getWorkerType", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_WORKER_TYPE)?;
            let task_queue_id = url_task_queue_id(call)?;
            let found = state.engine.lookup_task_queue(task_queue_id.clone()).await;
            let Some(last_date_active) = found else {
                return Err(ApiError::not_found(format!(
                    "Worker-type `{}` with Provisioner `{}` not found. Are you sure it was \
                     created?",
                    call.param("workerType"),
                    call.param("provisionerId")
                )));
            };
            Ok(response::json(
                StatusCode::OK,
                &worker_type_json(&task_queue_id, last_date_active),
            ))
        })
        .await
}

/// `provisionerId/workerType` of the URL, checked.
fn url_task_queue_id(call: &Call) -> Result<String, ApiError> {
    let task_queue_id = format!(
        "{}/{}",
        call.param("provisionerId"),
        call.param("workerType")
    );
    if crate::model::split_task_queue_id(&task_queue_id).is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequestArguments,
            format!("`{task_queue_id}` is not a `<provisionerId>/<workerType>`"),
        ));
    }
    Ok(task_queue_id)
}

fn url_worker(call: &Call) -> Result<WorkerName, ApiError> {
    let name = WorkerName {
        task_queue_id: url_task_queue_id(call)?,
        worker_group: call.param("workerGroup").to_owned(),
        worker_id: call.param("workerId").to_owned(),
    };
    for (field, value) in [
        ("workerGroup", &name.worker_group),
        ("workerId", &name.worker_id),
    ] {
        if !is_worker_identifier(value) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequestArguments,
                format!("Invalid URL parameter `{field}`: `{value}`"),
            ));
        }
    }
    Ok(name)
}

async fn lookup_worker(state: &State, name: WorkerName) -> Result<WorkerInfo, ApiError> {
    let found = state.engine.lookup_worker(name.clone()).await;
    found.ok_or_else(|| {
        ApiError::not_found(format!(
            "Worker with workerGroup `{}`, workerId `{}` in task queue `{}` not found. Are you \
             sure it was created?",
            name.worker_group, name.worker_id, name.task_queue_id
        ))
    })
}

/// `GET /provisioners/<p>/worker-types/<wt>/workers`: the workers of a task queue, optionally
/// only the (not) quarantined ones.
pub async fn list_workers(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listWorkers", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_WORKERS)?;
            let task_queue_id = url_task_queue_id(call)?;
            let page = call.page(MAX_LIMIT)?;
            let quarantined = match call.query("quarantined").as_deref() {
                None => None,
                Some("true") => Some(true),
                Some("false") => Some(false),
                Some(other) => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidRequestArguments,
                        format!("`quarantined` must be `true` or `false`, not `{other}`"),
                    ));
                }
            };
            let after = page
                .after
                .as_deref()
                .and_then(|text| text.split_once('/'))
                .map(|(group, id)| (group.to_owned(), id.to_owned()));
            let workers = state
                .engine
                .list_workers(ListWorkers {
                    task_queue_id,
                    quarantined,
                    now: call.now,
                    after,
                    limit: page.limit + 1,
                })
                .await;
            let more = workers.len() > page.limit;
            let workers = &workers[..workers.len().min(page.limit)];
            let mut reply = json!({
                "workers": workers.iter()
                    .map(|worker| worker.to_list_json(call.now))
                    .collect::<Vec<_>>(),
            });
            let last = workers
                .last()
                .map(|worker| format!("{}/{}", worker.name.worker_group, worker.name.worker_id));
            if let Some(token) = pagination::token(last.as_deref(), more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /provisioners/<p>/worker-types/<wt>/workers/<workerGroup>/<workerId>`.
pub async fn get_worker(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getWorker", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_WORKER)?;
            let worker = lookup_worker(&state, url_worker(call)?).await?;
            Ok(response::json(StatusCode::OK, &worker.to_json()))
        })
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct QuarantineRequest {
    quarantine_until: Timestamp,
    #[serde(default)]
    quarantine_info: String,
}

/// `PUT /provisioners/<p>/worker-types/<wt>/workers/<workerGroup>/<workerId>`: the worker gets
/// no work until `quarantineUntil` (a past time lifts a quarantine).
pub async fn quarantine_worker(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("quarantineWorker", request, body)
        .answer(async |call| {
            let client_id = call
                .authorize_url(&state.access.clients(), &QUARANTINE_WORKER)?
                .client_id
                .clone()
                .unwrap_or_default();
            let name = url_worker(call)?;
            let input: QuarantineRequest = call.input("quarantine-worker-request")?;
            if input.quarantine_info.chars().count() > MAX_QUARANTINE_INFO_CHARS {
                return Err(ApiError::new(
                    ErrorCode::InputValidationError,
                    format!(
                        "`quarantineInfo` is longer than {MAX_QUARANTINE_INFO_CHARS} characters"
                    ),
                ));
            }
            lookup_worker(&state, name.clone()).await?;
            let quarantine = WorkerCommand::Quarantine {
                client_id,
                quarantine_until: input.quarantine_until,
                quarantine_info: input.quarantine_info,
            };
            state
                .engine
                .record_worker(name.clone(), quarantine, call.client_id())
                .await?;
            let worker = lookup_worker(&state, name).await?;
            Ok(response::json(StatusCode::OK, &worker.to_json()))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeclareRequest {
    expires: Timestamp,
}

/// `PUT /provisioners/<p>/worker-types/<wt>/<workerGroup>/<workerId>`: a worker says it exists
/// and until when.
pub async fn declare_worker(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("declareWorker", request, body)
        .answer(async |call| {
            let name = url_worker(call)?;
            let input: DeclareRequest = call.input("worker-request")?;
            let task_queue_id = name.task_queue_id.clone();
            let (provisioner_id, worker_type) =
                crate::model::split_task_queue_id(&task_queue_id).unwrap_or_default();
            call.authorize(
                &state.access.clients(),
                &DECLARE_WORKER,
                &[
                    ("provisionerId", provisioner_id),
                    ("workerType", worker_type),
                    ("workerGroup", &name.worker_group),
                    ("workerId", &name.worker_id),
                ],
            )?;
            state
                .engine
                .record_worker(
                    name.clone(),
                    WorkerCommand::Declare {
                        expires: input.expires,
                    },
                    call.client_id(),
                )
                .await?;
            let worker = lookup_worker(&state, name).await?;
            Ok(response::json(StatusCode::OK, &worker.to_json()))
        })
        .await
}
