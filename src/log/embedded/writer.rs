//! The log's one writer thread: group commit across every partition.
//!
//! It takes the first queued request, drains whatever else is queued (up to a byte budget),
//! frames each partition's records into that partition's buffer, writes each buffer with one
//! positioned write, `fdatasync`s every partition written at once, and only then tells each
//! requester its offsets. While it syncs, new requests queue up and form the next batch, so the
//! number of syncs stays bounded by the disk, not by the callers; and one thread for all
//! partitions means a busy log costs one thread's wake-ups, not one per partition.
//!
//! The syncs of one batch run together: the writer syncs the first partition written itself
//! and hands each other one to a sync helper (one per further partition), so a batch waits for
//! its slowest sync rather than for the sum of them.
//! A failed write or sync stops the writer for good: after a failed `fdatasync` the page cache
//! can no longer be trusted, so the only safe continuation is to reopen and recover.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::segment::{self, SegmentFile};
use super::{Options, View, lock};
use crate::log::durable_file::sync_dir;
use crate::log::{Entry, Error, Offset};

pub struct Request {
    pub partition: u32,
    pub entries: Vec<Entry>,
    pub reply: oneshot::Sender<Result<Vec<Offset>, Error>>,
}

/// What the writer needs to open one partition: its directory and its durable extent.
pub struct Opened {
    pub dir: PathBuf,
    pub view: Arc<Mutex<View>>,
}

/// The active segment of one partition, as the writer appends to it.
struct Tail {
    partition: u32,
    dir: PathBuf,
    view: Arc<Mutex<View>>,
    /// Shared with a sync helper while one syncs it.
    file: Arc<File>,
    path: PathBuf,
    /// Offset of the next record.
    next: Offset,
    /// Where the next record starts in the active segment.
    position: u64,
    /// Length of the active segment file, zero-filled past `position`.
    allocated: u64,
    /// Framed records of the batch being written; reused so steady state allocates nothing.
    buffer: Vec<u8>,
    /// Records framed into `buffer`.
    framed: u64,
}

struct Writer {
    options: Options,
    tails: Vec<Tail>,
    helpers: SyncHelpers,
}

/// Threads that `fdatasync` a file on request, so that one batch's partitions sync together.
/// They exit when the writer (and with it `jobs`) is dropped.
struct SyncHelpers {
    jobs: Vec<mpsc::Sender<(usize, Arc<File>)>>,
    /// Each job's answer: the index of the tail it synced, and how that went.
    done: mpsc::Receiver<(usize, io::Result<()>)>,
}

impl SyncHelpers {
    fn start(count: usize) -> Result<Self, Error> {
        let (answers, done) = mpsc::channel();
        let jobs = (0..count)
            .map(|helper| {
                let (jobs, queue) = mpsc::channel::<(usize, Arc<File>)>();
                let answers = answers.clone();
                std::thread::Builder::new()
                    .name(format!("log-sync-{helper}"))
                    .spawn(move || {
                        for (tail, file) in queue {
                            if answers.send((tail, file.sync_data())).is_err() {
                                return;
                            }
                        }
                    })
                    .map(|_| jobs)
                    .map_err(|error| Error::io("starting a sync helper for", "the log", error))
            })
            .collect::<Result<_, _>>()?;
        Ok(SyncHelpers { jobs, done })
    }
}

pub fn start(
    options: Options,
    partitions: Vec<Opened>,
) -> Result<(mpsc::Sender<Request>, JoinHandle<()>), Error> {
    let tails = partitions
        .into_iter()
        .zip(0..)
        .map(|(opened, partition)| Tail::open(partition, opened))
        .collect::<Result<Vec<_>, Error>>()?;
    let helpers = SyncHelpers::start(tails.len().saturating_sub(1))?;
    let writer = Writer {
        options,
        tails,
        helpers,
    };
    let (requests, queue) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer.run(queue))
        .map_err(|error| Error::io("starting the writer thread for", "the log", error))?;
    Ok((requests, thread))
}

