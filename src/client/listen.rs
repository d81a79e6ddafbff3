//! `taskfold listen`: prints exchange messages as JSON lines, `{"exchange", "routingKey",
//! "payload", "routes"}` (the fields of a Taskcluster client listener's message), read from
//! the queue's websocket listener API or, with `--kafka`, straight from the exchange topics.
//!
//! Over the websocket a dropped connection is resumed from the cursor of the last message,
//! so nothing is lost or repeated while the server keeps the messages in between.

use std::io::Write;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::projections::bindings::Binding;
use crate::projections::exchanges::{CC_HEADER, ROUTING_KEY_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("the listener API at {url}: {reason}")]
    Listener { url: String, reason: String },
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("writing to standard output: {0}")]
    Output(#[from] std::io::Error),
}

pub struct Options {
    pub root_url: String,
    /// `(exchange, routing key pattern)` pairs.
    pub bindings: Vec<(String, String)>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Resume after this cursor (websocket).
    pub cursor: Option<String>,
    /// Read the Kafka topics on these brokers instead of the websocket.
    pub kafka: Option<String>,
    /// The topic of exchange `x` is `<topic_prefix><x>`.
    pub topic_prefix: String,
    /// Kafka: read the topics from their start rather than from now.
    pub from_beginning: bool,
}

/// How long to wait before reconnecting a dropped websocket, at most.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub async fn listen(options: Options) -> Result<(), Error> {
    let bindings = options
        .bindings
        .iter()
        .map(|(exchange, pattern)| Binding::parse(exchange, pattern))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    if bindings.is_empty() {
        return Err(Error::Usage(
            "give at least one --exchange with its --routing-key".into(),
        ));
    }
    let mut output = Output {
        remaining: options.count,
    };
    match &options.kafka {
        Some(brokers) => listen_kafka(brokers, &options, &bindings, &mut output).await,
        None => listen_websocket(&options, &mut output).await,
    }
}

struct Output {
    remaining: Option<u64>,
}

impl Output {
    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    fn print(&mut self, message: &Value) -> Result<(), Error> {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{message}")?;
        stdout.flush()?;
        if let Some(remaining) = &mut self.remaining {
            *remaining -= 1;
        }
        Ok(())
    }
}

fn websocket_url(root_url: &str) -> Result<String, Error> {
    let root = root_url.trim_end_matches('/');
    let rest = root.strip_prefix("http://").ok_or_else(|| {
        Error::Usage(format!(
            "root URL `{root_url}`: only http:// deployments can be listened to over a \
             websocket here; use --kafka for others"
        ))
    })?;
    Ok(format!("ws://{rest}/api/events/v1/listen"))
}

async fn listen_websocket(options: &Options, output: &mut Output) -> Result<(), Error> {
    let url = websocket_url(&options.root_url)?;
    let failed = |reason: String| Error::Listener {
        url: url.clone(),
        reason,
    };
    let mut cursor = options.cursor.clone();
    let mut delay = Duration::from_millis(100);
    while !output.done() {
        let (mut socket, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(connected) => connected,
            // The first connection must work; later ones are retried (a restarting server).
            Err(error) if cursor.is_none() => return Err(failed(error.to_string())),
            Err(error) => {
                tracing::warn!(%error, "reconnecting to the listener API");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
        };
        let bindings: Vec<Value> = options
            .bindings
            .iter()
            .map(|(exchange, pattern)| json!({"exchange": exchange, "routingKeyPattern": pattern}))
            .collect();
        let subscribe = json!({"bindings": bindings, "cursor": cursor});
        socket
            .send(Frame::text(subscribe.to_string()))
            .await
            .map_err(|error| failed(error.to_string()))?;
        while let Some(frame) = socket.next().await {
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    tracing::warn!(%error, "the listener connection broke; resuming");
                    break;
                }
            };
            match frame {
                Frame::Text(text) => {
                    let mut message: Value = serde_json::from_str(text.as_str())
                        .map_err(|error| failed(format!("a frame is not JSON: {error}")))?;
                    match message["type"].as_str() {
                        Some("ready") => {
                            delay = Duration::from_millis(100);
                            if cursor.is_none() {
                                cursor = message["cursor"].as_str().map(str::to_owned);
                            }
                        }
                        Some("message") => {
                            cursor = message["cursor"].as_str().map(str::to_owned);
                            let message = message.as_object_mut().map(|fields| {
                                json!({
                                    "exchange": fields.remove("exchange"),
                                    "routingKey": fields.remove("routingKey"),
                                    "payload": fields.remove("payload"),
                                    "routes": fields.remove("routes"),
                                })
                            });
                            output.print(&message.unwrap_or_default())?;
                            if output.done() {
                                let _ = socket.close(None).await;
                                return Ok(());
                            }
                        }
                        Some("error") => {
                            return Err(failed(message["message"].as_str().unwrap_or("").into()));
                        }
                        _ => {}
                    }
                }
                Frame::Close(Some(close)) if close.code == CloseCode::Policy => {
                    // Fell behind: resume from the cursor. Anything else the server refuses
                    // again, and says so in an error frame first.
                    tracing::warn!(reason = %close.reason, "the server dropped this listener; resuming");
                    break;
                }
                Frame::Close(_) => break,
                _ => {}
            }
        }
    }
    Ok(())
}

