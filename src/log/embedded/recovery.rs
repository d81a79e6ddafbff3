//! What opening a partition does to its segments, and what an operator's repair does.
//!
//! Every segment is scanned. A crash in the middle of a write leaves a *torn tail*: bytes after
//! the last valid record with no valid record anywhere after them. Those records were never
//! acknowledged, so opening truncates them (and reports it). Any other damage — bad bytes with a
//! valid record after them, in the same segment or a later one, or a gap between segments —
//! would cut acknowledged records, so opening refuses: it changes no byte and names the file
//! and position. `taskfold log repair` then keeps every record before the damage and sets the
//! rest aside (copies it under `<data-dir>/log/set-aside/` before cutting), and the log opens.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::segment::{self, Scan, SegmentFile, Tail};
use super::{Recovery, log_dir, read_file};
use crate::log::durable_file::sync_dir;
use crate::log::{Damage, Error, Offset};

/// A partition's segments as scanned, and where its log ends.
pub(super) struct Survey {
    partition: u32,
    dir: PathBuf,
    segments: Vec<SegmentFile>,
    scans: Vec<Scan>,
    /// The first place where the records stop being a clean sequence, if any.
    problem: Option<Problem>,
}

/// Bad bytes (or a gap) at `position` of segment `index`.
struct Problem {
    index: usize,
    position: u64,
    reason: String,
    /// What comes after the problem: any valid record makes it damage rather than a torn tail.
    following: Following,
}

/// Whether a valid record follows a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Following {
    /// The first one: the segment's index and the byte where it starts.
    Record(usize, u64),
    Nothing,
    /// Not known: the search gave up (see [`segment::Search::Unsure`]).
    Unsure,
}

impl Survey {
    /// Scans every segment of the partition in `dir`.
    pub(super) fn take(
        partition: u32,
        dir: &Path,
        segments: Vec<SegmentFile>,
    ) -> Result<Self, Error> {
        let mut scans = Vec::with_capacity(segments.len());
        let mut buffer = Vec::new();
        for segment in &segments {
            read_file(&segment.path, None, &mut buffer)?;
            scans.push(
                segment::scan::<std::convert::Infallible>(&buffer, |_, _| Ok(()))
                    .unwrap_or_else(|never| match never {}),
            );
        }
        let mut survey = Survey {
            partition,
            dir: dir.to_owned(),
            segments,
            scans,
            problem: None,
        };
        survey.problem = survey.first_problem()?;
        Ok(survey)
    }

    /// The first damage, or the first gap between segments that hold records.
    fn first_problem(&self) -> Result<Option<Problem>, Error> {
        for (index, scan) in self.scans.iter().enumerate() {
            if let Tail::Damaged { position, reason } = &scan.tail {
                return Ok(Some(Problem {
                    index,
                    position: *position,
                    reason: reason.clone(),
                    following: self.following(index, position + 1)?,
                }));
            }
            let end = self.segments[index].base + scan.records;
            // Empty segments between two that hold records are no gap; a damaged one is
            // reported as damage when the loop reaches it.
            let next = (index + 1..self.scans.len()).find(|&at| {
                self.scans[at].records > 0 || matches!(self.scans[at].tail, Tail::Damaged { .. })
            });
            if let Some(at) = next
                && self.scans[at].records > 0
                && self.segments[at].base != end
            {
                return Ok(Some(Problem {
                    index,
                    position: scan.valid_bytes,
                    reason: format!(
                        "the next segment starts at offset {} but this one ends at offset {end}",
                        self.segments[at].base
                    ),
                    following: Following::Record(at, 0),
                }));
            }
        }
        Ok(None)
    }

    /// Whether a valid record starts at or after byte `from` of segment `index`: a later
    /// segment that holds records says so at once; otherwise the bytes are searched.
    fn following(&self, index: usize, from: u64) -> Result<Following, Error> {
        let mut budget = segment::SEARCH_BUDGET_BYTES;
        let mut unsure = false;
        let mut buffer = Vec::new();
        for at in index..self.segments.len() {
            if at > index && self.scans[at].records > 0 {
                return Ok(Following::Record(at, 0));
            }
            read_file(&self.segments[at].path, None, &mut buffer)?;
            let start = if at == index { from } else { 0 };
            match segment::next_valid_record(&buffer, start, &mut budget) {
                segment::Search::Found(position) => return Ok(Following::Record(at, position)),
                segment::Search::Nothing => {}
                segment::Search::Unsure => unsure = true,
            }
        }
        Ok(if unsure {
            Following::Unsure
        } else {
            Following::Nothing
        })
    }

