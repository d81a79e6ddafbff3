//! The embedded log: one directory of segment files per partition under `<data-dir>/log`,
//! one writer thread that group-commits appends (for everything that queued up while the
//! previous batch was syncing: one write and one `fdatasync` per partition), and a recovery on open
//! that truncates a torn tail and refuses, changing nothing, when valid records follow damage
//! (see [`recovery`]; `taskfold log repair` is the operator's way on).

mod recovery;
pub mod segment;
mod writer;

pub use recovery::{PartitionRepair, Repair, repair};

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::durable_file::{sync_dir, write_atomically};
use super::{Appending, Entry, Error, EventLog, Offset, Visitor};
use segment::{SegmentFile, Tail};

/// Tuning of the embedded log; `config/default.toml` documents each key and holds the defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Partition count; fixed when the data directory is first created.
    /// Set from `log.partitions`, the one place the count is configured.
    #[serde(skip)]
    pub partitions: u32,
    /// A segment is sealed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// Segments grow in zero-filled steps of this size, so that most `fdatasync`s write data
    /// only and no file-size metadata. 0 turns preallocation off.
    pub preallocate_bytes: u64,
    /// Upper bound on the bytes one group commit writes.
    pub max_batch_bytes: usize,
}

impl Default for Options {
    /// The built-in defaults of `config/default.toml`.
    fn default() -> Self {
        crate::settings::Settings::defaults().log.embedded_options()
    }
}

/// What recovery did to a partition on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub partition: u32,
    pub segment: PathBuf,
    /// Where the first bad record started; the segment now ends here.
    pub position: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// The durable extent of a partition, shared between its writer and readers.
#[derive(Clone, Debug)]
struct View {
    segments: Vec<SegmentFile>,
    /// Offset of the next record: everything below it is durable.
    end: Offset,
    /// Durable bytes of the last segment (the file may be longer: preallocated zeros).
    active_bytes: u64,
    /// Set when the writer stopped after a failed write or sync.
    failure: Option<String>,
}

pub struct EmbeddedLog {
    /// Each partition's durable extent, by partition number.
    views: Vec<Arc<Mutex<View>>>,
    requests: Option<mpsc::Sender<writer::Request>>,
    writer: Option<JoinHandle<()>>,
    recoveries: Vec<Recovery>,
    /// Held while the log is open: two writers on one log would interleave their records.
    _lock: std::fs::File,
}

/// The file whose exclusive lock marks the log as open.
const LOCK_FILE: &str = "lock";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Meta {
    partitions: u32,
}

const META_FILE: &str = "meta.json";

/// `<data-dir>/log`, where the embedded log lives.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// The directory of one partition's segments.
pub fn partition_dir(data_dir: &Path, partition: u32) -> PathBuf {
    log_dir(data_dir).join(format!("partition-{partition:04}"))
}

/// Reads the partition count recorded in a data directory, if it has a log.
pub fn recorded_partitions(data_dir: &Path) -> Result<Option<u32>, Error> {
    let path = log_dir(data_dir).join(META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("reading", &path, error)),
    };
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|error| {
        Error::Corrupt(format!(
            "{} is not a log description: {error}",
            path.display()
        ))
    })?;
    if meta.partitions == 0 {
        return Err(Error::Corrupt(format!(
            "{} records 0 partitions",
            path.display()
        )));
    }
    Ok(Some(meta.partitions))
}

