//! A shard's state: the partition store, and in memory only what live work needs.
//!
//! Memory holds every unresolved task (the hot path: claims, timers, dependencies), the workers,
//! and whatever changed since the last flush until that flush is written (documents and the
//! index's namespaces included). Resolved tasks, groups
//! and everything else are read from the store on demand: a command faults its task in, a read
//! takes a copy from the store without keeping it. After each flush, resolved tasks and groups
//! that did not change since are evicted, so memory is bounded by live work plus one flush's
//! worth of changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::engine::store::{self, Expiring, Expiry, Flush, PartitionStore, Relation, TaskChange};
use crate::log::{Offset, codec};
use crate::model::document::{self, store_key};
use crate::model::{
    Document, DocumentKind, Entities, Envelope, Event, HistoryRecord, Slugid, Storage, Task,
    TaskGroup, Timestamp,
};

/// A flush generation: every change is stamped with the generation of the flush that will
/// carry it.
type Generation = u64;

pub struct PartitionState {
    pub store: PartitionStore,
    /// Live tasks, tasks and groups changed since the last completed flush, and the workers.
    pub entities: Entities,
    /// Tasks changed and not yet in a completed flush, with the generation of the change. One
    /// that is here but not in `entities` was removed (expired).
    changed_tasks: HashMap<Slugid, Generation>,
    changed_groups: HashMap<Slugid, Generation>,
    changed_workers: BTreeSet<String>,
    /// Tasks defined since the last flush taken: their definitions and list entries go with it.
    new_tasks: BTreeSet<Slugid>,
    /// Of those, the ones that replace an expired task of the same id the store still holds.
    replacing: BTreeSet<Slugid>,
    /// Where each of those was defined again, until the store no longer holds the old one:
    /// the store's history records before it are the old task's.
    redefined_at: HashMap<Slugid, Offset>,
    /// List entries (group · task, dependency · task) of tasks not yet in a completed flush.
    fresh_members: BTreeSet<(Slugid, Slugid)>,
    fresh_dependents: BTreeSet<(Slugid, Slugid)>,
    /// Tasks and groups read into memory for a command, to evict after the next flush if they
    /// are still resolved and unchanged.
    faulted: Vec<Slugid>,
    expiries: Vec<Expiry>,
    expired: Vec<Expiry>,
    /// History records not yet in a completed flush, by task and offset.
    history: BTreeMap<(Slugid, Offset), Vec<u8>>,
    /// The flush taken and not yet written, whose history records are read from it.
    flushing: Option<Arc<Flush>>,
    settling: Vec<(Timestamp, Slugid)>,
    /// Documents changed and not yet in a completed flush (`None`: removed), by store key.
    documents: BTreeMap<Vec<u8>, (Generation, Option<Arc<Document>>)>,
    /// Namespaces of the index raised or swept and not yet in a completed flush.
    namespaces: BTreeMap<(String, String), (Generation, Option<Timestamp>)>,
    /// The generation changes are stamped with now.
    generation: Generation,
    partition: u32,
}

/// A flush taken from the state, to write and then [`PartitionState::flushed`].
pub struct Taken {
    pub flush: Arc<Flush>,
    generation: Generation,
    new: Vec<Slugid>,
}

/// How long task resolutions are remembered for the group tracker's census at the next start.
/// The tracker asks a group's shard to record the group resolved the moment its last task
/// resolves, and a flush writes a resolution a second or more after it, so a crash can lose a
/// group's resolution only if the tracker lagged by this much; the next start resolves the
/// groups of what is remembered again (idempotently).
const SETTLING_MILLIS: i64 = 10_000;

impl PartitionState {
    pub fn new(partition: u32, store: PartitionStore) -> Result<Self, store::Error> {
        let mut entities = Entities::default();
        for task in store.live_tasks()? {
            entities.tasks.insert(task.task_id, Arc::new(task));
        }
        entities.workers.extend(store.workers()?);
        Ok(PartitionState {
            store,
            entities,
            changed_tasks: HashMap::new(),
            changed_groups: HashMap::new(),
            changed_workers: BTreeSet::new(),
            new_tasks: BTreeSet::new(),
            replacing: BTreeSet::new(),
            redefined_at: HashMap::new(),
            fresh_members: BTreeSet::new(),
            fresh_dependents: BTreeSet::new(),
            faulted: Vec::new(),
            expiries: Vec::new(),
            expired: Vec::new(),
            history: BTreeMap::new(),
            flushing: None,
            settling: Vec::new(),
            documents: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            generation: 1,
            partition,
        })
    }

