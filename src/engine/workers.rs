//! The worker directory: which workers and task queues exist, when each was last active, what
//! each worker claimed recently, and each worker's quarantine. Claims and quarantines come
//! from the shards (so they are rebuilt from the log after a restart); "last seen" comes from
//! claimWork calls and is kept in memory only, as an approximation Taskcluster also allows
//! itself. Workers and task queues past their expiry leave the directory (Taskcluster's
//! `expire-worker-info`), except a worker whose quarantine is still in force.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use actix::prelude::*;
use serde_json::{Value, json};

use crate::model::{Slugid, Timestamp, Worker, split_task_queue_id};

/// How many recent claims `getWorker` shows.
const RECENT_TASKS: usize = 20;
/// How long a worker or task queue is kept after it was last active, unless declared.
const EXPIRY_MILLIS: i64 = 24 * 60 * 60 * 1000;
/// How often expired workers and task queues are dropped.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// A worker's full name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct WorkerName {
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
}

impl WorkerName {
    /// Reads a worker's envelope key back (see [`crate::model::worker_key`]).
    pub fn from_key(key: &str) -> Option<WorkerName> {
        let mut parts = key.strip_prefix("worker/")?.splitn(4, '/');
        let (provisioner_id, worker_type) = (parts.next()?, parts.next()?);
        Some(WorkerName {
            task_queue_id: format!("{provisioner_id}/{worker_type}"),
            worker_group: parts.next()?.to_owned(),
            worker_id: parts.next()?.to_owned(),
        })
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkerInfo {
    pub name: WorkerName,
    pub first_claim: Timestamp,
    pub last_date_active: Timestamp,
    pub recent_tasks: VecDeque<(Slugid, u32)>,
    pub record: Worker,
}

impl WorkerInfo {
    /// What two nodes know of one worker, together: each saw some of its calls.
    pub fn merge(mut self, other: WorkerInfo) -> WorkerInfo {
        self.first_claim = self.first_claim.min(other.first_claim);
        if other.last_date_active > self.last_date_active {
            self.last_date_active = other.last_date_active;
            self.record = other.record;
        }
        self.recent_tasks.extend(other.recent_tasks);
        self
    }

    fn new(name: WorkerName, at: Timestamp) -> Self {
        WorkerInfo {
            name,
            first_claim: at,
            last_date_active: at,
            recent_tasks: VecDeque::new(),
            record: Worker::default(),
        }
    }

    pub fn expires(&self) -> Timestamp {
        self.record
            .expires
            .unwrap_or(self.last_date_active.plus_millis(EXPIRY_MILLIS))
    }

    /// `worker-response`.
    pub fn to_json(&self) -> Value {
        let (provisioner_id, worker_type) =
            split_task_queue_id(&self.name.task_queue_id).unwrap_or_default();
        let mut reply = json!({
            "provisionerId": provisioner_id,
            "workerType": worker_type,
            "taskQueueId": self.name.task_queue_id,
            "workerGroup": self.name.worker_group,
            "workerId": self.name.worker_id,
            "recentTasks": self.recent_tasks.iter()
                .map(|(task_id, run_id)| json!({"taskId": task_id, "runId": run_id}))
                .collect::<Vec<_>>(),
            "expires": self.expires(),
            "firstClaim": self.first_claim,
            "lastDateActive": self.last_date_active,
            "actions": [],
        });
        if let Some(until) = self.record.quarantine_until {
            reply["quarantineUntil"] = json!(until);
            reply["quarantineDetails"] = self.record.quarantine_details_json();
        }
        reply
    }

    /// An entry of `listWorkers`; `quarantineUntil` only while it is in force.
    pub fn to_list_json(&self, now: Timestamp) -> Value {
        let mut entry = json!({
            "workerGroup": self.name.worker_group,
            "workerId": self.name.worker_id,
            "firstClaim": self.first_claim,
            "lastDateActive": self.last_date_active,
        });
        if let Some((task_id, run_id)) = self.recent_tasks.back() {
            entry["latestTask"] = json!({"taskId": task_id, "runId": run_id});
        }
        if let Some(until) = self.record.quarantine_until.filter(|until| *until > now) {
            entry["quarantineUntil"] = json!(until);
        }
        entry
    }
}

#[derive(Default)]
pub struct WorkerDirectory {
    workers: BTreeMap<WorkerName, WorkerInfo>,
    /// Every task queue seen, with when it was last active.
    task_queues: BTreeMap<String, Timestamp>,
}

impl Actor for WorkerDirectory {
    type Context = Context<Self>;

    fn started(&mut self, context: &mut Context<Self>) {
        context.run_interval(SWEEP_EVERY, |directory, _| {
            directory.sweep(Timestamp::now())
        });
    }
}

impl WorkerDirectory {
    /// Drops the workers and task queues expired at `now`; a quarantined worker stays while
    /// its quarantine lasts, so that it cannot claim again by being forgotten.
    fn sweep(&mut self, now: Timestamp) {
        self.workers
            .retain(|_, worker| worker.expires() > now || worker.record.quarantined(now));
        let with_workers: BTreeSet<&str> = self
            .workers
            .keys()
            .map(|name| name.task_queue_id.as_str())
            .collect();
        self.task_queues.retain(|queue, active| {
            task_queue_expires(*active) > now || with_workers.contains(queue.as_str())
        });
    }

    fn worker(&mut self, name: &WorkerName, at: Timestamp) -> &mut WorkerInfo {
        let active = self
            .task_queues
            .entry(name.task_queue_id.clone())
            .or_insert(at);
        *active = (*active).max(at);
        let worker = self
            .workers
            .entry(name.clone())
            .or_insert_with(|| WorkerInfo::new(name.clone(), at));
        worker.last_date_active = worker.last_date_active.max(at);
        worker
    }
}

/// A worker called claimWork.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Seen {
    pub name: WorkerName,
    pub at: Timestamp,
}

impl Handler<Seen> for WorkerDirectory {
    type Result = ();

