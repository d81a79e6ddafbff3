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

use crate::model::binding::Binding;
use crate::model::exchange::{CC_HEADER, Exchange, ROUTING_KEY_HEADER};

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
    let url = if let Some(rest) = root.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = root.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        return Err(Error::Usage(format!(
            "root URL `{root_url}`: not an http:// or https:// URL"
        )));
    };
    Ok(format!("{url}/api/events/v1/listen"))
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
        let mut socket = match crate::client::connect_websocket(url.as_str()).await {
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
        let Some(exchange) = Exchange::parse(
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

/// A websocket listener that only counts the frames it receives, reading the socket itself
/// and walking frame headers without decoding payloads: for measuring the queue with many
/// listeners attached on one machine, where a full client per listener would take the CPU the
/// queue is being measured on. It offers permessage-deflate, as browsers do, and counts the
/// compressed frames without inflating them.
pub struct Counter {
    pub received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Why the server closed the connection, if it did.
    pub closed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Websocket opcodes the counter tells apart (RFC 6455 §5.2).
const OPCODE_TEXT: u8 = 1;
const OPCODE_CLOSE: u8 = 8;

impl Counter {
    /// Connects, binds `(exchange, pattern)` pairs and returns once the server is ready.
    pub async fn connect(root_url: &str, bindings: &[(String, String)]) -> Result<Counter, Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = websocket_url(root_url)?;
        let failed = |reason: String| Error::Listener {
            url: url.clone(),
            reason,
        };
        // The counter speaks the upgrade itself, on plain TCP.
        let rest = url.strip_prefix("ws://").ok_or_else(|| {
            Error::Usage(format!(
                "root URL `{root_url}`: the listener bench speaks plain http:// only"
            ))
        })?;
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut socket = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|error| failed(error.to_string()))?;
        socket
            .set_nodelay(true)
            .map_err(|error| failed(error.to_string()))?;
        let handshake = format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        );
        socket
            .write_all(handshake.as_bytes())
            .await
            .map_err(|error| failed(error.to_string()))?;
        let mut buffer = Vec::with_capacity(1 << 16);
        let headers_end = loop {
            if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = socket
                .read(&mut chunk)
                .await
                .map_err(|error| failed(error.to_string()))?;
            if read == 0 {
                return Err(failed("the server closed during the handshake".into()));
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        if !buffer.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buffer[..headers_end]).into_owned();
            return Err(failed(format!("no websocket upgrade: {head}")));
        }
        buffer.drain(..headers_end);
        let bindings: Vec<Value> = bindings
            .iter()
            .map(|(exchange, pattern)| json!({"exchange": exchange, "routingKeyPattern": pattern}))
            .collect();
        let subscribe = json!({ "bindings": bindings }).to_string();
        socket
            .write_all(&client_text_frame(subscribe.as_bytes()))
            .await
            .map_err(|error| failed(error.to_string()))?;
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let closed = std::sync::Arc::new(std::sync::Mutex::new(None));
        // The first text frame is `ready`; it is not counted.
        let ready_seen = std::sync::Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn({
            let (received, closed, ready_seen) =
                (received.clone(), closed.clone(), ready_seen.clone());
            async move {
                let mut ready = false;
                loop {
                    let mut consumed = 0;
                    while let Some((opcode, payload, length)) = next_frame(&buffer[consumed..]) {
                        match opcode {
                            OPCODE_TEXT if !ready => {
                                ready = true;
                                ready_seen.notify_one();
                            }
                            OPCODE_TEXT => {
                                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            OPCODE_CLOSE => {
                                let reason = buffer
                                    .get(consumed + payload + 2..consumed + length)
                                    .map(|reason| String::from_utf8_lossy(reason).into_owned());
                                *closed.lock().unwrap_or_else(|poison| poison.into_inner()) =
                                    Some(reason.unwrap_or_default());
                                return;
                            }
                            _ => {}
                        }
                        consumed += length;
                    }
                    // Only a partial frame is left to move; reads land right behind it.
                    buffer.drain(..consumed);
                    buffer.reserve(1 << 16);
                    match socket.read_buf(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_seen.notified())
            .await
            .map_err(|_| failed("no ready frame within 10 s".into()))?;
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

/// A masked text frame, as a client must send them (the mask may be anything).
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | OPCODE_TEXT];
    match payload.len() {
        length @ 0..=125 => frame.push(0x80 | length as u8),
        length @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(length as u16).to_be_bytes());
        }
        length => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(index, byte)| byte ^ mask[index % 4]),
    );
    frame
}

/// The opcode, payload start and total length of the first whole (unmasked, server) frame in
/// `buffer`, if it holds one.
fn next_frame(buffer: &[u8]) -> Option<(u8, usize, usize)> {
    let opcode = buffer.first()? & 0x0f;
    let (length, start) = match buffer.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes(buffer.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buffer.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        length => (length as usize, 2),
    };
    (buffer.len() >= start + length).then_some((opcode, start, start + length))
}
