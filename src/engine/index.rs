//! The lists the API pages through. The members of each task group and the dependents of each
//! task are keys of the partition store (`store`); the pending and running tasks of each task
//! queue are live work, kept here in memory: derived from the fold after every change, rebuilt
//! after a replay, never stored.
//!
//! Each list is ordered by [`Position`]: task id for groups and dependents, and for queues
//! the time the run was inserted (pending) or claimed (running), then task id, as Taskcluster
//! lists them.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::model::{RunState, Slugid, Task};

/// A list the API pages through; every shard holds its part of each.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Listing {
    /// The tasks of a task group.
    Members(Slugid),
    /// The tasks that list a task in `dependencies`.
    Dependents(Slugid),
    /// The tasks of a task queue whose latest run is pending.
    Pending(String),
    /// The tasks of a task queue whose latest run is running.
    Running(String),
}

/// Where a task is in a list: an order key (milliseconds, or 0), then its id.
pub type Position = (i64, Slugid);

/// The first and last positions, for ranges over a whole list.
const FIRST: Position = (i64::MIN, Slugid::MIN);
const LAST: Position = (i64::MAX, Slugid::MAX);

/// The pending and running lists: task queues are few, so each has a set of its own.
#[derive(Default)]
pub struct Indexes {
    pending: HashMap<String, BTreeSet<Position>>,
    running: HashMap<String, BTreeSet<Position>>,
    /// Where each task is filed in `pending` or `running` (true: pending), to unfile it.
    filed: HashMap<Slugid, (bool, Position)>,
}

impl Indexes {
    /// Forgets a task that expired: it is in no list any more.
    pub fn removed(&mut self, task: &Task) {
        self.unfile(task);
    }

    /// Takes the task out of the pending or running list it is in.
    fn unfile(&mut self, task: &Task) {
        let queue = &task.definition.task_queue_id;
        if let Some((pending, position)) = self.filed.remove(&task.task_id) {
            let sets = if pending {
                &mut self.pending
            } else {
                &mut self.running
            };
            if let Some(tasks) = sets.get_mut(queue) {
                tasks.remove(&position);
                if tasks.is_empty() {
                    sets.remove(queue);
                }
            }
        }
    }

    /// Files the task under the state of its latest run.
    pub fn changed(&mut self, task: &Task) {
        self.unfile(task);
        let queue = &task.definition.task_queue_id;
        let Some(run) = task.runs.last() else {
            return;
        };
        let (pending, at) = match run.state {
            RunState::Pending => (true, run.scheduled),
            RunState::Running => (false, run.started.unwrap_or(run.scheduled)),
            _ => return,
        };
        let position = (at.millis(), task.task_id);
        let sets = if pending {
            &mut self.pending
        } else {
            &mut self.running
        };
        sets.entry(queue.clone()).or_default().insert(position);
        self.filed.insert(task.task_id, (pending, position));
    }

    /// Up to `limit` positions of a pending or running list after `after`, in order (none
    /// for the lists the store keeps).
    pub fn page(&self, listing: &Listing, after: Option<Position>, limit: usize) -> Vec<Position> {
        let start = after.map_or(Bound::Included(FIRST), Bound::Excluded);
        let (sets, queue) = match listing {
            Listing::Pending(queue) => (&self.pending, queue),
            Listing::Running(queue) => (&self.running, queue),
            Listing::Members(_) | Listing::Dependents(_) => return Vec::new(),
        };
        let Some(set) = sets.get(queue) else {
            return Vec::new();
        };
        set.range((start, Bound::Included(LAST)))
            .take(limit)
            .copied()
            .collect()
    }

    /// How many tasks a pending or running list has.
    pub fn count(&self, listing: &Listing) -> usize {
        match listing {
            Listing::Pending(queue) => self.pending.get(queue).map_or(0, BTreeSet::len),
            Listing::Running(queue) => self.running.get(queue).map_or(0, BTreeSet::len),
            Listing::Members(_) | Listing::Dependents(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{ReasonCreated, Timestamp};
    use std::sync::Arc;

    #[test]
    fn tasks_are_listed_by_state_in_order() {
        let group = Slugid::nice();
        let mut indexes = Indexes::default();
        let mut tasks: Vec<Task> = (0..5)
            .map(|_| Task::new(Slugid::nice(), Arc::new(sample_definition(group))))
            .collect();
        for task in &mut tasks {
            task.apply(
                Timestamp::from_millis(0),
                &crate::model::Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
            );
            indexes.changed(task);
        }
        let mut ids: Vec<Position> = tasks.iter().map(|task| (0, task.task_id)).collect();
        ids.sort();
        let queue = tasks[0].definition.task_queue_id.clone();
        let pending = Listing::Pending(queue.clone());
        assert_eq!(indexes.page(&pending, None, 3), ids[..3]);
        assert_eq!(indexes.page(&pending, Some(ids[2]), 10), ids[3..]);
        assert_eq!(indexes.count(&pending), 5);
        tasks[0].runs.clear();
        indexes.changed(&tasks[0]);
        assert_eq!(indexes.count(&pending), 4);
        assert_eq!(indexes.count(&Listing::Running(queue.clone())), 0);

        // An expired task leaves every list.
        indexes.removed(&tasks[1]);
        assert_eq!(indexes.count(&pending), 3);
        assert!(!indexes.filed.contains_key(&tasks[1].task_id));
    }
}
