//! A shard's start: open the partition store and replay the log after the store's offset. A
//! store that is missing, of another layout or damaged is made again from the whole log, and
//! said so. While replaying, changes go to the store every `flush_every_events` events, so a
//! rebuild needs no more memory than serving does.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::watch;

use super::state::PartitionState;
use super::{Indexes, ShardContext, TaskShard, Timers};
use crate::engine::store::{Found, PartitionStore};
use crate::log::{Offset, codec};
use crate::model::Envelope;
use crate::projections::exchanges::{self, Message};

impl TaskShard {
    /// Opens the partition's store and replays the log after it. Blocking.
    pub fn replay(partition: u32, context: ShardContext) -> Result<Self, crate::log::Error> {
        let log_end = context.log.high_watermark(partition)?;
        let (store, found) = PartitionStore::open(
            &context.data_dir,
            partition,
            context.store_cache_bytes,
            log_end,
        )
        .map_err(store_error)?;
        let start = match found {
            Found::At(offset) => offset,
            Found::Missing => {
                if log_end > 0 {
                    tracing::warn!(
                        partition,
                        log_end,
                        "no partition store: building it from the log"
                    );
                }
                0
            }
            Found::Rebuilt(reason) => {
                tracing::warn!(
                    partition,
                    %reason,
                    "the partition store cannot serve: rebuilding it from the log"
                );
                0
            }
        };
        let mut state = PartitionState::new(partition, store).map_err(store_error)?;
        let recovery = match &context.exchange_topics {
            Some(topics) => Some(topics.recover(partition, start)?),
            None => None,
        };
        let pulse_cursor = match &context.pulse {
            Some(exchanges) => Some(exchanges.recover(partition, start, log_end)?),
            None => None,
        };
        // Messages are re-derived from where the publisher furthest behind stands.
        let resume_from = [
            recovery.as_ref().map(|recovery| recovery.checkpoint.offset),
            pulse_cursor,
        ]
        .into_iter()
        .flatten()
        .min();
        let mut rederiving = resume_from.map(|from| Rederiving {
            partition,
            from,
            run: Vec::new(),
            messages: Vec::new(),
        });
        // Flushes while replaying may not pass it: the messages of events after it are
        // re-derived only from the store's offset on.
        let flush_limit = resume_from.unwrap_or(Offset::MAX);
        let every = context.flush_every_events;
        let mut since_flush = 0;
        let read = context.log.read(partition, start, &mut |offset, payload| {
            let envelope = codec::decode::<Envelope>(payload)?;
            state.fault_for(&envelope).map_err(store_error)?;
            match &mut rederiving {
                Some(rederiving) if offset >= rederiving.from => {
                    rederiving.apply(&mut state, offset, envelope)
                }
                _ => state.apply(offset, &envelope),
            }
            since_flush += 1;
            if since_flush >= every && offset < flush_limit {
                since_flush = 0;
                flush_now(&mut state, offset + 1, &context)?;
            }
            Ok(())
        });
        let end = match read {
            Err(crate::log::Error::OffsetOutOfRange { start: kept, .. }) if kept > start => {
                return Err(crate::log::Error::Config(format!(
                    "partition {partition}: the state must be replayed from offset {start}, but \
                     the log's retention deleted the records before {kept}; restore the \
                     partition store from a backup (or start on an empty data directory)"
                )));
            }
            read => read?,
        };
        if let Some(rederiving) = &mut rederiving {
            rederiving.finish_run(&state);
        }
        if end <= flush_limit {
            flush_now(&mut state, end, &context)?;
        }
        let rederived = rederiving.map_or_else(Vec::new, |rederiving| rederiving.messages);
        let pulse_recovered = pulse_cursor.map(|cursor| {
            let messages: Vec<Message> = rederived
                .iter()
                .filter(|message| message.id.offset >= cursor)
                .cloned()
                .collect();
            tracing::info!(
                partition,
                from = cursor,
                republished = messages.len(),
                "AMQP messages to publish again"
            );
            (cursor, messages)
        });
        let recovered = recovery.map(|recovery| {
            let messages: Vec<Message> = rederived
                .into_iter()
                .filter(|message| {
                    message.id.offset >= recovery.checkpoint.offset
                        && !recovery.delivered.contains(&message.id)
                })
                .collect();
            tracing::info!(
                partition,
                republished = messages.len(),
                "exchange messages to publish again"
            );
            (recovery.checkpoint, messages)
        });
        tracing::info!(
            partition,
            store = start,
            end,
            live = state.entities.tasks.len(),
            "replayed"
        );
        Ok(TaskShard {
            partition,
            context,
            state,
            indexes: Indexes::default(),
            barrier: None,
            next_offset: end,
            events_since_flush: 0,
            flushing: None,
            in_flight: None,
            timers: Timers::default(),
            wake: None,
            expiring: HashSet::new(),
            rounds: 0,
            retaining: false,
            self_address: None,
            outbox: None,
            recovered,
            pulse_recovered,
            exchange_progress: Vec::new(),
            batch_open: false,
            lost: Arc::new(watch::Sender::new(None)),
        })
    }
}

/// Writes what the replay changed so far (those events are in the log already).
fn flush_now(
    state: &mut PartitionState,
    offset: Offset,
    context: &ShardContext,
) -> Result<(), crate::log::Error> {
    let taken = state.take(offset);
    let settled_before = PartitionState::settled_before(context.clock.now());
    state
        .store
        .write(&taken.flush, Some(settled_before))
        .map_err(store_error)?;
    state.flushed(taken);
    Ok(())
}

fn store_error(error: impl std::fmt::Display) -> crate::log::Error {
    crate::log::Error::Config(error.to_string())
}

/// Re-deriving exchange messages during a replay, from the checkpoint on. A commit's messages
/// show the state after the whole commit; a replay cannot see commits, so it takes each run of
/// consecutive events with the same key and instant for one (the events of one commit share
/// both).
struct Rederiving {
    partition: u32,
    from: Offset,
    run: Vec<(Offset, Envelope, exchanges::Before)>,
    messages: Vec<Message>,
}

impl Rederiving {
    fn apply(&mut self, state: &mut PartitionState, offset: Offset, envelope: Envelope) {
        if self
            .run
            .last()
            .is_some_and(|(_, last, _)| last.key != envelope.key || last.at != envelope.at)
        {
            self.finish_run(state);
        }
        let before = exchanges::Before::capture(&state.entities, &envelope);
        state.apply(offset, &envelope);
        self.run.push((offset, envelope, before));
    }

    fn finish_run(&mut self, state: &PartitionState) {
        for (offset, envelope, before) in self.run.drain(..) {
            self.messages.extend(exchanges::derive(
                self.partition,
                offset,
                &envelope,
                before,
                &state.entities,
            ));
        }
    }
}
