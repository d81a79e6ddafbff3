//! The in-process exchange bus: every exchange message, once its events are durable, reaches
//! the listeners of this server through here. Each message gets the next sequence number; the
//! most recent ones are kept so a listener that lost its connection resumes after the last
//! one it saw (its cursor). Each listener has a bounded buffer: one that falls further behind
//! is told so and dropped, and the queue never waits for a listener.
//!
//! The bus carries messages as they were derived. Writing them for listeners (websocket
//! frames, server-sent events) is the listener API's (`api::audience`), which does it once per
//! message, not per listener, and keeps what it wrote in the message's [`Memo`].

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use super::exchanges::Message;
use crate::metrics::METRICS;

/// A message with its place in this server's stream.
pub struct Published {
    pub cursor: Cursor,
    pub message: Message,
    /// What the listeners' side makes of the message once for all listeners (the API keeps
    /// the frames it writes here).
    pub memo: Memo,
}

/// Messages published together, in order.
pub struct Batch {
    pub messages: Box<[Arc<Published>]>,
    /// What the listeners' side makes of the batch once for all listeners (the API keeps
    /// what each audience receives of it here).
    pub memo: Memo,
}

impl Batch {
    /// The first message: the one furthest behind the stream.
    pub fn first(&self) -> &Published {
        &self.messages[0]
    }

    /// The last message, whose cursor a listener holds once it has the batch.
    pub fn last(&self) -> &Published {
        &self.messages[self.messages.len() - 1]
    }
}

/// A value made once, by whoever reads the bus first, and kept with a message or batch for as
/// long as it is held; the bus never looks inside. A memo keeps one type: the bus's one
/// reader, the listener API, keeps the same type in every memo of a kind.
#[derive(Default)]
pub struct Memo(OnceLock<Box<dyn Any + Send + Sync>>);

impl Memo {
    /// The value kept, made by `make` if there is none yet.
    ///
    /// # Panics
    ///
    /// If a value of another type was kept first.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> &T {
        self.0
            .get_or_init(|| Box::new(make()))
            .downcast_ref()
            .expect("a memo keeps values of one type")
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
            origin: Instant::now(),
            listener_flush: options.listener_flush,
        }
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
                memo: Memo::default(),
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
            memo: Memo::default(),
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

    /// Whether the server closed the bus (it is stopping).
    pub fn is_closed(&self) -> bool {
        *self.closing.borrow()
    }
}
