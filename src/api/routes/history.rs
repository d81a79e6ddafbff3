//! `GET /task/<taskId>/history`, a Taskfold extension: every event of a task, in order, with
//! who caused it and where the log holds it (`schemas/task-history-response.json`).

use actix_web::http::StatusCode;
use actix_web::web::Data;
use actix_web::{HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

use super::tasks::{GET_TASK, load};
use crate::api::call::{Body, Call};
use crate::api::pagination::{self, MAX_LIMIT};
use crate::api::response;
use crate::api::server::State;
use crate::model::ApiError;
use crate::model::{
    HistoryEvent, HistoryRecord, Priority, ReasonCreated, ReasonResolved, Slugid, Task, Timestamp,
};

const QUESTION: &str = "Are you sure this task has already been submitted?";

/// Read as the task itself is (`queue:get-task:<taskId>`), a page at a time.
pub async fn task_history(state: Data<State>, request: HttpRequest, body: Body) -> HttpResponse {
    Call::new("taskHistory", request, body)
        .answer(async |call| {
            call.authorize_url(&state.access.clients(), &GET_TASK)?;
            let page = call.page(MAX_LIMIT)?;
            let after = page.after_offset()?;
            let task = load(&state, call, QUESTION).await?;
            let history = state
                .engine
                .history(task.task_id, after, page.limit)
                .await?
                // Expired since it was loaded.
                .ok_or_else(|| not_found(task.task_id))?;
            let events: Vec<HistoryEntry> = history
                .records
                .iter()
                .map(|record| HistoryEntry::of(&task, record))
                .collect();
            let mut reply = json!({ "taskId": task.task_id, "events": events });
            let last = history.records.last().map(|record| record.offset);
            if let Some(token) = pagination::offset_token(last, history.more) {
                reply["continuationToken"] = json!(token);
            }
            Ok(response::json(StatusCode::OK, &reply))
        })
        .await
}

fn not_found(task_id: Slugid) -> ApiError {
    ApiError::not_found(format!(
        "`{task_id}` does not correspond to a task that exists.\n{QUESTION}"
    ))
    .with_details(json!({ "taskId": task_id }))
}

/// One event as the API shows it; fields that do not apply are left out.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct HistoryEntry<'a> {
    kind: &'static str,
    time: Timestamp,
    /// Absent when the queue caused the event itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_group: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    run_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_created: Option<ReasonCreated>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason_resolved: Option<ReasonResolved>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dependency: Option<Slugid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<Priority>,
    /// An artifact's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<Slugid>,
    partition: u32,
    offset: u64,
}

impl<'a> HistoryEntry<'a> {
    /// The entry of `record`, with what the task knows besides: the worker of the run an
    /// event concerns once it was claimed, and the run of a session.
    fn of(task: &'a Task, record: &'a HistoryRecord) -> Self {
        let mut entry = HistoryEntry {
            kind: record.event.kind(),
            time: record.at,
            client_id: record.caller.client_id(task.task_id),
            run_id: record.event.run_id(),
            partition: record.partition,
            offset: record.offset,
            ..HistoryEntry::default()
        };
        let mut run_worker = true;
        match &record.event {
            HistoryEvent::TaskDefined
            | HistoryEvent::RunReclaimed { .. }
            | HistoryEvent::InputRequested { .. }
            | HistoryEvent::InputAnswered { .. } => {}
            HistoryEvent::RunPending { reason, .. } => {
                // Whoever claims the run later did not cause it.
                run_worker = false;
                entry.reason_created = Some(*reason);
            }
            HistoryEvent::RunClaimed {
                worker_group,
                worker_id,
                ..
            } => {
                run_worker = false;
                entry.worker_group = Some(worker_group);
                entry.worker_id = Some(worker_id);
            }
            HistoryEvent::RunResolved { reason, .. }
            | HistoryEvent::ExceptionRunAdded { reason, .. } => {
                entry.reason_resolved = Some(*reason)
            }
            HistoryEvent::DependencySatisfied { dependency } => {
                entry.dependency = Some(*dependency)
            }
            HistoryEvent::PriorityChanged { priority } => entry.priority = Some(*priority),
            HistoryEvent::ArtifactCreated { name, .. } => entry.name = Some(name),
            HistoryEvent::SessionOpened { session_id, .. } => entry.session_id = Some(*session_id),
            HistoryEvent::SessionClosed { session_id } => {
                entry.session_id = Some(*session_id);
                entry.run_id = task.session(*session_id).map(|session| session.run_id);
            }
        }
        if run_worker
            && let Some(run) = entry
                .run_id
                .and_then(|run_id| task.runs.get(run_id as usize))
        {
            entry.worker_group = run.worker_group.as_deref();
            entry.worker_id = run.worker_id.as_deref();
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Entities, Envelope, Event};

    #[test]
    fn entries_name_the_runs_worker_and_leave_out_what_does_not_apply() {
        let task_id = Slugid::nice();
        let own_run = format!("task-client/{task_id}/0/on/wg/w1/until/1767226800");
        let events = [
            (
                Some("static/taskcluster/root"),
                Event::TaskDefined {
                    task_id,
                    definition: Arc::new(sample_definition(task_id)),
                },
            ),
            (
                Some("static/taskcluster/root"),
                Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
            ),
            (
                Some("worker/w1"),
                Event::RunClaimed {
                    run_id: 0,
                    worker_group: "wg".into(),
                    worker_id: "w1".into(),
                    taken_until: Timestamp::from_millis(1_763_801_200_000),
                },
            ),
            (
                Some(own_run.as_str()),
                Event::RunResolved {
                    run_id: 0,
                    reason: ReasonResolved::Completed,
                },
            ),
        ];
        let mut state = Entities::default();
        let mut records = Vec::new();
        for (offset, (client_id, event)) in events.into_iter().enumerate() {
            let envelope = Envelope {
                key: task_id.to_string(),
                at: Timestamp::from_millis(1_763_800_000_000),
                client_id: client_id.map(str::to_owned),
                event,
            };
            state.apply(&envelope);
            records.push(
                HistoryRecord::derive(&envelope, 2, 40 + offset as u64)
                    .unwrap()
                    .1,
            );
        }
        let task = state.task(task_id).unwrap();
        let json =
            |index: usize| serde_json::to_value(HistoryEntry::of(task, &records[index])).unwrap();
        assert_eq!(
            json(0),
            json!({"kind": "task-defined", "time": "2025-11-22T08:26:40.000Z",
                   "clientId": "static/taskcluster/root", "partition": 2, "offset": 40})
        );
        assert_eq!(
            json(1),
            json!({"kind": "run-pending", "time": "2025-11-22T08:26:40.000Z",
                   "clientId": "static/taskcluster/root", "runId": 0,
                   "reasonCreated": "scheduled", "partition": 2, "offset": 41})
        );
        assert_eq!(json(2)["workerId"], "w1");
        assert_eq!(
            json(3),
            json!({"kind": "run-resolved", "time": "2025-11-22T08:26:40.000Z",
                   "clientId": own_run, "workerGroup": "wg", "workerId": "w1", "runId": 0,
                   "reasonResolved": "completed", "partition": 2, "offset": 43})
        );
    }
}
