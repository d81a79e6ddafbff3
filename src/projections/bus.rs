//! The in-process exchange bus: every exchange message, once its events are durable, reaches
//! the listeners of this server through here. Each message gets the next sequence number; the
//! most recent ones are kept so a listener that lost its connection resumes after the last
//! one it saw (its cursor). Each listener has a bounded buffer: one that falls further behind
//! is told so and dropped, and the queue never waits for a listener.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use actix_http::ws;
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio_util::codec::Encoder;

use tokio::sync::{broadcast, watch};

use super::exchanges::Message;
use super::metrics::METRICS;
use crate::api::websocket::DeflateContext;
use crate::model::binding::Binding;

/// A message with its place in this server's stream, rendered for listeners once however
/// many there are.
pub struct Published {
    pub cursor: Cursor,
    pub message: Message,
    websocket_frame: OnceLock<Bytes>,
    deflated_websocket_frame: OnceLock<Bytes>,
    sse_event: OnceLock<Bytes>,
}

impl Published {
    /// The websocket frame, encoded: a text frame of `{"type": "message", "cursor", "id",
    /// "exchange", "routingKey", "payload", "routes"}`.
    pub fn websocket_frame(&self) -> Bytes {
        self.websocket_frame
            .get_or_init(|| {
                let text = ByteString::from(self.render(Some("message")));
                let mut frame = BytesMut::new();
                // Encoding a server's text frame cannot fail.
                let _ = ws::Codec::new().encode(ws::Message::Text(text), &mut frame);
                frame.freeze()
            })
            .clone()
    }

    /// The websocket frame compressed, for listeners that negotiated permessage-deflate.
    pub fn deflated_websocket_frame(&self) -> Bytes {
        self.deflated_websocket_frame
            .get_or_init(|| {
                crate::api::websocket::deflated_text_frame(self.render(Some("message")).as_bytes())
            })
            .clone()
    }

    /// The server-sent event: the frame's object without `type`, with the cursor as its id.
    pub fn sse_event(&self) -> Bytes {
        self.sse_event
            .get_or_init(|| {
                let data = self.render(None);
                format!("id: {}\nevent: message\ndata: {data}\n\n", self.cursor).into()
            })
            .clone()
    }

    /// The message as `format` writes it.
    pub fn rendered(&self, format: Format) -> Bytes {
        match format {
            Format::Websocket => self.websocket_frame(),
            Format::DeflatedWebsocket | Format::DeflatedStream => self.deflated_websocket_frame(),
            Format::Sse => self.sse_event(),
        }
    }

    fn render(&self, kind: Option<&'static str>) -> String {
        let mut message = self.message.to_listener();
        message.kind = kind;
        message.cursor = Some(self.cursor.to_string());
        // A listener message holds only strings and JSON already rendered.
        serde_json::to_string(&message).unwrap_or_default()
    }
}

/// A position in the stream: the server run (`epoch`: sequences restart with the process)
/// and the sequence of the last message seen. Written `<epoch>.<sequence>`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cursor {
    pub epoch: u64,
    pub sequence: u64,
}

impl fmt::Display for Cursor {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}.{}", self.epoch, self.sequence)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Cursor, String> {
        let invalid = || format!("`{text}` is not a cursor this server gave out");
        let (epoch, sequence) = text.split_once('.').ok_or_else(invalid)?;
        Ok(Cursor {
            epoch: epoch.parse().map_err(|_| invalid())?,
            sequence: sequence.parse().map_err(|_| invalid())?,
        })
    }
}

/// How a listener's messages are written to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    Websocket,
    /// Websocket frames compressed with permessage-deflate, each on its own.
    DeflatedWebsocket,
    /// Websocket frames compressed with permessage-deflate in a context the audience's
    /// listeners share (see [`Batch::rendered_for`]); a frame on its own where that cannot be.
    DeflatedStream,
    Sse,
}

/// What a listener receives: its bindings, and how its messages are written. Listeners that
/// bind alike share one (the bus interns them), so each published batch is matched and
/// rendered once per audience, however many listeners it has.
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

impl Audience {
    /// Whether a listener of this audience receives `message`.
    pub fn receives(&self, message: &Message) -> bool {
        message.matches_any(&self.bindings)
    }

    pub fn format(&self) -> Format {
        self.format
    }
}

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
    /// [`Batch::alone_for`] instead.
    Continues,
}

/// Messages published together, in order, with what each audience receives of them.
pub struct Batch {
    pub messages: Box<[Arc<Published>]>,
    /// What was rendered for audiences of several listeners (see [`Batch::rendered_for`]).
    rendered: Mutex<Vec<(Weak<Audience>, Chunk)>>,
}

