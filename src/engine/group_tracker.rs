//! The group tracker: how many tasks of each task group are unresolved, per partition this
//! node serves. When a group's last unresolved task resolves, it asks the group's shard to
//! record that the group resolved (`TaskGroupResolved`, from which the `task-group-resolved`
//! message is derived). Its counts are derived from state (each shard reports its own after
//! replay, and again whenever its partition is gained), never stored; a partition given up
//! takes its counts with it. After a replay it also resolves the groups whose last resolution
//! a crash kept from being recorded.
//!
//! With several nodes a tracker whose count reaches zero asks every other node's tracker for
//! its counts, and resolves the group only when every count is zero and the answers cover each
//! partition exactly once: while a partition moves between nodes (nobody counts it, or both
//! do) it asks again a little later. The last node to reach zero sees all the others at zero;
//! two at once both resolve, which the group's shard records once.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use actix::prelude::*;

use super::Engine;
use crate::model::group::GroupCommand;
use crate::model::{Slugid, Timestamp};

/// How often, and how far apart, a resolution is looked at again while partitions move.
const COVERAGE_TRIES: u32 = 60;
const COVERAGE_RETRY: Duration = Duration::from_millis(500);
/// How many of the groups resolved lately each node remembers, for [`RecentGroups`].
const RECENTLY_RESOLVED: usize = 100;

#[derive(Default)]
pub struct GroupTracker {
    /// The unresolved tasks of each group, per partition whose shard reported its census.
    partitions: HashMap<u32, HashMap<Slugid, u64>>,
    /// Their sum over partitions, for the groups with unresolved tasks.
    unresolved: HashMap<Slugid, u64>,
    /// Until the engine attaches: the groups whose tasks resolved lately, whose resolution
    /// may not have been recorded (the latest resolution, and the latest record of one).
    unsettled: HashMap<Slugid, (Timestamp, Option<Timestamp>)>,
    /// The groups whose last unresolved task resolved here lately, latest last (memory only:
    /// a start begins it again).
    recently_resolved: VecDeque<(Slugid, Timestamp)>,
    engine: Option<Engine>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct CensusEntry {
    pub unresolved: u64,
    /// When the latest of its resolved tasks resolved.
    pub latest_resolution: Option<Timestamp>,
    /// When the group was last recorded as resolved (reported by the group's own shard).
    pub recorded: Option<Timestamp>,
}

impl Actor for GroupTracker {
    type Context = Context<Self>;
}

/// A shard's groups after its replay: they replace whatever its partition counted before.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Census {
    pub partition: u32,
    pub groups: HashMap<Slugid, CensusEntry>,
}

impl Handler<Census> for GroupTracker {
    type Result = ();

    fn handle(&mut self, Census { partition, groups }: Census, _: &mut Context<Self>) {
        self.forget(partition);
        let mut counts = HashMap::new();
        let mut settling = Vec::new();
        for (group, entry) in groups {
            if entry.unresolved > 0 {
                counts.insert(group, entry.unresolved);
                *self.unresolved.entry(group).or_default() += entry.unresolved;
            }
            if let Some(latest) = entry.latest_resolution {
                settling.push((group, latest, entry.recorded));
            }
        }
        self.partitions.insert(partition, counts);
        for (group, latest, recorded) in settling {
            if self.engine.is_some() {
                if recorded.is_none_or(|recorded| recorded < latest)
                    && !self.unresolved.contains_key(&group)
                {
                    self.resolve(group, latest);
                }
                continue;
            }
            let entry = self.unsettled.entry(group).or_insert((latest, recorded));
            entry.0 = entry.0.max(latest);
            entry.1 = entry.1.max(recorded);
        }
    }
}

/// The partition is no longer served here: its counts go with it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Lost(pub u32);

impl Handler<Lost> for GroupTracker {
    type Result = ();

    fn handle(&mut self, Lost(partition): Lost, _: &mut Context<Self>) {
        self.forget(partition);
    }
}

/// A task of `group` in `partition` was created or rerun (`resolved: None`), or resolved
/// (`Some(at)`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Changed {
    pub partition: u32,
    pub group: Slugid,
    pub resolved: Option<Timestamp>,
}

impl Handler<Changed> for GroupTracker {
    type Result = ();

