//! Task groups (reference §5): created implicitly by the first task that names one, they hold
//! the group's `schedulerId` (every member must share it), its expiry (an hour past the
//! latest-expiring member's) and whether it is sealed against new members.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Slugid, Timestamp};

/// How long a group outlives its latest-expiring task.
pub const GROUP_EXPIRY_MARGIN_MILLIS: i64 = 60 * 60 * 1000;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TaskGroup {
    pub task_group_id: Slugid,
    pub scheduler_id: String,
    pub expires: Timestamp,
    /// When `sealTaskGroup` was first called.
    pub sealed: Option<Timestamp>,
    /// When the group was last recorded as resolved (all its tasks resolved); a group whose
    /// tasks are rerun, or that gets new ones, resolves again.
    pub resolved: Option<Timestamp>,
}

impl TaskGroup {
    /// `task-group-response`: `{taskGroupId, schedulerId, expires, sealed?}`.
    pub fn to_json(&self) -> Value {
        let mut reply = json!({
            "taskGroupId": self.task_group_id,
            "schedulerId": self.scheduler_id,
            "expires": self.expires,
        });
        if let Some(sealed) = self.sealed {
            reply["sealed"] = json!(sealed);
        }
        reply
    }
}
