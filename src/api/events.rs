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
use actix_web::web::BytesMut;
use actix_web::web::{Bytes, Data, Payload};
use actix_web::{HttpRequest, HttpResponse};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use super::call::Call;
use super::server::State;
use super::websocket::{self, Incoming, Reader, Writer, close_reason};
use super::{ApiError, ErrorCode};
use crate::projections::bindings::{self, Binding};
use crate::projections::bus::{Batch, Bus, Cursor, Published, Subscription};
use crate::projections::metrics::METRICS;

/// How long a websocket client has to send its bindings.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often an idle stream is pinged (websocket) or sent a comment (SSE), so proxies keep it.
const KEEPALIVE: Duration = Duration::from_secs(20);
/// How long one frame may take to reach a client before it counts as not reading.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks of frames waiting to be written to one websocket.
const OUTPUT_CHUNKS: usize = 4;
/// Most messages a listener hands on at once.
const MAX_BATCH: usize = 256;
/// After handing on a batch, a listener waits this long before the next one: a busy stream
/// then costs each listener a wake-up and a write per interval instead of per publication,
/// and a quiet one is not delayed at all.
const COALESCE: Duration = Duration::from_millis(5);
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

/// What a listener receives next.
enum Next {
    Message(Arc<Published>),
    /// It fell behind by more than its buffer: the reason to close with.
    Behind(String),
    /// The server is stopping.
    Closed,
}

/// A subscription read in order: the backlog, then the live messages.
struct Listener {
    bus: Arc<Bus>,
    bindings: Vec<Binding>,
    /// Received and not yet looked at: the backlog, then each batch as it arrives.
    pending: VecDeque<Arc<Published>>,
    /// How many of `pending` are the backlog of a resumed listener, which is read from
    /// memory at once and so does not count as falling behind.
    backlog: usize,
    subscription: Subscription,
    /// The cursor of the last message delivered (or of the start).
    position: Cursor,
    /// Until when the next batch waits (see [`COALESCE`]).
    quiet_until: Option<tokio::time::Instant>,
}

impl Listener {
    fn new(bus: Arc<Bus>, bindings: Vec<Binding>, mut subscription: Subscription) -> Listener {
        METRICS.listeners.inc();
        Listener {
            bus,
            bindings,
            backlog: subscription.backlog.len(),
            pending: std::mem::take(&mut subscription.backlog).into(),
            position: subscription.position,
            subscription,
            quiet_until: None,
        }
    }

    /// The next message that matches a binding. Cancel-safe: the wait comes before anything
    /// is taken.
    async fn next(&mut self) -> Next {
        if let Some(until) = self.quiet_until {
            tokio::time::sleep_until(until).await;
            self.quiet_until = None;
        }
        loop {
            if *self.subscription.closing.borrow() {
                return Next::Closed;
            }
            if let Some(next) = self.next_pending() {
                return next;
            }
            let received = tokio::select! {
                received = self.subscription.receiver.recv() => received,
                _ = self.subscription.closing.changed() => return Next::Closed,
            };
            if let Some(stop) = self.receive(received) {
                return stop;
            }
        }
    }

    /// The next matching message if one is there already: listeners drain what has arrived
    /// and hand it on at once, so a busy stream costs a wake-up and a write per batch rather
    /// than per message.
    fn try_next(&mut self) -> Option<Next> {
        loop {
            if let Some(next) = self.next_pending() {
                return Some(next);
            }
            let received = match self.subscription.receiver.try_recv() {
                Ok(batch) => Ok(batch),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
            };
            if let Some(stop) = self.receive(received) {
                return Some(stop);
            }
        }
    }

    /// The next matching message among those received; `Behind` once the listener is
    /// further behind the stream than it may be.
    fn next_pending(&mut self) -> Option<Next> {
        while let Some(published) = self.pending.pop_front() {
            if self.backlog > 0 {
                self.backlog -= 1;
            } else if let Some(behind) = self.bus.too_far_behind(&published) {
                return Some(self.behind(behind));
            }
            if bindings::any_matches(&self.bindings, &published.message) {
                self.position = published.cursor;
                return Some(Next::Message(published));
            }
        }
        None
    }

    /// Takes a received batch in; what stops the listener if it did not get one.
    fn receive(&mut self, received: Result<Batch, RecvError>) -> Option<Next> {
        match received {
            Ok(batch) => {
                self.pending.extend(batch.iter().cloned());
                None
            }
            Err(RecvError::Lagged(_)) => Some(self.behind(self.bus.listener_buffer_messages())),
            Err(RecvError::Closed) => Some(Next::Closed),
        }
    }

    fn behind(&self, behind: u64) -> Next {
        METRICS.listeners_dropped.inc();
        Next::Behind(format!(
            "listener fell behind by more than {behind} messages; reconnect with cursor {} to \
             resume",
            self.position
        ))
    }

