//! Exchange messages on an AMQP broker: Pulse, the RabbitMQ where Taskcluster's own consumers
//! listen (`@taskcluster/lib-pulse`'s `consume()`, kombu, the clients' listener bindings).
//! Each exchange is a durable topic exchange `<prefix><exchange>`
//! (`exchange/taskcluster-queue/v1/task-completed` by default), declared on every channel the
//! publishers open; each message goes out as Taskcluster's publisher sends it: persistent,
//! `application/json` in UTF-8, with the primary routing key and, in the `CC` header, one
//! `route.<route>` key per route of the task, which the broker routes by too and consumers
//! read the routes from. The message id is the one the exchange topics give (`p-o-i`).
//!
//! Nothing is lost across a restart of Taskfold or of the broker. Each partition publishes in
//! log order on a confirm channel of its own and keeps a cursor
//! (`<data dir>/pulse/partition-<p>.json`): a log offset before which the broker has confirmed
//! every message. The shard never writes its store past the written cursor, so a start
//! re-derives the messages from the cursor on (as for the exchange topics) and publishes them.
//! While the broker is away the messages wait in memory, and so do the store's writes; the
//! partition reconnects with backoff and publishes again from its first unconfirmed message.
//! AMQP cannot be read back: what the broker confirmed after the cursor was last written (at
//! most half a second's worth, nothing after a clean stop) is published again after a crash,
//! at least once as with Pulse itself, and the message id tells the copies apart.
//!
//! With several nodes, each publishes the partitions it serves, and the cursor lives in the
//! node's data directory: a partition handed over cleanly has every message confirmed (its
//! store's last write waits for the cursor), and a node that never published it starts at the
//! log's end.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, watch};

use super::exchanges::Message;
use crate::log::durable_file::write_atomically;
use crate::log::{Error, Offset};
use crate::metrics::METRICS;
use crate::model::exchange::Exchange;

/// How often a moved cursor is written.
const CURSOR_INTERVAL: Duration = Duration::from_millis(500);
/// While commits keep coming, a partition's publisher takes them in at most once per this
/// long, all the partitions at the same instants: what costs the queue's CPU is less the
/// messages than the hops between threads for each batch (the shard's outbox wakes the
/// publisher, which wakes lapin's I/O thread, whose writes and the broker's confirms wake the
/// publisher), so a batch gathered over a few milliseconds costs about what a single commit's
/// did. The first commit after a quiet spell goes out at once.
const GATHERING: Duration = Duration::from_millis(5);
/// Most messages of a partition published and not yet confirmed; the rest wait their turn.
const MAX_UNCONFIRMED: usize = 10_000;
/// The first wait before connecting again after a failure; it doubles with each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The header of CC routing keys (RabbitMQ's sender-selected distribution, as Pulse uses it).
const CC_HEADER: &str = "CC";
/// The longest exchange name or routing key AMQP carries (a short string).
const MAX_NAME_BYTES: usize = 255;
/// AMQP's `delivery_mode` of a message the broker writes to disk.
const PERSISTENT: u8 = 2;

/// `[events] amqp_url` and `amqp_exchange_prefix`.
#[derive(Clone, Debug)]
pub struct Options {
    pub url: String,
    pub exchange_prefix: String,
}

/// The broker, shared by every partition's publisher.
pub struct PulseExchanges {
    options: Options,
    /// The publishers' own thread, where the connection lives too: the shards' threads are
    /// the queue's busiest, and publishing costs them nothing but handing messages over.
    runtime: tokio::runtime::Handle,
    /// One connection for the process, each partition a channel on it; made again by the
    /// first publisher that finds it broken.
    connection: Mutex<Option<Connection>>,
    cursors: PathBuf,
    /// Where the publishers' gathering slots start (see `GATHERING`).
    epoch: tokio::time::Instant,
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    /// Every message of an event before this log offset is confirmed by the broker.
    offset: Offset,
}

