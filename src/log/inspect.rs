//! `taskfold log inspect`: what an embedded log directory holds, read-only.
//!
//! Lists partitions, segments (records, bytes, how each ends) and offsets, and, when the
//! caller looked (the log does not know the engine's stores), each partition store's offset. With
//! `verify`, every record's checksum is checked (as always) and every record is decoded and
//! checked to belong to its partition. Nothing is changed here: opening the log truncates a
//! torn tail, and `taskfold log repair` deals with damage that valid records follow.

use std::fmt;
use std::path::{Path, PathBuf};

use super::embedded::segment::{self, Tail};
use super::embedded::{partition_dir, recorded_partitions};
use super::{Error, Offset, codec, partition_for};
use crate::model::Envelope;

#[derive(Debug)]
pub struct Report {
    pub data_dir: PathBuf,
    pub partitions: Vec<PartitionReport>,
    pub verified: bool,
}

#[derive(Debug)]
pub struct PartitionReport {
    pub partition: u32,
    pub segments: Vec<SegmentReport>,
    /// The offset the partition's store reflects (`None`: there is none), or why it cannot
    /// be read; filled in by the caller.
    pub store: Option<Result<Option<Offset>, String>>,
    /// Files in the partition directory that are not segments.
    pub strangers: Vec<PathBuf>,
    /// Records decoded by `verify`.
    pub decoded: u64,
    /// What `verify` found wrong, and damage found in any case.
    pub problems: Vec<String>,
}

#[derive(Debug)]
pub struct SegmentReport {
    pub name: String,
    pub base: Offset,
    pub records: u64,
    pub valid_bytes: u64,
    pub file_bytes: u64,
    pub tail: Tail,
}

impl PartitionReport {
    pub fn start(&self) -> Offset {
        self.segments.first().map_or(0, |segment| segment.base)
    }

    /// The offset after the last valid record.
    pub fn end(&self) -> Offset {
        self.segments
            .iter()
            .rev()
            .find(|segment| segment.records > 0)
            .map_or(self.start(), |segment| segment.base + segment.records)
    }
}

impl Report {
    /// Whether anything is damaged or fails to verify.
    pub fn has_problems(&self) -> bool {
        self.partitions
            .iter()
            .any(|partition| !partition.problems.is_empty())
    }
}

/// Inspects the embedded log under `data_dir`.
pub fn inspect(data_dir: &Path, verify: bool) -> Result<Report, Error> {
    let partitions = recorded_partitions(data_dir)?
        .ok_or_else(|| Error::Config(format!("{} holds no Taskfold log", data_dir.display())))?;
    let mut reports = Vec::new();
    for partition in 0..partitions {
        reports.push(inspect_partition(data_dir, partition, partitions, verify)?);
    }
    Ok(Report {
        data_dir: data_dir.to_owned(),
        partitions: reports,
        verified: verify,
    })
}

/// How many problems of one partition are listed before the rest are only counted.
const PROBLEMS_LISTED: usize = 20;

fn inspect_partition(
    data_dir: &Path,
    partition: u32,
    partitions: u32,
    verify: bool,
) -> Result<PartitionReport, Error> {
    let dir = partition_dir(data_dir, partition);
    let (segments, strangers) = match segment::list(&dir) {
        Ok(found) => found,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(error) => return Err(Error::io("listing", &dir, error)),
    };
    let mut report = PartitionReport {
        partition,
        segments: Vec::new(),
        store: None,
        strangers,
        decoded: 0,
        problems: Vec::new(),
    };
    let mut problems = 0usize;
    for file in &segments {
        let buffer =
            std::fs::read(&file.path).map_err(|error| Error::io("reading", &file.path, error))?;
        let name = file
            .path
            .file_name()
            .map_or_else(String::new, |name| name.to_string_lossy().into_owned());
        let scan = segment::scan::<std::convert::Infallible>(&buffer, |index, payload| {
            if verify {
                let offset = file.base + index;
                match codec::decode::<Envelope>(payload) {
                    Ok(envelope) => {
                        report.decoded += 1;
                        let owner = partition_for(envelope.key.as_bytes(), partitions);
                        if owner != partition {
                            problems += 1;
                            if report.problems.len() < PROBLEMS_LISTED {
                                report.problems.push(format!(
                                    "offset {offset}: key {} belongs to partition {owner}",
                                    envelope.key
                                ));
                            }
                        }
                    }
                    Err(error) => {
                        problems += 1;
                        if report.problems.len() < PROBLEMS_LISTED {
                            report.problems.push(format!("offset {offset}: {error}"));
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|never| match never {});
        if let Tail::Damaged { position, reason } = &scan.tail {
            problems += 1;
            let mut budget = segment::SEARCH_BUDGET_BYTES;
            let consequence = match segment::next_valid_record(&buffer, position + 1, &mut budget) {
                segment::Search::Found(next) => format!(
                    "a valid record follows at byte {next}, so the log does not open until \
                     `taskfold log repair` sets the rest aside"
                ),
                segment::Search::Unsure => "the bytes after it are not a torn write, so the \
                     log does not open until `taskfold log repair` sets them aside"
                    .to_owned(),
                segment::Search::Nothing => format!(
                    "no valid record follows in this segment; as the log's last one, its {} \
                     bytes from there are a torn tail that opening truncates",
                    buffer.len() as u64 - position
                ),
            };
            report.problems.push(format!(
                "segment {name}: damaged at byte {position} ({reason}); {consequence}"
            ));
        }
        report.segments.push(SegmentReport {
            name,
            base: file.base,
            records: scan.records,
            valid_bytes: scan.valid_bytes,
            file_bytes: buffer.len() as u64,
            tail: scan.tail,
        });
    }
    if problems > report.problems.len() {
        let more = problems - report.problems.len();
        report.problems.push(format!("… and {more} more"));
    }
    Ok(report)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "log {} — {} partitions",
            self.data_dir.display(),
            self.partitions.len()
        )?;
        for partition in &self.partitions {
            let records: u64 = partition
                .segments
                .iter()
                .map(|segment| segment.records)
                .sum();
            writeln!(
                f,
                "partition {}: offsets {}..{} ({records} records in {} segments)",
                partition.partition,
                partition.start(),
                partition.end(),
                partition.segments.len()
            )?;
            for segment in &partition.segments {
                let tail = match &segment.tail {
                    Tail::Exact => "sealed exactly".to_owned(),
                    Tail::Zeros => format!(
                        "{} preallocated bytes",
                        segment.file_bytes - segment.valid_bytes
                    ),
                    Tail::Damaged { position, reason } => {
                        format!("DAMAGED at byte {position}: {reason}")
                    }
                };
                writeln!(
                    f,
                    "  segment {}: base {}, {} records, {} bytes, {tail}",
                    segment.name, segment.base, segment.records, segment.valid_bytes
                )?;
            }
            match &partition.store {
                Some(Ok(Some(offset))) => writeln!(
                    f,
                    "  store: reflects offsets ..{offset} ({} behind the log's end)",
                    partition.end().saturating_sub(*offset)
                )?,
                Some(Ok(None)) => writeln!(f, "  store: none (a start builds it from the log)")?,
                Some(Err(reason)) => writeln!(f, "  store: cannot be read ({reason})")?,
                None => {}
            }
            for stranger in &partition.strangers {
                writeln!(f, "  not a segment (ignored): {}", stranger.display())?;
            }
            if self.verified {
                writeln!(f, "  verified: {} records decoded", partition.decoded)?;
            }
            for problem in &partition.problems {
                writeln!(f, "  PROBLEM: {problem}")?;
            }
        }
        Ok(())
    }
}
