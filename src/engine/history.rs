//! Task histories as each shard keeps them for now: in memory, the records of every event of
//! every task of the partition, filled as events are committed and replayed, and dropped when
//! the task expires. Callers see only `Engine::history`, so where the records live can change
//! (to the partition store) without them noticing.

use std::collections::HashMap;

use crate::log::{self, EventLog, Offset, codec};
use crate::model::{Envelope, Event, HistoryRecord, Slugid};

/// The histories of the tasks of one partition.
#[derive(Default)]
pub struct Histories {
    tasks: HashMap<Slugid, Vec<HistoryRecord>>,
}

/// Part of a task's history, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPage {
    pub records: Vec<HistoryRecord>,
    /// Whether records follow the last one.
    pub more: bool,
}

impl Histories {
    /// Takes in the event `envelope`, held at `offset` of `partition`; a task's expiry ends its
    /// history. (A replay that starts from a snapshot sees events of tasks defined before it,
    /// so any task event starts a history: the queue decides none for a task that does not
    /// exist.)
    pub fn record(&mut self, partition: u32, offset: Offset, envelope: &Envelope) {
        if let Event::TaskExpired = envelope.event {
            if let Ok(task_id) = envelope.key.parse() {
                self.tasks.remove(&task_id);
            }
            return;
        }
        let Some((task_id, record)) = HistoryRecord::derive(envelope, partition, offset) else {
            return;
        };
        self.tasks.entry(task_id).or_default().push(record);
    }

    /// Up to `limit` records of the task after the offset `after`; `None` for a task without a
    /// history here.
    pub fn page(
        &self,
        task_id: Slugid,
        after: Option<Offset>,
        limit: usize,
    ) -> Option<HistoryPage> {
        let records = self.tasks.get(&task_id)?;
        let start = after.map_or(0, |after| {
            records.partition_point(|record| record.offset <= after)
        });
        let end = start.saturating_add(limit).min(records.len());
        Some(HistoryPage {
            records: records[start..end].to_vec(),
            more: end < records.len(),
        })
    }

    /// Puts `older`, the records of the events before any of these, in front of them, for
    /// the tasks that `keep` says still exist.
    pub fn insert_older(&mut self, older: Histories, keep: impl Fn(Slugid) -> bool) {
        for (task_id, mut records) in older.tasks {
            if !keep(task_id) {
                continue;
            }
            if let Some(newer) = self.tasks.remove(&task_id) {
                records.extend(newer);
            }
            self.tasks.insert(task_id, records);
        }
    }
}

/// The histories of the events of `partition` before `end`: what a replay that starts from a
/// snapshot at `end` does not see. Blocking.
pub fn read_before(
    log: &dyn EventLog,
    partition: u32,
    end: Offset,
) -> Result<Histories, log::Error> {
    let mut histories = Histories::default();
    log.read(partition, 0, &mut |offset, payload| {
        if offset < end {
            histories.record(partition, offset, &codec::decode::<Envelope>(payload)?);
        }
        Ok(())
    })?;
    Ok(histories)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::task::tests::sample_definition;
    use crate::model::{HistoryEvent, ReasonCreated, Timestamp};

    fn envelope(task_id: Slugid, event: Event) -> Envelope {
        Envelope {
            key: task_id.to_string(),
            at: Timestamp::from_millis(1_763_800_000_000),
            client_id: None,
            event,
        }
    }

    fn defined(task_id: Slugid) -> Envelope {
        let definition = Arc::new(sample_definition(task_id));
        envelope(
            task_id,
            Event::TaskDefined {
                task_id,
                definition,
            },
        )
    }

    fn reclaimed(task_id: Slugid) -> Envelope {
        envelope(
            task_id,
            Event::RunReclaimed {
                run_id: 0,
                taken_until: Timestamp::from_millis(1_763_801_200_000),
            },
        )
    }

    fn offsets(page: &HistoryPage) -> Vec<Offset> {
        page.records.iter().map(|record| record.offset).collect()
    }

    #[test]
    fn pages_follow_offsets_and_expiry_ends_a_history() {
        let (task, other) = (Slugid::nice(), Slugid::nice());
        let mut histories = Histories::default();
        histories.record(0, 2, &defined(task));
        histories.record(0, 3, &defined(other));
        for offset in [5, 8, 13] {
            histories.record(0, offset, &reclaimed(task));
        }
        let first = histories.page(task, None, 2).unwrap();
        assert_eq!((offsets(&first), first.more), (vec![2, 5], true));
        let next = histories.page(task, Some(5), 2).unwrap();
        assert_eq!((offsets(&next), next.more), (vec![8, 13], false));
        // An offset between records, and one past the end.
        assert_eq!(
            offsets(&histories.page(task, Some(9), 10).unwrap()),
            vec![13]
        );
        let past = histories.page(task, Some(99), 10).unwrap();
        assert_eq!((offsets(&past), past.more), (vec![], false));
        assert_eq!(offsets(&histories.page(other, None, 10).unwrap()), vec![3]);
        histories.record(0, 21, &envelope(task, Event::TaskExpired));
        assert_eq!(histories.page(task, None, 10), None);
        assert_eq!(
            histories.page(other, None, 10).unwrap().records[0].event,
            HistoryEvent::TaskDefined
        );
    }

    #[test]
    fn older_records_go_in_front_for_tasks_that_still_exist() {
        let (kept, gone, quiet) = (Slugid::nice(), Slugid::nice(), Slugid::nice());
        let mut older = Histories::default();
        older.record(0, 0, &defined(kept));
        older.record(0, 1, &defined(gone));
        older.record(0, 2, &defined(quiet));
        older.record(
            0,
            3,
            &envelope(
                kept,
                Event::RunPending {
                    run_id: 0,
                    reason: ReasonCreated::Scheduled,
                },
            ),
        );
        // After the snapshot: `kept` goes on, `quiet` has no new events.
        let mut newer = Histories::default();
        newer.record(0, 4, &reclaimed(kept));
        newer.insert_older(older, |task_id| task_id != gone);
        assert_eq!(offsets(&newer.page(kept, None, 10).unwrap()), vec![0, 3, 4]);
        assert_eq!(offsets(&newer.page(quiet, None, 10).unwrap()), vec![2]);
        assert_eq!(newer.page(gone, None, 10), None);
    }
}
