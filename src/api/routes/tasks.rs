//! Tasks: `task`, `status`, `createTask`, `scheduleTask`, `rerunTask`, `cancelTask`,
//! `changeTaskPriority`, the batch reads `tasks` and `statuses`, and `listDependentTasks`.

use std::sync::LazyLock;

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::json;

use serde::Deserialize;

use super::groups::task_entry;
use super::template;
use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::server::State;
use crate::auth::ScopeExpression;
use crate::engine::index::Listing;
use crate::model::task::Command;
use crate::model::{
    ApiError, CreateTaskRequest, Priority, Slugid, Task, TaskDefinition, Timestamp,
};

pub(super) static GET_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:get-task:<taskId>")));
static STATUS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:status:<taskId>")));
static SCHEDULE_TASK: LazyLock<ScopeExpression> =
    LazyLock::new(|| task_action_scopes("schedule-task"));
static RERUN_TASK: LazyLock<ScopeExpression> = LazyLock::new(|| task_action_scopes("rerun-task"));
static CANCEL_TASK: LazyLock<ScopeExpression> = LazyLock::new(|| task_action_scopes("cancel-task"));
static CHANGE_TASK_PRIORITY: LazyLock<ScopeExpression> = LazyLock::new(|| {
    template(json!({"AnyOf": [
        "queue:change-task-priority:<taskId>",
        "queue:change-task-priority-in-queue:<taskQueueId>",
    ]}))
});
static LIST_DEPENDENT_TASKS: LazyLock<ScopeExpression> =
    LazyLock::new(|| template(json!("queue:list-dependent-tasks:<taskId>")));

/// What scheduling, rerunning and canceling a task require: the action on this very task, or
/// on its project, or the legacy pair of the action and the task's scheduler and group.
fn task_action_scopes(action: &str) -> ScopeExpression {
    template(json!({"AnyOf": [
        format!("queue:{action}:<schedulerId>/<taskGroupId>/<taskId>"),
        format!("queue:{action}-in-project:<projectId>"),
        {"AllOf": [
            format!("queue:{action}"),
            "assume:scheduler-id:<schedulerId>/<taskGroupId>",
        ]},
    ]}))
}

/// `GET /task/<taskId>`: the definition, with every default filled in.
pub async fn task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("task", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_TASK)?;
            let task = load(
                &state,
                call,
                "Are you sure this task has already been submitted?",
            )
            .await?;
            // changeTaskPriority changes what the definition says, as upstream's does.
            if task.priority == task.definition.priority {
                Ok(response::json(StatusCode::OK, &task.definition))
            } else {
                let definition = crate::model::TaskDefinition {
                    priority: task.priority,
                    ..(*task.definition).clone()
                };
                Ok(response::json(StatusCode::OK, &definition))
            }
        })
        .await
}

/// `GET /task/<taskId>/status`.
pub async fn status(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("status", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &STATUS)?;
            let task = load(&state, call, "Are you sure this task exists?").await?;
            Ok(status_reply(&task))
        })
        .await
}

/// The task named by the URL, or Taskcluster's 404 for `task`, `status` and `taskHistory`.
pub(super) async fn load(state: &State, call: &Call, question: &str) -> Result<Task, ApiError> {
    let task_id = call.slugid_param("taskId")?;
    state.engine.task(task_id).await.ok_or_else(|| {
        ApiError::not_found(format!(
            "`{task_id}` does not correspond to a task that exists.\n{question}"
        ))
        .with_details(json!({ "taskId": task_id }))
    })
}

/// `{status}`, the reply of most task and run calls.
pub(super) fn status_reply(task: &Task) -> HttpResponse {
    /// Serialized straight from the typed status (no `serde_json::Value` in between): this is
    /// the reply of most calls.
    #[derive(serde::Serialize)]
    struct StatusReply {
        status: crate::model::TaskStatus,
    }
    response::json(
        StatusCode::OK,
        &StatusReply {
            status: task.status(),
        },
    )
}

/// `PUT /task/<taskId>`: idempotent creation (reference §3.2 for the order of the checks).
pub async fn create_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("createTask", request, body)
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let text = call.json_text()?.to_vec();
            let now = call.now;
            let clients = state.access.clients();
            let task = create_task_from(&state, task_id, &text, now, |scopes, params| {
                Ok(call.authorize(&clients, scopes, params)?.client_id.clone())
            })
            .await?;
            Ok(status_reply(&task))
        })
        .await
}

/// Creates the task of `text`, a createTask body, as `task_id`, with createTask's checks in
/// Taskcluster's order; `authorize` is given the scopes that requires (a template and its
/// parameters) and answers who creates the task, or why they may not. For createTask, and
/// for the tasks hooks create.
pub(in crate::api) async fn create_task_from(
    state: &State,
    task_id: Slugid,
    text: &[u8],
    now: Timestamp,
    authorize: impl FnOnce(&ScopeExpression, &[(&str, &str)]) -> Result<Option<String>, ApiError>,
) -> Result<Task, ApiError> {
    let definition = CreateTaskRequest::from_json(text)?.into_definition(task_id)?;
    definition.check_size(state.max_task_bytes)?;
    let (scopes, params) = create_task_scopes(&definition);
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let client_id = authorize(&scopes, &params)?;
    definition.check_new(now, state.max_deadline)?;
    state
        .engine
        .create_task(task_id, definition, client_id)
        .await
}