    fn handle(&mut self, seen: Seen, _: &mut Context<Self>) {
        self.worker(&seen.name, seen.at);
    }
}

/// A worker holds (or held) a claim of this run, since `at`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Claimed {
    pub name: WorkerName,
    pub task_id: Slugid,
    pub run_id: u32,
    pub at: Timestamp,
}

impl Handler<Claimed> for WorkerDirectory {
    type Result = ();

    fn handle(&mut self, claimed: Claimed, _: &mut Context<Self>) {
        let worker = self.worker(&claimed.name, claimed.at);
        worker.first_claim = worker.first_claim.min(claimed.at);
        let run = (claimed.task_id, claimed.run_id);
        if !worker.recent_tasks.contains(&run) {
            worker.recent_tasks.push_back(run);
            if worker.recent_tasks.len() > RECENT_TASKS {
                worker.recent_tasks.pop_front();
            }
        }
    }
}

/// What the log says about a worker (quarantine, declared expiry), as of `at`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recorded {
    pub name: WorkerName,
    pub record: Worker,
    pub at: Timestamp,
}

impl Handler<Recorded> for WorkerDirectory {
    type Result = ();

    fn handle(&mut self, recorded: Recorded, _: &mut Context<Self>) {
        self.worker(&recorded.name, recorded.at).record = recorded.record;
    }
}

/// One worker, if it was ever seen.
#[derive(Message)]
#[rtype(result = "Option<WorkerInfo>")]
pub struct Lookup(pub WorkerName);

impl Handler<Lookup> for WorkerDirectory {
    type Result = Option<WorkerInfo>;

    fn handle(&mut self, Lookup(name): Lookup, _: &mut Context<Self>) -> Self::Result {
        self.workers.get(&name).cloned()
    }
}

/// Whether a worker is quarantined at `now` (what every claimWork asks, so it copies nothing).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Quarantined {
    pub name: WorkerName,
    pub now: Timestamp,
}

impl Handler<Quarantined> for WorkerDirectory {
    type Result = bool;

    fn handle(&mut self, message: Quarantined, _: &mut Context<Self>) -> bool {
        self.workers
            .get(&message.name)
            .is_some_and(|worker| worker.record.quarantined(message.now))
    }
}

/// The workers of a task queue after `after` (by group, then id), optionally only those
/// (not) quarantined at `now`.
#[derive(Clone, Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<WorkerInfo>")]
pub struct ListWorkers {
    pub task_queue_id: String,
    pub quarantined: Option<bool>,
    pub now: Timestamp,
    pub after: Option<(String, String)>,
    pub limit: usize,
}

impl Handler<ListWorkers> for WorkerDirectory {
    type Result = Vec<WorkerInfo>;

    fn handle(&mut self, list: ListWorkers, _: &mut Context<Self>) -> Self::Result {
        self.workers
            .values()
            .filter(|worker| worker.name.task_queue_id == list.task_queue_id)
            .filter(|worker| {
                list.after.as_ref().is_none_or(|(group, id)| {
                    (&worker.name.worker_group, &worker.name.worker_id) > (group, id)
                })
            })
            .filter(|worker| {
                list.quarantined
                    .is_none_or(|wanted| worker.record.quarantined(list.now) == wanted)
            })
            .take(list.limit)
            .cloned()
            .collect()
    }
}

