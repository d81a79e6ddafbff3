//! What the shard does besides commands: writing its changes to the store (flushes), the
//! store's expiry index (tasks, groups and blobs past `expires`), the timers of live tasks,
//! and the log's retention.

use super::*;
use crate::blobs::BlobId;

impl TaskShard {
    /// After a command: a flush if enough events wait for one, and the timer wake-up moved if
    /// the command set an earlier timer.
    pub(super) fn after_command(&mut self, context: &mut Context<Self>) {
        if self.events_since_flush >= self.context.flush_every_events {
            self.flush(context);
        }
        self.rearm(context);
    }

    /// Writes the changes since the last flush to the store, once every event they reflect
    /// is durable (and, with exchange topics or an AMQP broker, delivered). One flush at a
    /// time: while one is being written, this returns it.
    pub(super) fn flush(&mut self, context: &mut Context<Self>) {
        if self.flushing.is_some() || self.events_since_flush == 0 && !self.state.has_changes() {
            return;
        }
        self.events_since_flush = 0;
        let offset = self.next_offset;
        let taken = self.state.take(offset);
        let flush = taken.flush.clone();
        self.in_flight = Some(taken);
        let barrier = self.barrier.clone();
        let mut exchange_progress = self.exchange_progress.clone();
        let store = self.state.store.clone();
        let health = self.context.health.clone();
        let partition = self.partition;
        let clock = self.context.clock;
        let write: Shared<BoxFuture<'static, bool>> = async move {
            // The store stands for every event before `offset`: write only once they are all
            // durable, and their exchange messages delivered (a restart re-derives messages
            // only from the store's offset on).
            if let Some(barrier) = barrier
                && barrier.await.is_err()
            {
                return false;
            }
            for progress in &mut exchange_progress {
                if progress
                    .wait_for(|delivered| *delivered >= offset)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            let started = Instant::now();
            let settled_before = PartitionState::settled_before(clock.now());
            let written =
                tokio::task::spawn_blocking(move || store.write(&flush, Some(settled_before)))
                    .await
                    .map_err(|error| store::Error::Damaged(error.to_string()))
                    .and_then(|written| written);
            match written {
                Ok(()) => {
                    METRICS
                        .store_flush_seconds
                        .observe(started.elapsed().as_secs_f64());
                    true
                }
                Err(error) => {
                    tracing::error!(partition, %error, "cannot write to the partition store");
                    health.fail(&format!("the partition store failed: {error}"));
                    false
                }
            }
        }
        .boxed()
        .shared();
        let flushing = write.clone().map(drop).boxed().shared();
        self.flushing = Some(flushing);
        context.spawn(write.into_actor(self).map(|written, shard, context| {
            shard.flushing = None;
            let Some(taken) = shard.in_flight.take() else {
                return;
            };
            if !written {
                return;
            }
            for expiry in &taken.flush.expired {
                shard.expiring.remove(expiry);
            }
            shard.state.flushed(taken);
            let (tasks, _) = shard.state.resident();
            METRICS
                .store_resident_tasks
                .with_label_values(&[&shard.partition.to_string()])
                .set(tasks as i64);
            if shard.events_since_flush >= shard.context.flush_every_events {
                shard.flush(context);
            }
        }));
    }