impl Tail {
    fn open(partition: u32, Opened { dir, view }: Opened) -> Result<Self, Error> {
        let (path, next, position) = {
            let view = lock(&view);
            let active = view.segments.last().expect("a partition has a segment");
            (active.path.clone(), view.end, view.active_bytes)
        };
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| Error::io("opening", &path, error))?;
        let allocated = file
            .metadata()
            .map_err(|error| Error::io("reading metadata of", &path, error))?
            .len();
        Ok(Tail {
            partition,
            dir,
            view,
            file: Arc::new(file),
            path,
            next,
            position,
            allocated,
            buffer: Vec::new(),
            framed: 0,
        })
    }
}

impl Writer {
    fn run(mut self, queue: mpsc::Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::new();
        // Requests in the previous batch, and how long its sync took: see `gather`.
        let mut expected = 1;
        let mut last_sync = Duration::ZERO;
        while let Ok(first) = queue.recv() {
            batch.push(first);
            self.gather(&queue, &mut batch, expected, last_sync / 2);
            expected = batch.len();
            let started = Instant::now();
            let written = self.write_batch(&batch);
            last_sync = started.elapsed();
            if let Err(error) = written {
                self.stop(error, batch.drain(..).chain(queue.try_iter()));
                // Whatever is sent after this point finds the queue dropped with the writer.
                return;
            }
            for request in batch.drain(..) {
                let tail = &mut self.tails[request.partition as usize];
                let count = request.entries.len() as u64;
                let first = tail.next;
                tail.next += count;
                let _ = request.reply.send(Ok((first..first + count).collect()));
            }
        }
    }

    /// Records the failure in every partition's view and answers `requests` with it.
    fn stop(&self, error: Error, requests: impl Iterator<Item = Request>) {
        tracing::error!(%error, "log writer stopped");
        for tail in &self.tails {
            lock(&tail.view).failure = Some(error.to_string());
        }
        for request in requests {
            let _ = request.reply.send(Err(Error::WriterStopped {
                partition: request.partition,
                reason: error.to_string(),
            }));
        }
    }

    /// Adds what is queued to `batch`, up to the byte budget. If that is fewer requests than
    /// the previous batch held, waits up to `patience` for the rest: callers woken by the
    /// previous sync are still coming back, and without the wait they would split into a small
    /// batch now and the rest one sync later, halving what each sync carries. A lone caller
    /// never waits (the previous batch held one request).
    fn gather(
        &self,
        queue: &mpsc::Receiver<Request>,
        batch: &mut Vec<Request>,
        expected: usize,
        patience: Duration,
    ) {
        let mut bytes: usize = batch.iter().map(batch_bytes).sum();
        let deadline = Instant::now() + patience;
        while bytes < self.options.max_batch_bytes {
            let next = match queue.try_recv() {
                Ok(request) => Some(request),
                Err(_) if batch.len() < expected => {
                    let now = Instant::now();
                    if now >= deadline {
                        None
                    } else {
                        queue.recv_timeout(deadline - now).ok()
                    }
                }
                Err(_) => None,
            };
            let Some(request) = next else { break };
            bytes += batch_bytes(&request);
            batch.push(request);
        }
    }

    /// Writes every partition's part of the batch, then syncs the partitions written, then
    /// publishes the new durable ends. Offsets are handed out by the caller, from each
    /// partition's `next` as it was before this batch.
    fn write_batch(&mut self, batch: &[Request]) -> Result<(), Error> {
        for tail in &mut self.tails {
            tail.buffer.clear();
            tail.framed = 0;
        }
        for request in batch {
            let tail = &mut self.tails[request.partition as usize];
            for entry in &request.entries {
                segment::frame_into(&entry.payload, &mut tail.buffer);
            }
            tail.framed += request.entries.len() as u64;
        }
        for tail in self.tails.iter_mut().filter(|tail| tail.framed > 0) {
            tail.write(&self.options)?;
        }
        self.sync_written()?;
        for tail in self.tails.iter_mut().filter(|tail| tail.framed > 0) {
            tail.position += tail.buffer.len() as u64;
            let mut view = lock(&tail.view);
            view.end = tail.next + tail.framed;
            view.active_bytes = tail.position;
            // A batch larger than usual (a large task's record) does not keep its memory.
            if tail.buffer.capacity() > self.options.max_batch_bytes {
                tail.buffer = Vec::new();
            }
        }
        Ok(())
    }
}