/// The messages of commits whose events are durable, in log order, for one partition.
pub struct Committed {
    /// The log offset after the last event of these commits.
    pub end: Offset,
    pub messages: Vec<Message>,
}

impl PulseExchanges {
    /// Keeps cursors under `data_dir` and starts the publishers' thread; connects only when a
    /// partition first publishes, so a broker that is away does not hold up the start.
    pub fn open(options: Options, data_dir: &Path) -> Result<PulseExchanges, Error> {
        let longest = Exchange::ALL
            .iter()
            .map(|exchange| exchange.name().len())
            .max();
        if options.exchange_prefix.len() + longest.unwrap_or_default() > MAX_NAME_BYTES {
            return Err(Error::Config(format!(
                "`[events] amqp_exchange_prefix` is too long: AMQP names exchanges in at most \
                 {MAX_NAME_BYTES} bytes"
            )));
        }
        let cursors = data_dir.join("pulse");
        std::fs::create_dir_all(&cursors)
            .map_err(|error| Error::io("creating", &cursors, error))?;
        let runtime = publishers_thread()
            .map_err(|error| Error::io("starting the AMQP publishers", "amqp", error))?;
        Ok(PulseExchanges {
            options,
            runtime,
            connection: Mutex::new(None),
            cursors,
            epoch: tokio::time::Instant::now(),
        })
    }

    fn exchange(&self, exchange: Exchange) -> String {
        format!("{}{}", self.options.exchange_prefix, exchange.name())
    }

    /// The end of the gathering slot under way: the next multiple of `GATHERING` after the
    /// epoch, the same for every partition, so that one wake-up serves them all.
    fn next_slot(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let slot = GATHERING.as_nanos();
        let into_slot = now.saturating_duration_since(self.epoch).as_nanos() % slot;
        let rest = u64::try_from(slot - into_slot).unwrap_or_default();
        now + Duration::from_nanos(rest)
    }

    fn cursor_path(&self, partition: u32) -> PathBuf {
        self.cursors.join(format!("partition-{partition}.json"))
    }

