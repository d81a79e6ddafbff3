//! A task's history (`GET /task/<taskId>/history`, a Taskfold extension): one record per event
//! of the task, saying what happened, when, who caused it and where the log holds it.
//!
//! A record is derived from its envelope alone and is meant to be stored once per event, so it
//! keeps only what the event adds: no task id (the task is the record's key), the kind and its
//! details as one enum, times as milliseconds, and a run's own credentials without the task id
//! they repeat.

use serde::{Deserialize, Serialize};

use super::{Envelope, Event, Priority, ReasonCreated, ReasonResolved, Slugid, Timestamp};

/// One event of a task's history.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// The log partition that holds the event (its task's).
    pub partition: u32,
    /// The event's offset in that partition; a task's records are in offset order.
    pub offset: u64,
    pub at: Timestamp,
    pub caller: Caller,
    pub event: HistoryEvent,
}

/// Who caused an event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Caller {
    /// The queue on its own (deadline, claim expiry, dependency resolution), or a caller
    /// without credentials, or an event logged before callers were recorded.
    Queue,
    /// An authenticated client.
    Client(String),
    /// A run of this very task, with the temporary credentials its claim gave the worker: the
    /// clientId is `task-client/<taskId>/` followed by this.
    OwnRun(String),
}

impl Caller {
    /// The caller of an event of `task_id` caused by `client_id`.
    pub fn of(client_id: Option<&str>, task_id: Slugid) -> Caller {
        let Some(client_id) = client_id else {
            return Caller::Queue;
        };
        match client_id
            .strip_prefix("task-client/")
            .and_then(|rest| rest.strip_prefix(task_id.to_string().as_str()))
            .and_then(|rest| rest.strip_prefix('/'))
        {
            Some(rest) => Caller::OwnRun(rest.to_owned()),
            None => Caller::Client(client_id.to_owned()),
        }
    }

    /// The clientId, for an event of `task_id`; `None` for the queue.
    pub fn client_id(&self, task_id: Slugid) -> Option<String> {
        match self {
            Caller::Queue => None,
            Caller::Client(client_id) => Some(client_id.clone()),
            Caller::OwnRun(rest) => Some(format!("task-client/{task_id}/{rest}")),
        }
    }
}

/// What happened, with the details of each kind.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub enum HistoryEvent {
    TaskDefined,
    RunPending {
        run_id: u32,
        reason: ReasonCreated,
    },
    RunClaimed {
        run_id: u32,
        worker_group: String,
        worker_id: String,
    },
    RunReclaimed {
        run_id: u32,
    },
    RunResolved {
        run_id: u32,
        reason: ReasonResolved,
    },
    /// A run added already resolved, to record that a task without runs was canceled or
    /// passed its deadline.
    ExceptionRunAdded {
        run_id: u32,
        reason: ReasonResolved,
    },
    DependencySatisfied {
        dependency: Slugid,
    },
    /// `changeTaskPriority`, or `changeTaskGroupPriority` for the task's group.
    PriorityChanged {
        priority: Priority,
    },
    ArtifactCreated {
        run_id: u32,
        name: String,
    },
    SessionOpened {
        run_id: u32,
        session_id: Slugid,
    },
    SessionClosed {
        session_id: Slugid,
    },
    /// The run's worker asked a person for input (an INPUT task).
    InputRequested {
        run_id: u32,
    },
    /// Someone answered the run's request for input.
    InputAnswered {
        run_id: u32,
    },
}

