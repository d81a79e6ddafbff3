//! Task groups: `listTaskGroup`, `getTaskGroup`, `sealTaskGroup`, `cancelTaskGroup`,
//! `changeTaskGroupPriority`, and Taskfold's `listRecentTaskGroups` (the console's home page).

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{Value, json};

use super::tasks::ChangePriorityRequest;
use super::template;
use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::server::State;
use crate::auth::ScopeExpression;
use crate::engine::index::Listing;
use crate::model::group::{GroupCommand, group_not_found};
use crate::model::task::Command;
use crate::model::{ApiError, ErrorCode, Task, TaskGroup};

static LIST_TASK_GROUP: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-task-group:<taskGroupId>")));
static LIST_RECENT_TASK_GROUPS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-task-group:*")));
/// Most groups `listRecentTaskGroups` answers, and how many without `limit`.
const MAX_RECENT_GROUPS: usize = 200;
const DEFAULT_RECENT_GROUPS: usize = 20;
static SEAL_TASK_GROUP: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:seal-task-group:<schedulerId>/<taskGroupId>")));
static CANCEL_TASK_GROUP: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:cancel-task-group:<schedulerId>/<taskGroupId>")));
static CHANGE_TASK_GROUP_PRIORITY: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!(
        "queue:change-task-group-priority:<schedulerId>/<taskGroupId>"
    ))
});

/// `{status, task}`, an entry of the task lists.
pub(super) fn task_entry(task: &Task) -> Value {
    json!({"status": task.status(), "task": task.definition})
}

async fn load(state: &State, call: &Call) -> Result<TaskGroup, ApiError> {
    let task_group_id = call.slugid_param("taskGroupId")?;
    state
        .engine
        .task_group(task_group_id)
        .await
        .ok_or_else(|| group_not_found(task_group_id))
}

/// `GET /task-group/<taskGroupId>/list`: the group and a page of its tasks.
pub async fn list_task_group(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("listTaskGroup", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_TASK_GROUP)?;
            let page = call.page(MAX_LIMIT)?;
            let group = load(&state, call).await?;
            let listing = Listing::Members(group.task_group_id);
            let (tasks, more) = state
                .engine
                .list(listing, page.after_task()?, page.limit)
                .await;
            let mut reply = group.to_json();
            reply["tasks"] = tasks.iter().map(|(_, task)| task_entry(task)).collect();
            let last = tasks.last().map(|(position, _)| *position);
            if let Some(token) = pagination::task_token(last, more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

/// `GET /task-group/<taskGroupId>`.
pub async fn get_task_group(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("getTaskGroup", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_TASK_GROUP)?;
            let group = load(&state, call).await?;
            Ok(response::json(StatusCode::OK, &group.to_json()))
        })
        .await
}

/// `GET /task-groups?limit=N`: the task groups with unresolved tasks (most first), then
/// those resolved lately (latest first; each node remembers its last hundred since it
/// started), each as `getTaskGroup` answers it with `unresolvedTasks` and, when resolved,
/// `resolved`.
pub async fn list_recent_task_groups(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listRecentTaskGroups", request, body)
        .answer(async |call| {
            call.authorize(&state.access.clients(), &LIST_RECENT_TASK_GROUPS, &[])?;
            let limit = call
                .page(DEFAULT_RECENT_GROUPS)?
                .limit
                .min(MAX_RECENT_GROUPS);
            let recent = state.engine.recent_groups(limit).await;
            let groups = futures::future::join_all(recent.into_iter().map(async |recent| {
                let mut entry = state
                    .engine
                    .task_group(recent.task_group_id)
                    .await?
                    .to_json();
                entry["unresolvedTasks"] = json!(recent.unresolved);
                if let Some(resolved) = recent.resolved {
                    entry["resolved"] = json!(resolved);
                }
                Some(entry)
            }))
            .await;
            let groups: Vec<Value> = groups.into_iter().flatten().collect();
            Ok(response::json(
                StatusCode::OK,
                &json!({"taskGroups": groups}),
            ))
        })
        .await
}

/// Authorizes a group action whose scope names the group's scheduler (so the group is
/// loaded first: 404 before 401/403).
async fn authorized_group(
    state: &State,
    call: &mut Call,
    scopes: &ScopeExpression,
) -> Result<TaskGroup, ApiError> {
    let group = load(state, call).await?;
    let task_group_id = group.task_group_id.to_string();
    call.authorize(
        &state.access.clients(),
        scopes,
        &[
            ("taskGroupId", &task_group_id),
            ("schedulerId", &group.scheduler_id),
        ],
    )?;
    Ok(group)
}

