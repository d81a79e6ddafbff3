//! A command's path through the shard: bring what it decides on into memory, decide, apply
//! to the state, hand the events to the log as one append, and reply once they are durable.

use super::*;

impl TaskShard {
    /// Decides and applies `command` (after `join`, the group decision of a task being
    /// created whose group lives in this partition too), hands the events to the log, and
    /// returns what the reply waits for.
    pub(super) fn run(
        &mut self,
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
        client_id: Option<String>,
    ) -> Reply<Task> {
        let now = self.now();
        if let Err(error) = self.fault_in(task_id, &command, join.is_some()) {
            return futures::future::ready(Err(error)).boxed();
        }
        let defines = matches!(command, Command::Define { .. });
        let expiring = match command {
            Command::Expire => self.state.entities.tasks.get(&task_id).cloned(),
            _ => None,
        };
        let decided = self.decide_joined(task_id, command, join, now);
        let was_resolved = self.task(task_id).map(resolution);
        let committed = decided.and_then(|events| {
            let changed = !events.is_empty();
            self.commit(now, client_id, events)?;
            match expiring {
                Some(task) if self.task(task_id).is_none() => self.forget(&task),
                _ if changed => {
                    self.announce(task_id, defines);
                    self.tell_group_tracker(task_id, was_resolved);
                }
                _ => {}
            }
            Ok(())
        });
        if let Err(error) = committed {
            return futures::future::ready(Err(error)).boxed();
        }
        let task = self.task(task_id).cloned();
        self.reply(task, move || {
            ApiError::not_found(format!("task `{task_id}` not found"))
        })
    }

    /// Brings what a command decides on into memory.
    pub(super) fn fault_in(
        &mut self,
        task_id: Slugid,
        command: &Command,
        joins: bool,
    ) -> Result<(), ApiError> {
        self.state.fault_task(task_id).map_err(store_failed)?;
        if let (true, Command::Define { definition, .. }) = (joins, command) {
            self.state
                .fault_group(definition.task_group_id)
                .map_err(store_failed)?;
        }
        Ok(())
    }

    /// Tells the group tracker when the task joined its group (`was`: it did not exist),
    /// resolved, or became unresolved again (a rerun).
    pub(super) fn tell_group_tracker(&self, task_id: Slugid, was: Option<Option<Timestamp>>) {
        let Some(task) = self.task(task_id) else {
            return;
        };
        let now = resolution(task);
        if was.is_some_and(|was| was.is_some() == now.is_some()) {
            return;
        }
        self.context.groups.do_send(group_tracker::Changed {
            partition: self.partition,
            group: task.definition.task_group_id,
            resolved: now,
        });
    }

    /// The events of a task command, each with its key, preceded by the events of the group
    /// join `join` when it is given; either decision's error is the answer.
    pub(super) fn decide_joined(
        &self,
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
        now: Timestamp,
    ) -> Result<Vec<(String, Event)>, ApiError> {
        let mut events = Vec::new();
        if let (Some(join), Command::Define { definition, .. }) = (join, &command) {
            let group_id = definition.task_group_id;
            let group_events = group::decide(group_id, self.group(group_id), join)?;
            let key = group_id.to_string();
            events.extend(group_events.into_iter().map(|event| (key.clone(), event)));
        }
        let task_events = task::decide(
            task_id,
            self.task(task_id),
            command,
            now,
            &self.context.task_settings,
        )?;
        let key = task_id.to_string();
        events.extend(task_events.into_iter().map(|event| (key.clone(), event)));
        Ok(events)
    }