    fn save(&self, partition: u32, offset: Offset) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&Cursor { offset })
            .map_err(|error| Error::Corrupt(error.to_string()))?;
        write_atomically(&self.cursor_path(partition), &bytes)
    }

    /// Where partition `partition` resumes publishing, given the offset its state was loaded
    /// at (its store's) and the log's end. A partition that never published starts at the
    /// log's end: the broker gets no history, only what happens from now on. Blocking.
    pub fn recover(&self, partition: u32, store: Offset, log_end: Offset) -> Result<Offset, Error> {
        let path = self.cursor_path(partition);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let cursor = serde_json::from_slice::<Cursor>(&bytes)
                    .map_err(|error| Error::Corrupt(format!("{}: {error}", path.display())))?;
                if store > cursor.offset {
                    // Only a store written while publishing was off gets here: the events in
                    // between cannot be derived any more.
                    tracing::warn!(
                        partition,
                        store,
                        cursor = cursor.offset,
                        "no AMQP messages for events before the partition store"
                    );
                    return Ok(store);
                }
                // A log cut short by a repair gives the offsets past its end to new events.
                Ok(cursor.offset.min(log_end))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // Written at once: a crash before the first cursor must not skip what
                // happens after this start.
                self.save(partition, log_end)?;
                Ok(log_end)
            }
            Err(error) => Err(Error::io("reading", &path, error)),
        }
    }

    /// A confirm channel on the shared connection (connecting if there is none, or it broke),
    /// with every exchange declared.
    async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut connection = self.connection.lock().await;
        let open = match connection.take() {
            Some(open) if open.status().connected() => connection.insert(open),
            broken => {
                if broken.is_some() {
                    METRICS.amqp_reconnects.inc();
                }
                let properties =
                    ConnectionProperties::default().with_connection_name("taskfold".into());
                let connecting = Connection::connect(&self.options.url, properties);
                let connected = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                    .await
                    .map_err(|_| {
                        lapin::Error::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connecting took too long",
                        ))
                    })??;
                connection.insert(connected)
            }
        };
        let channel = open.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        for exchange in Exchange::ALL {
            channel
                .exchange_declare(
                    self.exchange(exchange).into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(channel)
    }

    /// Hands `message` to the broker on `channel`: the frames are queued for the connection's
    /// writer when this returns, in the order of the calls, and the future resolves once the
    /// broker confirms the message. Not waiting for each message's write before queueing the
    /// next lets the writer put many messages in one socket write: awaiting every publish
    /// costs a round trip through lapin's I/O thread and one write (and one read for the
    /// broker) per message.
    fn send(&self, channel: &Channel, message: Message) -> Sending {
        // `publishable` let only routing keys that fit through, and `open` checked the
        // exchanges' names.
        let routing_key = ShortString::try_new(message.routing_key.as_str())
            .map_err(|error| lapin::Error::from(std::io::Error::other(error)));
        let exchange = ShortString::from(self.exchange(message.exchange));
        let properties = properties(&message);
        let channel = channel.clone();
        let mut sending: Sending = Box::pin(async move {
            let confirm = channel
                .basic_publish(
                    exchange,
                    routing_key?,
                    BasicPublishOptions::default(),
                    message.body().get().as_bytes(),
                    properties,
                )
                .await?;
            METRICS.amqp_messages_published.inc();
            confirm.await
        });
        // The first poll queues the frames (and takes the confirm's delivery tag); what is
        // left is waiting for the broker, polled in `publish`'s loop.
        let waker = futures::task::noop_waker();
        if let std::task::Poll::Ready(done) = sending
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
        {
            return Box::pin(futures::future::ready(done));
        }
        sending
    }

    /// Starts publishing partition `partition`'s messages, from `cursor` on, as `committed`
    /// brings them, telling `progress` how far the written cursor is; until `committed`
    /// closes (the shard stopped).
    pub fn start(
        self: &Arc<Self>,
        partition: u32,
        cursor: Offset,
        committed: mpsc::UnboundedReceiver<Committed>,
        progress: watch::Sender<Offset>,
    ) {
        let publisher = self.clone().publish(partition, cursor, committed, progress);
        self.runtime.spawn(publisher);
    }

    async fn publish(
        self: Arc<Self>,
        partition: u32,
        cursor: Offset,
        mut committed: mpsc::UnboundedReceiver<Committed>,
        progress: watch::Sender<Offset>,
    ) {
        let lag = METRICS
            .amqp_lag
            .with_label_values(&[partition.to_string().as_str()]);
        let mut backlog = Backlog::new(cursor);
        // The messages at the front of the backlog handed to the broker, in order, each
        // resolving once the broker confirmed it.
        let mut confirms: FuturesOrdered<Sending> = FuturesOrdered::new();
        let mut channel: Option<Channel> = None;
        let mut backoff = FIRST_BACKOFF;
        let mut connect_at = tokio::time::Instant::now();
        let mut saved = cursor;
        let mut tick = tokio::time::interval(CURSOR_INTERVAL);
        // Until when `committed` is left alone, the commits gathering in it (see `GATHERING`).
        let mut gathering: Option<tokio::time::Instant> = None;
        loop {
            if let Some(open) = &channel {
                while confirms.len() < backlog.waiting.len() && confirms.len() < MAX_UNCONFIRMED {
                    let message = backlog.waiting[confirms.len()].clone();
                    confirms.push_back(self.send(open, message));
                }
            }
            tokio::select! {
                received = committed.recv(), if gathering.is_none() => {
                    let Some(Committed { end, messages }) = received else { break };
                    backlog.receive(end, messages);
                    gathering = Some(self.next_slot());
                }
                () = tokio::time::sleep_until(gathering.unwrap_or(connect_at)), if gathering.is_some() => {
                    let mut gathered = false;
                    let mut stopped = false;
                    loop {
                        match committed.try_recv() {
                            Ok(Committed { end, messages }) => {
                                backlog.receive(end, messages);
                                gathered = true;
                            }
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => {
                                stopped = true;
                                break;
                            }
                        }
                    }
                    if stopped {
                        break;
                    }
                    // Commits keep coming: gather the next slot's too; else wait for one.
                    gathering = gathered.then(|| self.next_slot());
                }
                Some(confirmed) = confirms.next(), if !confirms.is_empty() => match confirmed {
                    Ok(Confirmation::Ack(_)) => {
                        METRICS.amqp_confirms.with_label_values(&["ack"]).inc();
                        backlog.confirmed();
                        backoff = FIRST_BACKOFF;
                    }
                    failed => {
                        let reason = match failed {
                            Ok(Confirmation::Nack(_)) => {
                                METRICS.amqp_confirms.with_label_values(&["nack"]).inc();
                                "the broker refused a message".to_owned()
                            }
                            Ok(_) => "the broker did not confirm a message".to_owned(),
                            Err(error) => error.to_string(),
                        };
                        tracing::warn!(partition, %reason, "AMQP publishing failed; publishing again from the first unconfirmed message");
                        // The channel may still be open (a refused message): close it, so
                        // that what follows on it is not confirmed out of order.
                        if let Some(open) = channel.take() {
                            tokio::spawn(async move {
                                let _ = open.close(200, "publishing again".into()).await;
                            });
                        }
                        confirms = FuturesOrdered::new();
                        connect_at = later(&mut backoff);
                    }
                },
                () = tokio::time::sleep_until(connect_at), if channel.is_none() => {
                    match self.channel().await {
                        Ok(open) => channel = Some(open),
                        Err(error) => {
                            tracing::warn!(partition, %error, retry_in = ?backoff, "cannot reach the AMQP broker");
                            connect_at = later(&mut backoff);
                        }
                    }
                }
                _ = tick.tick() => {
                    lag.set(backlog.received.saturating_sub(backlog.cursor()) as i64);
                    if backlog.cursor() != saved && self.write_cursor(partition, backlog.cursor()).await {
                        saved = backlog.cursor();
                        let _ = progress.send(saved);
                    }
                }
            }
        }
        // The shard stopped: keep where publishing stands, for the next owner of the partition.
        if backlog.cursor() != saved {
            self.write_cursor(partition, backlog.cursor()).await;
        }
        if let Some(open) = channel {
            let _ = open.close(200, "the partition stopped".into()).await;
        }
    }

    /// Writes a partition's cursor; whether it was written.
    async fn write_cursor(self: &Arc<Self>, partition: u32, offset: Offset) -> bool {
        let exchanges = self.clone();
        let written = tokio::task::spawn_blocking(move || exchanges.save(partition, offset)).await;
        match written {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::error!(partition, %error, "cannot write the AMQP cursor");
                false
            }
            Err(error) => {
                tracing::error!(partition, %error, "the AMQP cursor writer failed");
                false
            }
        }
    }
}