/// `POST /task-group/<taskGroupId>/seal`: no task may join the group afterwards.
pub async fn seal_task_group(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("sealTaskGroup", request, body)
        .answer(async |call| {
            let group = authorized_group(&state, call, &SEAL_TASK_GROUP).await?;
            let sealed = state
                .engine
                .execute_group(group.task_group_id, GroupCommand::Seal, call.client_id())
                .await?;
            Ok(response::json(StatusCode::OK, &sealed.to_json()))
        })
        .await
}

/// `POST /task-group/<taskGroupId>/cancel`: cancels every unresolved task of a sealed group.
pub async fn cancel_task_group(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("cancelTaskGroup", request, body)
        .answer(async |call| {
            let group = authorized_group(&state, call, &CANCEL_TASK_GROUP).await?;
            if group.sealed.is_none() {
                return Err(ApiError::conflict(format!(
                    "Task group `{}` must be sealed before it can be cancelled",
                    group.task_group_id
                )));
            }
            let (size, unresolved) = unresolved_members(&state, &group).await;
            let mut canceled = Vec::new();
            for task in unresolved {
                // A task past its deadline cannot be canceled (409); its deadline resolves it.
                let canceling =
                    state
                        .engine
                        .execute(task.task_id, Command::Cancel, call.client_id());
                match canceling.await {
                    Ok(_) => canceled.push(task.task_id),
                    Err(error) if error.code == ErrorCode::RequestConflict => {}
                    Err(error) => return Err(error),
                }
            }
            Ok(response::json(
                StatusCode::OK,
                &json!({
                    "taskGroupId": group.task_group_id,
                    "taskGroupSize": size,
                    "cancelledCount": canceled.len(),
                    "taskIds": canceled,
                }),
            ))
        })
        .await
}

/// `POST /task-group/<taskGroupId>/priority`: a new priority for every unresolved task of the
/// group (one past its deadline keeps its own), summed up by one `task-group-priority-changed`
/// message. A running run keeps its place; a pending one moves in its queue.
pub async fn change_task_group_priority(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("changeTaskGroupPriority", request, body)
        .answer(async |call| {
            let input: ChangePriorityRequest = call.input("change-task-priority-request")?;
            let priority = input.new_priority;
            let group = authorized_group(&state, call, &CHANGE_TASK_GROUP_PRIORITY).await?;
            let (_, unresolved) = unresolved_members(&state, &group).await;
            let mut changed = Vec::new();
            for task in unresolved
                .into_iter()
                .filter(|task| task.priority != priority)
            {
                let command = Command::ChangePriorityWithGroup { priority };
                // Resolved or past its deadline since it was listed (409): it keeps its own.
                let changing = state
                    .engine
                    .execute(task.task_id, command, call.client_id());
                match changing.await {
                    Ok(_) => changed.push(task.task_id),
                    Err(error) if error.code == ErrorCode::RequestConflict => {}
                    Err(error) => return Err(error),
                }
            }
            let tasks_affected = changed.len() as u32;
            let command = GroupCommand::RecordPriorityChange {
                priority,
                tasks_affected,
            };
            state
                .engine
                .execute_group(group.task_group_id, command, call.client_id())
                .await?;
            Ok(response::json(
                StatusCode::OK,
                &json!({
                    "taskGroupId": group.task_group_id,
                    "schedulerId": group.scheduler_id,
                    "newPriority": priority,
                    "tasksAffected": tasks_affected,
                    "taskIds": changed,
                }),
            ))
        })
        .await
}

/// How many tasks the group has, and those of them whose latest run is not resolved.
async fn unresolved_members(state: &State, group: &TaskGroup) -> (usize, Vec<Task>) {
    let mut size = 0;
    let mut unresolved = Vec::new();
    let mut after = None;
    loop {
        let listing = Listing::Members(group.task_group_id);
        let (tasks, more) = state.engine.list(listing, after, MAX_LIMIT).await;
        size += tasks.len();
        after = tasks.last().map(|(position, _)| *position);
        unresolved.extend(
            tasks
                .into_iter()
                .map(|(_, task)| task)
                .filter(|task| !task.runs.last().is_some_and(|run| run.state.is_resolved())),
        );
        if !more {
            return (size, unresolved);
        }
    }
}