impl EmbeddedLog {
    /// Opens (or creates) the log under `data_dir`, recovering every partition.
    pub fn open(data_dir: &Path, options: Options) -> Result<Self, Error> {
        if options.partitions == 0 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        if options.segment_bytes == 0 || options.max_batch_bytes == 0 {
            return Err(Error::Config(
                "segment_bytes and max_batch_bytes must be positive".into(),
            ));
        }
        let root = log_dir(data_dir);
        std::fs::create_dir_all(&root).map_err(|error| Error::io("creating", &root, error))?;
        let lock = lock_log(data_dir)?;
        match recorded_partitions(data_dir)? {
            Some(found) if found != options.partitions => {
                return Err(Error::PartitionCountMismatch {
                    location: format!("data directory {}", data_dir.display()),
                    configured: options.partitions,
                    found,
                });
            }
            Some(_) => {}
            None => {
                let meta = serde_json::to_vec(&Meta {
                    partitions: options.partitions,
                })
                .map_err(|error| Error::Config(error.to_string()))?;
                write_atomically(&root.join(META_FILE), &meta)?;
            }
        }
        // Opening scans every segment; partitions are independent, so they scan at once.
        let opened: Vec<_> = std::thread::scope(|scope| {
            let scans: Vec<_> = (0..options.partitions)
                .map(|partition| scope.spawn(move || open_partition(data_dir, partition)))
                .collect();
            scans
                .into_iter()
                .map(|scan| {
                    scan.join()
                        .unwrap_or_else(|_| Err(Error::Config("a partition scan panicked".into())))
                })
                .collect()
        });
        let mut partitions = Vec::new();
        let mut recoveries = Vec::new();
        for result in opened {
            let (opened, recovery) = result?;
            partitions.push(opened);
            recoveries.extend(recovery);
        }
        let views = partitions
            .iter()
            .map(|opened| opened.view.clone())
            .collect();
        let (requests, writer) = writer::start(options, partitions)?;
        Ok(EmbeddedLog {
            views,
            requests: Some(requests),
            writer: Some(writer),
            recoveries,
            _lock: lock,
        })
    }

    /// What recovery truncated when the log was opened (also logged as warnings).
    pub fn recoveries(&self) -> &[Recovery] {
        &self.recoveries
    }

    fn view(&self, partition: u32) -> Result<&Mutex<View>, Error> {
        self.views
            .get(partition as usize)
            .map(|view| &**view)
            .ok_or(Error::NoSuchPartition {
                partition,
                partitions: self.views.len() as u32,
            })
    }
}

/// Takes the lock that marks the log under `data_dir` as open; held while the file lives.
fn lock_log(data_dir: &Path) -> Result<File, Error> {
    let root = log_dir(data_dir);
    let lock_path = root.join(LOCK_FILE);
    let lock =
        File::create(&lock_path).map_err(|error| Error::io("creating", &lock_path, error))?;
    if lock.try_lock().is_err() {
        return Err(Error::Config(format!(
            "the log in {} is open in another process (it holds {})",
            data_dir.display(),
            lock_path.display()
        )));
    }
    Ok(lock)
}

fn open_partition(
    data_dir: &Path,
    partition: u32,
) -> Result<(writer::Opened, Vec<Recovery>), Error> {
    let dir = partition_dir(data_dir, partition);
    std::fs::create_dir_all(&dir).map_err(|error| Error::io("creating", &dir, error))?;
    let (mut segments, others) =
        segment::list(&dir).map_err(|error| Error::io("listing", &dir, error))?;
    for other in others {
        tracing::warn!(partition, path = %other.display(), "ignoring a file that is not a segment");
    }
    if segments.is_empty() {
        let first = SegmentFile {
            base: 0,
            path: dir.join(segment::file_name(0)),
        };
        File::create_new(&first.path).map_err(|error| Error::io("creating", &first.path, error))?;
        sync_dir(&dir)?;
        segments.push(first);
    }

    let survey = recovery::Survey::take(partition, &dir, segments)?;
    if let Some(damage) = survey.damage(data_dir) {
        return Err(damage);
    }
    let (segments, scan, recoveries) = survey.recover()?;
    let active = segments
        .last()
        .expect("a partition keeps at least one segment");
    let view = View {
        end: active.base + scan.records,
        active_bytes: scan.valid_bytes,
        segments,
        failure: None,
    };
    let view = Arc::new(Mutex::new(view));
    Ok((writer::Opened { dir, view }, recoveries))
}

/// Reads `path` (at most `limit` bytes) into `buffer`, replacing its contents.
fn read_file(path: &Path, limit: Option<u64>, buffer: &mut Vec<u8>) -> Result<(), Error> {
    buffer.clear();
    let file = File::open(path).map_err(|error| Error::io("opening", path, error))?;
    let result = match limit {
        Some(limit) => file.take(limit).read_to_end(buffer),
        None => (&file).read_to_end(buffer),
    };
    result
        .map(drop)
        .map_err(|error| Error::io("reading", path, error))
}