/// Every task queue seen (or only one provisioner's), with when it was last active, in
/// order, after `after`.
#[derive(Clone, Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<(String, Timestamp)>")]
pub struct ListTaskQueues {
    /// Only the queues `<provisionerId>/…` of this one, if given.
    pub provisioner_id: Option<String>,
    pub after: Option<String>,
    pub limit: usize,
}

impl Handler<ListTaskQueues> for WorkerDirectory {
    type Result = Vec<(String, Timestamp)>;

    fn handle(&mut self, list: ListTaskQueues, _: &mut Context<Self>) -> Self::Result {
        let prefix = list
            .provisioner_id
            .map(|provisioner_id| format!("{provisioner_id}/"))
            .unwrap_or_default();
        let start = match list.after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix.clone()),
        };
        self.task_queues
            .range::<String, _>((start, Bound::Unbounded))
            .take_while(|(queue, _)| queue.starts_with(&prefix))
            .take(list.limit)
            .map(|(queue, at)| (queue.clone(), *at))
            .collect()
    }
}

/// The provisioners (the `provisionerId` halves of the task queues seen), each with when its
/// latest queue was last active, in order, after `after`.
#[derive(Clone, Debug, Message, serde::Serialize, serde::Deserialize)]
#[rtype(result = "Vec<(String, Timestamp)>")]
pub struct ListProvisioners {
    pub after: Option<String>,
    pub limit: usize,
}

impl Handler<ListProvisioners> for WorkerDirectory {
    type Result = Vec<(String, Timestamp)>;

    fn handle(&mut self, list: ListProvisioners, _: &mut Context<Self>) -> Self::Result {
        let mut provisioners: BTreeMap<&str, Timestamp> = BTreeMap::new();
        for (queue, at) in &self.task_queues {
            let (provisioner_id, _) = queue.split_once('/').unwrap_or((queue, ""));
            let latest = provisioners.entry(provisioner_id).or_insert(*at);
            *latest = (*latest).max(*at);
        }
        provisioners
            .into_iter()
            .filter(|(provisioner_id, _)| {
                list.after
                    .as_deref()
                    .is_none_or(|after| *provisioner_id > after)
            })
            .take(list.limit)
            .map(|(provisioner_id, at)| (provisioner_id.to_owned(), at))
            .collect()
    }
}

/// A task queue, if seen.
#[derive(Message)]
#[rtype(result = "Option<Timestamp>")]
pub struct LookupTaskQueue(pub String);

impl Handler<LookupTaskQueue> for WorkerDirectory {
    type Result = Option<Timestamp>;

    fn handle(
        &mut self,
        LookupTaskQueue(queue): LookupTaskQueue,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.task_queues.get(&queue).copied()
    }
}

/// Task-queue expiry as the API reports it.
pub fn task_queue_expires(last_date_active: Timestamp) -> Timestamp {
    last_date_active.plus_millis(EXPIRY_MILLIS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_keys_read_back_into_names() {
        let key = crate::model::worker_key("prov/wt", "group", "id");
        let name = WorkerName::from_key(&key).unwrap();
        assert_eq!(name.task_queue_id, "prov/wt");
        assert_eq!(name.worker_group, "group");
        assert_eq!(name.worker_id, "id");
        assert!(WorkerName::from_key("0123456789abcdefghijkl").is_none());
    }

    #[test]
    fn expired_workers_and_queues_leave_unless_quarantined() {
        let name = |queue: &str, id: &str| WorkerName {
            task_queue_id: queue.into(),
            worker_group: "g".into(),
            worker_id: id.into(),
        };
        let mut directory = WorkerDirectory::default();
        let at = |millis: i64| Timestamp::from_millis(millis);
        directory.worker(&name("p/old", "gone"), at(0));
        directory
            .worker(&name("p/old", "quarantined"), at(0))
            .record = Worker {
            quarantine_until: Some(at(3 * EXPIRY_MILLIS)),
            ..Worker::default()
        };
        directory.worker(&name("p/new", "active"), at(EXPIRY_MILLIS));

        directory.sweep(at(EXPIRY_MILLIS - 1));
        assert_eq!(directory.workers.len(), 3, "nothing expired yet");
        directory.sweep(at(EXPIRY_MILLIS));
        let left: Vec<_> = directory
            .workers
            .keys()
            .map(|n| n.worker_id.as_str())
            .collect();
        assert_eq!(left, ["active", "quarantined"]);
        // The old queue stays while its quarantined worker does.
        assert_eq!(directory.task_queues.len(), 2);
        directory.sweep(at(3 * EXPIRY_MILLIS));
        assert!(directory.workers.is_empty());
        assert!(directory.task_queues.is_empty());
    }
}