    /// The task, from memory or the store (without keeping it in memory).
    pub fn read_task(&self, task_id: Slugid) -> Result<Option<Task>, store::Error> {
        if let Some(task) = self.entities.tasks.get(&task_id) {
            return Ok(Some(Task::clone(task)));
        }
        if self.changed_tasks.contains_key(&task_id) {
            return Ok(None);
        }
        self.store.task(task_id)
    }

    pub fn read_group(&self, task_group_id: Slugid) -> Result<Option<TaskGroup>, store::Error> {
        if let Some(group) = self.entities.groups.get(&task_group_id) {
            return Ok(Some(TaskGroup::clone(group)));
        }
        if self.changed_groups.contains_key(&task_group_id) {
            return Ok(None);
        }
        self.store.group(task_group_id)
    }

    /// Brings the task into memory for a command (a no-op if it is there or does not exist).
    pub fn fault_task(&mut self, task_id: Slugid) -> Result<(), store::Error> {
        if self.entities.tasks.contains_key(&task_id) || self.changed_tasks.contains_key(&task_id) {
            return Ok(());
        }
        if let Some(task) = self.store.task(task_id)? {
            self.entities.tasks.insert(task_id, Arc::new(task));
            self.faulted.push(task_id);
        }
        Ok(())
    }

    pub fn fault_group(&mut self, task_group_id: Slugid) -> Result<(), store::Error> {
        if self.entities.groups.contains_key(&task_group_id)
            || self.changed_groups.contains_key(&task_group_id)
        {
            return Ok(());
        }
        if let Some(group) = self.store.group(task_group_id)? {
            self.entities.groups.insert(task_group_id, Arc::new(group));
            self.faulted.push(task_group_id);
        }
        Ok(())
    }

    /// Brings in what applying `envelope` touches.
    pub fn fault_for(&mut self, envelope: &Envelope) -> Result<(), store::Error> {
        if let Event::TaskGroupJoined { task_group_id, .. } = &envelope.event {
            return self.fault_group(*task_group_id);
        }
        let Ok(id) = envelope.key.parse::<Slugid>() else {
            return Ok(());
        };
        match &envelope.event {
            Event::TaskGroupSealed
            | Event::TaskGroupResolved
            | Event::TaskGroupPriorityChanged { .. }
            | Event::TaskGroupExpired => self.fault_group(id),
            Event::WorkerQuarantined { .. } | Event::WorkerDeclared { .. } => Ok(()),
            _ => self.fault_task(id),
        }
    }

    /// Applies one event at `offset` and records what the next flush must write for it.
    pub fn apply(&mut self, offset: Offset, envelope: &Envelope) {
        if let Event::DocumentPut { .. } | Event::DocumentRemoved { .. } = &envelope.event {
            self.apply_document(&envelope.event);
            return;
        }
        let was_resolved = envelope
            .key
            .parse::<Slugid>()
            .ok()
            .and_then(|id| self.entities.tasks.get(&id))
            .map(|task| is_resolved(task));
        self.entities.apply(envelope);
        let generation = self.generation;
        let id = envelope.key.parse::<Slugid>().ok();
        match (&envelope.event, id) {
            (Event::WorkerQuarantined { .. } | Event::WorkerDeclared { .. }, _) => {
                self.changed_workers.insert(envelope.key.clone());
            }
            (Event::TaskGroupJoined { task_group_id, .. }, _) => {
                self.changed_groups.insert(*task_group_id, generation);
                if let Some(group) = self.entities.groups.get(task_group_id) {
                    self.expiries.push(Expiry {
                        at: group.expires,
                        what: Expiring::Group(*task_group_id),
                    });
                }
            }
            (
                Event::TaskGroupSealed
                | Event::TaskGroupResolved
                | Event::TaskGroupPriorityChanged { .. }
                | Event::TaskGroupExpired,
                Some(id),
            ) => {
                self.changed_groups.insert(id, generation);
            }
            (
                Event::TaskDefined {
                    task_id,
                    definition,
                },
                _,
            ) if was_resolved.is_none() => {
                // Defined again after it expired, before the store forgot the old one.
                if self.changed_tasks.insert(*task_id, generation).is_some() {
                    self.replacing.insert(*task_id);
                    self.redefined_at.insert(*task_id, offset);
                }
                self.new_tasks.insert(*task_id);
                self.fresh_members
                    .insert((definition.task_group_id, *task_id));
                for dependency in &definition.dependencies {
                    self.fresh_dependents.insert((*dependency, *task_id));
                }
            }
            // Defined once: a repeat changes nothing.
            (Event::TaskDefined { .. }, _) => {}
            (event, Some(id)) => {
                self.changed_tasks.insert(id, generation);
                if let Event::ArtifactCreated {
                    run_id,
                    name,
                    artifact,
                } = event
                    && let Storage::S3 { .. } = artifact.storage
                {
                    self.expiries.push(Expiry {
                        at: artifact.expires,
                        what: Expiring::Blob(id, *run_id, name.clone()),
                    });
                }
                if let Some(task) = self.entities.tasks.get(&id)
                    && was_resolved == Some(false)
                    && let Some(run) = task.runs.last()
                    && run.state.is_resolved()
                {
                    let at = run.resolved.unwrap_or(envelope.at);
                    self.settling.push((at, task.definition.task_group_id));
                }
            }
            _ => {}
        }
        if let (Event::TaskExpired, Some(id)) = (&envelope.event, id) {
            // Its history goes with it (what the store holds, by the flush that removes it).
            let stale: Vec<_> = self
                .history
                .range((id, 0)..=(id, Offset::MAX))
                .map(|(key, _)| *key)
                .collect();
            for key in stale {
                self.history.remove(&key);
            }
        } else if let Some((task_id, record)) =
            HistoryRecord::derive(envelope, self.partition, offset)
            && self.entities.tasks.contains_key(&task_id)
        {
            match codec::encode(&record) {
                Ok(encoded) => {
                    self.history.insert((task_id, offset), encoded);
                }
                Err(error) => tracing::error!(%error, "a history record does not encode"),
            }
        }
    }