fn lock(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    // A writer that panicked mid-update cannot leave the view half-written: every update is a
    // plain assignment, so a poisoned lock still guards a consistent view.
    view.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventLog for EmbeddedLog {
    fn partitions(&self) -> u32 {
        self.views.len() as u32
    }

    fn append(&self, partition: u32, entries: Vec<Entry>) -> Appending {
        let stopped = move |reason: String| Error::WriterStopped { partition, reason };
        if let Err(error) = self.view(partition) {
            return futures::future::ready(Err(error)).boxed();
        }
        if let Err(error) = super::check_payloads(&entries, segment::MAX_RECORD_BYTES) {
            return futures::future::ready(Err(error)).boxed();
        }
        let (reply, replied) = tokio::sync::oneshot::channel();
        let sent = self.requests.as_ref().map(|sender| {
            sender.send(writer::Request {
                partition,
                entries,
                reply,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            return futures::future::ready(Err(stopped("the log is closed".into()))).boxed();
        }
        async move {
            replied
                .await
                .unwrap_or_else(|_| Err(stopped("the writer exited".into())))
        }
        .boxed()
    }

    fn high_watermark(&self, partition: u32) -> Result<Offset, Error> {
        Ok(lock(self.view(partition)?).end)
    }

    fn read(&self, partition: u32, from: Offset, visit: &mut Visitor<'_>) -> Result<Offset, Error> {
        let view = lock(self.view(partition)?).clone();
        let start = view.segments[0].base;
        if from < start || from > view.end {
            return Err(Error::OffsetOutOfRange {
                partition,
                requested: from,
                start,
                end: view.end,
            });
        }
        let first = view
            .segments
            .iter()
            .rposition(|segment| segment.base <= from)
            .unwrap_or(0);
        let last = view.segments.len() - 1;
        let mut buffer = Vec::new();
        for (index, segment) in view.segments.iter().enumerate().skip(first) {
            let limit = (index == last).then_some(view.active_bytes);
            read_file(&segment.path, limit, &mut buffer)?;
            let scan = segment::scan::<Error>(&buffer, |index, payload| {
                let offset = segment.base + index;
                if offset >= from && offset < view.end {
                    visit(offset, payload)?;
                }
                Ok(())
            })?;
            if let Tail::Damaged { position, reason } = scan.tail {
                return Err(Error::Corrupt(format!(
                    "segment {} is damaged at byte {position} ({reason}) inside its durable part",
                    segment.path.display()
                )));
            }
        }
        Ok(view.end)
    }

    /// Deletes sealed segments whose records all lie below `offset` and that were last
    /// written before `older_than`. The active segment always stays, so a partition keeps at
    /// least one segment and its offsets go on from where they were.
    fn delete_before(
        &self,
        partition: u32,
        offset: Offset,
        older_than: std::time::SystemTime,
    ) -> Result<u64, Error> {
        let (gone, first_kept) = {
            let mut view = lock(self.view(partition)?);
            let mut keep_from = 0;
            for pair in view.segments.windows(2) {
                let (segment, next) = (&pair[0], &pair[1]);
                let old = std::fs::metadata(&segment.path)
                    .and_then(|metadata| metadata.modified())
                    .is_ok_and(|modified| modified < older_than);
                if next.base > offset || !old {
                    break;
                }
                keep_from += 1;
            }
            // Readers see the shorter log before any file goes.
            let gone: Vec<SegmentFile> = view.segments.drain(..keep_from).collect();
            (gone, view.segments[0].base)
        };
        let records = gone
            .first()
            .map_or(0, |first| first_kept.saturating_sub(first.base));
        for segment in &gone {
            std::fs::remove_file(&segment.path)
                .map_err(|error| Error::io("deleting", &segment.path, error))?;
        }
        if let Some(segment) = gone.first() {
            let dir = segment.path.parent().unwrap_or(Path::new("."));
            sync_dir(dir)?;
            tracing::info!(
                partition,
                segments = gone.len(),
                records,
                "deleted log segments past retention"
            );
        }
        Ok(records)
    }
}

impl Drop for EmbeddedLog {
    /// Lets the writer finish what is queued, then waits for it.
    fn drop(&mut self) {
        self.requests.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
