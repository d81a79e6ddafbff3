//! The queue's exchanges as Taskcluster names them (reference §7), and what identifies and
//! routes one of their messages: its id, and the Kafka headers that carry its routing keys. The
//! messages themselves are derived from events in `projections::exchanges`; listeners, the
//! CLI and the load generator need only these names.

use std::fmt;

/// The prefix of every exchange name, as Taskcluster's clients bind to them.
pub const EXCHANGE_PREFIX: &str = "exchange/taskcluster-queue/v1/";
/// The default prefix of the Kafka topic of an exchange: `taskcluster-queue.v1.<exchange>`.
pub const DEFAULT_TOPIC_PREFIX: &str = "taskcluster-queue.v1.";
/// The Kafka header holding a message's primary routing key.
pub const ROUTING_KEY_HEADER: &str = "taskcluster-routing-key";
/// The Kafka header holding one CC routing key (`route.<route>`), repeated per route.
pub const CC_HEADER: &str = "taskcluster-cc";

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Exchange {
    TaskDefined,
    TaskPending,
    TaskRunning,
    ArtifactCreated,
    TaskCompleted,
    TaskFailed,
    TaskException,
    TaskGroupResolved,
    TaskGroupSealed,
    TaskPriorityChanged,
    TaskGroupPriorityChanged,
}

impl Exchange {
    pub const ALL: [Exchange; 11] = [
        Exchange::TaskDefined,
        Exchange::TaskPending,
        Exchange::TaskRunning,
        Exchange::ArtifactCreated,
        Exchange::TaskCompleted,
        Exchange::TaskFailed,
        Exchange::TaskException,
        Exchange::TaskGroupResolved,
        Exchange::TaskGroupSealed,
        Exchange::TaskPriorityChanged,
        Exchange::TaskGroupPriorityChanged,
    ];

    /// The short name, `task-completed`.
    pub fn name(self) -> &'static str {
        match self {
            Exchange::TaskDefined => "task-defined",
            Exchange::TaskPending => "task-pending",
            Exchange::TaskRunning => "task-running",
            Exchange::ArtifactCreated => "artifact-created",
            Exchange::TaskCompleted => "task-completed",
            Exchange::TaskFailed => "task-failed",
            Exchange::TaskException => "task-exception",
            Exchange::TaskGroupResolved => "task-group-resolved",
            Exchange::TaskGroupSealed => "task-group-sealed",
            Exchange::TaskPriorityChanged => "task-priority-changed",
            Exchange::TaskGroupPriorityChanged => "task-group-priority-changed",
        }
    }

    /// The name Taskcluster's clients know: `exchange/taskcluster-queue/v1/task-completed`.
    pub fn full_name(self) -> String {
        format!("{EXCHANGE_PREFIX}{}", self.name())
    }

    /// Reads a short or a full name.
    pub fn parse(name: &str) -> Option<Exchange> {
        let short = name.strip_prefix(EXCHANGE_PREFIX).unwrap_or(name);
        Exchange::ALL
            .into_iter()
            .find(|exchange| exchange.name() == short)
    }

    /// Whether the messages are about a task group rather than a task (their key is the
    /// group's id, and they carry no CC routes).
    pub fn is_group(self) -> bool {
        matches!(
            self,
            Exchange::TaskGroupResolved
                | Exchange::TaskGroupSealed
                | Exchange::TaskGroupPriorityChanged
        )
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Identifies a message for good: the log position of the event it was derived from, and
/// its place among that event's messages. Re-deriving the same event gives the same ids, which
/// is what lets a publisher skip what it already published.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct MessageId {
    pub partition: u32,
    pub offset: u64,
    pub index: u16,
}

impl fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}-{}-{}",
            self.partition, self.offset, self.index
        )
    }
}

impl std::str::FromStr for MessageId {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut parts = text.splitn(3, '-');
        let mut next = || parts.next().ok_or(());
        Ok(MessageId {
            partition: next()?.parse().map_err(drop)?,
            offset: next()?.parse().map_err(drop)?,
            index: next()?.parse().map_err(drop)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_read_back() {
        for exchange in Exchange::ALL {
            assert_eq!(Exchange::parse(exchange.name()), Some(exchange));
            assert_eq!(Exchange::parse(&exchange.full_name()), Some(exchange));
        }
        assert_eq!(Exchange::parse("task-nonsense"), None);
        let id = MessageId {
            partition: 2,
            offset: 99,
            index: 1,
        };
        assert_eq!(id.to_string().parse(), Ok(id));
        assert!("1-2".parse::<MessageId>().is_err());
    }
}
