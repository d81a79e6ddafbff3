//! The worker entity: what the log remembers of a worker, its quarantine and the expiry it
//! declared, with the decisions that record them and the fold that applies them. Which tasks
//! it claimed and when it was last seen are derived elsewhere (the engine's worker directory,
//! from claims and calls).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Event, Timestamp};

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

/// What can be asked of one worker's record. Whether the worker exists is the caller's check:
/// the record itself knows only what was recorded, not which workers claimed work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerCommand {
    /// `quarantineWorker`, by `client_id`.
    Quarantine {
        client_id: String,
        quarantine_until: Timestamp,
        quarantine_info: String,
    },
    /// `declareWorker`.
    Declare { expires: Timestamp },
}

/// Decides `command` at `now`, the instant the events are recorded at (a quarantine change
/// says when it was made).
pub fn decide(command: WorkerCommand, now: Timestamp) -> Vec<Event> {
    match command {
        WorkerCommand::Quarantine {
            client_id,
            quarantine_until,
            quarantine_info,
        } => vec![Event::WorkerQuarantined {
            change: QuarantineChange {
                client_id,
                updated_at: now,
                quarantine_until,
                quarantine_info,
            },
        }],
        WorkerCommand::Declare { expires } => vec![Event::WorkerDeclared { expires }],
    }
}

impl Worker {
    /// Applies one event of this worker; events of other entities change nothing.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::WorkerQuarantined { change } => {
                self.quarantine_until = Some(change.quarantine_until);
                self.quarantine_details.push(change.clone());
            }
            Event::WorkerDeclared { expires } => self.expires = Some(*expires),
            _ => {}
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(worker: &mut Worker, events: Vec<Event>) {
        for event in &events {
            worker.apply(event);
        }
    }

    #[test]
    fn quarantines_are_kept_in_order_and_the_latest_is_in_force() {
        let mut worker = Worker::default();
        let quarantine = |until: i64, info: &str| WorkerCommand::Quarantine {
            client_id: "admin".into(),
            quarantine_until: Timestamp::from_millis(until),
            quarantine_info: info.into(),
        };
        apply_all(
            &mut worker,
            decide(quarantine(1_000, "broken"), Timestamp::from_millis(10)),
        );
        assert!(worker.quarantined(Timestamp::from_millis(999)));
        apply_all(
            &mut worker,
            decide(quarantine(0, "fixed"), Timestamp::from_millis(20)),
        );
        assert!(!worker.quarantined(Timestamp::from_millis(999)));
        assert_eq!(worker.changed(), Some(Timestamp::from_millis(20)));
        let details = worker.quarantine_details_json();
        assert_eq!(details[0]["quarantineInfo"], "broken");
        assert_eq!(details[1]["quarantineInfo"], "fixed");
        assert_eq!(details[1]["clientId"], "admin");
    }

    #[test]
    fn a_declaration_sets_the_expiry_and_leaves_the_quarantine() {
        let mut worker = Worker::default();
        let expires = Timestamp::from_millis(5_000);
        apply_all(
            &mut worker,
            decide(
                WorkerCommand::Declare { expires },
                Timestamp::from_millis(1),
            ),
        );
        assert_eq!(worker.expires, Some(expires));
        assert_eq!(worker.quarantine_until, None);
        assert!(worker.quarantine_details.is_empty());
    }
}
