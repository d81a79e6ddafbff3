//! The pending queues: per task queue, the runs waiting for a worker, in the order Taskcluster
//! hands them out (priority, highest first, then the order they became pending).
//!
//! Entries are hints: the owning shard's state is the truth, and a claim of a hint that went
//! stale (the run was canceled, claimed elsewhere, or its priority changed and a fresher hint
//! exists) fails there and the claimer takes the next one. A run is queued at most once per
//! priority it had, so stale hints stay few. Pure data structure; the dispatcher drives it.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::model::{Priority, Slugid};

/// A run of a task that may be claimable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PendingRun {
    pub task_id: Slugid,
    pub run_id: u32,
}

/// A run handed out by [`PendingQueues::pop`]; it keeps its place, so a hint that was not
/// used can be [`restored`](PendingQueues::restore) exactly where it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub run: PendingRun,
    place: (u8, u64),
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    rank: u8,
    /// Insertion order; earlier first among equal priorities.
    sequence: u64,
    run: PendingRun,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default, Debug)]
struct Queue {
    heap: BinaryHeap<Entry>,
    /// Runs known pending, for counts and for ignoring hints of runs no longer pending.
    pending: HashSet<PendingRun>,
}

#[derive(Default, Debug)]
pub struct PendingQueues {
    queues: HashMap<String, Queue>,
    sequence: u64,
}

impl PendingQueues {
    /// Records that `run` is pending in `task_queue_id` at `priority` (again, if its priority
    /// changed).
    pub fn push(&mut self, task_queue_id: &str, run: PendingRun, priority: Priority) {
        let queue = self.queues.entry(task_queue_id.to_owned()).or_default();
        queue.pending.insert(run);
        self.sequence += 1;
        queue.heap.push(Entry {
            rank: priority.rank(),
            sequence: self.sequence,
            run,
        });
    }

    /// Records that `run` is no longer pending (claimed, canceled, expired).
    pub fn remove(&mut self, task_queue_id: &str, run: PendingRun) {
        if let Some(queue) = self.queues.get_mut(task_queue_id) {
            queue.pending.remove(&run);
        }
    }

    /// The next run to offer a worker of `task_queue_id`, skipping hints of runs no longer
    /// pending. The run stays counted as pending until `remove`.
    pub fn pop(&mut self, task_queue_id: &str) -> Option<Hint> {
        let queue = self.queues.get_mut(task_queue_id)?;
        while let Some(entry) = queue.heap.pop() {
            if queue.pending.contains(&entry.run) {
                return Some(Hint {
                    run: entry.run,
                    place: (entry.rank, entry.sequence),
                });
            }
        }
        None
    }

    /// Puts back a hint nobody tried to claim, in its old place.
    pub fn restore(&mut self, task_queue_id: &str, hint: Hint) {
        if let Some(queue) = self.queues.get_mut(task_queue_id)
            && queue.pending.contains(&hint.run)
        {
            let (rank, sequence) = hint.place;
            queue.heap.push(Entry {
                rank,
                sequence,
                run: hint.run,
            });
        }
    }

    /// Forgets every run for which `forget` holds (the runs of a partition handed to another
    /// node); their hints are skipped from now on. Returns the queues that changed, each with
    /// its count before.
    pub fn forget_where(&mut self, forget: impl Fn(&PendingRun) -> bool) -> Vec<(String, usize)> {
        let mut changed = Vec::new();
        for (task_queue_id, queue) in &mut self.queues {
            let before = queue.pending.len();
            queue.pending.retain(|run| !forget(run));
            if queue.pending.len() != before {
                changed.push((task_queue_id.clone(), before));
            }
        }
        changed
    }

    /// Runs pending in `task_queue_id` (0 for a queue never seen).
    pub fn count(&self, task_queue_id: &str) -> usize {
        self.queues
            .get(task_queue_id)
            .map_or(0, |queue| queue.pending.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(byte: u8) -> PendingRun {
        PendingRun {
            task_id: Slugid::from_random_bytes([byte; 16]),
            run_id: 0,
        }
    }

    #[test]
    fn priority_first_then_age() {
        let mut queues = PendingQueues::default();
        queues.push("p/w", run(1), Priority::Lowest);
        queues.push("p/w", run(2), Priority::High);
        queues.push("p/w", run(3), Priority::Lowest);
        queues.push("p/w", run(4), Priority::High);
        queues.push("other/w", run(5), Priority::Highest);
        let order: Vec<PendingRun> = std::iter::from_fn(|| queues.pop("p/w"))
            .map(|hint| hint.run)
            .collect();
        assert_eq!(order, vec![run(2), run(4), run(1), run(3)]);
        assert_eq!(
            queues.count("p/w"),
            4,
            "popped runs stay pending until removed"
        );
        assert_eq!(queues.pop("nobody/w"), None);
    }

    #[test]
    fn removed_runs_are_skipped_and_reprioritized_runs_move_up() {
        let mut queues = PendingQueues::default();
        queues.push("p/w", run(1), Priority::Lowest);
        queues.push("p/w", run(2), Priority::Lowest);
        queues.push("p/w", run(3), Priority::Lowest);
        queues.remove("p/w", run(1));
        queues.push("p/w", run(3), Priority::VeryHigh);
        assert_eq!(queues.count("p/w"), 2);
        assert_eq!(queues.pop("p/w").map(|hint| hint.run), Some(run(3)));
        let second = queues.pop("p/w").unwrap();
        assert_eq!(second.run, run(2));
        // An unused hint goes back where it was, ahead of the stale one of run 3.
        queues.restore("p/w", second);
        assert_eq!(queues.pop("p/w").map(|hint| hint.run), Some(run(2)));
        // The stale low-priority hint of run 3 is still offered until run 3 is removed.
        queues.remove("p/w", run(3));
        assert_eq!(queues.pop("p/w"), None);
    }
}
