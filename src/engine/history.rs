//! Task histories: the record of every event of a task, kept in its partition store
//! (`store`, keyspace `history`) so that they outlive log retention, and gone when the task
//! expires. `Engine::history` pages through them.

use crate::model::HistoryRecord;

/// Part of a task's history, in order.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryPage {
    pub records: Vec<HistoryRecord>,
    /// Whether records follow the last one.
    pub more: bool,
}
