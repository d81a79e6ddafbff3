//! A shard's outbox: the exchange messages of its commits, published in log order once their
//! events are durable — to this server's listeners; with the Kafka backend to the exchange
//! topics, whose delivered prefix it checkpoints (see `projections::kafka`); and to the
//! partition's AMQP publisher, which keeps its own (see `projections::pulse`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::log::Offset;
use crate::metrics::METRICS;
use crate::model::exchange::MessageId;
use crate::projections::bus::Bus;
use crate::projections::exchanges::Message;
use crate::projections::kafka::{Checkpoint, ExchangeTopics};
use crate::projections::pulse::Committed;

/// How often a moved checkpoint is written.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// Most messages handed to the producer and not yet acknowledged; past it, new commits wait.
const MAX_IN_FLIGHT: usize = 100_000;

/// The messages of one commit.
pub struct Outgoing {
    /// Resolves once the commit's events are durable; `false` if the append failed.
    pub durable: BoxFuture<'static, bool>,
    /// The log offset after the commit's last event.
    pub end: Offset,
    pub messages: Vec<Message>,
}

/// Where the messages go besides the bus.
pub struct KafkaSink {
    pub topics: Arc<ExchangeTopics>,
    pub checkpoint: Checkpoint,
    /// Tells the shard how far the written checkpoint is (snapshots must not pass it).
    pub progress: watch::Sender<Offset>,
}

struct Delivered {
    id: MessageId,
    topic: String,
    /// Whether this is the last message of its event.
    last_of_event: bool,
    /// The topic offset it was delivered at, or why not.
    result: Result<Offset, String>,
}

/// `pulse`: the partition's AMQP publisher, handed every durable commit (it keeps its place
/// by log offset).
pub async fn forward(
    partition: u32,
    mut outbox: mpsc::UnboundedReceiver<Outgoing>,
    bus: Option<Arc<Bus>>,
    kafka: Option<KafkaSink>,
    pulse: Option<mpsc::UnboundedSender<Committed>>,
) {
    // The publisher lives as long as the shard; if it is gone, the shard is stopping.
    let to_pulse = |end: Offset, messages: &[Message]| {
        if let Some(pulse) = &pulse {
            let _ = pulse.send(Committed {
                end,
                messages: messages.to_vec(),
            });
        }
    };
    let Some(mut kafka) = kafka else {
        let mut next = outbox.recv().await;
        while let Some(outgoing) = next.take() {
            if !outgoing.durable.await {
                return;
            }
            let mut end = outgoing.end;
            let mut messages = outgoing.messages;
            // Whatever else is durable already goes out with it: listeners wake once per
            // publication, and one group commit makes many commits durable at once.
            while let Ok(mut outgoing) = outbox.try_recv() {
                match (&mut outgoing.durable).now_or_never() {
                    Some(true) => {
                        end = outgoing.end;
                        messages.extend(outgoing.messages);
                    }
                    Some(false) => return,
                    None => {
                        next = Some(outgoing);
                        break;
                    }
                }
            }
            to_pulse(end, &messages);
            if let Some(bus) = &bus {
                bus.publish(messages);
            }
            if next.is_none() {
                next = outbox.recv().await;
            }
        }
        return;
    };
    let lag = METRICS
        .kafka_consumer_lag
        .with_label_values(&[partition.to_string().as_str()]);
    let mut in_flight = FuturesOrdered::new();
    // Topic offsets of messages of the event being delivered, moved into the checkpoint once
    // the whole event is.
    let mut event_topics: BTreeMap<String, Offset> = BTreeMap::new();
    let mut enqueued_end = kafka.checkpoint.offset;
    let mut saved = kafka.checkpoint.clone();
    let mut failed = false;
    let mut tick = tokio::time::interval(CHECKPOINT_INTERVAL);
    loop {
        tokio::select! {
            outgoing = outbox.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(outgoing) = outgoing else { break };
                if !outgoing.durable.await {
                    return;
                }
                to_pulse(outgoing.end, &outgoing.messages);
                if !failed {
                    for (index, message) in outgoing.messages.iter().enumerate() {
                        let last_of_event = outgoing
                            .messages
                            .get(index + 1)
                            .is_none_or(|next| next.id.offset != message.id.offset);
                        let topic = kafka.topics.topic(message.exchange);
                        let id = message.id;
                        match kafka.topics.enqueue(partition, message).await {
                            Ok(delivery) => in_flight.push_back(Box::pin(async move {
                                let result = match delivery.await {
                                    Ok(Ok(delivery)) => Ok(delivery.offset as Offset),
                                    Ok(Err((error, _))) => Err(error.to_string()),
                                    Err(_) => Err("the producer went away".to_owned()),
                                };
                                Delivered { id, topic, last_of_event, result }
                            })),
                            Err(error) => {
                                tracing::error!(partition, %error, "cannot publish exchange messages; they resume at the next start");
                                failed = true;
                                break;
                            }
                        }
                    }
                    if !failed {
                        enqueued_end = outgoing.end;
                        if in_flight.is_empty() {
                            kafka.checkpoint.offset = enqueued_end;
                        }
                    }
                }
                if let Some(bus) = &bus {
                    bus.publish(outgoing.messages);
                }
            }
            Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                let delivered: Delivered = delivered;
                match delivered.result {
                    // After a failure the checkpoint stays before the message that failed.
                    Ok(_) if failed => {}
                    Ok(offset) => {
                        event_topics.insert(delivered.topic, offset + 1);
                        if delivered.last_of_event {
                            kafka.checkpoint.topics.append(&mut event_topics);
                            kafka.checkpoint.offset = delivered.id.offset + 1;
                        }
                        if in_flight.is_empty() {
                            kafka.checkpoint.offset = enqueued_end;
                        }
                    }
                    Err(reason) => {
                        tracing::error!(partition, id = %delivered.id, %reason, "an exchange message was not delivered; publishing stops until the next start");
                        failed = true;
                    }
                }
            }
            _ = tick.tick() => {
                lag.set(enqueued_end.saturating_sub(kafka.checkpoint.offset) as i64);
                if kafka.checkpoint != saved {
                    let topics = kafka.topics.clone();
                    let checkpoint = kafka.checkpoint.clone();
                    let written = tokio::task::spawn_blocking(move || topics.save(partition, &checkpoint)).await;
                    match written {
                        Ok(Ok(())) => {
                            saved = kafka.checkpoint.clone();
                            let _ = kafka.progress.send(saved.offset);
                        }
                        Ok(Err(error)) => tracing::error!(partition, %error, "cannot write the exchange checkpoint"),
                        Err(error) => tracing::error!(partition, %error, "exchange checkpoint writer failed"),
                    }
                }
            }
        }
    }
}