/// What creating `definition` requires, as a template and its parameters: every scope the
/// task will carry, `queue:route:<route>` for each route, the project and scheduler, and the
/// right to create tasks of this priority (or any higher one) in the task's queue.
///
/// Scopes and routes are free text that may itself hold `<…>`, so each enters the template
/// through a parameter of its own rather than as template text.
fn create_task_scopes(definition: &TaskDefinition) -> (ScopeExpression, Vec<(String, String)>) {
    let mut params = vec![
        ("projectId".to_owned(), definition.project_id.clone()),
        ("schedulerId".to_owned(), definition.scheduler_id.clone()),
        (
            "provisionerId".to_owned(),
            definition.provisioner_id.clone(),
        ),
        ("workerType".to_owned(), definition.worker_type.clone()),
    ];
    let mut all_of = Vec::new();
    for (index, scope) in definition.scopes.iter().enumerate() {
        params.push((format!("scope{index}"), scope.clone()));
        all_of.push(ScopeExpression::scope(format!("<scope{index}>")));
    }
    for (index, route) in definition.routes.iter().enumerate() {
        params.push((format!("route{index}"), route.clone()));
        all_of.push(ScopeExpression::scope(format!(
            "queue:route:<route{index}>"
        )));
    }
    all_of.push(ScopeExpression::scope(
        "queue:create-task:project:<projectId>",
    ));
    all_of.push(ScopeExpression::scope("queue:scheduler-id:<schedulerId>"));
    let priorities = Priority::ALL
        .iter()
        .take_while(|priority| priority.rank() >= definition.priority.rank())
        .map(|priority| {
            ScopeExpression::scope(format!(
                "queue:create-task:{}:<provisionerId>/<workerType>",
                priority_name(*priority)
            ))
        });
    all_of.push(ScopeExpression::any_of(priorities));
    (ScopeExpression::AllOf(all_of), params)
}

fn priority_name(priority: Priority) -> String {
    match serde_json::to_value(priority) {
        Ok(serde_json::Value::String(name)) => name,
        _ => unreachable!("priorities serialize as strings"),
    }
}

/// `POST /task/<taskId>/schedule`.
pub async fn schedule_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    let call = Call::new("scheduleTask", request, body);
    task_action(call, &state, &SCHEDULE_TASK, Command::Schedule, |task_id| {
        format!("taskId `{task_id}` not found. Are you sure it exists?")
    })
    .await
}

/// `POST /task/<taskId>/rerun`.
pub async fn rerun_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    let call = Call::new("rerunTask", request, body);
    task_action(call, &state, &RERUN_TASK, Command::Rerun, |task_id| {
        format!(
            "`{task_id}` does not correspond to a task that exists.\n\
             Are you sure this task has been submitted before?"
        )
    })
    .await
}

/// `POST /task/<taskId>/cancel`.
pub async fn cancel_task(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    let call = Call::new("cancelTask", request, body);
    task_action(call, &state, &CANCEL_TASK, Command::Cancel, |task_id| {
        format!("Task `{task_id}` not found. Are you sure it was created?")
    })
    .await
}

/// Schedule, rerun and cancel: their scopes name the task's scheduler, group and project, so
/// the task is loaded first (404 before 401/403, as in Taskcluster), then authorized, then
/// the command runs.
async fn task_action(
    call: Call,
    state: &State,
    scopes: &ScopeExpression,
    command: Command,
    not_found: impl FnOnce(&str) -> String,
) -> HttpResponse {
    call.answer(async |call| {
        let task_id = call.slugid_param("taskId")?;
        let Some(task) = state.engine.task(task_id).await else {
            return Err(ApiError::not_found(not_found(&task_id.to_string()))
                .with_details(json!({ "taskId": task_id })));
        };
        let definition = &task.definition;
        let task_id_text = task_id.to_string();
        let task_group_id = definition.task_group_id.to_string();
        call.authorize(
            &state.access.clients(),
            scopes,
            &[
                ("taskId", &task_id_text),
                ("taskGroupId", &task_group_id),
                ("schedulerId", &definition.scheduler_id),
                ("projectId", &definition.project_id),
            ],
        )?;
        let task = state
            .engine
            .execute(task_id, command, call.client_id())
            .await?;
        Ok(status_reply(&task))
    })
    .await
}

/// The body of `changeTaskPriority` and `changeTaskGroupPriority`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ChangePriorityRequest {
    pub(super) new_priority: Priority,
}

