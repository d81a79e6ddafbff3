//! The group tracker: how many tasks of each task group are unresolved, across partitions.
//! When a group's last unresolved task resolves, it asks the group's shard to record that the
//! group resolved (`TaskGroupResolved`, from which the `task-group-resolved` message is
//! derived). Its counts are derived from state (each shard reports its own after replay),
//! never stored; after a replay it also resolves the groups whose last resolution a crash
//! kept from being recorded.
//!
//! With several nodes each tracker counts the tasks of its own node's partitions: one whose
//! count reaches zero asks the other nodes' trackers for theirs and resolves the group only
//! when every count is zero (the last node to reach zero sees all the others at zero; two at
//! once both resolve, which the group's shard records once).

use std::collections::HashMap;

use actix::prelude::*;

use super::Engine;
use crate::model::group::GroupCommand;
use crate::model::{Slugid, Timestamp};

#[derive(Default)]
pub struct GroupTracker {
    /// Groups with unresolved tasks, and how many (in `CensusEntry::unresolved`).
    unresolved: HashMap<Slugid, CensusEntry>,
    /// Until the engine attaches: what the shards reported of every group.
    census: Option<HashMap<Slugid, CensusEntry>>,
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

impl CensusEntry {
    fn merge(&mut self, other: CensusEntry) {
        self.unresolved += other.unresolved;
        self.latest_resolution = self.latest_resolution.max(other.latest_resolution);
        self.recorded = self.recorded.max(other.recorded);
    }
}

impl Actor for GroupTracker {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.census = Some(HashMap::new());
    }
}

/// A shard's groups after its replay.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Census(pub HashMap<Slugid, CensusEntry>);

impl Handler<Census> for GroupTracker {
    type Result = ();

    fn handle(&mut self, Census(groups): Census, _: &mut Context<Self>) {
        let Some(census) = &mut self.census else {
            return;
        };
        // The largest map absorbs the others: a restart with many tasks moves fewer entries.
        let (mut into, from) = if groups.len() > census.len() {
            (groups, std::mem::take(census))
        } else {
            (std::mem::take(census), groups)
        };
        for (group, entry) in from {
            into.entry(group).or_default().merge(entry);
        }
        *census = into;
    }
}

/// A task of `group` was created or rerun (`resolved: None`), or resolved (`Some(at)`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Changed {
    pub group: Slugid,
    pub resolved: Option<Timestamp>,
}

impl Handler<Changed> for GroupTracker {
    type Result = ();

    fn handle(&mut self, message: Changed, _: &mut Context<Self>) {
        if let Some(census) = &mut self.census {
            let entry = census.entry(message.group).or_default();
            match message.resolved {
                None => entry.unresolved += 1,
                Some(at) => {
                    entry.unresolved = entry.unresolved.saturating_sub(1);
                    entry.latest_resolution = entry.latest_resolution.max(Some(at));
                }
            }
            return;
        }
        match message.resolved {
            None => self.unresolved.entry(message.group).or_default().unresolved += 1,
            Some(at) => {
                let Some(entry) = self.unresolved.get_mut(&message.group) else {
                    return;
                };
                entry.unresolved = entry.unresolved.saturating_sub(1);
                if entry.unresolved == 0 {
                    self.unresolved.remove(&message.group);
                    self.resolve(message.group, at);
                }
            }
        }
    }
}

impl GroupTracker {
    fn resolve(&self, group: Slugid, through: Timestamp) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        actix::spawn(async move {
            if engine.unresolved_elsewhere(group).await > 0 {
                return;
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

/// Every shard has reported its census: from now on counts change by [`Changed`] alone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Engine);

impl Handler<Attach> for GroupTracker {
    type Result = ();

    fn handle(&mut self, Attach(engine): Attach, _: &mut Context<Self>) {
        self.engine = Some(engine);
        let mut census = self.census.take().unwrap_or_default();
        // Kept in place, without the groups that are resolved (most, in a long-running farm).
        census.retain(|group, entry| {
            if entry.unresolved == 0
                && let Some(latest) = entry.latest_resolution
                && entry.recorded.is_none_or(|recorded| recorded < latest)
            {
                self.resolve(*group, latest);
            }
            entry.unresolved > 0
        });
        self.unresolved = census;
    }
}

/// How many tasks of a group this node's partitions hold unresolved.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct Unresolved(pub Slugid);

impl Handler<Unresolved> for GroupTracker {
    type Result = u64;

    fn handle(&mut self, Unresolved(group): Unresolved, _: &mut Context<Self>) -> u64 {
        let counted = match &self.census {
            Some(census) => census.get(&group),
            None => self.unresolved.get(&group),
        };
        counted.map_or(0, |entry| entry.unresolved)
    }
}