async fn listen_kafka(
    brokers: &str,
    options: &Options,
    bindings: &[Binding],
    output: &mut Output,
) -> Result<(), Error> {
    let mut exchanges: Vec<_> = bindings.iter().map(|binding| binding.exchange).collect();
    exchanges.sort();
    exchanges.dedup();
    let topics: Vec<String> = exchanges
        .iter()
        .map(|exchange| format!("{}{}", options.topic_prefix, exchange.name()))
        .collect();
    let group = format!("taskfold-listen-{}", crate::model::Slugid::nice());
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    // Assigned, not subscribed: no group rebalance to wait for.
    let start = if options.from_beginning {
        rdkafka::Offset::Beginning
    } else {
        rdkafka::Offset::End
    };
    let mut assignment = rdkafka::TopicPartitionList::new();
    for topic in &topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata
            .topics()
            .iter()
            .flat_map(|topic| topic.partitions())
        {
            assignment.add_partition_offset(topic, partition.id(), start)?;
        }
    }
    consumer.assign(&assignment)?;
    while !output.done() {
        let record = consumer.recv().await?;
        let Some(exchange) = crate::projections::exchanges::Exchange::parse(
            record
                .topic()
                .strip_prefix(options.topic_prefix.as_str())
                .unwrap_or(""),
        ) else {
            continue;
        };
        let mut routing_key = String::new();
        let mut routes = Vec::new();
        if let Some(headers) = record.headers() {
            for header in headers.iter() {
                let value = header
                    .value
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                if header.key == ROUTING_KEY_HEADER {
                    routing_key = value.into_owned();
                } else if header.key == CC_HEADER
                    && let Some(route) = value.strip_prefix("route.")
                {
                    routes.push(route.to_owned());
                }
            }
        }
        let matches = bindings
            .iter()
            .any(|binding| binding.matches_keys(exchange, &routing_key, &routes));
        if !matches {
            continue;
        }
        let payload: Value = record
            .payload()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        output.print(&json!({
            "exchange": exchange.full_name(),
            "routingKey": routing_key,
            "payload": payload,
            "routes": routes,
        }))?;
    }
    Ok(())
}

/// A websocket listener that only counts what it receives, for measuring the queue with
/// listeners attached.
pub struct Counter {
    pub received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Why the server closed the connection, if it did.
    pub closed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Connects, binds `(exchange, pattern)` pairs and returns once the server is ready.
    pub async fn connect(root_url: &str, bindings: &[(String, String)]) -> Result<Counter, Error> {
        let url = websocket_url(root_url)?;
        let failed = |reason: String| Error::Listener {
            url: url.clone(),
            reason,
        };
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|error| failed(error.to_string()))?;
        let bindings: Vec<Value> = bindings
            .iter()
            .map(|(exchange, pattern)| json!({"exchange": exchange, "routingKeyPattern": pattern}))
            .collect();
        socket
            .send(Frame::text(json!({ "bindings": bindings }).to_string()))
            .await
            .map_err(|error| failed(error.to_string()))?;
        match socket.next().await {
            Some(Ok(Frame::Text(text))) if text.as_str().contains("\"ready\"") => {}
            other => return Err(failed(format!("no ready frame: {other:?}"))),
        }
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let closed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let task = tokio::spawn({
            let (received, closed) = (received.clone(), closed.clone());
            async move {
                while let Some(Ok(frame)) = socket.next().await {
                    match frame {
                        Frame::Text(_) => {
                            received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Frame::Close(close) => {
                            let reason = close.map(|close| close.reason.to_string());
                            *closed.lock().unwrap_or_else(|poison| poison.into_inner()) =
                                Some(reason.unwrap_or_default());
                            break;
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok(Counter {
            received,
            closed,
            task,
        })
    }

    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn closed(&self) -> Option<String> {
        self.closed
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}
