//! Several nodes over one Kafka topic. Each partition has one owner at a time, chosen by a
//! Kafka consumer group (`group`); the owner's shard is the partition's only writer, and
//! taking a partition fences every earlier writer of it (`log::kafka`'s writer). Nodes tell
//! each other where they are and what they serve through a directory topic (`directory`), and
//! any node answers any call: one about an entity another node owns is forwarded there
//! (`peer`, `wire`), claimWork waits on every node's pending work at once.
//!
//! What each node keeps of the others: resolutions of tasks (for dependents on other nodes,
//! batched, sent until delivered or the node is gone) and worker records (quarantines, for
//! every node's claimWork). What each node is asked when needed: the counts of a task group's
//! unresolved tasks (when a node's own count reaches zero; the answers must cover every
//! partition once), and what it saw of workers and task queues (`getWorker`, `listWorkers`,
//! `listTaskQueues`, `listProvisioners` and their kin merge every node's directory).
//!
//! ## Beside Kafka Streams and Restate
//!
//! Like Kafka Streams, a partition's state is a store folded from the log, owned through a
//! consumer group with cooperative rebalancing, caught up from the log (the node's own store
//! if it has one, else from the start) before the partition is served, and fenced with a
//! transactional producer per partition. Unlike Streams, the log *is* the changelog (there is
//! no separate store topic to restore from), and a record is acknowledged when all in-sync
//! replicas hold it, not when its transaction commits: the transaction serves only as the
//! fence, and the log is read uncommitted (see `log::kafka`'s writer). This keeps an append at
//! one round trip instead of a commit per request. Like Restate, a partition leader is the one
//! writer of its partition and every other node forwards to it; unlike Restate, leadership
//! comes from Kafka's group coordinator rather than a replicated metadata log of our own.

pub mod directory;
pub mod group;
pub mod peer;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::oneshot;

use crate::model::Slugid;
use crate::model::task::ResolvedDependency;
use directory::{Directory, Held, NodeRecord};

/// The node's place in a cluster (`[cluster]`, and `taskfold serve --node-id --advertise`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This node's id; empty: not a cluster (one node owns every partition).
    pub node_id: String,
    /// Where the other nodes reach this one (`http://host:port`).
    pub advertise: String,
    /// The secret nodes authenticate each other's calls with.
    pub secret: String,
    /// A node not heard from by the group for this long loses its partitions.
    pub session_timeout_ms: u64,
    /// How often a node republishes its directory record.
    pub heartbeat_ms: u64,
}

impl Settings {
    pub fn enabled(&self) -> bool {
        !self.node_id.is_empty()
    }

    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms.max(1000))
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(100))
    }

    /// The queue's own access token when `[auth] queue_access_token` is not set: derived from
    /// the cluster's secret, so that every node signs task credentials and URLs alike and
    /// accepts those of the others.
    pub fn queue_access_token(&self) -> String {
        self.derived(b"taskfold queue access token")
    }

    /// The key of API-made clients' access tokens when `[auth] token_key` is not set: derived
    /// from the cluster's secret, so that every node verifies them alike.
    pub fn token_key(&self) -> String {
        self.derived(b"taskfold client token key")
    }

    fn derived(&self, purpose: &[u8]) -> String {
        crate::auth::encoding::encode_base64_url_no_pad(&crate::auth::encoding::hmac_sha256(
            &self.secret,
            purpose,
        ))
    }

    /// Refuses settings a cluster cannot run with.
    pub fn check(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if self.advertise.is_empty() {
            return Err("a cluster node needs `--advertise URL` (`[cluster] advertise`)".into());
        }
        if !(self.advertise.starts_with("http://") || self.advertise.starts_with("https://")) {
            return Err(format!(
                "`[cluster] advertise` must be an http:// or https:// URL, not `{}`",
                self.advertise
            ));
        }
        if self.secret.len() < 16 {
            return Err(
                "a cluster node needs `[cluster] secret` (TASKFOLD__CLUSTER__SECRET) of at least \
                 16 characters, the same on every node"
                    .into(),
            );
        }
        Ok(())
    }
}

/// This node's view of the cluster.
pub struct Cluster {
    pub settings: Settings,
    /// The log's Kafka settings, which the group and the directory share.
    pub(crate) kafka: crate::log::kafka::Options,
    pub directory: std::sync::Arc<Directory>,
    pub(crate) membership: Mutex<Option<group::Membership>>,
    /// The partitions this node serves, each with when it took it and its store's lag.
    held: Mutex<BTreeMap<u32, Held>>,
    /// The partitions the group assigns this node (served or being caught up).
    pub(crate) assigned: Mutex<std::collections::BTreeSet<u32>>,
    /// claimWork calls of other nodes waiting here for work, by token, to end them early.
    pub(crate) waits: Mutex<HashMap<Slugid, oneshot::Sender<()>>>,
    /// Resolutions of this node's tasks, to tell the other nodes.
    pub(crate) resolutions: tokio::sync::mpsc::UnboundedSender<ResolvedDependency>,
    /// Their receiving end, until the node has joined.
    pub(crate) resolutions_queued:
        Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<ResolvedDependency>>>,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    pub fn new(
        settings: Settings,
        kafka: crate::log::kafka::Options,
        directory: std::sync::Arc<Directory>,
    ) -> Cluster {
        let (resolutions, queued) = tokio::sync::mpsc::unbounded_channel();
        Cluster {
            resolutions,
            resolutions_queued: Mutex::new(Some(queued)),
            settings,
            kafka,
            directory,
            membership: Mutex::new(None),
            held: Mutex::new(BTreeMap::new()),
            assigned: Mutex::new(std::collections::BTreeSet::new()),
            waits: Mutex::new(HashMap::new()),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// This node's record as it stands.
    pub fn record(&self, leaving: bool) -> NodeRecord {
        NodeRecord {
            node_id: self.settings.node_id.clone(),
            url: self.settings.advertise.clone(),
            partitions: if leaving {
                BTreeMap::new()
            } else {
                lock(&self.held).clone()
            },
            at: directory::now_ms(),
            leaving,
        }
    }

    pub fn publish(&self, leaving: bool) {
        self.directory.publish(&self.record(leaving));
    }

    pub(crate) fn held(&self, partition: u32) {
        lock(&self.held).insert(
            partition,
            Held {
                since: directory::now_ms(),
                lag: 0,
            },
        );
        self.publish(false);
    }

    pub(crate) fn released(&self, partition: u32) {
        lock(&self.held).remove(&partition);
        self.publish(false);
    }

    pub(crate) fn set_lag(&self, partition: u32, lag: u64) {
        if let Some(held) = lock(&self.held).get_mut(&partition) {
            held.lag = lag;
        }
    }

    /// How many partitions this node serves.
    pub fn held_count(&self) -> usize {
        lock(&self.held).len()
    }
}

/// What `GET /api/queue/v1/__cluster__` shows operators.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// This node's id; `None` for a single process serving every partition.
    pub node_id: Option<String>,
    pub nodes: Vec<NodeView>,
    pub partitions: Vec<PartitionView>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node_id: String,
    pub url: String,
    /// Heard from lately and not leaving.
    pub live: bool,
    pub last_seen_seconds: f64,
    pub partitions: Vec<u32>,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionView {
    pub partition: u32,
    /// The node serving it (`None` while it moves, or without a cluster).
    pub owner: Option<String>,
    /// Whether this node serves it.
    pub here: bool,
    /// Records of the log its store has yet to reflect, as its owner last measured.
    pub lag: Option<u64>,
}
