//! The dispatcher: the pending queues of every task queue, and the claimWork calls parked
//! until work arrives. Shards tell it, as they apply events, which runs became pending and
//! which stopped being pending; a parked caller is handed hints the moment one arrives. No
//! polling anywhere.

use std::collections::{HashMap, VecDeque};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::pending::{Hint, PendingQueues, PendingRun};
use crate::metrics::METRICS;
use crate::model::Priority;

#[derive(Default)]
pub struct Dispatcher {
    queues: PendingQueues,
    /// Parked claimWork calls per task queue, oldest first.
    waiters: HashMap<String, VecDeque<Waiter>>,
    /// Calls waiting until a task queue has pending work, without taking any (claimWork of
    /// other nodes, which claim only once they know where the work is).
    watchers: HashMap<String, Vec<oneshot::Sender<()>>>,
}

struct Waiter {
    wanted: usize,
    reply: oneshot::Sender<Vec<Hint>>,
}

impl Actor for Dispatcher {
    type Context = Context<Self>;
}

impl Dispatcher {
    fn take(&mut self, task_queue_id: &str, wanted: usize) -> Vec<Hint> {
        std::iter::from_fn(|| self.queues.pop(task_queue_id))
            .take(wanted)
            .collect()
    }

    /// `before`: the queue's count before the change.
    fn count_changed(&self, task_queue_id: &str, before: usize) {
        METRICS.pending_changed(task_queue_id, before, self.queues.count(task_queue_id));
    }

    /// Hands queued hints to parked callers, oldest first, and tells the watchers.
    fn serve_waiters(&mut self, task_queue_id: &str) {
        self.serve_local_waiters(task_queue_id);
        // One watcher per call (a run became pending, or hints came back): waking them all
        // would send every other node's waiting claimWork after the same run.
        if self.queues.count(task_queue_id) > 0
            && let Some(watchers) = self.watchers.get_mut(task_queue_id)
        {
            while !watchers.is_empty() {
                if watchers.remove(0).send(()).is_ok() {
                    break;
                }
            }
            if watchers.is_empty() {
                self.watchers.remove(task_queue_id);
            }
        }
    }

    /// Hands queued hints to this node's parked callers, oldest first.
    fn serve_local_waiters(&mut self, task_queue_id: &str) {
        while let Some(waiter) = self
            .waiters
            .get_mut(task_queue_id)
            .and_then(|waiters| waiters.pop_front())
        {
            // A caller that gave up is skipped before any hint is taken for it.
            if waiter.reply.is_closed() {
                continue;
            }
            let hints = self.take(task_queue_id, waiter.wanted);
            if hints.is_empty() {
                self.waiters
                    .entry(task_queue_id.to_owned())
                    .or_default()
                    .push_front(waiter);
                return;
            }
            // The caller tries to claim them (a hint whose claim fails was stale anyway). One
            // that went away just now gets nothing: its hints go back.
            if let Err(hints) = waiter.reply.send(hints) {
                for hint in hints {
                    self.queues.restore(task_queue_id, hint);
                }
            }
        }
    }
}

/// `run` of a task in `task_queue_id` is pending (new, or its priority changed).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pending {
    pub task_queue_id: String,
    pub run: PendingRun,
    pub priority: Priority,
}

impl Handler<Pending> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: Pending, _: &mut Context<Self>) {
        let before = self.queues.count(&message.task_queue_id);
        self.queues
            .push(&message.task_queue_id, message.run, message.priority);
        self.serve_waiters(&message.task_queue_id);
        self.count_changed(&message.task_queue_id, before);
    }
}

/// `run` is no longer pending.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NotPending {
    pub task_queue_id: String,
    pub run: PendingRun,
}

impl Handler<NotPending> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: NotPending, _: &mut Context<Self>) {
        let before = self.queues.count(&message.task_queue_id);
        self.queues.remove(&message.task_queue_id, message.run);
        self.count_changed(&message.task_queue_id, before);
    }
}

/// Up to `wanted` hints now, or, when there are none, a receiver that gets them as soon as
/// they arrive.
#[derive(Message)]
#[rtype(result = "Take")]
pub struct TakeOrPark {
    pub task_queue_id: String,
    pub wanted: usize,
}

#[derive(MessageResponse)]
pub enum Take {
    Hints(Vec<Hint>),
    Parked(oneshot::Receiver<Vec<Hint>>),
}

impl Handler<TakeOrPark> for Dispatcher {
    type Result = Take;

    fn handle(&mut self, message: TakeOrPark, _: &mut Context<Self>) -> Take {
        let hints = self.take(&message.task_queue_id, message.wanted);
        if !hints.is_empty() {
            return Take::Hints(hints);
        }
        let (reply, receiver) = oneshot::channel();
        let waiters = self.waiters.entry(message.task_queue_id).or_default();
        waiters.retain(|waiter| !waiter.reply.is_closed());
        waiters.push_back(Waiter {
            wanted: message.wanted,
            reply,
        });
        Take::Parked(receiver)
    }
}

/// How many runs are pending in a task queue.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct CountPending {
    pub task_queue_id: String,
}

impl Handler<CountPending> for Dispatcher {
    type Result = u64;

    fn handle(&mut self, message: CountPending, _: &mut Context<Self>) -> u64 {
        self.queues.count(&message.task_queue_id) as u64
    }
}

/// Hints a caller took but will not try to claim (it gave up waiting just as they arrived).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restore {
    pub task_queue_id: String,
    pub hints: Vec<Hint>,
}

impl Handler<Restore> for Dispatcher {
    type Result = ();

    fn handle(&mut self, message: Restore, _: &mut Context<Self>) {
        for hint in message.hints {
            self.queues.restore(&message.task_queue_id, hint);
        }
        self.serve_waiters(&message.task_queue_id);
    }
}

/// The runs of tasks for which `forget` holds are no longer this dispatcher's to hand out: their
/// partition moved to another node.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget(pub Box<dyn Fn(&PendingRun) -> bool + Send>);

impl Handler<Forget> for Dispatcher {
    type Result = ();

    fn handle(&mut self, Forget(forget): Forget, _: &mut Context<Self>) {
        for (task_queue_id, before) in self.queues.forget_where(forget) {
            self.count_changed(&task_queue_id, before);
        }
    }
}

/// Resolves once `task_queue_id` has pending work (at once if it has), taking none.
#[derive(Message)]
#[rtype(result = "oneshot::Receiver<()>")]
pub struct AwaitPending {
    pub task_queue_id: String,
}

impl Handler<AwaitPending> for Dispatcher {
    type Result = MessageResult<AwaitPending>;

    fn handle(&mut self, message: AwaitPending, _: &mut Context<Self>) -> Self::Result {
        let (notify, notified) = oneshot::channel();
        if self.queues.count(&message.task_queue_id) > 0 {
            let _ = notify.send(());
        } else {
            let watchers = self.watchers.entry(message.task_queue_id).or_default();
            watchers.retain(|watcher| !watcher.is_closed());
            watchers.push(notify);
        }
        MessageResult(notified)
    }
}
