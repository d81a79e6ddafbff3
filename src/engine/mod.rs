//! The engine: the actors of DESIGN.md ("decide → append → apply → reply") and their
//! orchestration. The decisions they run are pure and live with their entities in `model`
//! (`model::task`, `model::group`, `model::worker`): each entity's `decide` turns a command into
//! events or into the Taskcluster error the caller gets, and its `apply` says what they mean.
//!
//! [`Engine`] is the cheap handle the API holds: it routes each command to the shard that owns
//! the task's partition, parks claimWork calls at the dispatcher, and checks dependencies at
//! creation.

pub mod clock;
pub mod cluster;
pub mod dependencies;
pub mod dispatcher;
mod documents;
pub mod group_tracker;
pub mod health;
pub mod history;
pub mod index;
pub mod load;
pub mod outbox;
pub mod pending;
pub mod shard;
pub mod store;
pub mod workers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use crate::log::{EventLog, Offset};
use crate::metrics::METRICS;
use crate::model::group::GroupCommand;
use crate::model::task::{self, Command, ResolvedDependency};
use crate::model::{ApiError, ErrorCode};
use crate::model::{
    RunState, Slugid, Task, TaskDefinition, TaskGroup, Timestamp, Worker, WorkerCommand,
};
use crate::projections::bus::{Bus, BusOptions};
use crate::projections::kafka::ExchangeTopics;
use crate::projections::pulse::PulseExchanges;
use cluster::wire::{self, Answer, Call, Reply};
use cluster::{Cluster, group};
use dependencies::DependencyResolver;
use dispatcher::{CountPending, Dispatcher, Restore, Take, TakeOrPark};
use group_tracker::GroupTracker;
use history::HistoryPage;
use index::{Listing, Position};
use shard::{
    Count, Execute, ExecuteGroup, Flushed, Get, GetGroup, List, RecordWorker, ShardContext,
    TaskShard, Waiting,
};
use workers::{WorkerDirectory, WorkerName};

/// The engine's settings (the `[queue]` section of the configuration).
#[derive(Clone, Debug)]
pub struct EngineSettings {
    pub task: task::Settings,
    /// A shard writes its changes to its partition store after at most this many events
    /// (`[queue] snapshot_every_events`), and at least every second.
    pub flush_every_events: u64,
    /// The partition stores' block cache, over all partitions (`[store] cache_mb`).
    pub store_cache_bytes: u64,
    /// The exchange bus for listeners.
    pub bus: BusOptions,
    /// Where the engine reads the time.
    pub clock: clock::Clock,
    /// How long the log keeps what the stores no longer need (`[log] retention_hours`).
    pub log_retention: Option<std::time::Duration>,
    /// With the Kafka log and a node id: this node's place in a cluster of nodes.
    pub cluster: Option<(cluster::Settings, crate::log::kafka::Options)>,
}

/// How long a call waits for its partition to get a reachable owner (a failover, a
/// hand-over) before it answers 503.
const OWNER_WAIT: Duration = Duration::from_secs(20);
/// While an owner is unreachable, how often the call looks again.
const OWNER_RETRY: Duration = Duration::from_millis(200);
/// How long resolutions gather before they go to the other nodes together.
const RESOLUTION_BATCH: Duration = Duration::from_millis(5);
/// How long a clean stop waits for the partition stores' last writes.
const SEAL_WAIT: Duration = Duration::from_secs(10);

/// The shards of the partitions this process serves.
struct Partitions {
    shards: RwLock<Vec<Option<Addr<TaskShard>>>>,
    changed: watch::Sender<u64>,
}

impl Partitions {
    fn new(count: u32) -> Partitions {
        Partitions {
            shards: RwLock::new(vec![None; count as usize]),
            changed: watch::Sender::new(0),
        }
    }

    fn get(&self, partition: u32) -> Option<Addr<TaskShard>> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(partition as usize)
            .cloned()
            .flatten()
    }

    fn set(&self, partition: u32, shard: Option<Addr<TaskShard>>) -> Option<Addr<TaskShard>> {
        let old = {
            let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut shards[partition as usize], shard)
        };
        self.changed.send_modify(|version| *version += 1);
        old
    }

    fn local(&self) -> Vec<(u32, Addr<TaskShard>)> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .enumerate()
            .filter_map(|(partition, shard)| Some((partition as u32, shard.clone()?)))
            .collect()
    }
}

/// Where a partition is served from.
enum Owner {
    Here(Addr<TaskShard>),
    There(String),
}

#[derive(Clone)]
pub struct Engine {
    partitions: Arc<Partitions>,
    context: Arc<ShardContext>,
    cluster: Option<Arc<Cluster>>,
    log: Arc<dyn EventLog>,
    dispatcher: Addr<Dispatcher>,
    directory: Addr<WorkerDirectory>,
    bus: Arc<Bus>,
    health: health::LogHealth,
    clock: clock::Clock,
    /// Who hears of changed documents of the kinds every node keeps a table of (clients,
    /// roles), made here or on another node.
    watchers: Arc<RwLock<Vec<documents::Watcher>>>,
}

/// A claimWork call.
#[derive(Clone, Debug)]
pub struct ClaimWork {
    pub task_queue_id: String,
    pub worker_group: String,
    pub worker_id: String,
    pub tasks: u32,
    /// The clientId of the call, recorded as the cause of the claims.
    pub client_id: Option<String>,
}

/// A run claimed for a worker: `task.runs[run_id]` is running, with its `taken_until`.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub task: Task,
    pub run_id: u32,
}