impl Writer {
    /// Syncs every partition written in this batch: the first here, each other one on its own
    /// helper, all at once. Waits for every sync even after one fails, so no helper is still
    /// syncing a batch the writer has given up on.
    fn sync_written(&self) -> Result<(), Error> {
        let mut written = (0..self.tails.len()).filter(|&index| self.tails[index].framed > 0);
        let Some(first) = written.next() else {
            return Ok(());
        };
        let mut outcome = Ok(());
        let mut handed = 0;
        for (index, helper) in written.zip(&self.helpers.jobs) {
            match helper.send((index, Arc::clone(&self.tails[index].file))) {
                Ok(()) => handed += 1,
                Err(_) => outcome = outcome.and(self.synced(index, Err(helper_gone()))),
            }
        }
        outcome = outcome.and(self.synced(first, self.tails[first].file.sync_data()));
        for _ in 0..handed {
            let (index, result) = self
                .helpers
                .done
                .recv()
                .unwrap_or_else(|_| (first, Err(helper_gone())));
            outcome = outcome.and(self.synced(index, result));
        }
        outcome
    }

    fn synced(&self, index: usize, result: io::Result<()>) -> Result<(), Error> {
        let tail = &self.tails[index];
        result.map_err(|error| Error::io("syncing", &tail.path, error))?;
        crate::metrics::METRICS
            .log_append_batch_events
            .observe(tail.framed as f64);
        Ok(())
    }
}

fn helper_gone() -> io::Error {
    io::Error::other("the sync helper exited")
}

impl Tail {
    /// Writes the framed buffer after the durable part of the active segment (rolling to a
    /// new segment first if it would overflow), without syncing it.
    fn write(&mut self, options: &Options) -> Result<(), Error> {
        if self.position > 0 && self.position + self.buffer.len() as u64 > options.segment_bytes {
            self.roll()?;
        }
        let end = self.position + self.buffer.len() as u64;
        self.preallocate(end, options.preallocate_bytes)?;
        self.file
            .write_all_at(&self.buffer, self.position)
            .map_err(|error| Error::io("appending to", &self.path, error))
    }

    /// Zero-fills the active segment in `step`-byte steps until it reaches `end`. The sync of
    /// the batch that follows makes the new length durable; later batches then overwrite zeros
    /// in place and their syncs carry no metadata.
    fn preallocate(&mut self, end: u64, step: u64) -> Result<(), Error> {
        if step == 0 || end <= self.allocated {
            return Ok(());
        }
        let target = end.div_ceil(step) * step;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = self.allocated.max(self.position);
        while at < target {
            let length = (target - at).min(ZEROS.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROS[..length], at)
                .map_err(|error| Error::io("preallocating", &self.path, error))?;
            at += length as u64;
        }
        self.allocated = target;
        Ok(())
    }

    /// Seals the active segment at its exact length and starts the next one. The seal is
    /// durable before the new file exists, so recovery never sees a sealed segment with a tail.
    fn roll(&mut self) -> Result<(), Error> {
        self.file
            .set_len(self.position)
            .and_then(|()| self.file.sync_all())
            .map_err(|error| Error::io("sealing", &self.path, error))?;
        let next = SegmentFile {
            base: self.next,
            path: self.dir.join(segment::file_name(self.next)),
        };
        self.file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&next.path)
            .map(Arc::new)
            .map_err(|error| Error::io("creating", &next.path, error))?;
        sync_dir(&self.dir)?;
        tracing::debug!(partition = self.partition, path = %next.path.display(), "rolled to a new segment");
        self.path = next.path.clone();
        self.position = 0;
        self.allocated = 0;
        let mut view = lock(&self.view);
        view.segments.push(next);
        view.active_bytes = 0;
        Ok(())
    }
}

fn batch_bytes(request: &Request) -> usize {
    request
        .entries
        .iter()
        .map(|entry| entry.payload.len() + segment::HEADER_BYTES)
        .sum()
}
