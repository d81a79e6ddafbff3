//! The task-group entity (reference §5): created implicitly by the first task that names one,
//! a group holds its `schedulerId` (every member must share it), its expiry (an hour past the
//! latest-expiring member's) and whether it is sealed against new members.
//!
//! Its decisions are joining it as a task is created, sealing it, resolving it, recording a
//! change of its tasks' priority, and forgetting it once expired. A group's events are keyed
//! by its id, so they live in the partition of the task that shares the id (often the
//! group's first task, its decision task).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, Event, Priority, Slugid, Timestamp};

/// How long a group outlives its latest-expiring task.
pub const GROUP_EXPIRY_MARGIN_MILLIS: i64 = 60 * 60 * 1000;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskGroup {
    pub task_group_id: Slugid,
    pub scheduler_id: String,
    pub expires: Timestamp,
    /// When `sealTaskGroup` was first called.
    pub sealed: Option<Timestamp>,
    /// When the group was last recorded as resolved (all its tasks resolved); a group whose
    /// tasks are rerun, or that gets new ones, resolves again.
    pub resolved: Option<Timestamp>,
}

impl TaskGroup {
    /// The group as its first member's `TaskGroupJoined` creates it.
    pub fn new(task_group_id: Slugid, scheduler_id: String, expires: Timestamp) -> Self {
        TaskGroup {
            task_group_id,
            scheduler_id,
            expires,
            sealed: None,
            resolved: None,
        }
    }

    /// Applies one event of this group, at the instant the envelope records. Like
    /// [`Task::apply`](super::Task::apply), it never fails: what does not fit changes nothing.
    pub fn apply(&mut self, at: Timestamp, event: &Event) {
        match event {
            Event::TaskGroupJoined { expires, .. } if *expires > self.expires => {
                self.expires = *expires;
            }
            Event::TaskGroupSealed if self.sealed.is_none() => self.sealed = Some(at),
            Event::TaskGroupResolved => self.resolved = Some(at),
            // A group keeps no priority (the event is there for its message); a later join, a
            // second seal and other entities' events change nothing.
            _ => {}
        }
    }