/// One message on its way to the broker: resolves once the broker confirmed it (or why not).
type Sending = Pin<Box<dyn Future<Output = Result<Confirmation, lapin::Error>> + Send>>;

/// A thread running a runtime for the publishers, until the process ends; its handle.
fn publishers_thread() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("amqp-publishers".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// When to connect again after a failure: `backoff` from now, and twice as long (up to the
/// most) after the next, until a message is confirmed again.
fn later(backoff: &mut Duration) -> tokio::time::Instant {
    let at = tokio::time::Instant::now() + *backoff;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    at
}

/// Persistent JSON, the routes as CC keys, as Taskcluster publishes.
fn properties(message: &Message) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_message_id(message.id.to_string().into())
        .with_timestamp(u64::try_from(message.at.millis() / 1000).unwrap_or_default());
    if !message.routes.is_empty() {
        let cc: Vec<AMQPValue> = message
            .cc()
            .map(|key| AMQPValue::LongString(LongString::from(key)))
            .collect();
        let mut headers = FieldTable::default();
        headers.insert(
            CC_HEADER.into(),
            AMQPValue::FieldArray(FieldArray::from(cc)),
        );
        properties = properties.with_headers(headers);
    }
    properties
}

/// Whether AMQP can carry `message`: its routing key fits a short string. Taskcluster's
/// identifiers are short enough that one always does; one that did not would otherwise hold
/// up its partition for good.
fn publishable(message: &Message) -> bool {
    let fits = message.routing_key.len() <= MAX_NAME_BYTES;
    if !fits {
        tracing::error!(id = %message.id, routing_key = %message.routing_key, "the routing key is too long for AMQP; the message is not published there");
    }
    fits
}

