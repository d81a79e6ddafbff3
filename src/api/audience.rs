//! How exchange messages are written to listeners: as websocket frames (plain, or compressed
//! with permessage-deflate) or as server-sent events. The bus carries plain messages; each is
//! rendered here once however many listeners receive it, and kept in the message's memo.
//!
//! Listeners that bind alike and are written alike share an [`Audience`], so each published
//! batch is also matched and rendered once per audience; with a shared compression context
//! ([`Format::DeflatedStream`]), the audience's listeners receive the very same compressed
//! bytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use actix_http::ws;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::codec::Encoder;

use super::websocket::{self, DeflateContext};
use crate::model::binding::Binding;
use crate::projections::bus::{Batch, Published};
use crate::projections::exchanges::Message;

/// How a listener's messages are written to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Websocket,
    /// Websocket frames compressed with permessage-deflate, each on its own.
    DeflatedWebsocket,
    /// Websocket frames compressed with permessage-deflate in a context the audience's
    /// listeners share (see [`Audience::chunk_of`]); a frame on its own where that cannot be.
    DeflatedStream,
    Sse,
}

/// A message as listeners receive it: the fields of a Taskcluster client's listener message,
/// its id, and (on this server's streams) its cursor and the frame type.
#[derive(Serialize)]
struct ListenerMessage<'a> {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    cursor: String,
    id: String,
    exchange: String,
    #[serde(rename = "routingKey")]
    routing_key: &'a str,
    payload: &'a RawValue,
    routes: &'a [String],
}

/// The message as a listener's JSON object: with `type` for websocket frames, without for
/// server-sent events.
fn render(published: &Published, kind: Option<&'static str>) -> String {
    let message = &published.message;
    let listener_message = ListenerMessage {
        kind,
        cursor: published.cursor.to_string(),
        id: message.id.to_string(),
        exchange: message.exchange.full_name(),
        routing_key: &message.routing_key,
        payload: message.body(),
        routes: &message.routes,
    };
    // A listener message holds only strings and JSON already rendered.
    serde_json::to_string(&listener_message).unwrap_or_default()
}

/// A published message as each format writes it, rendered by the first listener that needs it
/// (kept in [`Published::memo`]).
#[derive(Default)]
struct Frames {
    websocket: OnceLock<Bytes>,
    deflated_websocket: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
}

/// The message as `format` writes it, on its own.
fn frame(published: &Published, format: Format) -> Bytes {
    let frames: &Frames = published.memo.get_or_init(Frames::default);
    match format {
        // A text frame of `{"type": "message", "cursor", "id", "exchange", "routingKey",
        // "payload", "routes"}`.
        Format::Websocket => frames.websocket.get_or_init(|| {
            let text = ByteString::from(render(published, Some("message")));
            let mut frame = BytesMut::new();
            // Encoding a server's text frame cannot fail.
            let _ = ws::Codec::new().encode(ws::Message::Text(text), &mut frame);
            frame.freeze()
        }),
        Format::DeflatedWebsocket | Format::DeflatedStream => {
            frames.deflated_websocket.get_or_init(|| {
                websocket::deflated_text_frame(render(published, Some("message")).as_bytes())
            })
        }
        // The frame's object without `type`, with the cursor as the event's id.
        Format::Sse => frames.sse.get_or_init(|| {
            let data = render(published, None);
            format!("id: {}\nevent: message\ndata: {data}\n\n", published.cursor).into()
        }),
    }
    .clone()
}

/// What a listener receives: its bindings, and how its messages are written. Listeners that
/// bind alike share one (see [`Audiences`]), so each published batch is matched and rendered
/// once per audience, however many listeners it has.
pub struct Audience {
    bindings: Vec<Binding>,
    format: Format,
    /// With [`Format::DeflatedStream`]: the compression context the audience shares.
    stream: Mutex<DeflateStream>,
}

/// An audience's compression context and where in the stream of batches it is.
#[derive(Default)]
struct DeflateStream {
    context: Option<DeflateContext>,
    /// The sequence after the last message it has passed: a batch starting there continues
    /// the context.
    next: u64,
    /// Text compressed since the context last restarted.
    since_restart: usize,
}

/// After this much text the shared context restarts, so that a listener that joined since
/// (and so lacks what came before) can take up the shared frames from there.
const RESTART_EVERY_BYTES: usize = 256 * 1024;

/// What an audience receives of one batch: its frames (or events), in order, as one chunk.
#[derive(Clone)]
pub struct Chunk {
    pub frames: Bytes,
    pub place: Place,
}

/// Where a chunk's frames stand in their audience's shared compression context.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Each frame stands on its own.
    Alone,
    /// The context restarted at this chunk: its frames lean only on each other.
    Restarts,
    /// The frames lean on every shared frame since the context last restarted: a listener
    /// that did not receive all of those (and nothing else compressed) must take
    /// [`Audience::alone`] instead.
    Continues,
}

