//! The worker interface: `claimWork`, `reclaimTask`, `reportCompleted`, `reportFailed`,
//! `reportException`, and the pending count (`pendingTasks`) that autoscalers read.

use std::sync::LazyLock;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::tasks::status_reply;
use super::{input_problems, template};
use crate::api::call::{Body, Call};
use crate::api::server::State;
use crate::api::{connection, response};
use crate::auth::Credentials;
use crate::auth::ScopeExpression;
use crate::auth::credentials::{ClaimedRun, task_credentials};
use crate::engine::ClaimWork;
use crate::metrics::METRICS;
use crate::model::task::Command;
use crate::model::task::is_worker_identifier;
use crate::model::{
    ApiError, ErrorCode, ExceptionReason, Slugid, Task, TaskDefinition, TaskStatus, Timestamp,
};

static CLAIM_WORK: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!({"AllOf": [
        "queue:claim-work:<taskQueueId>",
        "queue:worker-id:<workerGroup>/<workerId>",
    ]}))
});
static CLAIM_TASK: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!({"AllOf": [
        "queue:claim-task:<provisionerId>/<workerType>",
        "queue:worker-id:<workerGroup>/<workerId>",
    ]}))
});
pub(in crate::api) static RECLAIM_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:reclaim-task:<taskId>/<runId>")));
pub(super) static RESOLVE_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:resolve-task:<taskId>/<runId>")));
static PENDING_COUNT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:pending-count:<taskQueueId>")));

/// Most runs one claimWork call may ask for (`claim-work-request.yml`).
const MAX_TASKS_PER_CLAIM: i64 = 32;

/// The body of claimWork.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimWorkRequest {
    worker_group: String,
    worker_id: String,
    #[serde(default = "one")]
    tasks: i64,
}

fn one() -> i64 {
    1
}

impl ClaimWorkRequest {
    /// The schema's patterns and limits.
    fn check(&self) -> Result<(), ApiError> {
        let mut problems = worker_problems(&self.worker_group, &self.worker_id);
        if !(1..=MAX_TASKS_PER_CLAIM).contains(&self.tasks) {
            problems.push(format!(
                "`tasks` must be an integer from 1 to {MAX_TASKS_PER_CLAIM}"
            ));
        }
        input_problems("claim-work-request", problems)
    }
}

/// The body of the deprecated claimTask (`task-claim-request.yml`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimTaskRequest {
    worker_group: String,
    worker_id: String,
}

/// What is wrong with a request's `workerGroup` and `workerId`.
fn worker_problems(worker_group: &str, worker_id: &str) -> Vec<String> {
    [("workerGroup", worker_group), ("workerId", worker_id)]
        .into_iter()
        .filter(|(_, value)| !is_worker_identifier(value))
        .map(|(field, _)| format!("`{field}` must match `^[a-zA-Z0-9-_]{{1,38}}$`"))
        .collect()
}

/// The body of reportException.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionRequest {
    reason: ExceptionReason,
}