impl Engine {
    /// Replays every partition and starts the actors; must run inside an actix System.
    /// `exchange_topics` and `pulse`: where exchange messages go besides this server's
    /// listeners (the Kafka backend's topics, an AMQP broker's exchanges).
    pub async fn start(
        log: Arc<dyn EventLog>,
        data_dir: PathBuf,
        blobs: crate::blobs::Store,
        settings: EngineSettings,
        exchange_topics: Option<Arc<ExchangeTopics>>,
        pulse: Option<Arc<PulseExchanges>>,
    ) -> Result<Engine, crate::log::Error> {
        let started = Instant::now();
        let dispatcher = Dispatcher::default().start();
        let resolver = DependencyResolver::default().start();
        let directory = WorkerDirectory::default().start();
        let bus = Arc::new(Bus::new(settings.bus));
        let groups = GroupTracker::default().start();
        let health = health::LogHealth::default();
        let snapshots = data_dir.join("snapshots");
        let engine_exchange_topics = exchange_topics.clone();
        let context = ShardContext {
            health: health.clone(),
            // Several nodes: every node's listeners hear of every partition from the
            // exchange topics, so the shards publish there only.
            bus: match (&settings.cluster, &exchange_topics) {
                (Some(_), Some(_)) => None,
                _ => Some(bus.clone()),
            },
            exchange_topics,
            pulse,
            groups: groups.clone(),
            log: log.clone(),
            data_dir,
            blobs,
            task_settings: settings.task,
            flush_every_events: settings.flush_every_events.max(1),
            clock: settings.clock,
            log_retention: settings.log_retention,
            store_cache_bytes: settings.store_cache_bytes / u64::from(log.partitions().max(1)),
            dispatcher: dispatcher.clone(),
            resolver: resolver.clone(),
            directory: directory.clone(),
        };
        let partitions = Arc::new(Partitions::new(log.partitions()));
        let cluster = match settings.cluster {
            Some((cluster_settings, kafka)) => {
                match &engine_exchange_topics {
                    Some(topics) => {
                        let (topics, bus) = (topics.clone(), bus.clone());
                        tokio::task::spawn_blocking(move || topics.tail(bus))
                            .await
                            .map_err(|error| {
                                crate::log::Error::Config(format!("joining failed: {error}"))
                            })??;
                    }
                    None => tracing::warn!(
                        "exchange topics are off (`[events] kafka_publish`): this node's \
                         listeners hear only of the partitions it serves"
                    ),
                }
                let kafka_options = kafka.clone();
                let node_id = cluster_settings.node_id.clone();
                let stale_after = cluster_settings.session_timeout() * 2;
                let directory = tokio::task::spawn_blocking(move || {
                    cluster::directory::Directory::open(&kafka, &node_id, stale_after)
                })
                .await
                .map_err(|error| crate::log::Error::Config(format!("joining failed: {error}")))??;
                Some(Arc::new(Cluster::new(
                    cluster_settings,
                    kafka_options,
                    directory,
                )))
            }
            None => None,
        };
        let engine = Engine {
            partitions,
            context: Arc::new(context),
            cluster,
            log,
            dispatcher,
            directory,
            bus,
            health,
            clock: settings.clock,
            watchers: Arc::default(),
        };
        if engine.cluster.is_none() {
            // One process serves every partition; they replay in parallel, each on a
            // blocking thread.
            let gains: Vec<_> = (0..engine.log.partitions())
                .map(|partition| engine.gain(partition))
                .collect();
            for gained in futures::future::join_all(gains).await {
                gained?;
            }
        }
        // Full-state snapshots of versions before the partition stores: every store now
        // stands on its own, so they are of no more use.
        if snapshots.exists() {
            match std::fs::remove_dir_all(&snapshots) {
                Ok(()) => tracing::info!(
                    path = %snapshots.display(),
                    "removed the full-state snapshots of an older version (the partition stores replace them)"
                ),
                Err(error) => {
                    tracing::warn!(path = %snapshots.display(), %error, "cannot remove old snapshots")
                }
            }
        }
        let replayed = started.elapsed();
        METRICS.replay_seconds.set(replayed.as_secs_f64());
        resolver.do_send(dependencies::Attach(engine.clone()));
        engine.recheck_waiting_dependents().await;
        // Every shard has handled messages since it started, so every census is in the
        // tracker's mailbox ahead of this.
        groups.do_send(group_tracker::Attach(engine.clone()));
        if let Some(cluster) = &engine.cluster {
            engine.join(cluster.clone()).await?;
        }
        tracing::info!(
            replayed = ?replayed,
            ready = ?started.elapsed(),
            "the engine is ready"
        );
        Ok(engine)
    }

    /// Joins the cluster's group: from now on the group says which partitions this node
    /// serves, and the node tells the others through the directory.
    async fn join(&self, cluster: Arc<Cluster>) -> Result<(), crate::log::Error> {
        let (changes, mut changing) = mpsc::unbounded_channel();
        let engine = self.clone();
        actix::spawn(async move {
            while let Some(change) = changing.recv().await {
                match change {
                    group::Change::Gained(partitions) => {
                        if let Some(cluster) = &engine.cluster {
                            cluster::lock(&cluster.assigned).extend(partitions.iter().copied());
                        }
                        let gains = partitions
                            .into_iter()
                            .map(|partition| engine.gain(partition));
                        for gained in futures::future::join_all(gains).await {
                            if let Err(error) = gained {
                                tracing::error!(%error, "cannot serve a partition the group assigned");
                            }
                        }
                    }
                    group::Change::Revoked { partitions, done } => {
                        if let Some(cluster) = &engine.cluster {
                            let mut assigned = cluster::lock(&cluster.assigned);
                            for partition in &partitions {
                                assigned.remove(partition);
                            }
                        }
                        let losses = partitions
                            .into_iter()
                            .map(|partition| engine.lose(partition));
                        futures::future::join_all(losses).await;
                        let _ = done.send(());
                    }
                }
            }
        });
        let settings = cluster.settings.clone();
        let kafka = cluster.kafka.clone();
        let membership = tokio::task::spawn_blocking(move || {
            group::Membership::join(
                &kafka,
                &settings.node_id,
                settings.session_timeout(),
                changes,
            )
        })
        .await
        .map_err(|error| crate::log::Error::Config(format!("joining failed: {error}")))??;
        *cluster::lock(&cluster.membership) = Some(membership);
        cluster.publish(false);
        if let Some(resolutions) = cluster::lock(&cluster.resolutions_queued).take() {
            actix::spawn(Self::share_resolutions(cluster.clone(), resolutions));
        }
        // The heartbeat: the directory's record of this node, with its stores' lag.
        let engine = self.clone();
        let heartbeat = cluster.settings.heartbeat();
        actix::spawn(async move {
            let Some(cluster) = engine.cluster.clone() else {
                return;
            };
            loop {
                tokio::time::sleep(heartbeat).await;
                if cluster::lock(&cluster.membership).is_none() {
                    return;
                }
                engine.measure_lag(&cluster).await;
                cluster.publish(false);
            }
        });
        Ok(())
    }