    /// `task-group-response`: `{taskGroupId, schedulerId, expires, sealed?}`.
    pub fn to_json(&self) -> Value {
        let mut reply = json!({
            "taskGroupId": self.task_group_id,
            "schedulerId": self.scheduler_id,
            "expires": self.expires,
        });
        if let Some(sealed) = self.sealed {
            reply["sealed"] = json!(sealed);
        }
        reply
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GroupCommand {
    /// A task of this group is being created: the group must have the task's scheduler and
    /// not be sealed, and it must outlive the task.
    Join {
        scheduler_id: String,
        task_expires: Timestamp,
    },
    /// `sealTaskGroup`.
    Seal,
    /// Every task of the group is resolved, the latest at `through` (the group tracker's
    /// word): recorded unless a resolution since then already is.
    Resolve { through: Timestamp },
    /// `changeTaskGroupPriority` changed the priority of `tasks_affected` of the group's tasks.
    RecordPriorityChange {
        priority: Priority,
        tasks_affected: u32,
    },
    /// The expiry timer, at `now`: a group past its `expires` is forgotten; before then (a
    /// later task moved it) nothing changes.
    Expire { now: Timestamp },
}

pub fn decide(
    task_group_id: Slugid,
    group: Option<&TaskGroup>,
    command: GroupCommand,
) -> Result<Vec<Event>, ApiError> {
    match command {
        GroupCommand::Join {
            scheduler_id,
            task_expires,
        } => {
            let expires = task_expires.plus_millis(GROUP_EXPIRY_MARGIN_MILLIS);
            let Some(group) = group else {
                return Ok(vec![Event::TaskGroupJoined {
                    task_group_id,
                    scheduler_id,
                    expires,
                }]);
            };
            if group.scheduler_id != scheduler_id {
                return Err(ApiError::conflict(format!(
                    "Task group `{task_group_id}` contains tasks with schedulerId `{}`. You are \
                     attempting to include tasks from schedulerId `{scheduler_id}`, which is \
                     not permitted. All tasks in the same task-group must have the same \
                     schedulerId.",
                    group.scheduler_id
                ))
                .with_details(serde_json::json!({
                    "taskGroupId": task_group_id,
                    "existingSchedulerId": group.scheduler_id,
                    "taskSchedulerId": scheduler_id,
                })));
            }
            if group.sealed.is_some() {
                return Err(ApiError::conflict(format!(
                    "Task group `{task_group_id}` is sealed: no more tasks can be added to it."
                ))
                .with_details(serde_json::json!({ "taskGroupId": task_group_id })));
            }
            Ok(if expires > group.expires {
                vec![Event::TaskGroupJoined {
                    task_group_id,
                    scheduler_id,
                    expires,
                }]
            } else {
                Vec::new()
            })
        }
        GroupCommand::Seal => match group {
            None => Err(group_not_found(task_group_id)),
            Some(group) if group.sealed.is_some() => Ok(Vec::new()),
            Some(_) => Ok(vec![Event::TaskGroupSealed]),
        },
        GroupCommand::Resolve { through } => match group {
            None => Err(group_not_found(task_group_id)),
            Some(group) if group.resolved.is_some_and(|resolved| resolved >= through) => {
                Ok(Vec::new())
            }
            Some(_) => Ok(vec![Event::TaskGroupResolved]),
        },
        GroupCommand::RecordPriorityChange {
            priority,
            tasks_affected,
        } => match group {
            None => Err(group_not_found(task_group_id)),
            Some(_) => Ok(vec![Event::TaskGroupPriorityChanged {
                priority,
                tasks_affected,
            }]),
        },
        GroupCommand::Expire { now } => Ok(match group {
            Some(group) if now >= group.expires => vec![Event::TaskGroupExpired],
            _ => Vec::new(),
        }),
    }
}

pub fn group_not_found(task_group_id: Slugid) -> ApiError {
    ApiError::not_found(format!("No task-group with taskGroupId: `{task_group_id}`"))
        .with_details(serde_json::json!({ "taskGroupId": task_group_id }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Entities, Envelope, ErrorCode};

    fn join(scheduler_id: &str, task_expires: i64) -> GroupCommand {
        GroupCommand::Join {
            scheduler_id: scheduler_id.into(),
            task_expires: Timestamp::from_millis(task_expires),
        }
    }

    /// A group's decisions applied to a state of its own.
    struct Harness {
        group_id: Slugid,
        state: Entities,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                group_id: Slugid::nice(),
                state: Entities::default(),
            }
        }

        /// Decides `command` at `at` and applies the events; returns them.
        fn send(&mut self, command: GroupCommand, at: i64) -> Result<Vec<Event>, ApiError> {
            let events = decide(self.group_id, self.state.group(self.group_id), command)?;
            for event in &events {
                self.state.apply(&Envelope {
                    key: self.group_id.to_string(),
                    at: Timestamp::from_millis(at),
                    client_id: None,
                    event: event.clone(),
                });
            }
            Ok(events)
        }

        fn group(&self) -> TaskGroup {
            self.state.group(self.group_id).cloned().unwrap()
        }
    }

    #[test]
    fn a_group_keeps_its_scheduler_grows_its_expiry_and_seals_once() {
        let mut harness = Harness::new();
        let mut send = |command, at| harness.send(command, at).map(|events| events.len());
        assert_eq!(
            send(GroupCommand::Seal, 0).unwrap_err().code,
            ErrorCode::ResourceNotFound
        );
        assert_eq!(send(join("sched", 1_000), 1).unwrap(), 1);
        assert_eq!(send(join("sched", 500), 2).unwrap(), 0, "no later expiry");
        assert_eq!(send(join("sched", 2_000), 3).unwrap(), 1);
        let conflict = send(join("other", 0), 4).unwrap_err();
        assert_eq!(conflict.code, ErrorCode::RequestConflict);
        send(GroupCommand::Seal, 5).unwrap();
        assert_eq!(
            send(GroupCommand::Seal, 6).unwrap(),
            0,
            "sealing is idempotent"
        );
        let sealed = send(join("sched", 0), 7).unwrap_err();
        assert!(sealed.message.contains("sealed"), "{sealed}");
        let group = harness.group();
        assert_eq!(group.expires.millis(), 2_000 + GROUP_EXPIRY_MARGIN_MILLIS);
        assert_eq!(group.sealed, Some(Timestamp::from_millis(5)));
    }

    #[test]
    fn a_resolution_is_recorded_once_per_last_member_resolution() {
        let mut harness = Harness::new();
        let resolve = |through: i64| GroupCommand::Resolve {
            through: Timestamp::from_millis(through),
        };
        assert!(harness.send(resolve(1), 2).is_err(), "no such group");
        harness.send(join("sched", 1_000), 1).unwrap();
        assert_eq!(
            harness.send(resolve(5), 6).unwrap(),
            [Event::TaskGroupResolved]
        );
        assert!(
            harness.send(resolve(5), 7).unwrap().is_empty(),
            "already recorded"
        );
        assert!(
            harness.send(resolve(6), 8).unwrap().is_empty(),
            "recorded at 6, not before it"
        );
        assert_eq!(
            harness.send(resolve(9), 10).unwrap(),
            [Event::TaskGroupResolved],
            "a later resolution (a rerun) is recorded again"
        );
        assert_eq!(harness.group().resolved, Some(Timestamp::from_millis(10)));
    }

    #[test]
    fn a_priority_change_is_recorded_for_a_group_that_exists() {
        let mut harness = Harness::new();
        let change = || GroupCommand::RecordPriorityChange {
            priority: Priority::High,
            tasks_affected: 2,
        };
        let missing = harness.send(change(), 1).unwrap_err();
        assert_eq!(missing.code, ErrorCode::ResourceNotFound);
        harness.send(join("sched", 1_000), 2).unwrap();
        let before = harness.group();
        assert_eq!(
            harness.send(change(), 3).unwrap(),
            [Event::TaskGroupPriorityChanged {
                priority: Priority::High,
                tasks_affected: 2,
            }]
        );
        assert_eq!(harness.group(), before, "a group keeps no priority");
    }

    #[test]
    fn a_group_is_forgotten_once_past_its_latest_expiry() {
        let mut harness = Harness::new();
        let expire = |now: i64| GroupCommand::Expire {
            now: Timestamp::from_millis(now),
        };
        assert!(
            harness.send(expire(0), 0).unwrap().is_empty(),
            "no such group"
        );
        harness.send(join("sched", 1_000), 1).unwrap();
        harness.send(join("sched", 5_000), 2).unwrap();
        let expires = harness.group().expires.millis();
        assert_eq!(expires, 5_000 + GROUP_EXPIRY_MARGIN_MILLIS);
        assert!(harness.send(expire(expires - 1), 3).unwrap().is_empty());
        assert_eq!(
            harness.send(expire(expires), 4).unwrap(),
            [Event::TaskGroupExpired]
        );
        assert!(harness.state.group(harness.group_id).is_none());
    }
}