    /// The flush being written (at once if there is none).
    pub(super) fn flushed(&self) -> Shared<BoxFuture<'static, ()>> {
        self.flushing
            .clone()
            .unwrap_or_else(|| futures::future::ready(()).boxed().shared())
    }

    /// Every second: flushes what changed, and handles due expiries; now and then, deletes
    /// the log the store no longer needs.
    pub(super) fn housekeeping(&mut self, context: &mut Context<Self>) {
        if self.context.health.is_failed() {
            return;
        }
        self.expire_due(context);
        self.end_batch();
        self.flush(context);
        self.rounds += 1;
        if self.rounds.is_multiple_of(RETENTION_ROUNDS) {
            self.apply_retention();
        }
    }

    /// Deletes log segments below the store's offset older than `[log] retention_hours`,
    /// after syncing the store, so that what the log no longer holds is on disk there.
    pub(super) fn apply_retention(&mut self) {
        let Some(retention) = self.context.log_retention else {
            return;
        };
        if self.retaining {
            return;
        }
        self.retaining = true;
        let store = self.state.store.clone();
        let log = self.context.log.clone();
        let partition = self.partition;
        let older_than = std::time::SystemTime::now() - retention;
        let done = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let offset = store.offset().map_err(|error| error.to_string())?;
            store.sync().map_err(|error| error.to_string())?;
            log.delete_before(partition, offset, older_than)
                .map_err(|error| error.to_string())
        });
        let finished = async move {
            match done.await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(partition, %error, "cannot apply the log's retention")
                }
                Err(error) => tracing::warn!(partition, %error, "log retention failed"),
            }
        };
        let shard = self.self_address.clone();
        actix::spawn(async move {
            finished.await;
            if let Some(shard) = shard {
                shard.do_send(RetentionDone);
            }
        });
    }

    /// Takes an expired task out of the lists, the timers and the resolver, and deletes its
    /// blobs once its expiry is durable (a crash before that leaves the files, never a task
    /// without them).
    pub(super) fn forget(&mut self, task: &Task) {
        self.indexes.removed(task);
        self.timers.clear(task.task_id);
        self.context
            .resolver
            .do_send(dependencies::Forget(task.task_id));
        let (blobs, task_id) = (self.context.blobs.clone(), task.task_id);
        let durable = self.when_durable(());
        actix::spawn(async move {
            if durable.await.is_err() {
                return;
            }
            if let Err(error) = blobs.delete_task(task_id).await {
                tracing::warn!(%task_id, %error, "could not delete an expired task's blobs");
            }
        });
    }

    /// Forgets the group if it is past its expiry (a later task may have moved it: then a
    /// later expiry entry is there too).
    pub(super) fn expire_group(&mut self, task_group_id: Slugid, now: Timestamp) {
        if let Err(error) = self.state.fault_group(task_group_id) {
            tracing::warn!(%task_group_id, %error, "cannot read a task group to expire it");
            return;
        }
        let expired = group::decide(
            task_group_id,
            self.group(task_group_id),
            GroupCommand::Expire { now },
        );
        if let Ok(events) = expired
            && !events.is_empty()
        {
            let key = task_group_id.to_string();
            let events = events.into_iter().map(|event| (key.clone(), event));
            // A failed append marks the log failed; there is no caller to tell.
            let _ = self.commit(now, None, events.collect());
        }
    }

    /// Handles the store's expiry entries due now: tasks and groups past `expires` are
    /// forgotten, blobs of expired `s3` artifacts deleted. Each entry is removed by the next
    /// flush, after what it caused is durable.
    pub(super) fn expire_due(&mut self, context: &mut Context<Self>) {
        let now = self.now();
        let due = match self
            .state
            .store
            .due(now, None, EXPIRIES_PER_ROUND + self.expiring.len())
        {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(partition = self.partition, %error, "cannot read due expiries");
                return;
            }
        };
        let mut blobs = Vec::new();
        for expiry in due {
            if self.expiring.contains(&expiry) {
                continue;
            }
            match &expiry.what {
                Expiring::Task(task_id) => {
                    let reply = self.run(*task_id, Command::Expire, None, None);
                    // Timer commands have no caller; an error (a raced state) is harmless.
                    context.spawn(reply.map(|_| ()).into_actor(self));
                }
                Expiring::Group(task_group_id) => self.expire_group(*task_group_id, now),
                Expiring::Document(kind, name) => {
                    let reply = self.run_document(*kind, name, DocumentCommand::Expire, None);
                    context.spawn(reply.map(|_| ()).into_actor(self));
                }
                Expiring::Namespace(parent, name) => {
                    self.state.sweep_namespace(parent, name, now);
                }
                Expiring::Blob(task_id, run_id, name) => {
                    let expired =
                        self.state
                            .read_task(*task_id)
                            .ok()
                            .flatten()
                            .is_some_and(|task| {
                                task.artifacts.get(&(*run_id, name.clone())).is_some_and(
                                    |artifact| {
                                        matches!(artifact.storage, Storage::S3 { .. })
                                            && artifact.expires <= now
                                    },
                                )
                            });
                    if expired {
                        blobs.push(BlobId {
                            task_id: *task_id,
                            run_id: *run_id,
                            name: name.clone(),
                        });
                    }
                }
            }
            self.expiring.insert(expiry.clone());
            self.state.expiry_handled(expiry);
        }
        if !blobs.is_empty() {
            let store = self.context.blobs.clone();
            actix::spawn(async move {
                for blob in blobs {
                    if let Err(error) = store.delete(&blob).await {
                        tracing::warn!(%error, "could not delete an expired blob");
                    }
                }
            });
        }
    }

    /// Runs the timers due now, then sleeps until the next one.
    pub(super) fn fire_due_timers(&mut self, context: &mut Context<Self>) {
        self.wake = None;
        let now = self.now();
        for (task_id, timer) in self.timers.take_due(now) {
            let command = match timer {
                Timer::ClaimExpiry {
                    run_id,
                    taken_until,
                } => Command::ExpireClaim {
                    run_id,
                    taken_until,
                },
                Timer::Deadline => Command::ExceedDeadline,
            };
            let reply = self.run(task_id, command, None, None);
            // Timer commands have no caller; an error (a raced state) is expected and harmless.
            context.spawn(reply.map(|_| ()).into_actor(self));
        }
        self.after_command(context);
    }

    /// Makes sure the shard wakes when the next timer is due.
    pub(super) fn rearm(&mut self, context: &mut Context<Self>) {
        let Some(next) = self.timers.next() else {
            return;
        };
        if let Some((at, handle)) = self.wake {
            if at <= next {
                return;
            }
            context.cancel_future(handle);
        }
        let wait = (next.millis() - self.now().millis()).max(0) as u64;
        // A millisecond late: the timer's instant has passed when it fires.
        let handle = context.run_later(Duration::from_millis(wait + 1), |shard, context| {
            shard.fire_due_timers(context)
        });
        self.wake = Some((next, handle));
    }
}
