//! The log load generator behind `taskfold bench log`: concurrent appenders, each appending one
//! realistic event at a time and waiting for it to be durable, as shards do for their callers.
//! Reports throughput and append latency. With `report_acks` it prints every acknowledged
//! record, which is what the crash test checks a restarted log against.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Entry, Error, EventLog, codec};
use crate::model::{Envelope, Event, Slugid, Timestamp};

#[derive(Clone, Debug)]
pub struct Options {
    /// Concurrent appenders, each with one append in flight at a time.
    pub appenders: usize,
    /// Events in total, shared out among the appenders.
    pub events: u64,
    /// Task keys per appender; its events cycle through them.
    pub keys_per_appender: usize,
    /// Approximate encoded size of each event.
    pub event_bytes: usize,
    /// Print `ack <key> <at-millis> <partition> <offset>` for every durable event.
    pub report_acks: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            appenders: 64,
            events: 200_000,
            keys_per_appender: 4,
            event_bytes: 200,
            report_acks: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Append latency percentiles: p50, p90, p99, max.
    pub latency: [Duration; 4],
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        let [p50, p90, p99, max] = self.latency;
        write!(
            f,
            "{} events in {:.2} s: {:.0} events/s, {:.1} MB/s; append latency p50 {:?} p90 {:?} p99 {:?} max {:?}",
            self.events,
            seconds,
            self.events as f64 / seconds,
            self.bytes as f64 / seconds / 1e6,
            p50,
            p90,
            p99,
            max
        )
    }
}

/// Makes claim events whose encoding is about a given size: the worker id is made long enough
/// to fill it, as cloud host names tend to be. The padding is worked out once.
#[derive(Clone, Debug)]
pub struct ClaimEvents {
    worker_id: String,
}

impl ClaimEvents {
    pub fn new(size: usize) -> Self {
        let mut events = ClaimEvents {
            worker_id: "i-0a1b2c3d4e5f".into(),
        };
        let sample = events.event(Slugid::nice(), Timestamp::now());
        let encoded = codec::encode(&sample).map_or(size, |bytes| bytes.len());
        events
            .worker_id
            .extend(std::iter::repeat_n('x', size.saturating_sub(encoded)));
        events
    }

    pub fn event(&self, key: Slugid, at: Timestamp) -> Envelope {
        Envelope {
            key: key.to_string(),
            at,
            client_id: None,
            event: Event::RunClaimed {
                run_id: 0,
                worker_group: "us-east-1-builders".into(),
                worker_id: self.worker_id.clone(),
                taken_until: at.plus_millis(1_200_000),
            },
        }
    }
}

/// Runs the load against `log` and reports what it measured.
pub async fn run(log: Arc<dyn EventLog>, options: Options) -> Result<Report, Error> {
    let appenders = options.appenders.max(1);
    let share = |appender: usize| {
        options.events / appenders as u64
            + u64::from((appender as u64) < options.events % appenders as u64)
    };
    let start_millis = Timestamp::now().millis();
    let started = Instant::now();
    let mut handles = Vec::with_capacity(appenders);
    for appender in 0..appenders {
        let log = log.clone();
        let options = options.clone();
        let events = share(appender);
        handles.push(tokio::spawn(async move {
            append_loop(log.as_ref(), &options, events, start_millis).await
        }));
    }
    let mut latencies = Vec::with_capacity(options.events as usize);
    let mut bytes = 0;
    for handle in handles {
        let (appended_bytes, appender_latencies) = handle
            .await
            .map_err(|error| Error::Config(format!("an appender failed: {error}")))??;
        bytes += appended_bytes;
        latencies.extend(appender_latencies);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |fraction: f64| {
        latencies
            .get(
                ((latencies.len() as f64 * fraction) as usize)
                    .min(latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or_default()
    };
    Ok(Report {
        events: latencies.len() as u64,
        bytes,
        elapsed,
        latency: [
            percentile(0.5),
            percentile(0.9),
            percentile(0.99),
            percentile(1.0),
        ],
    })
}

/// One appender: its own keys, an `at` that grows by a millisecond per event so every key's
/// events are strictly ordered in time, one append in flight at a time.
async fn append_loop(
    log: &dyn EventLog,
    options: &Options,
    events: u64,
    start_millis: i64,
) -> Result<(u64, Vec<Duration>), Error> {
    let keys: Vec<Slugid> = (0..options.keys_per_appender.max(1))
        .map(|_| Slugid::nice())
        .collect();
    let claims = ClaimEvents::new(options.event_bytes);
    let mut latencies = Vec::with_capacity(events as usize);
    let mut bytes = 0;
    for sequence in 0..events {
        let key = keys[sequence as usize % keys.len()];
        let at = Timestamp::from_millis(start_millis + sequence as i64);
        let envelope = claims.event(key, at);
        let payload = codec::encode(&envelope)?;
        bytes += payload.len() as u64;
        let partition = log.partition_of(&envelope.key);
        let began = Instant::now();
        let offsets = log
            .append(
                partition,
                vec![Entry {
                    key: envelope.key,
                    payload,
                }],
            )
            .await?;
        latencies.push(began.elapsed());
        if options.report_acks {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "ack {key} {} {partition} {}",
                at.millis(),
                offsets[0]
            );
        }
    }
    Ok((bytes, latencies))
}