impl HistoryEvent {
    /// The kind's name in the API and the CLI.
    pub fn kind(&self) -> &'static str {
        match self {
            HistoryEvent::TaskDefined => "task-defined",
            HistoryEvent::RunPending { .. } => "run-pending",
            HistoryEvent::RunClaimed { .. } => "run-claimed",
            HistoryEvent::RunReclaimed { .. } => "run-reclaimed",
            HistoryEvent::RunResolved { .. } => "run-resolved",
            HistoryEvent::ExceptionRunAdded { .. } => "exception-run-added",
            HistoryEvent::DependencySatisfied { .. } => "dependency-satisfied",
            HistoryEvent::PriorityChanged { .. } => "priority-changed",
            HistoryEvent::ArtifactCreated { .. } => "artifact-created",
            HistoryEvent::SessionOpened { .. } => "session-opened",
            HistoryEvent::SessionClosed { .. } => "session-closed",
            HistoryEvent::InputRequested { .. } => "input-requested",
            HistoryEvent::InputAnswered { .. } => "input-answered",
        }
    }

    /// The run the event concerns, when it names one.
    pub fn run_id(&self) -> Option<u32> {
        match self {
            HistoryEvent::RunPending { run_id, .. }
            | HistoryEvent::RunClaimed { run_id, .. }
            | HistoryEvent::RunReclaimed { run_id }
            | HistoryEvent::RunResolved { run_id, .. }
            | HistoryEvent::ExceptionRunAdded { run_id, .. }
            | HistoryEvent::ArtifactCreated { run_id, .. }
            | HistoryEvent::SessionOpened { run_id, .. }
            | HistoryEvent::InputRequested { run_id }
            | HistoryEvent::InputAnswered { run_id } => Some(*run_id),
            HistoryEvent::TaskDefined
            | HistoryEvent::DependencySatisfied { .. }
            | HistoryEvent::PriorityChanged { .. }
            | HistoryEvent::SessionClosed { .. } => None,
        }
    }
}

