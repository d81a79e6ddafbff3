//! What the log remembers of a worker: its quarantine and the expiry it declared. Which tasks
//! it claimed and when it was last seen are derived elsewhere (from claims and calls).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Timestamp;

/// The envelope key of a worker: its task queue, group and id. Task and group keys are
/// slugids, which hold no `/`, so worker keys never collide with them.
pub fn worker_key(task_queue_id: &str, worker_group: &str, worker_id: &str) -> String {
    format!("worker/{task_queue_id}/{worker_group}/{worker_id}")
}

#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Worker {
    pub quarantine_until: Option<Timestamp>,
    /// Every change of the quarantine, oldest first.
    pub quarantine_details: Vec<QuarantineChange>,
    /// Set by `declareWorker`.
    pub expires: Option<Timestamp>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct QuarantineChange {
    pub client_id: String,
    pub updated_at: Timestamp,
    pub quarantine_until: Timestamp,
    pub quarantine_info: String,
}

impl Worker {
    pub fn quarantined(&self, now: Timestamp) -> bool {
        self.quarantine_until.is_some_and(|until| until > now)
    }

    /// When the record last changed, if it says (a quarantine change does).
    pub fn changed(&self) -> Option<Timestamp> {
        self.quarantine_details
            .iter()
            .map(|change| change.updated_at)
            .max()
    }

    /// `quarantineDetails` of `worker-response`.
    pub fn quarantine_details_json(&self) -> Value {
        self.quarantine_details
            .iter()
            .map(|change| {
                json!({
                    "clientId": change.client_id,
                    "updatedAt": change.updated_at,
                    "quarantineUntil": change.quarantine_until,
                    "quarantineInfo": change.quarantine_info,
                })
            })
            .collect()
    }
}