/// What the audiences of several listeners received of one batch (kept in [`Batch::memo`]).
#[derive(Default)]
struct Chunks(Mutex<Vec<(Weak<Audience>, Chunk)>>);

impl Audience {
    /// Whether a listener of this audience receives `message`.
    pub fn receives(&self, message: &Message) -> bool {
        message.matches_any(&self.bindings)
    }

    /// `published` as this audience's listeners are written it, on its own.
    pub fn frame(&self, published: &Published) -> Bytes {
        frame(published, self.format)
    }

    /// What this audience receives of `batch`; no frames when it binds none of it. Rendered
    /// by the first of the audience's listeners to ask, and kept for the others while the
    /// batch is (an audience of one keeps nothing, so listeners that all bind differently
    /// cost no memory here). For [`Format::DeflatedStream`], the audience's context
    /// compresses its batches in the order they were published; a batch asked for after the
    /// context passed it is rendered frame by frame instead.
    pub fn chunk_of(self: &Arc<Self>, batch: &Batch) -> Chunk {
        let Chunks(chunks) = batch.memo.get_or_init(Chunks::default);
        let mut chunks = chunks.lock().unwrap_or_else(|poison| poison.into_inner());
        // A weak reference keeps its allocation, so an address is not reused while it is here.
        if let Some((_, chunk)) = chunks
            .iter()
            .find(|(known, _)| std::ptr::eq(known.as_ptr(), Arc::as_ptr(self)))
        {
            return chunk.clone();
        }
        let chunk = match self.format {
            Format::DeflatedStream => self.in_context(batch),
            _ => Chunk {
                frames: self.alone(batch),
                place: Place::Alone,
            },
        };
        // Only listeners hold an audience strongly.
        if Arc::strong_count(self) > 1 {
            chunks.push((Arc::downgrade(self), chunk.clone()));
        }
        chunk
    }

    /// The frames of the messages of `batch` this audience binds, each standing on its own,
    /// as one chunk.
    pub fn alone(&self, batch: &Batch) -> Bytes {
        concatenate(
            batch
                .messages
                .iter()
                .filter(|published| self.receives(&published.message))
                .map(|published| self.frame(published))
                .collect(),
        )
    }

    fn in_context(&self, batch: &Batch) -> Chunk {
        let mut stream = self
            .stream
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let first = batch.first().cursor.sequence;
        if first < stream.next {
            return Chunk {
                frames: self.alone(batch),
                place: Place::Alone,
            };
        }
        let contiguous = first == stream.next;
        stream.next = batch.last().cursor.sequence + 1;
        let matching: Vec<&Arc<Published>> = batch
            .messages
            .iter()
            .filter(|published| self.receives(&published.message))
            .collect();
        if matching.is_empty() {
            return Chunk {
                frames: Bytes::new(),
                place: Place::Alone,
            };
        }
        let restart =
            !contiguous || stream.context.is_none() || stream.since_restart >= RESTART_EVERY_BYTES;
        let DeflateStream {
            context,
            since_restart,
            ..
        } = &mut *stream;
        let context = context.get_or_insert_with(DeflateContext::new);
        if restart {
            context.restart();
            *since_restart = 0;
        }
        let frames = matching
            .iter()
            .map(|published| {
                let text = render(published, Some("message"));
                *since_restart += text.len();
                context.frame(text.as_bytes())
            })
            .collect();
        Chunk {
            frames: concatenate(frames),
            place: if restart {
                Place::Restarts
            } else {
                Place::Continues
            },
        }
    }
}

/// Frames as one chunk.
fn concatenate(frames: Vec<Bytes>) -> Bytes {
    match frames.as_slice() {
        [] => Bytes::new(),
        [one] => one.clone(),
        _ => {
            let mut chunk = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
            for frame in &frames {
                chunk.extend_from_slice(frame);
            }
            chunk.freeze()
        }
    }
}

/// The audiences of one bus's listeners, by their key. One per bus: an audience's shared
/// compression context follows the sequence numbers of one stream.
#[derive(Default)]
pub struct Audiences(Mutex<HashMap<String, Weak<Audience>>>);

impl Audiences {
    /// The audience of listeners with these bindings and this format: the same one for every
    /// listener that binds the same (exchange, pattern) pairs, in any order.
    pub fn audience(&self, bindings: Vec<Binding>, format: Format) -> Arc<Audience> {
        let mut keys: Vec<String> = bindings.iter().map(Binding::to_string).collect();
        keys.sort_unstable();
        keys.dedup();
        let key = format!("{format:?} {}", keys.join(" "));
        let mut audiences = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some(audience) = audiences.get(&key).and_then(Weak::upgrade) {
            return audience;
        }
        audiences.retain(|_, audience| audience.strong_count() > 0);
        let audience = Arc::new(Audience {
            bindings,
            format,
            stream: Mutex::new(DeflateStream::default()),
        });
        audiences.insert(key, Arc::downgrade(&audience));
        audience
    }
}