impl HistoryRecord {
    /// The record of `envelope`, held at `offset` of `partition`, with the task whose history
    /// it belongs to; `None` for events that are no task's history (those of groups and
    /// workers, and a task's expiry, which ends its history).
    pub fn derive(envelope: &Envelope, partition: u32, offset: u64) -> Option<(Slugid, Self)> {
        let event = match &envelope.event {
            Event::TaskDefined { .. } => HistoryEvent::TaskDefined,
            Event::RunPending { run_id, reason } => HistoryEvent::RunPending {
                run_id: *run_id,
                reason: *reason,
            },
            Event::RunClaimed {
                run_id,
                worker_group,
                worker_id,
                ..
            } => HistoryEvent::RunClaimed {
                run_id: *run_id,
                worker_group: worker_group.clone(),
                worker_id: worker_id.clone(),
            },
            Event::RunReclaimed { run_id, .. } => HistoryEvent::RunReclaimed { run_id: *run_id },
            Event::RunResolved { run_id, reason } => HistoryEvent::RunResolved {
                run_id: *run_id,
                reason: *reason,
            },
            Event::ExceptionRunAdded { run_id, reason } => HistoryEvent::ExceptionRunAdded {
                run_id: *run_id,
                reason: *reason,
            },
            Event::DependencySatisfied { dependency } => HistoryEvent::DependencySatisfied {
                dependency: *dependency,
            },
            Event::PriorityChanged { priority } | Event::PriorityChangedWithGroup { priority } => {
                HistoryEvent::PriorityChanged {
                    priority: *priority,
                }
            }
            Event::ArtifactCreated { run_id, name, .. } => HistoryEvent::ArtifactCreated {
                run_id: *run_id,
                name: name.clone(),
            },
            Event::SessionOpened {
                run_id, session_id, ..
            } => HistoryEvent::SessionOpened {
                run_id: *run_id,
                session_id: *session_id,
            },
            Event::SessionClosed { session_id, .. } => HistoryEvent::SessionClosed {
                session_id: *session_id,
            },
            Event::InputRequested { run_id, .. } => {
                HistoryEvent::InputRequested { run_id: *run_id }
            }
            Event::InputAnswered { run_id, .. } => HistoryEvent::InputAnswered { run_id: *run_id },
            Event::TaskExpired
            | Event::TaskGroupJoined { .. }
            | Event::TaskGroupSealed
            | Event::TaskGroupResolved
            | Event::TaskGroupPriorityChanged { .. }
            | Event::TaskGroupExpired
            | Event::WorkerQuarantined { .. }
            | Event::WorkerDeclared { .. }
            | Event::DocumentPut { .. }
            | Event::DocumentRemoved { .. } => return None,
        };
        let task_id: Slugid = envelope.key.parse().ok()?;
        let record = HistoryRecord {
            partition,
            offset,
            at: envelope.at,
            caller: Caller::of(envelope.client_id.as_deref(), task_id),
            event,
        };
        Some((task_id, record))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::codec;
    use crate::model::task::definition::tests::sample_definition;

    fn envelope(task_id: Slugid, client_id: Option<&str>, event: Event) -> Envelope {
        Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1_763_800_000_000),
            client_id: client_id.map(str::to_owned),
            event,
        }
    }

    #[test]
    fn records_what_happened_who_caused_it_and_where() {
        let task_id = Slugid::nice();
        let defined = envelope(
            task_id,
            Some("static/taskcluster/root"),
            Event::TaskDefined {
                task_id,
                definition: Arc::new(sample_definition(task_id)),
            },
        );
        let (of, record) = HistoryRecord::derive(&defined, 3, 17).unwrap();
        assert_eq!(of, task_id);
        assert_eq!(
            record,
            HistoryRecord {
                partition: 3,
                offset: 17,
                at: defined.at,
                caller: Caller::Client("static/taskcluster/root".into()),
                event: HistoryEvent::TaskDefined,
            }
        );
        let expired = envelope(
            task_id,
            None,
            Event::ExceptionRunAdded {
                run_id: 0,
                reason: ReasonResolved::DeadlineExceeded,
            },
        );
        let (_, record) = HistoryRecord::derive(&expired, 3, 18).unwrap();
        assert_eq!(record.caller, Caller::Queue);
        assert_eq!(record.event.kind(), "exception-run-added");
        assert_eq!(record.event.run_id(), Some(0));
        // A group's events, even under a task's id, and the task's expiry are no history.
        assert!(
            HistoryRecord::derive(&envelope(task_id, None, Event::TaskGroupSealed), 3, 19)
                .is_none()
        );
        assert!(
            HistoryRecord::derive(&envelope(task_id, None, Event::TaskExpired), 3, 20).is_none()
        );
    }

    #[test]
    fn a_runs_own_credentials_are_kept_without_the_task_id() {
        let task_id: Slugid = "dSlITZ4yQgmvxxAi4A8fHQ".parse().unwrap();
        let own = "task-client/dSlITZ4yQgmvxxAi4A8fHQ/0/on/wg/w1/until/1767226800";
        let caller = Caller::of(Some(own), task_id);
        assert_eq!(caller, Caller::OwnRun("0/on/wg/w1/until/1767226800".into()));
        assert_eq!(caller.client_id(task_id).as_deref(), Some(own));
        // Another task's credentials, or a lookalike, are kept whole.
        let other = Slugid::nice();
        let caller = Caller::of(Some(own), other);
        assert_eq!(caller, Caller::Client(own.into()));
        assert_eq!(caller.client_id(other).as_deref(), Some(own));
        let lookalike = "task-client/dSlITZ4yQgmvxxAi4A8fHQx/0";
        assert_eq!(
            Caller::of(Some(lookalike), task_id),
            Caller::Client(lookalike.into())
        );
        assert_eq!(Caller::of(None, task_id).client_id(task_id), None);
    }

    #[test]
    fn a_stored_record_is_small() {
        let task_id = Slugid::nice();
        let reclaimed = envelope(
            task_id,
            Some(&format!(
                "task-client/{task_id}/0/on/wg/w1/until/1767226800"
            )),
            Event::RunReclaimed {
                run_id: 0,
                taken_until: Timestamp::from_millis(1_763_801_200_000),
            },
        );
        let (_, record) = HistoryRecord::derive(&reclaimed, 1, 123_456).unwrap();
        let bytes = codec::encode(&record).unwrap();
        // Version, partition, offset, time, caller and kind: the clientId's tail is most of it.
        assert!(bytes.len() <= 48, "{} bytes", bytes.len());
        assert_eq!(codec::decode::<HistoryRecord>(&bytes).unwrap(), record);
    }
}