/// `POST /claim-work/<taskQueueId>`: waits up to the configured time (20 s) for pending runs
/// and claims up to `tasks` of them; each comes with temporary credentials for the run.
pub async fn claim_work(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    // A worker that goes away while its claim is parked gets no task claimed for it.
    let gone = connection::client_gone(&request);
    Call::new("claimWork", request, body)
        .answer(async |call| {
            let task_queue_id = call.task_queue_id_param()?;
            let input: ClaimWorkRequest = call.input("claim-work-request")?;
            input.check()?;
            call.authorize(
                &state.access.clients(),
                &CLAIM_WORK,
                &[
                    ("taskQueueId", &task_queue_id),
                    ("workerGroup", &input.worker_group),
                    ("workerId", &input.worker_id),
                ],
            )?;
            let _counted = state.waiting_claims.enter().ok_or_else(|| {
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "{} claimWork calls are waiting already, as many as this server holds \
                         at once (`api.max_waiting_claims`, bounded by its open-file limit); \
                         retry later",
                        state.waiting_claims.bound()
                    ),
                )
            })?;
            let waiting = Instant::now();
            let until = waiting + state.claim_work_timeout;
            let claims = state
                .engine
                .claim_work_unless(
                    ClaimWork {
                        task_queue_id,
                        worker_group: input.worker_group,
                        worker_id: input.worker_id,
                        // Checked above to be 1..=32.
                        tasks: input.tasks as u32,
                        client_id: call.client_id(),
                    },
                    until,
                    gone,
                )
                .await;
            METRICS
                .claim_work_wait_seconds
                .observe(waiting.elapsed().as_secs_f64());
            let now = Timestamp::now();
            let tasks = claims
                .iter()
                .map(|claimed| run_claim(&state, &claimed.task, claimed.run_id, now, true))
                .collect::<Result<Vec<_>, ApiError>>()?;
            #[derive(Serialize)]
            struct ClaimWorkReply<'a> {
                tasks: Vec<RunClaim<'a>>,
            }
            Ok(response::json(StatusCode::OK, &ClaimWorkReply { tasks }))
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/claim`: the deprecated claimTask, which claims one
/// given run. The task is loaded first, as its task queue is in the scopes; a quarantined
/// worker is answered `{}`, as Taskcluster answers it.
pub async fn claim_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("claimTask", request, body)
        .answer(async |call| {
            let (task_id, run_id) = run_params(call)?;
            let input: ClaimTaskRequest = call.input("task-claim-request")?;
            input_problems(
                "task-claim-request",
                worker_problems(&input.worker_group, &input.worker_id),
            )?;
            let Some(task) = state.engine.task(task_id).await else {
                return Err(ApiError::not_found(format!(
                    "Task `{task_id}` not found. Are you sure it was created?"
                ))
                .with_details(json!({ "taskId": task_id })));
            };
            let (provisioner_id, worker_type) =
                crate::model::split_task_queue_id(&task.definition.task_queue_id)
                    .unwrap_or_default();
            call.authorize(
                &state.access.clients(),
                &CLAIM_TASK,
                &[
                    ("provisionerId", provisioner_id),
                    ("workerType", worker_type),
                    ("workerGroup", &input.worker_group),
                    ("workerId", &input.worker_id),
                ],
            )?;
            let claimed = state
                .engine
                .claim_task(
                    &task,
                    run_id,
                    input.worker_group,
                    input.worker_id,
                    call.client_id(),
                )
                .await?;
            let Some(task) = claimed else {
                return Ok(response::json(StatusCode::OK, &json!({})));
            };
            let claim = run_claim(&state, &task, run_id, Timestamp::now(), true)?;
            Ok(response::json(StatusCode::OK, &claim))
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/reclaim`: extends the claim and hands out fresh
/// credentials.
pub async fn reclaim_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("reclaimTask", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RECLAIM_TASK)?;
            let (task_id, run_id) = run_params(call)?;
            let task = state
                .engine
                .execute(task_id, Command::Reclaim { run_id }, call.client_id())
                .await?;
            let claim = run_claim(&state, &task, run_id, Timestamp::now(), false)?;
            Ok(response::json(StatusCode::OK, &claim))
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/completed`. The legacy body `{"success": false}` still
/// means failed.
pub async fn report_completed(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("reportCompleted", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RESOLVE_TASK)?;
            let (task_id, run_id) = run_params(call)?;
            /// The legacy body; any other is ignored, as Taskcluster does.
            #[derive(serde::Deserialize)]
            struct Legacy {
                success: Option<Value>,
            }
            let legacy = call.lenient_input::<Legacy>();
            let command = if legacy.is_some_and(|legacy| legacy.success == Some(Value::Bool(false)))
            {
                Command::ReportFailed { run_id }
            } else {
                Command::ReportCompleted { run_id }
            };
            let task = state
                .engine
                .execute(task_id, command, call.client_id())
                .await?;
            // The index entries are durable before the worker hears the task is done; a
            // repeated report (after a failure here) puts them again.
            if task.runs.last().map(|run| run.state) == Some(crate::model::RunState::Completed) {
                state.engine.index_completed(&task).await?;
            }
            Ok(status_reply(&task))
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/failed`.
pub async fn report_failed(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("reportFailed", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RESOLVE_TASK)?;
            let (task_id, run_id) = run_params(call)?;
            let task = state
                .engine
                .execute(task_id, Command::ReportFailed { run_id }, call.client_id())
                .await?;
            Ok(status_reply(&task))
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/exception`.
pub async fn report_exception(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("reportException", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RESOLVE_TASK)?;
            let (task_id, run_id) = run_params(call)?;
            let input: ExceptionRequest = call.input("task-exception-request")?;
            let command = Command::ReportException {
                run_id,
                reason: input.reason,
            };
            let task = state
                .engine
                .execute(task_id, command, call.client_id())
                .await?;
            Ok(status_reply(&task))
        })
        .await
}

/// `GET /pending/<taskQueueId>`: how many runs wait in the queue.
pub async fn pending_tasks(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("pendingTasks", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &PENDING_COUNT)?;
            let task_queue_id = call.task_queue_id_param()?;
            let count = state.engine.pending_count(&task_queue_id).await;
            let (provisioner_id, worker_type) = task_queue_id
                .split_once('/')
                .expect("checked to be <provisionerId>/<workerType>");
            Ok(response::json(
                StatusCode::OK,
                &json!({
                    "provisionerId": provisioner_id,
                    "workerType": worker_type,
                    "taskQueueId": task_queue_id,
                    "pendingTasks": count,
                }),
            ))
        })
        .await
}

fn run_params(call: &Call) -> Result<(Slugid, u32), ApiError> {
    Ok((call.slugid_param("taskId")?, call.run_id_param()?))
}

/// What claimWork and reclaimTask say about a claimed run: `status`, `runId`, `workerGroup`,
/// `workerId`, `takenUntil` and the run's credentials, signed by the queue, valid from `now`
/// until the claim ends; claimWork adds the task's definition. Serialized straight from these
/// types, since claims are the hot path.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunClaim<'a> {
    status: TaskStatus,
    run_id: u32,
    worker_group: &'a str,
    worker_id: &'a str,
    taken_until: Timestamp,
    credentials: Credentials,
    #[serde(skip_serializing_if = "Option::is_none")]
    task: Option<&'a TaskDefinition>,
}

fn run_claim<'a>(
    state: &State,
    task: &'a Task,
    run_id: u32,
    now: Timestamp,
    with_definition: bool,
) -> Result<RunClaim<'a>, ApiError> {
    let internal = |what: &str| {
        ApiError::new(
            ErrorCode::InternalServerError,
            format!("run {run_id} of task {} {what}", task.task_id),
        )
    };
    let run = task
        .runs
        .get(run_id as usize)
        .ok_or_else(|| internal("is missing after its claim"))?;
    let (Some(worker_group), Some(worker_id), Some(taken_until)) =
        (&run.worker_group, &run.worker_id, run.taken_until)
    else {
        return Err(internal("has no claim after its claim"));
    };
    let task_id = task.task_id.to_string();
    let claimed = ClaimedRun {
        task_id: &task_id,
        run_id,
        worker_group,
        worker_id,
        taken_until,
    };
    let credentials = task_credentials(
        &claimed,
        &task.definition.scopes,
        &state.access.queue_credentials,
        now,
    )
    .map_err(|error| internal(&format!("cannot get credentials: {error}")))?;
    Ok(RunClaim {
        status: task.status(),
        run_id,
        worker_group,
        worker_id,
        taken_until,
        credentials,
        task: with_definition.then_some(&*task.definition),
    })
}