/// `POST /task/<taskId>/priority`: a new priority for an unresolved task; a running run keeps
/// its place, a pending one moves in its queue.
pub async fn change_task_priority(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("changeTaskPriority", request, body)
        .answer(async |call| {
            let task_id = call.slugid_param("taskId")?;
            let input: ChangePriorityRequest = call.input("change-task-priority-request")?;
            let Some(task) = state.engine.task(task_id).await else {
                return Err(ApiError::not_found(format!("Task `{task_id}` not found"))
                    .with_details(json!({ "taskId": task_id })));
            };
            let task_id_text = task_id.to_string();
            call.authorize(
                &state.access.clients(),
                &CHANGE_TASK_PRIORITY,
                &[
                    ("taskId", &task_id_text),
                    ("taskQueueId", &task.definition.task_queue_id),
                ],
            )?;
            let command = Command::ChangePriority {
                priority: input.new_priority,
            };
            let task = state
                .engine
                .execute(task_id, command, call.client_id())
                .await?;
            Ok(status_reply(&task))
        })
        .await
}

/// The body of the batch reads (`tasks-request`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TasksRequest {
    task_ids: Vec<Slugid>,
}

/// Authorizes one scope per requested task and loads the tasks that exist, in request order.
async fn batch(state: &State, call: &mut Call, scope: &str) -> Result<Vec<Task>, ApiError> {
    let input: TasksRequest = call.input("tasks-request")?;
    let ids: Vec<String> = input.task_ids.iter().map(Slugid::to_string).collect();
    let params: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| (format!("taskId{index}"), id.clone()))
        .collect();
    let template = ScopeExpression::AllOf(
        (0..ids.len())
            .map(|index| ScopeExpression::scope(format!("{scope}:<taskId{index}>")))
            .collect(),
    );
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    call.authorize(&state.access.clients(), &template, &params)?;
    let loads = input
        .task_ids
        .iter()
        .map(|&task_id| state.engine.task(task_id));
    Ok(futures::future::join_all(loads)
        .await
        .into_iter()
        .flatten()
        .collect())
}

/// `POST /tasks`: the definitions of the given tasks; unknown ones are left out.
pub async fn tasks(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("tasks", request, body)
        .answer(async |call| {
            let tasks = batch(&state, call, "queue:get-task").await?;
            let entries: Vec<_> = tasks
                .iter()
                .map(|task| json!({"taskId": task.task_id, "task": task.definition}))
                .collect();
            Ok(response::json(StatusCode::OK, &json!({ "tasks": entries })))
        })
        .await
}

/// `POST /tasks/status`: the statuses of the given tasks; unknown ones are left out.
pub async fn statuses(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("statuses", request, body)
        .answer(async |call| {
            let tasks = batch(&state, call, "queue:status").await?;
            let entries: Vec<_> = tasks
                .iter()
                .map(|task| json!({"taskId": task.task_id, "status": task.status()}))
                .collect();
            Ok(response::json(
                StatusCode::OK,
                &json!({ "statuses": entries }),
            ))
        })
        .await
}

/// `GET /task/<taskId>/dependents`: the tasks that depend on this one, a page at a time.
pub async fn list_dependent_tasks(
    state: Data<State>,
    request: HttpRequest,
    body: Body,
) -> HttpResponse {
    Call::new("listDependentTasks", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &LIST_DEPENDENT_TASKS)?;
            let page = call.page(MAX_LIMIT)?;
            let task = load(&state, call, "Are you sure this task exists?").await?;
            let listing = Listing::Dependents(task.task_id);
            let (tasks, more) = state
                .engine
                .list(listing, page.after_task()?, page.limit)
                .await;
            let mut reply = json!({
                "taskId": task.task_id,
                "tasks": tasks.iter().map(|(_, task)| task_entry(task)).collect::<Vec<_>>(),
            });
            let last = tasks.last().map(|(position, _)| *position);
            if let Some(token) = pagination::task_token(last, more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ScopeSet;
    use crate::model::task::definition::tests::sample_definition;

    #[test]
    fn create_task_scopes_follow_taskclusters_template() {
        let mut definition = sample_definition(Slugid::nice());
        definition.priority = Priority::High;
        definition.scopes = vec!["secrets:get:<literal>".into()];
        definition.routes = vec!["index.a.<b>".into()];
        let (template, params) = create_task_scopes(&definition);
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let rendered = template.render(&params).unwrap();
        let queue = format!("{}/{}", definition.provisioner_id, definition.worker_type);
        assert_eq!(
            rendered.to_json(),
            json!({"AllOf": [
                "secrets:get:<literal>",
                "queue:route:index.a.<b>",
                format!("queue:create-task:project:{}", definition.project_id),
                format!("queue:scheduler-id:{}", definition.scheduler_id),
                {"AnyOf": [
                    format!("queue:create-task:highest:{queue}"),
                    format!("queue:create-task:very-high:{queue}"),
                    format!("queue:create-task:high:{queue}"),
                ]},
            ]})
        );
        // A higher priority's scope is enough for a lower priority.
        let caller = ScopeSet::new([
            "secrets:get:<literal>".to_owned(),
            "queue:route:*".to_owned(),
            "queue:create-task:project:*".to_owned(),
            "queue:scheduler-id:*".to_owned(),
            format!("queue:create-task:very-high:{queue}"),
        ]);
        assert!(caller.satisfies(&rendered));
    }
}
