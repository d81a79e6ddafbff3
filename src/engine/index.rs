//! What a shard can list without scanning every task: the members of each task group, the
//! dependents of each task, and the pending and running tasks of each task queue. Derived
//! from the fold after every change, rebuilt after a replay, never stored.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use crate::model::{RunState, Slugid, Task};

/// A list the API pages through; every shard holds its part of each.
#[derive(Clone, Debug, PartialEq, Eq)]
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

#[derive(Default)]
pub struct Indexes {
    members: HashMap<Slugid, BTreeSet<Slugid>>,
    dependents: HashMap<Slugid, BTreeSet<Slugid>>,
    pending: HashMap<String, BTreeSet<Slugid>>,
    running: HashMap<String, BTreeSet<Slugid>>,
}

impl Indexes {
    /// Records a task that was just defined (or found in a replay).
    pub fn defined(&mut self, task: &Task) {
        let task_id = task.task_id;
        self.members
            .entry(task.definition.task_group_id)
            .or_default()
            .insert(task_id);
        for dependency in &task.definition.dependencies {
            self.dependents
                .entry(*dependency)
                .or_default()
                .insert(task_id);
        }
    }

    /// Files the task under the state of its latest run.
    pub fn changed(&mut self, task: &Task) {
        let queue = &task.definition.task_queue_id;
        let state = task.runs.last().map(|run| run.state);
        for (set, member) in [
            (&mut self.pending, state == Some(RunState::Pending)),
            (&mut self.running, state == Some(RunState::Running)),
        ] {
            if member {
                set.entry(queue.clone()).or_default().insert(task.task_id);
            } else if let Some(tasks) = set.get_mut(queue) {
                tasks.remove(&task.task_id);
                if tasks.is_empty() {
                    set.remove(queue);
                }
            }
        }
    }

    fn set(&self, listing: &Listing) -> Option<&BTreeSet<Slugid>> {
        match listing {
            Listing::Members(group) => self.members.get(group),
            Listing::Dependents(task) => self.dependents.get(task),
            Listing::Pending(queue) => self.pending.get(queue),
            Listing::Running(queue) => self.running.get(queue),
        }
    }

    /// Up to `limit` task ids of the listing after `after`, in id order.
    pub fn page(&self, listing: &Listing, after: Option<Slugid>, limit: usize) -> Vec<Slugid> {
        let Some(set) = self.set(listing) else {
            return Vec::new();
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        set.range((start, Bound::Unbounded))
            .take(limit)
            .copied()
            .collect()
    }

    pub fn count(&self, listing: &Listing) -> usize {
        self.set(listing).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::tests::sample_definition;
    use crate::model::{ReasonCreated, Timestamp};

    #[test]
    fn tasks_are_listed_by_group_dependency_and_state_in_id_order() {
        let group = Slugid::nice();
        let dependency = Slugid::nice();
        let mut indexes = Indexes::default();
        let mut tasks: Vec<Task> = (0..5)
            .map(|_| {
                let mut definition = sample_definition(group);
                definition.dependencies = vec![dependency];
                Task::new(Slugid::nice(), definition)
            })
            .collect();
        for task in &mut tasks {
            indexes.defined(task);
            task.apply(
                Timestamp::from_millis(0),
                &crate::model::Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
            );
            indexes.changed(task);
        }
        let mut ids: Vec<Slugid> = tasks.iter().map(|task| task.task_id).collect();
        ids.sort();
        let queue = tasks[0].definition.task_queue_id.clone();
        assert_eq!(indexes.page(&Listing::Members(group), None, 3), ids[..3]);
        assert_eq!(
            indexes.page(&Listing::Dependents(dependency), Some(ids[2]), 10),
            ids[3..]
        );
        assert_eq!(indexes.count(&Listing::Pending(queue.clone())), 5);
        tasks[0].runs.clear();
        indexes.changed(&tasks[0]);
        assert_eq!(indexes.count(&Listing::Pending(queue.clone())), 4);
        assert_eq!(indexes.count(&Listing::Running(queue)), 0);
    }
}
