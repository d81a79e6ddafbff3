//! The listener API: the queue's exchange messages for consumers that are not Kafka clients,
//! over a websocket or server-sent events, filtered by bindings with AMQP topic semantics and
//! resumable from a cursor (`schemas/asyncapi.yaml` documents both).
//!
//! - `GET /api/events/v1/listen` (websocket): the client sends
//!   `{"bindings": [{"exchange", "routingKeyPattern"}], "cursor"?}`; the server answers
//!   `{"type": "ready", "cursor"}`, then one `{"type": "message", "cursor", "id", "exchange",
//!   "routingKey", "payload", "routes"}` frame per matching message.
//! - `GET /api/events/v1/sse?exchange=…&routingKeyPattern=…[&exchange=…&routingKeyPattern=…]`:
//!   the same objects (without `type`) as `message` events whose `id` is the cursor, so a
//!   reconnecting `EventSource` resumes through `Last-Event-ID`.
//!
//! A listener that falls more than `[events] listener_buffer_messages` behind is disconnected
//! with a reason naming the cursor to resume from; the queue never waits for listeners.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::{self, CloseCode};
use actix_web::web::{Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::audience::{Audience, Format, Place};
use super::call::Call;
use super::server::State;
use super::websocket::{self, Deflate, Incoming, Reader, Writer, close_reason};
use crate::metrics::METRICS;
use crate::model::binding::Binding;
use crate::model::{ApiError, ErrorCode};
use crate::projections::bus::{Batch, Bus, Cursor, Published, Subscription};

/// How long a websocket client has to send its bindings.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle stream is pinged (websocket) or sent a comment (SSE), so proxies keep it.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long one frame may take to reach a client before it counts as not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Deliveries waiting to be written to one websocket.
const OUTPUT_CHUNKS: usize = 4;
/// Most published batches a listener hands on at once.
const MAX_BATCHES: usize = 1024;
/// Most messages of its backlog a resumed listener hands on at once.
const MAX_BACKLOG: usize = 4096;
/// Largest frame a listener may send (its subscription).
const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Most bindings one listener may have.
const MAX_BINDINGS: usize = 256;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Subscribe {
    bindings: Vec<BindingRequest>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BindingRequest {
    exchange: String,
    routing_key_pattern: String,
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidRequestArguments, message)
}

/// Reads bindings; at least one, each valid.
fn read_bindings(
    pairs: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Binding>, ApiError> {
    let bindings = pairs
        .into_iter()
        .map(|(exchange, pattern)| Binding::parse(&exchange, &pattern).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    if bindings.is_empty() {
        return Err(invalid(
            "no bindings: give at least one exchange with a routing key pattern".into(),
        ));
    }
    if bindings.len() > MAX_BINDINGS {
        return Err(invalid(format!(
            "{} bindings: at most {MAX_BINDINGS} are allowed",
            bindings.len()
        )));
    }
    Ok(bindings)
}

fn read_cursor(text: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    text.filter(|text| !text.is_empty())
        .map(|text| text.parse().map_err(invalid))
        .transpose()
}

/// Why a listener stops.
enum Stop {
    /// It fell behind by more than its buffer: the reason to close with.
    Behind(String),
    /// The server is stopping.
    Closed,
}

impl Stop {
    fn close_reason(self) -> Option<ws::CloseReason> {
        match self {
            Stop::Behind(reason) => close_reason(CloseCode::Policy, reason),
            Stop::Closed => close_reason(CloseCode::Away, "the server is stopping"),
        }
    }
}

/// What a listener hands on at once: chunks of frames (or events), and what ends the
/// listener once they are written, if something does.
struct Delivery {
    chunks: Vec<Bytes>,
    then: Option<Stop>,
}

/// A subscription read in order: the backlog, then the live batches.
struct Listener {
    bus: Arc<Bus>,
    audience: Arc<Audience>,
    /// What a resumed listener missed, read from memory at once (so it does not count as
    /// falling behind).
    backlog: VecDeque<Arc<Published>>,
    subscription: Subscription,
    /// The cursor of the last message handed on (or of the start).
    position: Cursor,
    /// Until when the next delivery waits (see [`Bus::next_flush`]).
    quiet_until: Option<tokio::time::Instant>,
    /// Whether the listener has every frame of its audience's shared compression context
    /// since it last restarted, and nothing else compressed (see [`Place`]).
    in_context: bool,
}

impl Listener {
    fn new(bus: Arc<Bus>, audience: Arc<Audience>, mut subscription: Subscription) -> Listener {
        METRICS.listeners.inc();
        Listener {
            bus,
            audience,
            backlog: std::mem::take(&mut subscription.backlog).into(),
            position: subscription.position,
            subscription,
            quiet_until: None,
            in_context: false,
        }
    }

    /// What to hand on next: the messages that match its bindings among what has arrived.
    /// Cancel-safe: the waits come before anything is taken.
    async fn next(&mut self) -> Result<Delivery, Stop> {
        if let Some(until) = self.quiet_until {
            tokio::time::sleep_until(until).await;
            self.quiet_until = None;
        }
        loop {
            if *self.subscription.closing.borrow() {
                return Err(Stop::Closed);
            }
            if !self.backlog.is_empty() {
                if let Some(delivery) = self.take_backlog() {
                    return Ok(delivery);
                }
                continue;
            }
            let received = tokio::select! {
                received = self.subscription.receiver.recv() => received,
                _ = self.subscription.closing.changed() => return Err(Stop::Closed),
            };
            let mut delivery = Delivery {
                chunks: Vec::new(),
                then: None,
            };
            self.take(received, &mut delivery);
            // Everything else that has arrived goes with it.
            let mut batches = 1;
            while delivery.then.is_none() && batches < MAX_BATCHES {
                let received = match self.subscription.receiver.try_recv() {
                    Ok(batch) => Ok(batch),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                    Err(TryRecvError::Closed) => Err(RecvError::Closed),
                };
                self.take(received, &mut delivery);
                batches += 1;
            }
            if delivery.chunks.is_empty() {
                match delivery.then {
                    None => continue,
                    Some(stop) => return Err(stop),
                }
            }
            self.quiet_until = Some(self.bus.next_flush());
            return Ok(delivery);
        }
    }

    /// Up to [`MAX_BACKLOG`] of the backlog's matching messages; `None` if none matched.
    fn take_backlog(&mut self) -> Option<Delivery> {
        let take = self.backlog.len().min(MAX_BACKLOG);
        let chunks: Vec<Bytes> = self
            .backlog
            .drain(..take)
            .inspect(|published| self.position = published.cursor)
            .filter(|published| self.audience.receives(&published.message))
            .map(|published| self.audience.frame(&published))
            .collect();
        // Frames on their own: whatever the listener had of a shared context is lost.
        self.in_context &= chunks.is_empty();
        (!chunks.is_empty()).then_some(Delivery { chunks, then: None })
    }

    /// Takes a received batch's chunk for this listener into `delivery`, or notes what stops
    /// the listener if it did not get one.
    fn take(&mut self, received: Result<Arc<Batch>, RecvError>, delivery: &mut Delivery) {
        let stop = match received {
            Ok(batch) => match self.bus.too_far_behind(batch.first()) {
                Some(behind) => self.behind(behind),
                None => {
                    let chunk = self.audience.chunk_of(&batch);
                    let frames = match chunk.place {
                        Place::Restarts => {
                            self.in_context = true;
                            chunk.frames
                        }
                        Place::Continues if self.in_context => chunk.frames,
                        Place::Continues => self.audience.alone(&batch),
                        Place::Alone => {
                            self.in_context &= chunk.frames.is_empty();
                            chunk.frames
                        }
                    };
                    if !frames.is_empty() {
                        delivery.chunks.push(frames);
                    }
                    self.position = batch.last().cursor;
                    return;
                }
            },
            Err(RecvError::Lagged(_)) => self.behind(self.bus.listener_buffer_messages()),
            Err(RecvError::Closed) => Stop::Closed,
        };
        delivery.then = Some(stop);
    }

    fn behind(&self, behind: u64) -> Stop {
        METRICS.listeners_dropped.inc();
        Stop::Behind(format!(
            "listener fell behind by more than {behind} messages; reconnect with cursor {} to \
             resume",
            self.position
        ))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        METRICS.listeners.dec();
    }
}

fn subscribe(
    state: &State,
    bindings: Vec<Binding>,
    format: Format,
    cursor: Option<Cursor>,
) -> Result<Listener, ApiError> {
    let bus = state.engine.bus().clone();
    let subscription = bus
        .subscribe(cursor)
        .map_err(|reason| ApiError::new(ErrorCode::ResourceExpired, reason))?;
    let audience = state.audiences.audience(bindings, format);
    Ok(Listener::new(bus, audience, subscription))
}

/// `GET /api/events/v1/listen`: a websocket.
///
/// Frames are written here rather than through a session object: each published batch is
/// encoded once for all the listeners that bind alike (`Audience::chunk_of`), and a listener
/// hands on what has arrived since its last write in one go, which keeps a fan-out to many
/// listeners cheap.
pub async fn listen(state: Data<State>, request: HttpRequest, body: Payload) -> HttpResponse {
    Call::new("listen", request.clone(), Ok(Bytes::new()))
        .answer(async |_| {
            let (mut response, mut reader, writer) =
                websocket::accept(&request, body, MAX_CLIENT_FRAME, OUTPUT_CHUNKS)?;
            let deflate = websocket::negotiate_deflate(&request);
            if let Some(deflate) = deflate {
                response.headers_mut().insert(
                    actix_web::http::header::SEC_WEBSOCKET_EXTENSIONS,
                    actix_web::http::header::HeaderValue::from_static(deflate.answer()),
                );
                reader.accept_compressed();
            }
            let format = match deflate {
                None => Format::Websocket,
                Some(Deflate::InContext) => Format::DeflatedStream,
                Some(Deflate::EachOnItsOwn) => Format::DeflatedWebsocket,
            };
            actix_web::rt::spawn(serve_websocket(state, reader, writer, format));
            Ok(response)
        })
        .await
}

/// `format`: how messages go out, as the connection negotiated.
async fn serve_websocket(
    state: Data<State>,
    mut reader: Reader,
    connection: Writer,
    format: Format,
) {
    let request = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        loop {
            match reader.receive().await {
                Incoming::Ping(bytes) => {
                    let _ = connection.send(ws::Message::Pong(bytes)).await;
                }
                other => return other,
            }
        }
    })
    .await;
    let text = match request {
        Ok(Incoming::Text(text)) => text,
        Ok(Incoming::Close(reason)) => {
            connection.close(reason).await;
            return;
        }
        Ok(Incoming::Violation(reason)) => {
            websocket::refuse(connection, reader, reason).await;
            return;
        }
        Ok(Incoming::Binary(_)) => {
            let reason = "the subscription must be a text message: {\"bindings\": [...]}";
            connection
                .close(close_reason(CloseCode::Unsupported, reason))
                .await;
            return;
        }
        Ok(_) => return,
        Err(_) => {
            let reason = "no subscription received: send {\"bindings\": [...]} first";
            connection
                .close(close_reason(CloseCode::Policy, reason))
                .await;
            return;
        }
    };
    let listener = serde_json::from_slice::<Subscribe>(&text)
        .map_err(|error| invalid(format!("the subscription is not valid: {error}")))
        .and_then(|request| {
            let pairs = request
                .bindings
                .into_iter()
                .map(|binding| (binding.exchange, binding.routing_key_pattern));
            let bindings = read_bindings(pairs)?;
            let cursor = read_cursor(request.cursor.as_deref())?;
            subscribe(&state, bindings, format, cursor)
        });
    let mut listener = match listener {
        Ok(listener) => listener,
        Err(error) => {
            let frame =
                json!({"type": "error", "code": error.code.as_str(), "message": error.message});
            let _ = connection.send_text(frame.to_string()).await;
            connection
                .close(close_reason(CloseCode::Policy, error.message))
                .await;
            return;
        }
    };
    let ready = json!({"type": "ready", "cursor": listener.position.to_string()});
    if connection.send_text(ready.to_string()).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.reset();
    // The cursor of the last message handed to the connection.
    let mut delivered = listener.position;
    let close = loop {
        tokio::select! {
            next = listener.next() => match next {
                Ok(Delivery { chunks, then }) => {
                    match tokio::time::timeout(SEND_TIMEOUT, connection.send_chunks(chunks)).await {
                        Ok(Ok(())) => delivered = listener.position,
                        Ok(Err(())) => return,
                        Err(_) => break close_reason(
                            CloseCode::Policy,
                            format!("listener is not reading; resume with cursor {delivered}"),
                        ),
                    }
                    if let Some(stop) = then {
                        break stop.close_reason();
                    }
                }
                Err(stop) => break stop.close_reason(),
            },
            incoming = reader.receive() => match incoming {
                Incoming::Ping(bytes) => {
                    if connection.send(ws::Message::Pong(bytes)).await.is_err() {
                        return;
                    }
                }
                // Answer the close, as the protocol asks.
                Incoming::Close(reason) => break reason,
                Incoming::Text(_) | Incoming::Binary(_) => {}
                Incoming::Violation(reason) => {
                    websocket::refuse(connection, reader, reason).await;
                    return;
                }
                Incoming::Gone => return,
            },
            _ = keepalive.tick() => {
                if connection.send(ws::Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    };
    connection.close(close).await;
}

/// `GET /api/events/v1/sse`: server-sent events.
pub async fn sse(state: Data<State>, request: HttpRequest) -> HttpResponse {
    Call::new("listenEvents", request.clone(), Ok(Bytes::new()))
        .answer(async |_| {
            let mut exchanges = Vec::new();
            let mut patterns = Vec::new();
            let mut cursor = None;
            for (name, value) in form_urlencoded::parse(request.query_string().as_bytes()) {
                match name.as_ref() {
                    "exchange" => exchanges.push(value.into_owned()),
                    "routingKeyPattern" => patterns.push(value.into_owned()),
                    "cursor" => cursor = Some(value.into_owned()),
                    other => {
                        return Err(invalid(format!(
                            "unknown query argument `{other}`; give `exchange` and \
                             `routingKeyPattern` pairs and optionally `cursor`"
                        )));
                    }
                }
            }
            if exchanges.len() != patterns.len() {
                return Err(invalid(format!(
                    "{} exchanges but {} routing key patterns: give them in pairs",
                    exchanges.len(),
                    patterns.len()
                )));
            }
            let bindings = read_bindings(exchanges.into_iter().zip(patterns))?;
            let last_event_id = request
                .headers()
                .get("Last-Event-ID")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let cursor = read_cursor(last_event_id.or(cursor).as_deref())?;
            let listener = subscribe(&state, bindings, Format::Sse, cursor)?;
            let ready = format!(": ready {}\n\n", listener.position);
            let events = futures::stream::unfold(Some(listener), |listener| async move {
                let mut listener = listener?;
                let (mut chunks, then) = tokio::select! {
                    next = listener.next() => match next {
                        Ok(Delivery { chunks, then }) => (chunks, then),
                        Err(stop) => (Vec::new(), Some(stop)),
                    },
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        (vec![Bytes::from_static(b": keepalive\n\n")], None)
                    }
                };
                match then {
                    None => Some((chunks, Some(listener))),
                    Some(Stop::Behind(reason)) => {
                        let data = json!({"message": reason}).to_string();
                        chunks.push(format!("event: error\ndata: {data}\n\n").into());
                        Some((chunks, None))
                    }
                    Some(Stop::Closed) => Some((chunks, None)),
                }
            })
            .flat_map(|chunks| {
                futures::stream::iter(chunks.into_iter().map(Ok::<_, actix_web::Error>))
            });
            let stream = futures::stream::once(async move { Ok(Bytes::from(ready)) }).chain(events);
            Ok(HttpResponse::Ok()
                .content_type("text/event-stream")
                .insert_header(("Cache-Control", "no-cache"))
                .insert_header(("X-Accel-Buffering", "no"))
                // Compression would hold events back until a block fills.
                .insert_header((actix_web::http::header::CONTENT_ENCODING, "identity"))
                .streaming(stream))
        })
        .await
}
