//! Requests for input (Cloudomation's INPUT task kind; a Taskfold extension): the worker of an
//! INPUT task's run asks (`PUT /task/<taskId>/runs/<runId>/input`, with the run's
//! credentials), whoever may read the task reads the request (`GET` on the same route),
//! someone with `queue:answer-input:<taskQueueId>` answers it (`POST`), and
//! `GET /task-queues/<taskQueueId>/input` lists the requests that wait in a task queue.

use std::sync::LazyLock;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::queues::CLAIMED_LIST;
use super::tasks::{GET_TASK, load};
use super::template;
use super::work::RESOLVE_TASK;
use crate::api::call::{Body, Call};
use crate::api::response;
use crate::api::server::State;
use crate::auth::ScopeExpression;
use crate::engine::index::Listing;
use crate::model::task::{Command, no_input};
use crate::model::{
    ApiError, ErrorCode, InputRequest, InputState, Json, RunState, Slugid, Task, Timestamp,
};

static ANSWER_INPUT: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:answer-input:<taskQueueId>")));

/// Running tasks read per step of a task queue's listing.
const LISTING_STEP: usize = 1000;

/// The worker's body: the payload's fields as Cloudomation names them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInputBody {
    request: String,
    #[serde(default)]
    reference: Option<Json>,
    /// Minutes, possibly fractional; without it, the request waits until the deadline.
    #[serde(default)]
    timeout: Option<f64>,
}

/// The answer's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerInputBody {
    response: Json,
}

/// A request for input as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InputReply<'a> {
    task_id: Slugid,
    run_id: u32,
    request: &'a str,
    reference: Option<&'a Json>,
    state: InputState,
    requested: Timestamp,
    expires: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a Json>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answered: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

impl<'a> InputReply<'a> {
    fn of(task: &Task, input: &'a InputRequest, now: Timestamp) -> Self {
        let running = task
            .runs
            .get(input.run_id as usize)
            .is_some_and(|run| run.state == RunState::Running);
        let answer = input.answer.as_ref();
        InputReply {
            task_id: task.task_id,
            run_id: input.run_id,
            request: &input.request,
            reference: input.reference.as_ref(),
            state: input.state(running, now),
            requested: input.requested,
            expires: input.expires,
            response: answer.map(|answer| &answer.response),
            answered: answer.map(|answer| answer.answered),
            client_id: answer.and_then(|answer| answer.client_id.as_deref()),
        }
    }
}

/// The run's request as the reply of every call on `…/runs/<runId>/input`.
fn input_reply(task: &Task, run_id: u32, now: Timestamp) -> Result<HttpResponse, ApiError> {
    if task.runs.get(run_id as usize).is_none() {
        return Err(ApiError::not_found(format!(
            "Run {run_id} not found on task `{}`.",
            task.task_id
        ))
        .with_details(json!({ "taskId": task.task_id, "runId": run_id })));
    }
    let input = task
        .input(run_id)
        .ok_or_else(|| no_input(task.task_id, run_id))?;
    Ok(response::json(
        StatusCode::OK,
        &InputReply::of(task, input, now),
    ))
}

/// `GET /task/<taskId>/runs/<runId>/input`: what `task` needs to read, since the request is
/// part of the task's payload anyway.
pub async fn get_input(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getInput", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_TASK)?;
            let run_id = call.run_id_param()?;
            let task = load(&state, call, "Are you sure this task exists?").await?;
            input_reply(&task, run_id, call.now)
        })
        .await
}

/// `PUT /task/<taskId>/runs/<runId>/input`: the run's worker asks, with the run's
/// credentials (the scope that resolving the run needs).
pub async fn request_input(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("requestInput", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &RESOLVE_TASK)?;
            let task_id = call.slugid_param("taskId")?;
            let run_id = call.run_id_param()?;
            let input: RequestInputBody = call.input("request-input-request")?;
            let timeout = match input.timeout {
                None => None,
                Some(minutes) => Some(
                    Duration::try_from_secs_f64(minutes * 60.0)
                        .ok()
                        .filter(|timeout| !timeout.is_zero())
                        .ok_or_else(|| {
                            ApiError::new(
                                ErrorCode::InputValidationError,
                                "the request does not match request-input-request: \
                                 `timeout` must be a positive number of minutes",
                            )
                        })?,
                ),
            };
            let command = Command::RequestInput {
                run_id,
                request: input.request,
                reference: input.reference,
                timeout,
            };
            let task = state
                .engine
                .execute(task_id, command, call.client_id())
                .await?;
            input_reply(&task, run_id, call.now)
        })
        .await
}

/// `POST /task/<taskId>/runs/<runId>/input`: answers the request, once, while it waits.
pub async fn answer_input(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("answerInput", request, body)
        .answer(async |call| {
            let run_id = call.run_id_param()?;
            let input: AnswerInputBody = call.input("answer-input-request")?;
            let task = load(&state, call, "Are you sure this task exists?").await?;
            let task_id_text = task.task_id.to_string();
            call.authorize(
                &state.access.clients(),
                &ANSWER_INPUT,
                &[
                    ("taskId", &task_id_text),
                    ("taskQueueId", &task.definition.task_queue_id),
                ],
            )?;
            let command = Command::AnswerInput {
                run_id,
                response: input.response,
                client_id: call.client_id(),
            };
            let task = state
                .engine
                .execute(task.task_id, command, call.client_id())
                .await?;
            input_reply(&task, run_id, call.now)
        })
        .await
}

/// `GET /task-queues/<taskQueueId>/input`: the requests that wait for an answer in a task
/// queue, from its running tasks (a queue has as many as its workers' capacity). It shows
/// no more than `listClaimedTasks` does, and needs what that needs.
pub async fn list_input(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listInput", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &CLAIMED_LIST)?;
            let task_queue_id = call.task_queue_id_param()?;
            let mut tasks = Vec::new();
            let mut after = None;
            loop {
                let (page, more) = state
                    .engine
                    .list(Listing::Running(task_queue_id.clone()), after, LISTING_STEP)
                    .await;
                after = page.last().map(|(position, _)| *position);
                tasks.extend(page.into_iter().map(|(_, task)| task));
                if !more {
                    break;
                }
            }
            let inputs: Vec<InputReply> = tasks
                .iter()
                .filter_map(|task| {
                    let run_id = u32::try_from(task.runs.len().checked_sub(1)?).ok()?;
                    let reply = InputReply::of(task, task.input(run_id)?, call.now);
                    (reply.state == InputState::Waiting).then_some(reply)
                })
                .collect();
            Ok(response::json(
                StatusCode::OK,
                &json!({ "taskQueueId": task_queue_id, "inputs": inputs }),
            ))
        })
        .await
}
