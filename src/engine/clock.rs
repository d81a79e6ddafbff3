//! Where the engine reads the time. Decisions take `now` as an argument (`task::decide`); the
//! shards and the engine get it here, so that tests can run timers on tokio's paused time
//! instead of sleeping.

use crate::model::Timestamp;

#[derive(Clone, Copy, Debug, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// `origin` at `started`, then moving as tokio's clock moves: with tokio's time paused
    /// (`tokio::time::pause`), it stands still until the runtime advances it.
    Tokio {
        origin: Timestamp,
        started: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's from the wall clock's present; must run inside a tokio
    /// runtime.
    pub fn tokio() -> Clock {
        Clock::Tokio {
            origin: Timestamp::now(),
            started: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Tokio { origin, started } => {
                origin.plus_millis(started.elapsed().as_millis() as i64)
            }
        }
    }
}