    /// `first` and what else has arrived, up to a batch: the messages, and what ended the
    /// batch early if it was not a message.
    fn batch(&mut self, first: Arc<Published>) -> (Vec<Arc<Published>>, Option<Next>) {
        self.quiet_until = Some(tokio::time::Instant::now() + COALESCE);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.try_next() {
                Some(Next::Message(published)) => batch.push(published),
                Some(other) => return (batch, Some(other)),
                None => break,
            }
        }
        (batch, None)
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
    cursor: Option<Cursor>,
) -> Result<Listener, ApiError> {
    let bus = state.engine.bus().clone();
    let subscription = bus
        .subscribe(cursor)
        .map_err(|reason| ApiError::new(ErrorCode::ResourceExpired, reason))?;
    Ok(Listener::new(bus, bindings, subscription))
}

/// `GET /api/events/v1/listen`: a websocket.
///
/// Frames are written here rather than through a session object: a message's frame is encoded
/// once for every listener (`Published::websocket_frame`), and a listener hands on what has
/// arrived as one chunk, which keeps a fan-out to many listeners cheap.
pub async fn listen(state: Data<State>, request: HttpRequest, body: Payload) -> HttpResponse {
    Call::new("listen", request.clone(), Ok(Bytes::new()))
        .answer(async |_| {
            let (mut response, mut reader, writer) =
                websocket::accept(&request, body, MAX_CLIENT_FRAME, OUTPUT_CHUNKS)?;
            let deflate = websocket::negotiate_deflate(&request);
            if let Some(accepted) = deflate {
                response.headers_mut().insert(
                    actix_web::http::header::SEC_WEBSOCKET_EXTENSIONS,
                    actix_web::http::header::HeaderValue::from_static(accepted),
                );
                reader.accept_compressed();
            }
            actix_web::rt::spawn(serve_websocket(state, reader, writer, deflate.is_some()));
            Ok(response)
        })
        .await
}

/// `deflate`: permessage-deflate was negotiated, so messages go out compressed.
async fn serve_websocket(
    state: Data<State>,
    mut reader: Reader,
    connection: Writer,
    deflate: bool,
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
            subscribe(&state, bindings, cursor)
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
                Next::Message(first) => {
                    let (batch, ended) = listener.batch(first);
                    let frame = |published: &Arc<Published>| if deflate {
                        published.deflated_websocket_frame()
                    } else {
                        published.websocket_frame()
                    };
                    let frames: Vec<Bytes> = batch.iter().map(frame).collect();
                    let mut chunk = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
                    for frame in &frames {
                        chunk.extend_from_slice(frame);
                    }
                    match tokio::time::timeout(SEND_TIMEOUT, connection.send_encoded(chunk.freeze())).await {
                        Ok(Ok(())) => delivered = listener.position,
                        Ok(Err(())) => return,
                        Err(_) => break close_reason(
                            CloseCode::Policy,
                            format!("listener is not reading; resume with cursor {delivered}"),
                        ),
                    }
                    match ended {
                        Some(Next::Behind(reason)) => break close_reason(CloseCode::Policy, reason),
                        Some(Next::Closed) => break close_reason(CloseCode::Away, "the server is stopping"),
                        Some(Next::Message(_)) | None => {}
                    }
                }
                Next::Behind(reason) => break close_reason(CloseCode::Policy, reason),
                Next::Closed => break close_reason(CloseCode::Away, "the server is stopping"),
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
            let listener = subscribe(&state, bindings, cursor)?;
            let ready = format!(": ready {}\n\n", listener.position);
            let events = futures::stream::unfold(Some(listener), |listener| async move {
                let mut listener = listener?;
                let chunk = tokio::select! {
                    next = listener.next() => match next {
                        Next::Message(first) => {
                            let (batch, ended) = listener.batch(first);
                            let mut chunk = Vec::new();
                            for published in &batch {
                                chunk.extend_from_slice(&published.sse_event());
                            }
                            if let Some(Next::Behind(reason)) = ended {
                                let data = json!({"message": reason}).to_string();
                                chunk.extend_from_slice(format!("event: error\ndata: {data}\n\n").as_bytes());
                                return Some((Ok(Bytes::from(chunk)), None));
                            }
                            if let Some(Next::Closed) = ended {
                                return Some((Ok(Bytes::from(chunk)), None));
                            }
                            Some(Bytes::from(chunk))
                        }
                        Next::Behind(reason) => {
                            let data = json!({"message": reason}).to_string();
                            return Some((
                                Ok::<_, actix_web::Error>(Bytes::from(format!("event: error\ndata: {data}\n\n"))),
                                None,
                            ));
                        }
                        Next::Closed => None,
                    },
                    _ = tokio::time::sleep(KEEPALIVE) => Some(Bytes::from_static(b": keepalive\n\n")),
                };
                chunk.map(|chunk| (Ok(chunk), Some(listener)))
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