impl Batch {
    /// What `audience` receives of this batch; no frames when it binds none of it. Rendered
    /// by the first of the audience's listeners to ask, and kept for the others while the
    /// batch is (an audience of one keeps nothing, so listeners that all bind differently
    /// cost no memory here). For [`Format::DeflatedStream`], the audience's context
    /// compresses its batches in the order they were published; a batch asked for after the
    /// context passed it is rendered frame by frame instead.
    pub fn rendered_for(&self, audience: &Arc<Audience>) -> Chunk {
        let mut rendered = self
            .rendered
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        // A weak reference keeps its allocation, so an address is not reused while it is here.
        if let Some((_, chunk)) = rendered
            .iter()
            .find(|(known, _)| std::ptr::eq(known.as_ptr(), Arc::as_ptr(audience)))
        {
            return chunk.clone();
        }
        let chunk = match audience.format {
            Format::DeflatedStream => self.in_context(audience),
            _ => Chunk {
                frames: self.alone_for(audience),
                place: Place::Alone,
            },
        };
        // Only listeners hold an audience strongly.
        if Arc::strong_count(audience) > 1 {
            rendered.push((Arc::downgrade(audience), chunk.clone()));
        }
        chunk
    }

    /// The frames of the messages `audience` binds, each standing on its own, as one chunk.
    pub fn alone_for(&self, audience: &Audience) -> Bytes {
        concatenate(
            self.messages
                .iter()
                .filter(|published| audience.receives(&published.message))
                .map(|published| published.rendered(audience.format))
                .collect(),
        )
    }