    /// Up to `limit` task groups with unresolved tasks (most unresolved first), then those
    /// resolved lately (latest first), as every node reports them.
    pub async fn recent_groups(&self, limit: usize) -> Vec<group_tracker::RecentGroup> {
        let mut found = self
            .context
            .groups
            .send(group_tracker::RecentGroups)
            .await
            .unwrap_or_default();
        for answer in self.ask_peers(&Call::RecentGroups).await {
            if let Answer::RecentGroups(part) = answer {
                found.extend(part);
            }
        }
        // A group spans partitions, so nodes: its counts add up, and it is resolved only
        // where no node counts it unresolved.
        let mut merged: HashMap<Slugid, group_tracker::RecentGroup> = HashMap::new();
        for group in found {
            match merged.entry(group.task_group_id) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(group);
                }
                std::collections::hash_map::Entry::Occupied(mut entry) => {
                    let known = entry.get_mut();
                    known.unresolved += group.unresolved;
                    known.resolved = known.resolved.max(group.resolved);
                }
            }
        }
        let mut groups: Vec<_> = merged.into_values().collect();
        for group in &mut groups {
            if group.unresolved > 0 {
                group.resolved = None;
            }
        }
        groups.sort_by(|a, b| {
            b.unresolved
                .cmp(&a.unresolved)
                .then(b.resolved.cmp(&a.resolved))
                .then(a.task_group_id.cmp(&b.task_group_id))
        });
        groups.truncate(limit);
        groups
    }

    /// How many tasks of the group every partition holds unresolved; `None` while the
    /// nodes' answers do not cover each partition exactly once (a partition moving, a node not
    /// answering).
    pub async fn unresolved_everywhere(&self, task_group_id: Slugid) -> Option<u64> {
        let here = self
            .context
            .groups
            .send(group_tracker::CountUnresolved(task_group_id))
            .await
            .ok()?;
        let mut counted = vec![0u32; self.log.partitions() as usize];
        let mut unresolved = 0;
        let mut add = |answer: group_tracker::Unresolved| {
            unresolved += answer.count;
            for partition in answer.partitions {
                if let Some(times) = counted.get_mut(partition as usize) {
                    *times += 1;
                }
            }
        };
        add(here);
        // A node that does not answer leaves its partitions uncounted.
        for answer in self
            .ask_peers(&Call::GroupUnresolved { task_group_id })
            .await
        {
            match answer {
                Answer::Unresolved(answer) => add(answer),
                _ => return None,
            }
        }
        counted
            .iter()
            .all(|&times| times == 1)
            .then_some(unresolved)
    }

    /// Tells the other nodes that a task of this node's partitions reached a final
    /// resolution, for their dependents of it; nothing without a cluster.
    pub fn share_resolution(&self, resolved: ResolvedDependency) {
        if let Some(cluster) = &self.cluster {
            let _ = cluster.resolutions.send(resolved);
        }
    }

    /// Sends the resolutions shared meanwhile to every other node, a batch at a time.
    async fn share_resolutions(
        cluster: Arc<Cluster>,
        mut resolutions: mpsc::UnboundedReceiver<ResolvedDependency>,
    ) {
        while let Some(first) = resolutions.recv().await {
            let mut batch = vec![first];
            // A few milliseconds' worth travel together.
            tokio::time::sleep(RESOLUTION_BATCH).await;
            while let Ok(more) = resolutions.try_recv() {
                batch.push(more);
            }
            let call = Call::Resolved(batch);
            for url in cluster.directory.peers() {
                let call = call.clone();
                let cluster = cluster.clone();
                // Until delivered, or until the node is gone: whoever takes its partitions
                // looks at their waiting dependents again as it gains them.
                actix::spawn(async move {
                    let mut delay = OWNER_RETRY;
                    loop {
                        let secret = &cluster.settings.secret;
                        match cluster::peer::call(&url, secret, &call, OWNER_WAIT).await {
                            Ok(_) => return,
                            Err(unreachable) => {
                                if !cluster.directory.peers().contains(&url) {
                                    return;
                                }
                                tracing::debug!(%url, reason = unreachable.0, "resolutions not delivered yet");
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                });
            }
        }
    }

    /// Records how far each held partition's store is behind the log.
    async fn measure_lag(&self, cluster: &Cluster) {
        for (partition, shard) in self.partitions.local() {
            let Some(lag) = self.lag(partition, &shard).await else {
                continue;
            };
            cluster.set_lag(partition, lag);
            METRICS
                .partition_lag
                .with_label_values(&[&partition.to_string()])
                .set(lag as i64);
        }
    }

    /// How many records of the log `partition`'s shard has not written itself: other
    /// writers' records before it took the partition, and batch markers since.
    async fn lag(&self, partition: u32, shard: &Addr<TaskShard>) -> Option<u64> {
        let log = self.log.clone();
        let end = tokio::task::spawn_blocking(move || log.high_watermark(partition)).await;
        match (end, shard.send(shard::NextOffset).await) {
            (Ok(Ok(end)), Ok(next)) => Some(end.saturating_sub(next)),
            _ => None,
        }
    }

    /// Starts serving `partition`: takes its log writer (fencing any earlier one), catches its
    /// store up from the log, and starts its shard.
    async fn gain(&self, partition: u32) -> Result<(), crate::log::Error> {
        if self.partitions.get(partition).is_some() {
            return Ok(());
        }
        let started = Instant::now();
        let context = (*self.context).clone();
        let log = self.log.clone();
        let shard = tokio::task::spawn_blocking(move || {
            log.acquire(partition)?;
            TaskShard::replay(partition, context)
        })
        .await
        .map_err(|error| crate::log::Error::Config(format!("replay failed: {error}")))??;
        let mut lost = shard.lost();
        let shard = shard.start();
        self.partitions.set(partition, Some(shard.clone()));
        if self.cluster.is_some() {
            // This node may not have heard of the clients and roles of the partition yet.
            let engine = self.clone();
            let gained = shard.clone();
            actix::spawn(async move { engine.announce_documents(&gained).await });
        }
        let caught_up = started.elapsed();
        METRICS
            .partition_catch_up_seconds
            .observe(caught_up.as_secs_f64());
        METRICS.partitions_owned.inc();
        // Another writer took the partition: a cluster node gives it up; a single process
        // must not go on at all. A shard whose state may differ from the log is made again.
        let engine = self.clone();
        actix::spawn(async move {
            let Ok(loss) = lost
                .wait_for(Option::is_some)
                .await
                .map(|lost| lost.clone())
            else {
                return;
            };
            match loss {
                None | Some(shard::Loss::Released) => {}
                Some(shard::Loss::Fenced(reason)) if engine.cluster.is_some() => {
                    tracing::warn!(partition, %reason, "fenced: another node took the partition");
                    engine.lose(partition).await;
                }
                Some(shard::Loss::Fenced(reason)) => engine.health.fail(&format!(
                    "another process writes partition {partition} of the log: {reason}"
                )),
                Some(shard::Loss::Resync(reason)) => {
                    tracing::warn!(
                        partition,
                        %reason,
                        "an append's outcome is uncertain: the partition's shard is made again from its store and the log"
                    );
                    engine.lose(partition).await;
                    // Taken again, fencing this process's own earlier writer, as long as the
                    // group still gives the partition to this node.
                    let still_assigned = |engine: &Engine| {
                        engine.cluster.as_ref().is_none_or(|cluster| {
                            cluster::lock(&cluster.assigned).contains(&partition)
                        })
                    };
                    let mut delay = Duration::from_millis(100);
                    while still_assigned(&engine)
                        && let Err(error) = engine.gain(partition).await
                    {
                        tracing::warn!(partition, %error, "cannot take the partition again yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        if engine.health.is_failed() {
                            return;
                        }
                    }
                }
            }
        });
        if let Some(cluster) = &self.cluster {
            tracing::info!(partition, caught_up = ?caught_up, "serving the partition");
            cluster.held(partition);
            self.recheck_shard(&shard).await;
        }
        Ok(())
    }

    /// Stops serving `partition`: its shard finishes what it appended, writes its store and
    /// stops, and the log writer is given up.
    async fn lose(&self, partition: u32) {
        let Some(shard) = self.partitions.set(partition, None) else {
            return;
        };
        METRICS.partitions_owned.dec();
        if let Some(cluster) = &self.cluster {
            cluster.released(partition);
        }
        let _ = shard.send(shard::Release).await;
        self.context.groups.do_send(group_tracker::Lost(partition));
        let log = self.log.clone();
        let owner = log.clone();
        self.dispatcher
            .do_send(dispatcher::Forget(Box::new(move |run| {
                owner.partition_of(&run.task_id.to_string()) == partition
            })));
        let _ = tokio::task::spawn_blocking(move || log.release(partition)).await;
        tracing::info!(partition, "stopped serving the partition");
    }

    /// Leaves the cluster, handing every partition over (a graceful stop); nothing without
    /// a cluster.
    pub async fn leave(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let membership = cluster::lock(&cluster.membership).take();
        if let Some(mut membership) = membership {
            let _ = tokio::task::spawn_blocking(move || membership.leave()).await;
        }
        for (partition, _) in self.partitions.local() {
            self.lose(partition).await;
        }
        cluster.publish(true);
        let directory = cluster.directory.clone();
        let _ = tokio::task::spawn_blocking(move || directory.close()).await;
    }

    /// Which node serves each partition, and how far each store is behind the log.
    pub async fn cluster_view(&self) -> cluster::View {
        let here: HashMap<u32, Addr<TaskShard>> = self.partitions.local().into_iter().collect();
        let Some(cluster) = &self.cluster else {
            let mut partitions = Vec::new();
            for partition in 0..self.log.partitions() {
                let lag = match here.get(&partition) {
                    Some(shard) => self.lag(partition, shard).await,
                    None => None,
                };
                partitions.push(cluster::PartitionView {
                    partition,
                    owner: None,
                    here: here.contains_key(&partition),
                    lag,
                });
            }
            return cluster::View {
                node_id: None,
                nodes: Vec::new(),
                partitions,
            };
        };
        self.measure_lag(cluster).await;
        cluster.publish(false);
        let nodes = cluster.directory.nodes();
        let partitions = (0..self.log.partitions())
            .map(|partition| {
                let owner = cluster.directory.owner(partition).map(|(node, _)| node);
                let lag = owner.as_ref().and_then(|owner| {
                    nodes
                        .iter()
                        .find(|(record, _, _)| &record.node_id == owner)
                        .and_then(|(record, _, _)| record.partitions.get(&partition))
                        .map(|held| held.lag)
                });
                cluster::PartitionView {
                    partition,
                    owner,
                    here: here.contains_key(&partition),
                    lag,
                }
            })
            .collect();
        cluster::View {
            node_id: Some(cluster.node_id().to_owned()),
            nodes: nodes
                .into_iter()
                .map(|(record, live, heard)| cluster::NodeView {
                    node_id: record.node_id,
                    url: record.url,
                    live,
                    last_seen_seconds: heard.as_secs_f64(),
                    partitions: record.partitions.keys().copied().collect(),
                })
                .collect(),
            partitions,
        }
    }

    /// This node's cluster, if it is part of one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// After a replay, shards announce resolutions and registrations in no particular order
    /// across partitions, so a dependency that resolved just before a crash, before its
    /// dependent heard of it, would go unnoticed: look at every waiting dependency once.
    async fn recheck_waiting_dependents(&self) {
        for (_, shard) in self.partitions.local() {
            self.recheck_shard(&shard).await;
        }
    }

    /// [`Engine::recheck_waiting_dependents`] for one shard.
    async fn recheck_shard(&self, shard: &Addr<TaskShard>) {
        {
            let Ok(waiting) = shard.send(Waiting).await else {
                return;
            };
            for (dependent, dependencies) in waiting {
                for dependency in dependencies {
                    if let Some(resolved) = self
                        .task(dependency)
                        .await
                        .as_ref()
                        .and_then(final_resolution)
                    {
                        self.notify(dependent, Command::SatisfyDependency(resolved));
                    }
                }
            }
        }
    }

    /// Where `partition` is served from now, if anywhere reachable.
    fn owner(&self, partition: u32) -> Option<Owner> {
        if let Some(shard) = self.partitions.get(partition) {
            return Some(Owner::Here(shard));
        }
        let cluster = self.cluster.as_ref()?;
        match cluster.directory.owner(partition) {
            Some((node, url)) if node != cluster.node_id() => Some(Owner::There(url)),
            _ => None,
        }
    }

    /// Waits, up to [`OWNER_WAIT`], until every partition has an owner this node can reach
    /// (at once for a single process); whether they all do.
    pub async fn wait_for_owners(&self) -> bool {
        let Some(cluster) = self.cluster.clone() else {
            return true;
        };
        let deadline = Instant::now() + OWNER_WAIT;
        loop {
            let mut partitions = self.partitions.changed.subscribe();
            let mut directory = cluster.directory.watch();
            if (0..self.log.partitions()).all(|partition| self.owner(partition).is_some()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = partitions.changed() => {}
                _ = directory.changed() => {}
                () = tokio::time::sleep(OWNER_RETRY) => {}
            }
        }
    }

    /// The URL of the node that serves `key`'s partition, when that is another node.
    pub fn remote_owner(&self, key: &str) -> Option<String> {
        match self.owner(self.log.partition_of(key))? {
            Owner::There(url) => Some(url),
            Owner::Here(_) => None,
        }
    }

    /// Runs `call` on the owner of its entity's partition: this node's shard, or the node
    /// that owns it. While the partition has no reachable owner (a failover or a hand-over
    /// under way), waits for one, up to [`OWNER_WAIT`].
    async fn on_owner(&self, call: Call) -> Result<Answer, ApiError> {
        let Some(key) = call.key() else {
            return Err(ApiError::new(
                ErrorCode::InternalServerError,
                "a call without an entity has no owner",
            ));
        };
        let partition = self.log.partition_of(&key);
        if let Some(shard) = self.partitions.get(partition) {
            match answer_here(&shard, call.clone()).await {
                Err(error) if self.cluster.is_some() && is_retryable(&error) => {}
                answered => return answered,
            }
        }
        let Some(cluster) = self.cluster.clone() else {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("partition {partition} is not served"),
            ));
        };
        let deadline = Instant::now() + OWNER_WAIT;
        let mut last = String::from("no node serves it yet");
        loop {
            let mut partitions = self.partitions.changed.subscribe();
            let mut directory = cluster.directory.watch();
            match self.owner(partition) {
                Some(Owner::Here(shard)) => match answer_here(&shard, call.clone()).await {
                    Err(error) if is_retryable(&error) => last = error.message,
                    answered => return answered,
                },
                Some(Owner::There(url)) => {
                    METRICS.forwarded_calls.inc();
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    match cluster::peer::call(&url, &cluster.settings.secret, &call, timeout).await
                    {
                        Ok(Reply::Answer(answer)) => return Ok(answer),
                        Ok(Reply::Failed(error)) => return Err(error.into()),
                        Ok(Reply::NotHere) => last = format!("{url} no longer serves it"),
                        Err(unreachable) => last = unreachable.0,
                    }
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    format!("partition {partition} has no reachable owner ({last}); try again"),
                ));
            }
            tokio::select! {
                _ = partitions.changed() => {}
                _ = directory.changed() => {}
                () = tokio::time::sleep(OWNER_RETRY) => {}
            }
        }
    }

    /// Answers a call of another node: about an entity of a partition this node serves (else
    /// [`Reply::NotHere`]), or about this node's own part of a list or its pending work.
    pub async fn answer(&self, call: Call) -> Reply {
        let answered = match call {
            Call::List {
                listing,
                after,
                limit,
            } => Ok(Answer::List(self.list_here(listing, after, limit).await)),
            Call::Count { listing } => Ok(Answer::Count(self.count_here(listing).await)),
            Call::Claim {
                task_queue_id,
                worker_group,
                worker_id,
                tasks,
                client_id,
            } => {
                let request = ClaimWork {
                    task_queue_id,
                    worker_group,
                    worker_id,
                    tasks,
                    client_id,
                };
                let claimed = self
                    .claim_here(request, Instant::now(), std::future::pending())
                    .await;
                Ok(Answer::Claimed(
                    claimed
                        .into_iter()
                        .map(|claimed| (claimed.task, claimed.run_id))
                        .collect(),
                ))
            }
            Call::AwaitWork {
                token,
                task_queue_id,
                wait_ms,
            } => {
                let (end, ended) = oneshot::channel();
                if let Some(cluster) = &self.cluster {
                    cluster::lock(&cluster.waits).insert(token, end);
                }
                let until = Instant::now() + Duration::from_millis(wait_ms.min(60_000));
                let pending = self
                    .dispatcher
                    .send(dispatcher::AwaitPending { task_queue_id });
                tokio::select! {
                    notified = pending => {
                        if let Ok(notified) = notified {
                            tokio::select! {
                                _ = notified => {}
                                _ = ended => {}
                                () = tokio::time::sleep_until(until.into()) => {}
                            }
                        }
                    }
                    () = tokio::time::sleep_until(until.into()) => {}
                }
                if let Some(cluster) = &self.cluster {
                    cluster::lock(&cluster.waits).remove(&token);
                }
                Ok(Answer::Done)
            }
            Call::EndWait { token } => {
                if let Some(cluster) = &self.cluster
                    && let Some(end) = cluster::lock(&cluster.waits).remove(&token)
                {
                    let _ = end.send(());
                }
                Ok(Answer::Done)
            }
            Call::GroupUnresolved { task_group_id } => Ok(Answer::Unresolved(
                self.context
                    .groups
                    .send(group_tracker::CountUnresolved(task_group_id))
                    .await
                    .unwrap_or_default(),
            )),
            Call::RecentGroups => Ok(Answer::RecentGroups(
                self.context
                    .groups
                    .send(group_tracker::RecentGroups)
                    .await
                    .unwrap_or_default(),
            )),
            Call::LookupWorker { name } => Ok(Answer::WorkerInfo(
                self.directory
                    .send(workers::Lookup(name))
                    .await
                    .ok()
                    .flatten(),
            )),
            Call::ListWorkers(list) => Ok(Answer::Workers(
                self.directory.send(list).await.unwrap_or_default(),
            )),
            Call::ListTaskQueues(list) => Ok(Answer::Active(
                self.directory.send(list).await.unwrap_or_default(),
            )),
            Call::ListProvisioners(list) => Ok(Answer::Active(
                self.directory.send(list).await.unwrap_or_default(),
            )),
            Call::LookupTaskQueue { task_queue_id } => Ok(Answer::MaybeActive(
                self.directory
                    .send(workers::LookupTaskQueue(task_queue_id))
                    .await
                    .ok()
                    .flatten(),
            )),
            Call::WorkerRecorded { name, record, at } => {
                self.directory
                    .do_send(workers::Recorded { name, record, at });
                Ok(Answer::Done)
            }
            Call::PendingCount { task_queue_id } => {
                Ok(Answer::Count(self.pending_count_here(&task_queue_id).await))
            }
            call @ Call::ListDocuments { .. } => {
                self.documents_here(&call).await.map(Answer::Documents)
            }
            call @ Call::ListNamespaces { .. } => {
                self.namespaces_here(&call).await.map(Answer::Namespaces)
            }
            Call::DocumentChanged {
                kind,
                name,
                document,
            } => {
                self.tell_watchers(kind, &name, document.as_ref());
                Ok(Answer::Done)
            }
            Call::Resolved(resolved) => {
                self.context
                    .resolver
                    .do_send(dependencies::ResolvedElsewhere(resolved));
                Ok(Answer::Done)
            }
            call => {
                let Some(key) = call.key() else {
                    return Reply::NotHere;
                };
                let Some(shard) = self.partitions.get(self.log.partition_of(&key)) else {
                    return Reply::NotHere;
                };
                match answer_here(&shard, call).await {
                    Err(error) if is_retryable(&error) => return Reply::NotHere,
                    answered => answered,
                }
            }
        };
        match answered {
            Ok(answer) => Reply::Answer(answer),
            Err(error) => Reply::Failed(error.into()),
        }
    }

    /// Where exchange messages reach this server's listeners.
    pub fn bus(&self) -> &Arc<Bus> {
        &self.bus
    }

    /// Whether the event log still takes appends; the server stops once it does not.
    pub fn health(&self) -> &health::LogHealth {
        &self.health
    }

    /// Runs one command on the task's shard; resolves once its events are durable, with the
    /// task's state after it. `client_id`: who asked (the API call's clientId), recorded with
    /// the events; `None` for the queue's own commands.
    pub async fn execute(
        &self,
        task_id: Slugid,
        command: Command,
        client_id: Option<String>,
    ) -> Result<Task, ApiError> {
        self.execute_joined(task_id, command, None, client_id).await
    }

    async fn execute_joined(
        &self,
        task_id: Slugid,
        command: Command,
        join: Option<GroupCommand>,
        client_id: Option<String>,
    ) -> Result<Task, ApiError> {
        match self
            .on_owner(Call::Execute {
                task_id,
                command,
                join,
                client_id,
            })
            .await?
        {
            Answer::Task(task) => Ok(task),
            other => Err(wire::unexpected(&other)),
        }
    }

    /// Sends a command of the queue's own whose outcome nobody waits for (timers, dependency
    /// resolution).
    pub fn notify(&self, task_id: Slugid, command: Command) {
        let engine = self.clone();
        actix::spawn(async move {
            let _ = engine.execute(task_id, command, None).await;
        });
    }

    /// The task's state as of everything durable, or `None`.
    pub async fn task(&self, task_id: Slugid) -> Option<Task> {
        match self.on_owner(Call::Task { task_id }).await {
            Ok(Answer::MaybeTask(task)) => task,
            _ => None,
        }
    }

    /// createTask for `client_id`: every dependency must exist and outlive the new task's
    /// deadline (400 otherwise, naming them); dependencies already resolved count at once, and
    /// ones that resolve while the task is being created are caught by a second look
    /// afterwards (the queue's own doing).
    pub async fn create_task(
        &self,
        task_id: Slugid,
        definition: TaskDefinition,
        client_id: Option<String>,
    ) -> Result<Task, ApiError> {
        let mut missing = Vec::new();
        let mut expiring = Vec::new();
        let mut resolved_dependencies = Vec::new();
        for &dependency in &definition.dependencies {
            match self.task(dependency).await {
                None => missing.push(dependency.to_string()),
                Some(found) if found.definition.expires < definition.deadline => {
                    expiring.push(dependency.to_string())
                }
                Some(found) => resolved_dependencies.extend(final_resolution(&found)),
            }
        }
        if !missing.is_empty() || !expiring.is_empty() {
            let mut message = String::new();
            if !missing.is_empty() {
                message.push_str(&format!(
                    "`task.dependencies` references non-existing tasks: {}. ",
                    missing.join(", ")
                ));
            }
            if !expiring.is_empty() {
                message.push_str(&format!(
                    "`task.dependencies` references tasks that expire before the task's deadline: {}.",
                    expiring.join(", ")
                ));
            }
            return Err(ApiError::input(message.trim_end()).with_details(json!({
                "missingTaskDependencies": missing,
                "expiringTaskDependencies": expiring,
            })));
        }
        let dependencies = definition.dependencies.clone();
        let group_id = definition.task_group_id;
        let join = GroupCommand::Join {
            scheduler_id: definition.scheduler_id.clone(),
            task_expires: definition.expires,
        };
        let command = Command::Define {
            definition: Arc::new(definition),
            resolved_dependencies,
        };
        // The group must accept the task first (Taskcluster's `ensureTaskGroup`). When the
        // group lives in the task's partition (a group named after one of its tasks), both
        // decisions are one append.
        let join = if self.log.partition_of(&group_id.to_string())
            == self.log.partition_of(&task_id.to_string())
        {
            Some(join)
        } else {
            self.execute_group(group_id, join, client_id.clone())
                .await?;
            None
        };
        let mut created = self
            .execute_joined(task_id, command, join, client_id)
            .await?;
        // The second look: a dependency that resolved after the first look but before this
        // task registered with the resolver would otherwise go unnoticed.
        if created.runs.is_empty() {
            for dependency in dependencies {
                if created.satisfied_dependencies.contains(&dependency) {
                    continue;
                }
                if let Some(resolved) = self
                    .task(dependency)
                    .await
                    .as_ref()
                    .and_then(final_resolution)
                {
                    created = self
                        .execute(task_id, Command::SatisfyDependency(resolved), None)
                        .await?;
                }
            }
        }
        Ok(created)
    }

    /// claimWork: claims up to `request.tasks` pending runs of the queue, waiting until
    /// `until` for work to arrive. Every claim is durable before it is returned.
    pub async fn claim_work(&self, request: ClaimWork, until: Instant) -> Vec<Claimed> {
        self.claim_work_unless(request, until, std::future::pending())
            .await
    }

    /// [`Engine::claim_work`] for a caller that may go away: once `gone` resolves, a parked
    /// claim stops waiting, so no task is claimed for a caller that cannot receive it.
    pub async fn claim_work_unless(
        &self,
        request: ClaimWork,
        until: Instant,
        gone: impl std::future::Future<Output = ()>,
    ) -> Vec<Claimed> {
        let name = WorkerName {
            task_queue_id: request.task_queue_id.clone(),
            worker_group: request.worker_group.clone(),
            worker_id: request.worker_id.clone(),
        };
        // A quarantined worker is answered as if there were no work, after the full wait.
        if self.seen_quarantined(name).await {
            tokio::time::sleep_until(until.into()).await;
            return Vec::new();
        }
        let peers = match &self.cluster {
            Some(cluster) => cluster.directory.peers(),
            None => Vec::new(),
        };
        if peers.is_empty() {
            return self.claim_here(request, until, gone).await;
        }
        self.claim_everywhere(request, until, gone, peers).await
    }

    /// claimWork over this node's pending work and every other node's: claims where work is
    /// pending, one node at a time (so never more than asked), and otherwise waits for work to
    /// arrive on any node, taking none while it waits (so a caller that goes away strands
    /// nothing).
    async fn claim_everywhere(
        &self,
        request: ClaimWork,
        until: Instant,
        gone: impl std::future::Future<Output = ()>,
        peers: Vec<String>,
    ) -> Vec<Claimed> {
        use futures::stream::{FuturesUnordered, StreamExt};
        let Some(cluster) = self.cluster.clone() else {
            return Vec::new();
        };
        let secret = cluster.settings.secret.clone();
        let claim = Call::Claim {
            task_queue_id: request.task_queue_id.clone(),
            worker_group: request.worker_group.clone(),
            worker_id: request.worker_id.clone(),
            tasks: request.tasks,
            client_id: request.client_id.clone(),
        };
        let mut gone = std::pin::pin!(gone);
        // Where work was last seen: tried first.
        let mut first: Option<String> = None;
        loop {
            if first.is_none() {
                let here = self
                    .claim_here(request.clone(), Instant::now(), std::future::pending())
                    .await;
                if !here.is_empty() {
                    return here;
                }
            }
            let order = first
                .iter()
                .chain(peers.iter().filter(|url| Some(*url) != first.as_ref()));
            for url in order {
                if let Ok(Reply::Answer(Answer::Claimed(claimed))) =
                    cluster::peer::call(url, &secret, &claim, OWNER_WAIT).await
                    && !claimed.is_empty()
                {
                    return claimed
                        .into_iter()
                        .map(|(task, run_id)| Claimed { task, run_id })
                        .collect();
                }
            }
            if Instant::now() >= until {
                return Vec::new();
            }
            // No work anywhere: wait until some node has some.
            let wait_ms = until.saturating_duration_since(Instant::now()).as_millis() as u64;
            let mut waits: FuturesUnordered<futures::future::LocalBoxFuture<'_, Option<String>>> =
                FuturesUnordered::new();
            let here = self.dispatcher.send(dispatcher::AwaitPending {
                task_queue_id: request.task_queue_id.clone(),
            });
            // This node's own wait answers with an empty URL.
            waits.push(Box::pin(async move {
                if let Ok(notified) = here.await {
                    let _ = notified.await;
                }
                Some(String::new())
            }));
            let mut tokens = Vec::new();
            for url in &peers {
                let token = Slugid::nice();
                tokens.push((url.clone(), token));
                let call = Call::AwaitWork {
                    token,
                    task_queue_id: request.task_queue_id.clone(),
                    wait_ms,
                };
                let (url, secret) = (url.clone(), secret.clone());
                waits.push(Box::pin(async move {
                    let timeout = Duration::from_millis(wait_ms) + Duration::from_secs(10);
                    match cluster::peer::call(&url, &secret, &call, timeout).await {
                        Ok(Reply::Answer(Answer::Done)) => Some(url),
                        _ => {
                            // An unreachable node: look again a little later.
                            tokio::time::sleep(OWNER_RETRY.max(Duration::from_millis(500))).await;
                            Some(url)
                        }
                    }
                }));
            }
            let woken = tokio::select! {
                woken = waits.next() => woken.flatten(),
                () = &mut gone => return Vec::new(),
                () = tokio::time::sleep_until(until.into()) => None,
            };
            drop(waits);
            for (url, token) in tokens {
                let secret = secret.clone();
                actix::spawn(async move {
                    let call = Call::EndWait { token };
                    let _ =
                        cluster::peer::call(&url, &secret, &call, Duration::from_secs(10)).await;
                });
            }
            first = woken.filter(|url| !url.is_empty());
        }
    }

    /// claimWork on this node's pending work only.
    async fn claim_here(
        &self,
        request: ClaimWork,
        until: Instant,
        gone: impl std::future::Future<Output = ()>,
    ) -> Vec<Claimed> {
        let mut gone = std::pin::pin!(gone);
        let wanted = request.tasks.clamp(1, 32) as usize;
        loop {
            let take = self.dispatcher.send(TakeOrPark {
                task_queue_id: request.task_queue_id.clone(),
                wanted,
            });
            let hints = match take.await {
                Ok(Take::Hints(hints)) => hints,
                Ok(Take::Parked(mut parked)) => {
                    let received = tokio::select! {
                        received = &mut parked => Some(received),
                        () = tokio::time::sleep_until(until.into()) => None,
                        () = &mut gone => None,
                    };
                    match received {
                        Some(Ok(hints)) => hints,
                        Some(Err(_)) => return Vec::new(),
                        None => {
                            // Hints may have been sent just as the wait ended: close the
                            // channel and give back whatever made it in, so none is stranded.
                            parked.close();
                            if let Ok(hints) = parked.try_recv() {
                                self.dispatcher.do_send(Restore {
                                    task_queue_id: request.task_queue_id.clone(),
                                    hints,
                                });
                            }
                            return Vec::new();
                        }
                    }
                }
                Err(_) => return Vec::new(),
            };
            // Every claim is sent before any is awaited: a caller that goes away now cannot
            // strand a hint, since each one is already on its way to its shard.
            let attempts: Vec<_> = hints
                .into_iter()
                .map(|hint| {
                    let hint = hint.run;
                    let command = Command::Claim {
                        run_id: hint.run_id,
                        worker_group: request.worker_group.clone(),
                        worker_id: request.worker_id.clone(),
                    };
                    let sent = self.execute(hint.task_id, command, request.client_id.clone());
                    async move { (hint.run_id, sent.await) }
                })
                .collect();
            let claimed: Vec<Claimed> = futures::future::join_all(attempts)
                .await
                .into_iter()
                .filter_map(|(run_id, outcome)| outcome.ok().map(|task| Claimed { task, run_id }))
                .collect();
            if !claimed.is_empty() || Instant::now() >= until {
                return claimed;
            }
        }
    }

    /// The deprecated claimTask: claims run `run_id` of `task` for `worker_group/worker_id`,
    /// durably, as asked by `client_id`. `None` when the worker is quarantined (Taskcluster
    /// then answers `{}`).
    pub async fn claim_task(
        &self,
        task: &Task,
        run_id: u32,
        worker_group: String,
        worker_id: String,
        client_id: Option<String>,
    ) -> Result<Option<Task>, ApiError> {
        let name = WorkerName {
            task_queue_id: task.definition.task_queue_id.clone(),
            worker_group: worker_group.clone(),
            worker_id: worker_id.clone(),
        };
        // Past its deadline the claim is refused to anyone, quarantined or not (Taskcluster
        // checks the deadline first); the claim command says so.
        let past_deadline = task.definition.deadline <= self.clock.now();
        if !past_deadline && self.seen_quarantined(name).await {
            return Ok(None);
        }
        let command = Command::Claim {
            run_id,
            worker_group,
            worker_id,
        };
        self.execute(task.task_id, command, client_id)
            .await
            .map(Some)
    }

    /// Notes that a worker asked for work now; whether it is quarantined.
    async fn seen_quarantined(&self, name: WorkerName) -> bool {
        let now = self.clock.now();
        self.directory.do_send(workers::Seen {
            name: name.clone(),
            at: now,
        });
        matches!(
            self.directory
                .send(workers::Quarantined { name, now })
                .await,
            Ok(true)
        )
    }

    /// Runs one command on a task group's shard, for `client_id`.
    pub async fn execute_group(
        &self,
        task_group_id: Slugid,
        command: GroupCommand,
        client_id: Option<String>,
    ) -> Result<TaskGroup, ApiError> {
        match self
            .on_owner(Call::ExecuteGroup {
                task_group_id,
                command,
                client_id,
            })
            .await?
        {
            Answer::Group(group) => Ok(group),
            other => Err(wire::unexpected(&other)),
        }
    }

    /// The task group as of everything durable, or `None`.
    pub async fn task_group(&self, task_group_id: Slugid) -> Option<TaskGroup> {
        match self.on_owner(Call::TaskGroup { task_group_id }).await {
            Ok(Answer::MaybeGroup(group)) => group,
            _ => None,
        }
    }

    /// Up to `limit` records of the task's history after the log offset `after`, as of
    /// everything durable; `None` for a task that does not exist.
    pub async fn history(
        &self,
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    ) -> Result<Option<HistoryPage>, ApiError> {
        match self
            .on_owner(Call::History {
                task_id,
                after,
                limit,
            })
            .await?
        {
            Answer::History(page) => Ok(page),
            other => Err(wire::unexpected(&other)),
        }
    }

    /// Up to `limit` tasks of a listing after the position `after`, in order, gathered from
    /// every shard, each with its position; `true` when more follow.
    pub async fn list(
        &self,
        listing: Listing,
        after: Option<Position>,
        limit: usize,
    ) -> (Vec<(Position, Task)>, bool) {
        // One more than asked from each node: all that follow may be in one partition.
        let mut tasks = self.list_here(listing.clone(), after, limit + 1).await;
        let call = Call::List {
            listing,
            after,
            limit: limit + 1,
        };
        for answer in self.ask_peers(&call).await {
            if let Answer::List(part) = answer {
                tasks.extend(part);
            }
        }
        tasks.sort_by_key(|(position, _)| *position);
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        (tasks, more)
    }

    /// This node's part of a listing: up to `limit` tasks after `after`, in order.
    async fn list_here(
        &self,
        listing: Listing,
        after: Option<Position>,
        limit: usize,
    ) -> Vec<(Position, Task)> {
        let parts = self.partitions.local().into_iter().map(|(_, shard)| {
            shard.send(List {
                listing: listing.clone(),
                after,
                limit,
            })
        });
        let mut tasks: Vec<(Position, Task)> = futures::future::join_all(parts)
            .await
            .into_iter()
            .flat_map(Result::unwrap_or_default)
            .collect();
        tasks.sort_by_key(|(position, _)| *position);
        tasks.truncate(limit);
        tasks
    }

    /// Asks every other live node `call` about itself; the answers of those that gave one.
    async fn ask_peers(&self, call: &Call) -> Vec<Answer> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        let secret = &cluster.settings.secret;
        let calls =
            cluster.directory.peers().into_iter().map(|url| async move {
                cluster::peer::call(&url, secret, call, OWNER_WAIT).await
            });
        futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|reply| match reply {
                Ok(Reply::Answer(answer)) => Some(answer),
                _ => None,
            })
            .collect()
    }

    /// How many tasks a listing has, over every shard.
    pub async fn count(&self, listing: Listing) -> u64 {
        let here = self.count_here(listing.clone()).await;
        let there: u64 = self
            .ask_peers(&Call::Count { listing })
            .await
            .into_iter()
            .map(|answer| match answer {
                Answer::Count(count) => count,
                _ => 0,
            })
            .sum();
        here + there
    }

    /// How many tasks of a listing this node's partitions hold.
    async fn count_here(&self, listing: Listing) -> u64 {
        let parts = self
            .partitions
            .local()
            .into_iter()
            .map(|(_, shard)| shard.send(Count(listing.clone())));
        futures::future::join_all(parts)
            .await
            .into_iter()
            .map(|count| count.unwrap_or(0) as u64)
            .sum()
    }

    /// Records a quarantine or a declared expiry in the worker's shard, for `client_id`.
    pub async fn record_worker(
        &self,
        name: WorkerName,
        command: WorkerCommand,
        client_id: Option<String>,
    ) -> Result<Worker, ApiError> {
        let recorded = match self
            .on_owner(Call::RecordWorker {
                name: name.clone(),
                command,
                client_id,
            })
            .await?
        {
            Answer::Worker(worker) => worker,
            other => return Err(wire::unexpected(&other)),
        };
        // Every node's claimWork checks quarantines in its own directory: tell them all.
        if let Some(cluster) = &self.cluster {
            let at = self.clock.now();
            self.directory.do_send(workers::Recorded {
                name: name.clone(),
                record: recorded.clone(),
                at,
            });
            let call = Call::WorkerRecorded {
                name,
                record: recorded.clone(),
                at,
            };
            for url in cluster.directory.peers() {
                let (call, secret) = (call.clone(), cluster.settings.secret.clone());
                actix::spawn(async move {
                    let _ = cluster::peer::call(&url, &secret, &call, OWNER_WAIT).await;
                });
            }
        }
        Ok(recorded)
    }

    /// What every node's directory knows of a worker, together; `None` if none saw it.
    pub async fn lookup_worker(&self, name: WorkerName) -> Option<workers::WorkerInfo> {
        let here = self
            .directory
            .send(workers::Lookup(name.clone()))
            .await
            .ok()
            .flatten();
        let there = self.ask_peers(&Call::LookupWorker { name }).await;
        there
            .into_iter()
            .filter_map(|answer| match answer {
                Answer::WorkerInfo(info) => info,
                _ => None,
            })
            .fold(here, |known, info| match known {
                Some(known) => Some(known.merge(info)),
                None => Some(info),
            })
    }

    /// A task queue's workers as every node's directory knows them, merged, in order; the
    /// `quarantined` filter applies to what the nodes know together.
    pub async fn list_workers(&self, list: workers::ListWorkers) -> Vec<workers::WorkerInfo> {
        let (limit, quarantined, now) = (list.limit, list.quarantined, list.now);
        let here = self.directory.send(list.clone()).await.unwrap_or_default();
        let mut merged: std::collections::BTreeMap<WorkerName, workers::WorkerInfo> =
            std::collections::BTreeMap::new();
        let there = self.ask_peers(&Call::ListWorkers(list)).await;
        let there = there.into_iter().flat_map(|answer| match answer {
            Answer::Workers(workers) => workers,
            _ => Vec::new(),
        });
        for info in here.into_iter().chain(there) {
            let merged_info = match merged.remove(&info.name) {
                Some(known) => known.merge(info),
                None => info,
            };
            merged.insert(merged_info.name.clone(), merged_info);
        }
        merged
            .into_values()
            .filter(|info| quarantined.is_none_or(|wanted| info.record.quarantined(now) == wanted))
            .take(limit)
            .collect()
    }

    /// Task queues as every node's directory knows them, each with when it was last active.
    pub async fn list_task_queues(
        &self,
        list: workers::ListTaskQueues,
    ) -> Vec<(String, Timestamp)> {
        let limit = list.limit;
        let here = self.directory.send(list.clone()).await.unwrap_or_default();
        let there = self.ask_peers(&Call::ListTaskQueues(list)).await;
        merge_active(here, there, limit)
    }

    /// Provisioners as every node's directory knows them, each with when it was last active.
    pub async fn list_provisioners(
        &self,
        list: workers::ListProvisioners,
    ) -> Vec<(String, Timestamp)> {
        let limit = list.limit;
        let here = self.directory.send(list.clone()).await.unwrap_or_default();
        let there = self.ask_peers(&Call::ListProvisioners(list)).await;
        merge_active(here, there, limit)
    }

    /// When a task queue was last active on any node; `None` if no node saw it.
    pub async fn lookup_task_queue(&self, task_queue_id: String) -> Option<Timestamp> {
        let here = self
            .directory
            .send(workers::LookupTaskQueue(task_queue_id.clone()))
            .await
            .ok()
            .flatten();
        let there = self
            .ask_peers(&Call::LookupTaskQueue { task_queue_id })
            .await;
        there
            .into_iter()
            .filter_map(|answer| match answer {
                Answer::MaybeActive(at) => at,
                _ => None,
            })
            .fold(here, |latest, at| latest.max(Some(at)))
    }

    /// Everything in the partition stores and their memtables written out: for a clean stop,
    /// after which a start reads nothing back into memory. Gives up after [`SEAL_WAIT`]: a
    /// store's last write waits for its publishers, and a broker that is away must not hold
    /// the stop for ever (the next start replays what the store lacks).
    pub async fn seal(&self) {
        let waits = self
            .partitions
            .local()
            .into_iter()
            .map(|(_, shard)| shard.send(shard::Seal));
        if tokio::time::timeout(SEAL_WAIT, futures::future::join_all(waits))
            .await
            .is_err()
        {
            tracing::warn!(
                waited = ?SEAL_WAIT,
                "stopping with partition stores behind the log (their exchange messages are not \
                 all delivered); the next start replays the rest"
            );
        }
    }

    /// Resolves once every change so far is in the partition stores.
    pub async fn flushed(&self) {
        let waits = self
            .partitions
            .local()
            .into_iter()
            .map(|(_, shard)| shard.send(Flushed));
        futures::future::join_all(waits).await;
    }

    /// Tasks in the state of every shard.
    pub async fn task_count(&self) -> u64 {
        let parts = self
            .partitions
            .local()
            .into_iter()
            .map(|(_, shard)| shard.send(shard::TaskCount));
        futures::future::join_all(parts)
            .await
            .into_iter()
            .map(|count| count.unwrap_or(0))
            .sum()
    }

    /// Runs pending in a task queue, over every node.
    pub async fn pending_count(&self, task_queue_id: &str) -> u64 {
        let here = self.pending_count_here(task_queue_id).await;
        let call = Call::PendingCount {
            task_queue_id: task_queue_id.to_owned(),
        };
        let there: u64 = self
            .ask_peers(&call)
            .await
            .into_iter()
            .map(|answer| match answer {
                Answer::Count(count) => count,
                _ => 0,
            })
            .sum();
        here + there
    }

    async fn pending_count_here(&self, task_queue_id: &str) -> u64 {
        self.dispatcher
            .send(CountPending {
                task_queue_id: task_queue_id.to_owned(),
            })
            .await
            .unwrap_or(0)
    }
}