    fn handle(&mut self, message: Changed, _: &mut Context<Self>) {
        let counts = self.partitions.entry(message.partition).or_default();
        let Some(at) = message.resolved else {
            *counts.entry(message.group).or_default() += 1;
            *self.unresolved.entry(message.group).or_default() += 1;
            return;
        };
        let Some(count) = counts.get_mut(&message.group) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(&message.group);
        }
        let Some(total) = self.unresolved.get_mut(&message.group) else {
            return;
        };
        *total = total.saturating_sub(1);
        if *total > 0 {
            return;
        }
        self.unresolved.remove(&message.group);
        self.recently_resolved
            .retain(|(group, _)| *group != message.group);
        if self.recently_resolved.len() == RECENTLY_RESOLVED {
            self.recently_resolved.pop_front();
        }
        self.recently_resolved.push_back((message.group, at));
        if self.engine.is_some() {
            self.resolve(message.group, at);
        } else {
            let entry = self.unsettled.entry(message.group).or_insert((at, None));
            entry.0 = entry.0.max(at);
        }
    }
}

impl GroupTracker {
    /// Drops what `partition` counted.
    fn forget(&mut self, partition: u32) {
        for (group, count) in self.partitions.remove(&partition).unwrap_or_default() {
            if let Some(total) = self.unresolved.get_mut(&group) {
                *total = total.saturating_sub(count);
                if *total == 0 {
                    self.unresolved.remove(&group);
                }
            }
        }
    }

    fn resolve(&self, group: Slugid, through: Timestamp) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        actix::spawn(async move {
            for _ in 0..COVERAGE_TRIES {
                match engine.unresolved_everywhere(group).await {
                    Some(0) => break,
                    Some(_) => return,
                    None => tokio::time::sleep(COVERAGE_RETRY).await,
                }
            }
            // The shard decides idempotently; an error (say, the log failed) leaves the group
            // for the census of the next start.
            if let Err(error) = engine
                .execute_group(group, GroupCommand::Resolve { through }, None)
                .await
            {
                tracing::warn!(%group, %error, "cannot record a task group's resolution");
            }
        });
    }
}

/// Every shard has reported its census: from now on a group whose count reaches zero is
/// resolved.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Engine);

impl Handler<Attach> for GroupTracker {
    type Result = ();

    fn handle(&mut self, Attach(engine): Attach, _: &mut Context<Self>) {
        self.engine = Some(engine);
        for (group, (latest, recorded)) in std::mem::take(&mut self.unsettled) {
            if recorded.is_none_or(|recorded| recorded < latest)
                && !self.unresolved.contains_key(&group)
            {
                self.resolve(group, latest);
            }
        }
    }
}

/// How many tasks of a group this node's partitions hold unresolved, and which partitions
/// those are.
#[derive(Message)]
#[rtype(result = "Unresolved")]
pub struct CountUnresolved(pub Slugid);

#[derive(Clone, Debug, Default, MessageResponse, serde::Serialize, serde::Deserialize)]
pub struct Unresolved {
    pub count: u64,
    pub partitions: Vec<u32>,
}

/// The groups this node's partitions hold unresolved tasks of, with how many, and those
/// whose last task resolved here lately, latest first, with when: what the console's home
/// page shows as recent groups.
#[derive(Message)]
#[rtype(result = "Vec<RecentGroup>")]
pub struct RecentGroups;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RecentGroup {
    pub task_group_id: Slugid,
    pub unresolved: u64,
    pub resolved: Option<Timestamp>,
}

impl Handler<RecentGroups> for GroupTracker {
    type Result = MessageResult<RecentGroups>;

    fn handle(&mut self, _: RecentGroups, _: &mut Context<Self>) -> Self::Result {
        let active = self.unresolved.iter().map(|(&group, &count)| RecentGroup {
            task_group_id: group,
            unresolved: count,
            resolved: None,
        });
        let resolved = self
            .recently_resolved
            .iter()
            .rev()
            .filter(|(group, _)| !self.unresolved.contains_key(group))
            .map(|&(group, at)| RecentGroup {
                task_group_id: group,
                unresolved: 0,
                resolved: Some(at),
            });
        MessageResult(active.chain(resolved).collect())
    }
}

impl Handler<CountUnresolved> for GroupTracker {
    type Result = Unresolved;

    fn handle(
        &mut self,
        CountUnresolved(group): CountUnresolved,
        _: &mut Context<Self>,
    ) -> Unresolved {
        Unresolved {
            count: self.unresolved.get(&group).copied().unwrap_or(0),
            partitions: self.partitions.keys().copied().collect(),
        }
    }
}