    /// The document, from memory or the store.
    pub fn read_document(
        &self,
        kind: DocumentKind,
        name: &str,
    ) -> Result<Option<Document>, store::Error> {
        match self.documents.get(&store_key(kind, name)) {
            Some((_, document)) => Ok(document.as_deref().cloned()),
            None => self.store.document(kind, name),
        }
    }

    /// Up to `limit` documents whose store keys start with `prefix` (a kind's number and
    /// what follows), after the key `after`, in key order: the store's and those not yet
    /// flushed, without removed ones.
    pub fn documents(
        &self,
        prefix: &[u8],
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(String, Document)>, store::Error> {
        use std::ops::Bound;
        let mut found = Vec::new();
        let mut after = after;
        loop {
            let stored = self.store.documents(prefix, after.as_deref(), limit)?;
            let exhausted = stored.len() < limit;
            let low = after
                .clone()
                .map_or(Bound::Included(prefix.to_vec()), Bound::Excluded);
            let high = match stored.last() {
                Some((last, _)) if !exhausted => Bound::Included(last.clone()),
                _ => Bound::Unbounded,
            };
            let mut page: BTreeMap<Vec<u8>, Option<Document>> = stored
                .into_iter()
                .map(|(key, document)| (key, Some(document)))
                .collect();
            for (key, (_, document)) in self.documents.range((low, high)) {
                if !key.starts_with(prefix) {
                    break;
                }
                page.insert(key.clone(), document.as_deref().cloned());
            }
            let last = page.keys().next_back().cloned();
            for (key, document) in page {
                if let (Some(document), Some((_, name))) =
                    (document, document::from_store_key(&key))
                {
                    found.push((name, document));
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            match last {
                Some(last) if !exhausted => after = Some(last),
                _ => return Ok(found),
            }
        }
    }

    /// When the index's namespace `name` under `parent` expires, if it has it.
    pub fn read_namespace(
        &self,
        parent: &str,
        name: &str,
    ) -> Result<Option<Timestamp>, store::Error> {
        match self.namespaces.get(&(parent.to_owned(), name.to_owned())) {
            Some((_, expires)) => Ok(*expires),
            None => self.store.namespace(parent, name),
        }
    }

    /// Up to `limit` namespaces under `parent` after `after`, in name order, with when each
    /// expires.
    pub fn namespaces(
        &self,
        parent: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Timestamp)>, store::Error> {
        let mut page: BTreeMap<String, Option<Timestamp>> = self
            .store
            .namespaces(parent, after, limit)?
            .into_iter()
            .map(|(name, expires)| (name, Some(expires)))
            .collect();
        let full = page.len() == limit;
        let last = page.keys().next_back().cloned();
        for ((of, name), (_, expires)) in &self.namespaces {
            let in_page = of == parent
                && after.is_none_or(|after| name.as_str() > after)
                && (!full || last.as_ref().is_some_and(|last| name <= last));
            if in_page {
                page.insert(name.clone(), *expires);
            }
        }
        Ok(page
            .into_iter()
            .filter_map(|(name, expires)| Some((name, expires?)))
            .take(limit)
            .collect())
    }

    /// Removes the namespace if it has expired by `now` (a namespace is derived from the
    /// entries put under it, so its removal is no event).
    pub fn sweep_namespace(&mut self, parent: &str, name: &str, now: Timestamp) {
        if let Ok(Some(expires)) = self.read_namespace(parent, name)
            && expires <= now
        {
            self.namespaces.insert(
                (parent.to_owned(), name.to_owned()),
                (self.generation, None),
            );
        }
    }

    /// Folds a document's event.
    fn apply_document(&mut self, event: &Event) {
        let generation = self.generation;
        match event {
            Event::DocumentPut { name, document } => {
                let kind = document.kind();
                if let Some(at) = document.removed_at() {
                    self.expiries.push(Expiry {
                        at,
                        what: Expiring::Document(kind, name.clone()),
                    });
                }
                if let Document::IndexedTask(entry) = document {
                    self.raise_namespaces(name, document::namespace_expiry(entry.expires));
                }
                let document = Some(Arc::new(document.clone()));
                self.documents
                    .insert(store_key(kind, name), (generation, document));
            }
            Event::DocumentRemoved { kind, name } => {
                self.documents
                    .insert(store_key(*kind, name), (generation, None));
            }
            _ => {}
        }
    }

    /// Makes every namespace above `path` live until `expires` at least.
    fn raise_namespaces(&mut self, path: &str, expires: Timestamp) {
        for (parent, name) in document::namespaces_above(path) {
            let current = self.read_namespace(parent, name).unwrap_or_else(|error| {
                tracing::error!(%error, "a namespace does not read; it is written again");
                None
            });
            if current.is_none_or(|current| current < expires) {
                self.namespaces.insert(
                    (parent.to_owned(), name.to_owned()),
                    (self.generation, Some(expires)),
                );
                self.expiries.push(Expiry {
                    at: expires,
                    what: Expiring::Namespace(parent.to_owned(), name.to_owned()),
                });
            }
        }
    }

    /// An expiry entry was handled: the next flush removes it.
    pub fn expiry_handled(&mut self, expiry: Expiry) {
        self.expired.push(expiry);
    }

    /// Whether changes wait for a flush.
    pub fn has_changes(&self) -> bool {
        self.changed_tasks
            .values()
            .chain(self.changed_groups.values())
            .any(|generation| *generation == self.generation)
            || !self.changed_workers.is_empty()
            || !self.expired.is_empty()
            || !self.history.is_empty()
            || self
                .documents
                .values()
                .any(|(generation, _)| *generation == self.generation)
            || self
                .namespaces
                .values()
                .any(|(generation, _)| *generation == self.generation)
    }

    /// Takes every change since the last flush taken, as a flush standing for the log before
    /// `offset`. What it holds stays readable in memory until [`PartitionState::flushed`].
    pub fn take(&mut self, offset: Offset) -> Taken {
        let generation = self.generation;
        self.generation += 1;
        let mut flush = Flush {
            offset,
            ..Flush::default()
        };
        let new: Vec<Slugid> = std::mem::take(&mut self.new_tasks).into_iter().collect();
        for (task_id, changed) in &self.changed_tasks {
            if *changed != generation {
                continue;
            }
            flush.tasks.push(match self.entities.tasks.get(task_id) {
                Some(task) => TaskChange::Put {
                    task: task.clone(),
                    new: new.binary_search(task_id).is_ok(),
                    replaces: self.replacing.remove(task_id),
                },
                None => TaskChange::Remove(*task_id),
            });
        }
        for (group_id, changed) in &self.changed_groups {
            if *changed == generation {
                flush
                    .groups
                    .push((*group_id, self.entities.groups.get(group_id).cloned()));
            }
        }
        for key in std::mem::take(&mut self.changed_workers) {
            if let Some(worker) = self.entities.workers.get(&key) {
                flush.workers.push((key, worker.clone()));
            }
        }
        flush.expiries = std::mem::take(&mut self.expiries);
        flush.expired = std::mem::take(&mut self.expired);
        flush.history = std::mem::take(&mut self.history)
            .into_iter()
            .map(|((task_id, offset), record)| (task_id, offset, record))
            .collect();
        let mut latest: HashMap<Slugid, Timestamp> = HashMap::new();
        for (at, group) in std::mem::take(&mut self.settling) {
            let entry = latest.entry(group).or_insert(at);
            *entry = (*entry).max(at);
        }
        flush.settling = latest.into_iter().map(|(group, at)| (at, group)).collect();
        for (key, (changed, document)) in &self.documents {
            if *changed == generation
                && let Some(name) = document::from_store_key(key)
            {
                flush.documents.push((name, document.clone()));
            }
        }
        for (name, (changed, expires)) in &self.namespaces {
            if *changed == generation {
                flush.namespaces.push((name.clone(), *expires));
            }
        }
        let flush = Arc::new(flush);
        self.flushing = Some(flush.clone());
        Taken {
            flush,
            generation,
            new,
        }
    }

    /// The settling entries older than this are pruned by a flush written now.
    pub fn settled_before(now: Timestamp) -> Timestamp {
        now.plus_millis(-SETTLING_MILLIS)
    }

    /// A taken flush is written: what it carried now reads from the store, and resolved tasks
    /// and groups that did not change since leave memory.
    pub fn flushed(&mut self, taken: Taken) {
        let generation = taken.generation;
        let mut candidates = std::mem::take(&mut self.faulted);
        for change in &taken.flush.tasks {
            let task_id = match change {
                TaskChange::Put { task, .. } => task.task_id,
                TaskChange::Remove(task_id) => *task_id,
            };
            if self.changed_tasks.get(&task_id) == Some(&generation) {
                self.changed_tasks.remove(&task_id);
            }
            candidates.push(task_id);
        }
        for (group_id, _) in &taken.flush.groups {
            if self.changed_groups.get(group_id) == Some(&generation) {
                self.changed_groups.remove(group_id);
            }
            candidates.push(*group_id);
        }
        for task_id in &taken.new {
            if let Some(task) = self.entities.tasks.get(task_id) {
                let definition = &task.definition;
                self.fresh_members
                    .remove(&(definition.task_group_id, *task_id));
                for dependency in &definition.dependencies {
                    self.fresh_dependents.remove(&(*dependency, *task_id));
                }
            } else {
                self.fresh_members.retain(|(_, task)| task != task_id);
                self.fresh_dependents.retain(|(_, task)| task != task_id);
            }
        }
        self.documents
            .retain(|_, (changed, _)| *changed != generation);
        self.namespaces
            .retain(|_, (changed, _)| *changed != generation);
        self.flushing = None;
        let written = taken.flush.offset;
        self.redefined_at.retain(|_, at| *at >= written);
        for id in candidates {
            if !self.changed_tasks.contains_key(&id)
                && self
                    .entities
                    .tasks
                    .get(&id)
                    .is_some_and(|task| is_resolved(task))
            {
                self.entities.tasks.remove(&id);
            }
            if !self.changed_groups.contains_key(&id) {
                self.entities.groups.remove(&id);
            }
        }
    }

    /// Up to `limit` tasks in the `relation` list of `of` after `after`, in id order: the
    /// store's entries and those not yet flushed, without expired tasks.
    pub fn listed(
        &self,
        relation: Relation,
        of: Slugid,
        after: Option<Slugid>,
        limit: usize,
    ) -> Result<Vec<Task>, store::Error> {
        let fresh = match relation {
            Relation::Members => &self.fresh_members,
            Relation::Dependents => &self.fresh_dependents,
        };
        let mut found = Vec::new();
        let mut after = after;
        loop {
            let stored = self.store.listed(relation, of, after, limit)?;
            let low = after.map_or(std::ops::Bound::Included((of, Slugid::MIN)), |after| {
                std::ops::Bound::Excluded((of, after))
            });
            let recent = fresh
                .range((low, std::ops::Bound::Included((of, Slugid::MAX))))
                .take(limit)
                .map(|(_, task)| *task);
            let mut ids: Vec<Slugid> = stored.iter().copied().chain(recent).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.truncate(limit);
            let exhausted = ids.len() < limit;
            for task_id in &ids {
                // An entry outlives its task until the next flush: the task itself decides.
                if let Some(task) = self.read_task(*task_id)?
                    && relation.holds(&task, of)
                {
                    found.push(task);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            match ids.last() {
                Some(last) if !exhausted => after = Some(*last),
                _ => return Ok(found),
            }
        }
    }

    /// Up to `limit` of the task's history records after the one at `after`: the store's,
    /// then those being written, then those not yet taken.
    pub fn history(
        &self,
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, store::Error> {
        let mut encoded = self.store.history(task_id, after, limit)?;
        if let Some(redefined) = self.redefined_at.get(&task_id) {
            encoded.retain(|(offset, _)| offset >= redefined);
        }
        let from = after.map_or(0, |after| after.saturating_add(1));
        let being_written = self.flushing.iter().flat_map(|flush| {
            flush
                .history
                .iter()
                .filter(move |(of, offset, _)| *of == task_id && *offset >= from)
                .map(|(_, offset, record)| (*offset, record))
        });
        let unwritten = self
            .history
            .range((task_id, from)..=(task_id, Offset::MAX))
            .map(|((_, offset), record)| (*offset, record));
        for (offset, record) in being_written.chain(unwritten) {
            if encoded.len() == limit {
                break;
            }
            if encoded.last().is_none_or(|(last, _)| *last < offset) {
                encoded.push((offset, record.clone()));
            }
        }
        encoded
            .iter()
            .map(|(_, record)| codec::decode(record).map_err(store::Error::from))
            .collect()
    }

    /// How many tasks the partition holds (approximately while a flush is being written).
    pub fn task_count(&self) -> u64 {
        self.store.task_count() + self.fresh_members.len() as u64
    }

    /// Memory held, for the metrics: tasks and groups in memory.
    pub fn resident(&self) -> (usize, usize) {
        (self.entities.tasks.len(), self.entities.groups.len())
    }
}

pub fn is_resolved(task: &Task) -> bool {
    task.runs.last().is_some_and(|run| run.state.is_resolved())
}
#[cfg(test)]
mod tests {
    //! The store against the fold in memory: any event sequence, flushed at any points, with
    //! restarts in between, answers every read the API makes as the plain in-memory fold does.

    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::model::task::definition::tests::sample_definition;
    use crate::model::{Artifact, Priority, ReasonCreated, ReasonResolved, Storage};

    const TASKS: usize = 6;
    const GROUPS: usize = 3;

    #[derive(Clone, Debug)]
    enum Step {
        /// Apply the event to task (or group) number `.0`.
        Task(usize, Event),
        Group(usize, Event),
        /// Write what changed to the store.
        Flush,
        /// Write, then start again from the store alone (as after a clean stop).
        Restart,
    }

    fn ids() -> (Vec<Slugid>, Vec<Slugid>) {
        let seeded = |n: u8| Slugid::from_random_bytes([n; 16]);
        (
            (0..TASKS as u8).map(seeded).collect(),
            (100..100 + GROUPS as u8).map(seeded).collect(),
        )
    }

    fn task_event() -> impl Strategy<Value = Event> {
        let (tasks, groups) = ids();
        let run = 0u32..3;
        prop_oneof![
            (
                0..GROUPS,
                proptest::collection::vec(0..TASKS, 0..3),
                0i64..5
            )
                .prop_map(move |(group, dependencies, expires)| {
                    let mut definition = sample_definition(groups[group]);
                    definition.dependencies = dependencies.iter().map(|d| tasks[*d]).collect();
                    definition.expires = Timestamp::from_millis(expires * 1000);
                    Event::TaskDefined {
                        task_id: Slugid::MIN,
                        definition: Arc::new(definition),
                    }
                }),
            run.clone().prop_map(|run_id| Event::RunPending {
                run_id,
                reason: ReasonCreated::Scheduled,
            }),
            (run.clone(), 0i64..5).prop_map(|(run_id, until)| Event::RunClaimed {
                run_id,
                worker_group: "wg".into(),
                worker_id: format!("w{until}"),
                taken_until: Timestamp::from_millis(until),
            }),
            (run.clone(), 0i64..5).prop_map(|(run_id, until)| Event::RunReclaimed {
                run_id,
                taken_until: Timestamp::from_millis(until),
            }),
            (run.clone(), any::<bool>()).prop_map(|(run_id, completed)| Event::RunResolved {
                run_id,
                reason: if completed {
                    ReasonResolved::Completed
                } else {
                    ReasonResolved::Failed
                },
            }),
            (run.clone(), 0..3u8, any::<bool>()).prop_map(|(run_id, name, s3)| {
                Event::ArtifactCreated {
                    run_id,
                    name: format!("public/{name}"),
                    artifact: Artifact {
                        content_type: "text/plain".into(),
                        expires: Timestamp::from_millis(i64::from(name)),
                        storage: if s3 {
                            Storage::S3 {
                                content_length: None,
                            }
                        } else {
                            Storage::Reference {
                                url: "https://example.invalid".into(),
                            }
                        },
                    },
                }
            }),
            (0..TASKS).prop_map(|dependency| Event::DependencySatisfied {
                dependency: ids().0[dependency],
            }),
            Just(Event::PriorityChanged {
                priority: Priority::High
            }),
            Just(Event::TaskExpired),
        ]
    }

    fn group_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0i64..5).prop_map(|expires| Event::TaskGroupJoined {
                task_group_id: Slugid::MIN,
                scheduler_id: "-".into(),
                expires: Timestamp::from_millis(expires),
            }),
            Just(Event::TaskGroupSealed),
            Just(Event::TaskGroupResolved),
            Just(Event::TaskGroupExpired),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0..TASKS, task_event()).prop_map(|(task, event)| Step::Task(task, event)),
            2 => (0..GROUPS, group_event()).prop_map(|(group, event)| Step::Group(group, event)),
            2 => Just(Step::Flush),
            1 => Just(Step::Restart),
        ]
    }

    /// Every read the API makes of a partition, from the plain fold.
    fn expected_listing(memory: &Entities, relation: Relation, of: Slugid) -> Vec<Slugid> {
        let mut listed: Vec<Slugid> = memory
            .tasks
            .values()
            .filter(|task| relation.holds(task, of))
            .map(|task| task.task_id)
            .collect();
        listed.sort();
        listed
    }

    fn listed_ids(state: &PartitionState, relation: Relation, of: Slugid) -> Vec<Slugid> {
        let listed = state.listed(relation, of, None, 100).unwrap();
        listed.iter().map(|task| task.task_id).collect()
    }

    fn open(dir: &std::path::Path) -> PartitionState {
        let (store, _) = PartitionStore::open(dir, 0, 1 << 20, u64::MAX).unwrap();
        PartitionState::new(0, store).unwrap()
    }

    fn flush(state: &mut PartitionState, offset: Offset) {
        let taken = state.take(offset);
        state.store.write(&taken.flush, None).unwrap();
        state.flushed(taken);
    }

    fn check(
        state: &PartitionState,
        memory: &Entities,
        histories: &HashMap<Slugid, Vec<HistoryRecord>>,
    ) {
        let (tasks, groups) = ids();
        for task_id in &tasks {
            let stored = state.read_task(*task_id).unwrap();
            assert_eq!(stored.as_ref(), memory.task(*task_id), "task {task_id}");
            if memory.task(*task_id).is_some() {
                let history = state.history(*task_id, None, 1_000).unwrap();
                assert_eq!(
                    Some(&history),
                    histories.get(task_id),
                    "history of {task_id}"
                );
                // Paged two at a time, the same records.
                let mut paged = Vec::new();
                loop {
                    let after = paged.last().map(|record: &HistoryRecord| record.offset);
                    let page = state.history(*task_id, after, 2).unwrap();
                    if page.is_empty() {
                        break;
                    }
                    paged.extend(page);
                }
                assert_eq!(paged, history);
            }
            let listed = listed_ids(state, Relation::Dependents, *task_id);
            assert_eq!(
                listed,
                expected_listing(memory, Relation::Dependents, *task_id)
            );
        }
        for group_id in &groups {
            let stored = state.read_group(*group_id).unwrap();
            assert_eq!(stored.as_ref(), memory.group(*group_id), "group {group_id}");
            let listed = listed_ids(state, Relation::Members, *group_id);
            assert_eq!(
                listed,
                expected_listing(memory, Relation::Members, *group_id)
            );
            // Paged one at a time, the same list.
            let mut paged = Vec::new();
            let mut after = None;
            while let Some(task) = state
                .listed(Relation::Members, *group_id, after, 1)
                .unwrap()
                .pop()
            {
                after = Some(task.task_id);
                paged.push(task.task_id);
            }
            assert_eq!(paged, listed);
        }
        // Every unresolved task is in memory, whatever was flushed.
        for task in memory.tasks.values() {
            if !is_resolved(task) {
                assert!(state.entities.tasks.contains_key(&task.task_id));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn the_store_answers_as_the_fold_in_memory(steps in proptest::collection::vec(step(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let (tasks, groups) = ids();
            let mut memory = Entities::default();
            let mut histories: HashMap<Slugid, Vec<HistoryRecord>> = HashMap::new();
            let mut state = open(dir.path());
            let mut offset = 0;
            for step in steps {
                let (key, event) = match step {
                    Step::Flush => {
                        flush(&mut state, offset);
                        check(&state, &memory, &histories);
                        continue;
                    }
                    Step::Restart => {
                        flush(&mut state, offset);
                        drop(state);
                        state = open(dir.path());
                        check(&state, &memory, &histories);
                        continue;
                    }
                    Step::Task(task, Event::TaskDefined { definition, .. }) => (
                        tasks[task],
                        Event::TaskDefined { task_id: tasks[task], definition },
                    ),
                    Step::Task(task, event) => (tasks[task], event),
                    Step::Group(group, Event::TaskGroupJoined { scheduler_id, expires, .. }) => (
                        groups[group],
                        Event::TaskGroupJoined {
                            task_group_id: groups[group],
                            scheduler_id,
                            expires,
                        },
                    ),
                    Step::Group(group, event) => (groups[group], event),
                };
                let envelope = Envelope {
                    key: key.to_string(),
                    at: Timestamp::from_millis(offset as i64),
                    client_id: Some("tester".into()),
                    event,
                };
                memory.apply(&envelope);
                if let Event::TaskExpired = envelope.event {
                    histories.remove(&key);
                } else if let Some((task_id, record)) = HistoryRecord::derive(&envelope, 0, offset)
                    && memory.task(task_id).is_some()
                {
                    histories.entry(task_id).or_default().push(record);
                }
                state.fault_for(&envelope).unwrap();
                state.apply(offset, &envelope);
                offset += 1;
                check(&state, &memory, &histories);
            }
        }
    }

    /// Documents read, list and survive a restart alike whether they are flushed or not, and
    /// the index's namespaces follow its entries: raised, never lowered.
    #[test]
    fn documents_read_and_list_from_the_store_and_what_is_not_flushed() {
        use crate::model::Json;
        use crate::model::document::{IndexedTask, Secret, index_namespace_prefix};
        let dir = tempfile::tempdir().unwrap();
        let mut state = open(dir.path());
        let day = 86_400_000;
        let entry = |rank, expires| {
            Document::IndexedTask(IndexedTask {
                task_id: Slugid::MIN,
                rank,
                data: Json::empty_object(),
                expires: Timestamp::from_millis(expires),
            })
        };
        let put = |name: &str, document| Envelope {
            key: String::new(),
            at: Timestamp::from_millis(0),
            client_id: None,
            event: Event::DocumentPut {
                name: name.to_owned(),
                document,
            },
        };
        let secret = Document::Secret(Secret {
            value: Json::empty_object(),
            expires: Timestamp::from_millis(day),
        });
        let mut offset = 0;
        for (name, document) in [
            ("a.b.one", entry(1, day / 2)),
            ("a.b.two", entry(2, 3 * day)),
            ("a.c.three", entry(3, day / 2)),
        ] {
            state.apply(offset, &put(name, document));
            offset += 1;
        }
        flush(&mut state, offset);
        // Not flushed: a new entry, a lower expiry (the namespace stays), a removal, a secret.
        state.apply(offset, &put("a.b.four", entry(4, day / 4)));
        state.apply(offset + 1, &put("s/1", secret.clone()));
        let removed = Envelope {
            event: Event::DocumentRemoved {
                kind: DocumentKind::IndexedTask,
                name: "a.b.one".into(),
            },
            ..put("", secret.clone())
        };
        state.apply(offset + 2, &removed);
        offset += 3;
        let listed = |state: &PartitionState, namespace: &str, limit| -> Vec<String> {
            let prefix = index_namespace_prefix(namespace);
            state
                .documents(&prefix, None, limit)
                .unwrap()
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        };
        for round in 0..2 {
            assert_eq!(
                listed(&state, "a.b", 10),
                ["a.b.four", "a.b.two"],
                "round {round}"
            );
            assert_eq!(listed(&state, "a.b", 1), ["a.b.four"], "round {round}");
            assert_eq!(listed(&state, "a.c", 10), ["a.c.three"], "round {round}");
            assert_eq!(
                state.read_document(DocumentKind::Secret, "s/1").unwrap(),
                Some(secret.clone())
            );
            assert_eq!(
                state
                    .read_document(DocumentKind::IndexedTask, "a.b.one")
                    .unwrap(),
                None
            );
            let namespaces = state.namespaces("a", None, 10).unwrap();
            assert_eq!(
                namespaces,
                [
                    ("b".to_owned(), Timestamp::from_millis(4 * day)),
                    ("c".to_owned(), Timestamp::from_millis(day)),
                ],
                "round {round}"
            );
            assert_eq!(state.namespaces("", None, 10).unwrap().len(), 1);
            flush(&mut state, offset);
            drop(state);
            state = open(dir.path());
        }
    }
}