/// How a task counts for its dependents, if it has reached a final resolution.
fn final_resolution(task: &Task) -> Option<ResolvedDependency> {
    let state = task.runs.last()?.state;
    (state != RunState::Pending && state != RunState::Running).then_some(ResolvedDependency {
        task_id: task.task_id,
        state,
    })
}

/// A shard that stopped (its partition handed over) answers like one whose partition moved.
fn mailbox_error(error: MailboxError) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("the partition's shard has stopped: {error}"),
    )
    .with_details(json!({ shard::MOVED: true }))
}

/// Whether another look for the partition's owner may answer `error` differently.
fn is_retryable(error: &ApiError) -> bool {
    shard::is_moved(error)
}

/// Sends `message` to a shard of this process; its answer once durable.
async fn ask<M, T>(shard: &Addr<TaskShard>, message: M) -> Result<T, ApiError>
where
    M: Message<Result = shard::Reply<T>> + Send + 'static,
    TaskShard: Handler<M>,
    T: Send + 'static,
{
    shard.send(message).await.map_err(mailbox_error)?.await
}

/// Runs `call`, one about an entity ([`Call::key`]), on a shard of this process.
async fn answer_here(shard: &Addr<TaskShard>, call: Call) -> Result<Answer, ApiError> {
    match call {
        Call::Execute {
            task_id,
            command,
            join,
            client_id,
        } => ask(
            shard,
            Execute {
                task_id,
                command,
                join,
                client_id,
            },
        )
        .await
        .map(Answer::Task),
        Call::Task { task_id } => ask(shard, Get { task_id }).await.map(Answer::MaybeTask),
        Call::ExecuteGroup {
            task_group_id,
            command,
            client_id,
        } => ask(
            shard,
            ExecuteGroup {
                task_group_id,
                command,
                client_id,
            },
        )
        .await
        .map(Answer::Group),
        Call::TaskGroup { task_group_id } => ask(shard, GetGroup { task_group_id })
            .await
            .map(Answer::MaybeGroup),
        Call::History {
            task_id,
            after,
            limit,
        } => ask(
            shard,
            shard::History {
                task_id,
                after,
                limit,
            },
        )
        .await
        .map(Answer::History),
        Call::RecordWorker {
            name,
            command,
            client_id,
        } => ask(
            shard,
            RecordWorker {
                name,
                command,
                client_id,
            },
        )
        .await
        .map(Answer::Worker),
        // The calls about a node rather than an entity are answered in `Engine::answer`.
        Call::Document {
            kind,
            name,
            command,
            client_id,
        } => ask(
            shard,
            shard::ExecuteDocument {
                kind,
                name,
                command,
                client_id,
            },
        )
        .await
        .map(Answer::Document),
        Call::GetDocument { kind, name } => ask(shard, shard::GetDocument { kind, name })
            .await
            .map(Answer::Document),
        other => Err(ApiError::new(
            ErrorCode::InternalServerError,
            format!("a node call went to a shard: {other:?}"),
        )),
    }
}

/// Named entries from several nodes' directories, each once with its latest activity, in
/// order, at most `limit`.
fn merge_active(
    here: Vec<(String, Timestamp)>,
    there: Vec<Answer>,
    limit: usize,
) -> Vec<(String, Timestamp)> {
    let mut merged: std::collections::BTreeMap<String, Timestamp> = here.into_iter().collect();
    for answer in there {
        if let Answer::Active(entries) = answer {
            for (name, at) in entries {
                let latest = merged.entry(name).or_insert(at);
                *latest = (*latest).max(at);
            }
        }
    }
    merged.into_iter().take(limit).collect()
}