/// A partition's messages not yet confirmed, in log order, and the cursor they leave.
struct Backlog {
    waiting: VecDeque<Message>,
    /// The log offset after the last commit received.
    received: Offset,
}

impl Backlog {
    fn new(cursor: Offset) -> Backlog {
        Backlog {
            waiting: VecDeque::new(),
            received: cursor,
        }
    }

    /// Takes in the messages of commits up to `end`. Messages of events before what was
    /// received already are ones the backlog had (the exchange topics' recovery passes
    /// through here too).
    fn receive(&mut self, end: Offset, messages: Vec<Message>) {
        let received = self.received;
        self.waiting.extend(
            messages
                .into_iter()
                .filter(|message| message.id.offset >= received)
                .filter(publishable),
        );
        self.received = self.received.max(end);
    }

    /// The broker confirmed the first waiting message.
    fn confirmed(&mut self) {
        self.waiting.pop_front();
    }

    /// Every message of an event before this offset is confirmed: the first waiting message's
    /// event, or all that was received.
    fn cursor(&self) -> Offset {
        self.waiting
            .front()
            .map_or(self.received, |message| message.id.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::exchange::MessageId;
    use crate::model::{Slugid, Timestamp};

    fn message(offset: Offset, index: u16, routes: &[&str]) -> Message {
        Message::received(
            MessageId {
                partition: 0,
                offset,
                index,
            },
            Exchange::TaskCompleted,
            Slugid::nice(),
            "primary.x".to_owned(),
            routes.iter().map(|route| (*route).to_owned()).collect(),
            Timestamp::from_millis(1_700_000_000_500),
            serde_json::value::RawValue::from_string("{}".to_owned()).unwrap(),
        )
    }

    #[test]
    fn the_cursor_stops_before_the_first_unconfirmed_event() {
        let mut backlog = Backlog::new(10);
        assert_eq!(backlog.cursor(), 10);
        // A commit without messages moves the cursor at once.
        backlog.receive(12, Vec::new());
        assert_eq!(backlog.cursor(), 12);
        backlog.receive(
            15,
            vec![
                message(12, 0, &[]),
                message(12, 1, &[]),
                message(14, 0, &[]),
            ],
        );
        assert_eq!(backlog.cursor(), 12);
        backlog.confirmed();
        // Event 12 has a message waiting still.
        assert_eq!(backlog.cursor(), 12);
        backlog.confirmed();
        assert_eq!(backlog.cursor(), 14);
        backlog.confirmed();
        assert_eq!(backlog.cursor(), 15);
    }

    #[test]
    fn messages_of_events_already_received_are_not_taken_twice() {
        // What a restart re-derived for this publisher, then the exchange topics' share of the
        // same events.
        let mut backlog = Backlog::new(5);
        backlog.receive(9, vec![message(5, 0, &[]), message(8, 0, &[])]);
        backlog.receive(
            9,
            vec![message(3, 0, &[]), message(5, 0, &[]), message(8, 0, &[])],
        );
        assert_eq!(backlog.waiting.len(), 2);
        backlog.receive(10, vec![message(9, 0, &[])]);
        assert_eq!(backlog.waiting.len(), 3);
    }

    #[test]
    fn a_message_whose_routing_key_amqp_cannot_carry_does_not_hold_up_the_rest() {
        let mut backlog = Backlog::new(0);
        let mut too_long = message(1, 0, &[]);
        too_long.routing_key = "w".repeat(MAX_NAME_BYTES + 1);
        backlog.receive(2, vec![too_long, message(1, 1, &[])]);
        assert_eq!(backlog.waiting.len(), 1);
        backlog.confirmed();
        assert_eq!(backlog.cursor(), 2);
    }

    #[test]
    fn messages_are_persistent_json_with_the_routes_as_cc_keys() {
        let properties = properties(&message(7, 1, &["index.a.b", "tc-treeherder.v2.x"]));
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some("0-7-1")
        );
        assert_eq!(properties.timestamp(), &Some(1_700_000_000));
        let headers = properties.headers().as_ref().unwrap();
        let Some(AMQPValue::FieldArray(cc)) = headers.inner().get(CC_HEADER) else {
            panic!("no CC header: {headers:?}");
        };
        let keys: Vec<String> = cc
            .as_slice()
            .iter()
            .map(|value| match value {
                AMQPValue::LongString(key) => key.to_string(),
                other => panic!("not a long string: {other:?}"),
            })
            .collect();
        assert_eq!(keys, ["route.index.a.b", "route.tc-treeherder.v2.x"]);
        assert!(super::properties(&message(1, 0, &[])).headers().is_none());
    }

    #[test]
    fn a_partition_that_never_published_starts_at_the_log_end() {
        let directory = tempfile::tempdir().unwrap();
        let exchanges = PulseExchanges::open(options(), directory.path()).unwrap();
        assert_eq!(
            exchanges.exchange(Exchange::TaskCompleted),
            "exchange/taskcluster-queue/v1/task-completed"
        );
        assert_eq!(exchanges.recover(0, 3, 40).unwrap(), 40);
        // Kept at once: the next start resumes there, not at its own log end.
        assert_eq!(exchanges.recover(0, 3, 90).unwrap(), 40);
        exchanges.save(0, 50).unwrap();
        assert_eq!(exchanges.recover(0, 3, 90).unwrap(), 50);
        // A store past the cursor (written while publishing was off) wins.
        assert_eq!(exchanges.recover(0, 60, 90).unwrap(), 60);
        // A log shorter than the cursor (repaired) has new events from its end on.
        assert_eq!(exchanges.recover(0, 3, 45).unwrap(), 45);
    }

    #[tokio::test(start_paused = true)]
    async fn every_partition_gathers_until_the_same_instant() {
        let directory = tempfile::tempdir().unwrap();
        let exchanges = PulseExchanges::open(options(), directory.path()).unwrap();
        let epoch = exchanges.epoch;
        assert_eq!(exchanges.next_slot(), epoch + GATHERING);
        tokio::time::advance(Duration::from_millis(7)).await;
        assert_eq!(exchanges.next_slot(), epoch + 2 * GATHERING);
        // At a slot's end, the next one.
        tokio::time::advance(Duration::from_millis(3)).await;
        assert_eq!(exchanges.next_slot(), epoch + 3 * GATHERING);
    }

    #[test]
    fn an_exchange_prefix_amqp_cannot_carry_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let too_long = Options {
            exchange_prefix: "x".repeat(MAX_NAME_BYTES - 5),
            ..options()
        };
        assert!(matches!(
            PulseExchanges::open(too_long, directory.path()),
            Err(Error::Config(_))
        ));
    }

    fn options() -> Options {
        Options {
            url: "amqp://127.0.0.1:1".to_owned(),
            exchange_prefix: "exchange/taskcluster-queue/v1/".to_owned(),
        }
    }
}