    /// Applies `events`, caused by `client_id`, to the state and hands them to the log as one
    /// append; the barrier then stands for them.
    pub(super) fn commit(
        &mut self,
        now: Timestamp,
        client_id: Option<String>,
        events: Vec<(String, Event)>,
    ) -> Result<(), ApiError> {
        // After a failed append the state may hold events the log does not.
        if self.context.health.is_failed() {
            return Err(restart_required());
        }
        if let Some(loss) = self.lost.borrow().as_ref() {
            return Err(moved(self.partition, &loss.to_string()));
        }
        if events.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(events.len());
        let mut applied = Vec::with_capacity(events.len());
        for ((key, event), offset) in events.into_iter().zip(self.next_offset..) {
            let envelope = Envelope {
                key,
                at: now,
                client_id: client_id.clone(),
                event,
            };
            let payload = codec::encode(&envelope).map_err(internal)?;
            let before = exchanges::Before::capture(&self.state.entities, &envelope);
            self.state.apply(offset, &envelope);
            let task = Metrics::task_key(&envelope).and_then(|task_id| self.task(task_id));
            METRICS.applied(&envelope, task);
            entries.push(Entry {
                key: envelope.key.clone(),
                payload,
            });
            applied.push((envelope, before));
        }
        // Messages show the state after the whole commit, as Taskcluster publishes them.
        let messages: Vec<Message> = applied
            .iter()
            .zip(self.next_offset..)
            .flat_map(|((envelope, before), offset)| {
                exchanges::derive(
                    self.partition,
                    offset,
                    envelope,
                    *before,
                    &self.state.entities,
                )
            })
            .collect();
        let count = entries.len() as u64;
        let appending = self.context.log.append(self.partition, entries);
        let appended = Instant::now();
        let failed = self.failure_handler();
        let expected = self.next_offset..self.next_offset + count;
        let partition = self.partition;
        // Appends to one partition become durable in order (see `EventLog::append`), so the
        // newest append stands for all before it.
        let barrier: Barrier = async move {
            let durable = appending.await.and_then(|offsets| {
                // The state applied the events at the offsets this shard expects as the
                // partition's one writer; anything else means it is not.
                if offsets.iter().copied().eq(expected.clone()) {
                    Ok(())
                } else {
                    Err(crate::log::Error::OffsetsMoved {
                        partition,
                        expected: expected.start,
                        found: offsets.first().copied(),
                    })
                }
            });
            METRICS
                .log_append_seconds
                .observe(appended.elapsed().as_secs_f64());
            durable.map_err(&failed)
        }
        .boxed()
        .shared();
        // Exchange topics and the AMQP broker checkpoint by log offset, so they hear of every
        // commit.
        if (!messages.is_empty() || self.context.checkpoints_by_offset())
            && let Some(outbox) = &self.outbox
        {
            let durable = barrier.clone().map(|appended| appended.is_ok()).boxed();
            // The receiver lives as long as the shard's arbiter.
            let _ = outbox.send(Outgoing {
                durable,
                end: self.next_offset + count,
                messages,
            });
        }
        self.barrier = Some(barrier);
        self.next_offset += count;
        self.events_since_flush += count;
        self.batch_open = true;
        Ok(())
    }

    /// What a failed append or batch end does: another writer taking the partition loses it
    /// for this shard alone; any other failure fails the log for the whole process.
    pub(super) fn failure_handler(
        &self,
    ) -> impl Fn(crate::log::Error) -> String + Send + Sync + 'static {
        let health = self.context.health.clone();
        let lost = self.lost.clone();
        move |error| {
            let reason = error.to_string();
            let loss = match error {
                crate::log::Error::Fenced { .. } => Some(Loss::Fenced(reason.clone())),
                crate::log::Error::OffsetsMoved { .. } | crate::log::Error::Kafka { .. } => {
                    Some(Loss::Resync(reason.clone()))
                }
                _ => None,
            };
            match loss {
                Some(loss) => {
                    lost.send_if_modified(|lost| lost.replace(loss).is_none());
                }
                None => health.fail(&reason),
            }
            reason
        }
    }

    /// Ends the log's open batch of this partition, if anything was appended since the last
    /// end; the end takes the offsets the log says.
    pub(super) fn end_batch(&mut self) {
        if !self.batch_open || self.context.health.is_failed() || self.lost.borrow().is_some() {
            return;
        }
        self.batch_open = false;
        let (taken, ending) = self.context.log.end_batch(self.partition);
        self.next_offset += taken;
        let failed = self.failure_handler();
        let ended = async move { ending.await.map_err(&failed) }
            .boxed()
            .shared();
        actix::spawn(ended.clone().map(drop));
        if taken > 0
            && self.context.checkpoints_by_offset()
            && let Some(outbox) = &self.outbox
        {
            // Publishers checkpoint by log offset: the offsets of the end count too.
            let _ = outbox.send(Outgoing {
                durable: ended.map(|ended| ended.is_ok()).boxed(),
                end: self.next_offset,
                messages: Vec::new(),
            });
        }
    }

    /// `value` once everything appended so far is durable (so a reply never shows state a
    /// crash could lose); an error if an append failed.
    pub(super) fn when_durable<T: Send + 'static>(&self, value: T) -> Reply<T> {
        let barrier = self.barrier.clone();
        let health = self.context.health.clone();
        async move {
            if let Some(barrier) = barrier {
                barrier.await.map_err(|_| restart_required())?;
            }
            // Another shard's failed append counts too: the process is about to restart.
            if health.is_failed() {
                return Err(restart_required());
            }
            Ok(value)
        }
        .boxed()
    }

    /// A reply of `value` once it is durable; `missing` is the error when there is no value.
    pub(super) fn reply<T: Send + 'static>(
        &self,
        value: Option<T>,
        missing: impl FnOnce() -> ApiError + Send + 'static,
    ) -> Reply<T> {
        self.when_durable(value)
            .map(|durable| durable.and_then(|value| value.ok_or_else(missing)))
            .boxed()
    }
}