    /// The damage that valid records follow, as the error that refuses to open the log.
    pub(super) fn damage(&self, data_dir: &Path) -> Option<Error> {
        let problem = self.problem.as_ref()?;
        let next = match problem.following {
            Following::Nothing => return None,
            Following::Record(index, position) => {
                Some((self.segments[index].path.clone(), position))
            }
            Following::Unsure => None,
        };
        let segment = &self.segments[problem.index];
        Some(Error::Damaged(Box::new(Damage {
            partition: self.partition,
            segment: segment.path.clone(),
            position: problem.position,
            offset: segment.base + self.scans[problem.index].records,
            reason: problem.reason.clone(),
            next,
            data_dir: data_dir.to_owned(),
        })))
    }

    /// Truncates a torn tail and removes the segments after the log's end (which hold no
    /// record), reporting what it dropped. Call only when [`Survey::damage`] is `None`.
    /// Returns the segments that remain, their scans, and the recoveries.
    pub(super) fn recover(self) -> Result<(Vec<SegmentFile>, Scan, Vec<Recovery>), Error> {
        let Survey {
            partition,
            dir,
            mut segments,
            mut scans,
            problem,
        } = self;
        let (last, cut) = match problem {
            // A damaged segment without a single valid record goes whole, with the segments
            // after it: kept empty, its name could claim offsets the log never had.
            Some(problem) if problem.index > 0 && scans[problem.index].records == 0 => {
                (problem.index - 1, None)
            }
            Some(problem) => (problem.index, Some(problem)),
            None => (
                scans.iter().rposition(|scan| scan.records > 0).unwrap_or(0),
                None,
            ),
        };
        let mut recoveries = Vec::new();
        for (empty, scan) in segments.drain(last + 1..).zip(&scans[last + 1..]) {
            let dropped_bytes = file_length(&empty.path)?;
            match &scan.tail {
                Tail::Damaged { reason, .. } => {
                    tracing::warn!(
                        partition,
                        segment = %empty.path.display(),
                        dropped_bytes,
                        reason = reason.as_str(),
                        "removed a damaged segment after the log's end that holds no record"
                    );
                    recoveries.push(Recovery {
                        partition,
                        segment: empty.path.clone(),
                        position: 0,
                        dropped_bytes,
                        reason: reason.clone(),
                    });
                }
                _ => {
                    tracing::info!(partition, path = %empty.path.display(), "removing an empty segment")
                }
            }
            std::fs::remove_file(&empty.path)
                .map_err(|error| Error::io("removing", &empty.path, error))?;
            sync_dir(&dir)?;
        }
        scans.truncate(last + 1);
        let mut scan = scans.pop().expect("a partition has at least one segment");
        if let Some(problem) = cut {
            let active = &segments[last];
            let dropped_bytes = truncate(&active.path, problem.position)?;
            tracing::warn!(
                partition,
                segment = %active.path.display(),
                position = problem.position,
                dropped_bytes,
                reason = problem.reason.as_str(),
                "truncated a torn tail"
            );
            recoveries.push(Recovery {
                partition,
                segment: active.path.clone(),
                position: problem.position,
                dropped_bytes,
                reason: problem.reason,
            });
            scan.valid_bytes = problem.position;
            scan.tail = Tail::Exact;
        }
        Ok((segments, scan, recoveries))
    }
}

/// Shortens `path` to `length` bytes, durably; returns how many bytes went.
fn truncate(path: &Path, length: u64) -> Result<u64, Error> {
    let before = file_length(path)?;
    let file = File::options()
        .write(true)
        .open(path)
        .map_err(|error| Error::io("opening", path, error))?;
    file.set_len(length)
        .and_then(|()| file.sync_all())
        .map_err(|error| Error::io("truncating", path, error))?;
    Ok(before.saturating_sub(length))
}

pub(super) fn file_length(path: &Path) -> Result<u64, Error> {
    std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .map_err(|error| Error::io("reading metadata of", path, error))
}

/// What `taskfold log repair` did to one partition.
#[derive(Debug)]
pub struct PartitionRepair {
    pub partition: u32,
    /// The damage found: the segment, the byte and why.
    pub damage: Option<(PathBuf, u64, String)>,
    /// The records the partition keeps (offsets `0..kept` from its start).
    pub end: Offset,
    /// Copies of the cut bytes and removed files, with how many bytes each holds.
    pub set_aside: Vec<(PathBuf, u64)>,
    /// Valid records found in what was set aside (records that were acknowledged once).
    pub records_set_aside: u64,
    /// Whether that count is exact; else it is a lower bound (the search gave up on garbage).
    pub records_set_aside_complete: bool,
    /// Torn tails truncated, as opening the log would have.
    pub torn_tails: Vec<Recovery>,
}

/// What `taskfold log repair` did.
#[derive(Debug)]
pub struct Repair {
    pub data_dir: PathBuf,
    /// Where the cut bytes were copied.
    pub set_aside_dir: PathBuf,
    pub partitions: Vec<PartitionRepair>,
}

