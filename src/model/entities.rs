//! Every entity of a partition, and the fold that routes each event to the entity it belongs
//! to. What an event means for its entity is that entity's `apply` ([`Task::apply`],
//! [`TaskGroup::apply`], [`Worker::apply`]); this module only creates and forgets entities.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Envelope, Event, Slugid, Task, TaskGroup, Worker};

/// Every entity of a partition: tasks and task groups by id (a group and the task that shares
/// its id share an envelope key, and so a partition), workers by
/// [`worker_key`](super::worker_key).
///
/// Tasks and groups sit behind `Arc`s so that a copy of the whole state, which a snapshot
/// takes, costs a reference count per entity rather than a deep copy; a change to an entity
/// that a snapshot still holds copies just that entity.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Entities {
    pub tasks: HashMap<Slugid, Arc<Task>>,
    pub groups: HashMap<Slugid, Arc<TaskGroup>>,
    pub workers: HashMap<String, Worker>,
}

impl Entities {
    pub fn task(&self, task_id: Slugid) -> Option<&Task> {
        self.tasks.get(&task_id).map(Arc::as_ref)
    }

    pub fn group(&self, task_group_id: Slugid) -> Option<&TaskGroup> {
        self.groups.get(&task_group_id).map(Arc::as_ref)
    }

    /// Applies one envelope. Events for an entity that was never created change nothing, and
    /// so do task and group events whose key is not a slugid.
    pub fn apply(&mut self, envelope: &Envelope) {
        let key = &envelope.key;
        match &envelope.event {
            Event::TaskDefined {
                task_id,
                definition,
            } => {
                self.tasks
                    .entry(*task_id)
                    .or_insert_with(|| Arc::new(Task::new(*task_id, Arc::clone(definition))));
            }
            Event::TaskGroupJoined {
                task_group_id,
                scheduler_id,
                expires,
            } => {
                let group = self.groups.entry(*task_group_id).or_insert_with(|| {
                    Arc::new(TaskGroup::new(
                        *task_group_id,
                        scheduler_id.clone(),
                        *expires,
                    ))
                });
                Arc::make_mut(group).apply(envelope.at, &envelope.event);
            }
            event @ (Event::TaskGroupSealed
            | Event::TaskGroupResolved
            | Event::TaskGroupPriorityChanged { .. }) => {
                if let Some(group) = key.parse().ok().and_then(|id| self.groups.get_mut(&id)) {
                    Arc::make_mut(group).apply(envelope.at, event);
                }
            }
            Event::TaskExpired => {
                if let Ok(task_id) = key.parse() {
                    self.tasks.remove(&task_id);
                }
            }
            Event::TaskGroupExpired => {
                if let Ok(task_group_id) = key.parse() {
                    self.groups.remove(&task_group_id);
                }
            }
            event @ (Event::WorkerQuarantined { .. } | Event::WorkerDeclared { .. }) => {
                self.workers.entry(key.clone()).or_default().apply(event);
            }
            event => {
                if let Some(task) = key.parse().ok().and_then(|id| self.tasks.get_mut(&id)) {
                    Arc::make_mut(task).apply(envelope.at, event);
                }
            }
        }
    }
}