    fn in_context(&self, audience: &Audience) -> Chunk {
        let mut stream = audience
            .stream
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let first = self.first().cursor.sequence;
        if first < stream.next {
            return Chunk {
                frames: self.alone_for(audience),
                place: Place::Alone,
            };
        }
        let contiguous = first == stream.next;
        stream.next = self.last().cursor.sequence + 1;
        let matching: Vec<&Arc<Published>> = self
            .messages
            .iter()
            .filter(|published| audience.receives(&published.message))
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
                let text = published.render(Some("message"));
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

    /// The first message: the one furthest behind the stream.
    pub fn first(&self) -> &Published {
        &self.messages[0]
    }

    /// The last message, whose cursor a listener holds once it has the batch.
    pub fn last(&self) -> &Published {
        &self.messages[self.messages.len() - 1]
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

#[derive(Clone, Copy, Debug)]
pub struct BusOptions {
    /// How many recent messages are kept for listeners resuming from a cursor.
    pub resume_messages: usize,
    /// How far (in messages) a listener may fall behind before it is disconnected.
    pub listener_buffer_messages: usize,
    /// Under load, how often listeners are written to (see [`Bus::next_flush`]).
    pub listener_flush: Duration,
}

pub struct Bus {
    epoch: u64,
    /// Turns true when the server stops: listeners are told and let go.
    closing: watch::Sender<bool>,
    recent: Mutex<Recent>,
    /// Each publication goes out as one batch, so a listener wakes once per batch rather
    /// than once per message.
    sender: broadcast::Sender<Arc<Batch>>,
    /// The sequence of the newest message, for listeners to tell how far behind they are.
    head: AtomicU64,
    listener_buffer_messages: u64,
    /// The audiences of the listeners, by their key (see [`Bus::audience`]).
    audiences: Mutex<HashMap<String, Weak<Audience>>>,
    /// Listeners are flushed on the ticks of one clock, from here.
    origin: Instant,
    listener_flush: Duration,
}

struct Recent {
    /// The sequence the next message gets; sequences start at 1, so cursor 0 is "before
    /// everything".
    next: u64,
    messages: VecDeque<Arc<Published>>,
    keep: usize,
}

/// What a new listener starts from: what it missed since its cursor, then everything new.
pub struct Subscription {
    pub backlog: Vec<Arc<Published>>,
    pub receiver: broadcast::Receiver<Arc<Batch>>,
    /// Where the listener starts: the cursor it resumes after, or the current end.
    pub position: Cursor,
    /// Turns true when the server stops.
    pub closing: watch::Receiver<bool>,
}

impl Bus {
    pub fn new(options: BusOptions) -> Bus {
        // A batch holds at least one message, so this many batches bound the messages a
        // listener may hold back; the lag check on receipt is the exact bound.
        let (sender, _) = broadcast::channel(options.listener_buffer_messages.max(1));
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        Bus {
            epoch,
            closing: watch::Sender::new(false),
            recent: Mutex::new(Recent {
                next: 1,
                messages: VecDeque::with_capacity(options.resume_messages.min(1 << 16)),
                keep: options.resume_messages,
            }),
            sender,
            head: AtomicU64::new(0),
            listener_buffer_messages: options.listener_buffer_messages.max(1) as u64,
            audiences: Mutex::new(HashMap::new()),
            origin: Instant::now(),
            listener_flush: options.listener_flush,
        }
    }

    /// The audience of listeners with these bindings and this format: the same one for every
    /// listener that binds the same (exchange, pattern) pairs, in any order.
    pub fn audience(&self, bindings: Vec<Binding>, format: Format) -> Arc<Audience> {
        let mut keys: Vec<String> = bindings.iter().map(Binding::to_string).collect();
        keys.sort_unstable();
        keys.dedup();
        let key = format!("{format:?} {}", keys.join(" "));
        let mut audiences = self
            .audiences
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
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

    /// When a listener that has just been written to is written to next, at the earliest.
    /// Every listener keeps to the ticks of one clock, `[events] listener_flush_ms` apart: a
    /// busy stream then costs each listener a wake-up and a write per tick rather than per
    /// publication, all of them wake together, and a quiet stream is not delayed at all.
    pub fn next_flush(&self) -> tokio::time::Instant {
        let interval = self.listener_flush.as_nanos().max(1);
        let ticks = self.origin.elapsed().as_nanos() / interval + 1;
        let since_origin =
            Duration::from_nanos(u64::try_from(ticks * interval).unwrap_or(u64::MAX));
        tokio::time::Instant::from_std(self.origin + since_origin)
    }

    pub fn listener_buffer_messages(&self) -> u64 {
        self.listener_buffer_messages
    }

    /// How far a listener that has just received `published` is behind the stream, if that
    /// is further than a listener may be.
    pub fn too_far_behind(&self, published: &Published) -> Option<u64> {
        let behind = self
            .head
            .load(Ordering::Relaxed)
            .saturating_sub(published.cursor.sequence);
        (behind > self.listener_buffer_messages).then_some(behind)
    }

    /// Hands `messages` to every listener, in order.
    pub fn publish(&self, messages: impl IntoIterator<Item = Message>) {
        let mut recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let mut batch = Vec::new();
        for message in messages {
            METRICS.exchange_message(message.exchange);
            let published = Arc::new(Published {
                cursor: Cursor {
                    epoch: self.epoch,
                    sequence: recent.next,
                },
                message,
                websocket_frame: OnceLock::new(),
                deflated_websocket_frame: OnceLock::new(),
                sse_event: OnceLock::new(),
            });
            recent.next += 1;
            if recent.keep > 0 {
                if recent.messages.len() == recent.keep {
                    recent.messages.pop_front();
                }
                recent.messages.push_back(published.clone());
            }
            batch.push(published);
        }
        if batch.is_empty() {
            return;
        }
        self.head.store(recent.next - 1, Ordering::Relaxed);
        // No receivers is not an error: nobody is listening.
        let _ = self.sender.send(Arc::new(Batch {
            messages: batch.into(),
            rendered: Mutex::new(Vec::new()),
        }));
    }

    /// A subscription starting after `after` (or now). Refused when the cursor belongs to
    /// another server run or points before the oldest message still kept.
    pub fn subscribe(&self, after: Option<Cursor>) -> Result<Subscription, String> {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let current = Cursor {
            epoch: self.epoch,
            sequence: recent.next - 1,
        };
        let backlog = match after {
            None => Vec::new(),
            Some(cursor) if cursor.epoch != self.epoch => {
                return Err(format!(
                    "cursor `{cursor}` is from an earlier run of the server; messages since \
                     then cannot be replayed, start without a cursor"
                ));
            }
            Some(cursor) if cursor.sequence > current.sequence => {
                return Err(format!(
                    "cursor `{cursor}` is ahead of the stream (`{current}`)"
                ));
            }
            Some(cursor) => {
                let oldest = recent
                    .messages
                    .front()
                    .map_or(recent.next, |published| published.cursor.sequence);
                if cursor.sequence + 1 < oldest {
                    return Err(format!(
                        "cursor `{cursor}` is too old: the server keeps the last {} messages \
                         and the oldest is {}.{}",
                        recent.keep, self.epoch, oldest
                    ));
                }
                recent
                    .messages
                    .iter()
                    .filter(|published| published.cursor.sequence > cursor.sequence)
                    .cloned()
                    .collect()
            }
        };
        // Subscribing under the lock that publishing takes: nothing falls between the
        // backlog and the receiver, and nothing is in both.
        Ok(Subscription {
            backlog,
            receiver: self.sender.subscribe(),
            position: after.unwrap_or(current),
            closing: self.closing.subscribe(),
        })
    }

    /// The server is stopping: every listener is told so and disconnected.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}