/// Repairs the embedded log under `data_dir`: in each partition, keeps every record before the
/// first damage and copies everything after it (the rest of that segment, and later segments
/// whole) to `<data-dir>/log/set-aside/repair-<millis>/partition-<n>/` before cutting it. A
/// torn tail is truncated as opening would. (A partition store that reflects records past
/// the new end is rebuilt from the log by the next start.)
/// Refuses while the log is open in a server.
pub fn repair(data_dir: &Path) -> Result<Repair, Error> {
    let partitions = super::recorded_partitions(data_dir)?
        .ok_or_else(|| Error::Config(format!("{} holds no Taskfold log", data_dir.display())))?;
    let _lock = super::lock_log(data_dir)?;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let set_aside_dir = log_dir(data_dir)
        .join("set-aside")
        .join(format!("repair-{millis}"));
    let mut repaired = Vec::new();
    for partition in 0..partitions {
        repaired.push(repair_partition(data_dir, partition, &set_aside_dir)?);
    }
    Ok(Repair {
        data_dir: data_dir.to_owned(),
        set_aside_dir,
        partitions: repaired,
    })
}

fn repair_partition(
    data_dir: &Path,
    partition: u32,
    set_aside_root: &Path,
) -> Result<PartitionRepair, Error> {
    let dir = super::partition_dir(data_dir, partition);
    let segments = match segment::list(&dir) {
        Ok((segments, _)) => segments,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(Error::io("listing", &dir, error)),
    };
    let mut report = PartitionRepair {
        partition,
        damage: None,
        end: 0,
        set_aside: Vec::new(),
        records_set_aside: 0,
        records_set_aside_complete: true,
        torn_tails: Vec::new(),
    };
    if segments.is_empty() {
        return Ok(report);
    }
    let mut survey = Survey::take(partition, &dir, segments)?;
    let set_aside = set_aside_root.join(format!("partition-{partition:04}"));
    if let Some(problem) = &mut survey.problem
        && problem.following != Following::Nothing
    {
        std::fs::create_dir_all(&set_aside)
            .map_err(|error| Error::io("creating", &set_aside, error))?;
        let damaged = &survey.segments[problem.index];
        report.damage = Some((
            damaged.path.clone(),
            problem.position,
            problem.reason.clone(),
        ));
        // Copy first: the cut part of the damaged segment, then every later segment whole.
        let mut buffer = Vec::new();
        read_file(&damaged.path, None, &mut buffer)?;
        tally(
            &mut report,
            segment::count_valid_records(&buffer, problem.position),
        );
        let name = file_name(&damaged.path);
        let copy = set_aside.join(format!("{name}.from-byte-{}", problem.position));
        write_synced(&copy, &buffer[problem.position as usize..])?;
        report
            .set_aside
            .push((copy, buffer.len() as u64 - problem.position));
        for later in &survey.segments[problem.index + 1..] {
            read_file(&later.path, None, &mut buffer)?;
            tally(&mut report, segment::count_valid_records(&buffer, 0));
            let copy = set_aside.join(file_name(&later.path));
            write_synced(&copy, &buffer)?;
            report.set_aside.push((copy, buffer.len() as u64));
        }
        sync_dir(&set_aside)?;
        // Everything after the damage is now copied: it is a tail to cut like a torn one.
        problem.following = Following::Nothing;
    }
    let (segments, scan, torn_tails) = survey.recover()?;
    // A damage cut is reported above, not as a torn tail.
    if report.damage.is_none() {
        report.torn_tails = torn_tails;
    }
    let active = segments
        .last()
        .expect("a partition keeps at least one segment");
    report.end = active.base + scan.records;
    Ok(report)
}

/// Adds a count of valid records set aside to the report.
fn tally(report: &mut PartitionRepair, (records, complete): (u64, bool)) {
    report.records_set_aside += records;
    report.records_set_aside_complete &= complete;
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |name| name.to_string_lossy().into_owned())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let mut file = File::create(path).map_err(|error| Error::io("creating", path, error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| Error::io("writing", path, error))
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "repaired log {}", self.data_dir.display())?;
        let mut anything = false;
        for partition in &self.partitions {
            let number = partition.partition;
            for torn in &partition.torn_tails {
                anything = true;
                writeln!(
                    f,
                    "partition {number}: truncated a torn tail of {} bytes at byte {} of {} ({})",
                    torn.dropped_bytes,
                    torn.position,
                    torn.segment.display(),
                    torn.reason
                )?;
            }
            if let Some((segment, position, reason)) = &partition.damage {
                anything = true;
                writeln!(
                    f,
                    "partition {number}: damaged at byte {position} of {} ({reason}); keeps \
                     offsets up to {} and set aside {}{} valid records found after the damage",
                    segment.display(),
                    partition.end,
                    if partition.records_set_aside_complete {
                        ""
                    } else {
                        "at least "
                    },
                    partition.records_set_aside
                )?;
                for (copy, bytes) in &partition.set_aside {
                    writeln!(f, "  set aside {bytes} bytes: {}", copy.display())?;
                }
            }
        }
        if !anything {
            writeln!(f, "no damage found; nothing was set aside")?;
        }
        Ok(())
    }
}
