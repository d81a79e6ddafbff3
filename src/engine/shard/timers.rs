//! The timers of live tasks: each unresolved task's deadline, and the claim expiry of its
//! running run. A task's timers are set again whenever it changes and cleared when it resolves,
//! so they hold live work only; expiries of resolved tasks are the store's (`store::Expiry`).

use std::collections::{BTreeSet, HashMap};

use crate::model::{RunState, Slugid, Task, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    ClaimExpiry { run_id: u32, taken_until: Timestamp },
    Deadline,
}

#[derive(Default)]
pub struct Timers {
    due: BTreeSet<(Timestamp, Slugid, Timer)>,
    by_task: HashMap<Slugid, Vec<(Timestamp, Timer)>>,
}

impl Timers {
    /// Sets the task's timers from its state: none once it is resolved.
    pub fn follow(&mut self, task: &Task) {
        self.clear(task.task_id);
        let Some(run) = task.runs.last() else {
            self.set(task.task_id, task.definition.deadline, Timer::Deadline);
            return;
        };
        if run.state.is_resolved() {
            return;
        }
        self.set(task.task_id, task.definition.deadline, Timer::Deadline);
        if let (RunState::Running, Some(taken_until)) = (run.state, run.taken_until) {
            let run_id = task.runs.len() as u32 - 1;
            let timer = Timer::ClaimExpiry {
                run_id,
                taken_until,
            };
            self.set(task.task_id, taken_until, timer);
        }
    }

    fn set(&mut self, task_id: Slugid, at: Timestamp, timer: Timer) {
        self.due.insert((at, task_id, timer));
        self.by_task.entry(task_id).or_default().push((at, timer));
    }

    pub fn clear(&mut self, task_id: Slugid) {
        for (at, timer) in self.by_task.remove(&task_id).unwrap_or_default() {
            self.due.remove(&(at, task_id, timer));
        }
    }

    /// When the next timer is due.
    pub fn next(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, ..)| *at)
    }

    /// Takes the timers due at `now`.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<(Slugid, Timer)> {
        let mut fired = Vec::new();
        while let Some(&(at, task_id, timer)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            if let Some(timers) = self.by_task.get_mut(&task_id) {
                timers.retain(|set| *set != (at, timer));
                if timers.is_empty() {
                    self.by_task.remove(&task_id);
                }
            }
            fired.push((task_id, timer));
        }
        fired
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Event, ReasonCreated, ReasonResolved};
    use std::sync::Arc;

    #[test]
    fn a_task_has_timers_while_live_and_none_once_resolved() {
        let mut task = Task::new(Slugid::nice(), Arc::new(sample_definition(Slugid::nice())));
        let deadline = task.definition.deadline;
        let mut timers = Timers::default();
        timers.follow(&task);
        assert_eq!(timers.next(), Some(deadline));
        let at = Timestamp::from_millis(0);
        task.apply(
            at,
            &Event::RunPending {
                run_id: 0,
                reason: ReasonCreated::Scheduled,
            },
        );
        let taken_until = Timestamp::from_millis(1_000);
        task.apply(
            at,
            &Event::RunClaimed {
                run_id: 0,
                worker_group: "g".into(),
                worker_id: "w".into(),
                taken_until,
            },
        );
        timers.follow(&task);
        assert_eq!(timers.len(), 2);
        assert_eq!(
            timers.take_due(taken_until),
            vec![(
                task.task_id,
                Timer::ClaimExpiry {
                    run_id: 0,
                    taken_until
                }
            )]
        );
        task.apply(
            at,
            &Event::RunResolved {
                run_id: 0,
                reason: ReasonResolved::Completed,
            },
        );
        timers.follow(&task);
        assert_eq!(timers.len(), 0);
        assert!(timers.by_task.is_empty());
    }
}
