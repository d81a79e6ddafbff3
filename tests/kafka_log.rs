//! The Kafka log against librdkafka's mock cluster (every run) and against a real broker
//! (tests/run.sh starts Apache Kafka) when `TASKFOLD_TEST_KAFKA_BROKERS` names one (bootstrap
//! address).
//!
//! The mock cluster keeps only the newest few MiB of each partition, so the volumes here stay
//! small; the volume test runs against the real broker only.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::log_suite::{self, Volume};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use taskfold::log::kafka::{KafkaLog, Options};
use taskfold::log::{Entry, Error, EventLog, partition_for};
use taskfold::model::Slugid;

const BROKERS_VARIABLE: &str = "TASKFOLD_TEST_KAFKA_BROKERS";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
}

fn fresh_topic() -> String {
    format!("taskfold-test-{}", Slugid::nice())
}

/// A mock cluster of three brokers; it cannot create topics through the admin API, so tests
/// create theirs on it directly.
fn mock_cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    init_tracing();
    MockCluster::new(3).expect("mock cluster")
}

fn open_on_mock(
    mock: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    partitions: u32,
) -> Arc<dyn EventLog> {
    let topic = fresh_topic();
    mock.create_topic(&topic, partitions as i32, 1)
        .expect("create topic on the mock cluster");
    let log = KafkaLog::open(Options {
        brokers: mock.bootstrap_servers(),
        topic,
        partitions,
        create_topic: false,
        ..Options::default()
    })
    .expect("open the kafka log");
    acquired(log)
}

/// The log with every partition acquired by this process, as a single node does at start.
fn acquired(log: KafkaLog) -> Arc<dyn EventLog> {
    for partition in 0..log.partitions() {
        log.acquire(partition).expect("acquire the partition");
    }
    Arc::new(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_keeps_each_keys_order_under_concurrent_appends() {
    let mock = mock_cluster();
    log_suite::ordering_per_key(open_on_mock(&mock, 4), Volume::SMALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_replays_from_an_offset() {
    let mock = mock_cluster();
    log_suite::replay_from_offset(open_on_mock(&mock, 4), 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_high_watermark_counts_appends() {
    let mock = mock_cluster();
    log_suite::high_watermark_counts_appends(open_on_mock(&mock, 4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_rejects_partitions_out_of_range() {
    let mock = mock_cluster();
    log_suite::rejects_partitions_out_of_range(open_on_mock(&mock, 4)).await;
}

fn assert_partition_count_mismatch(opened: Result<KafkaLog, Error>) {
    let error = match opened {
        Err(error) => error,
        Ok(_) => panic!("a log of 4 partitions opened a topic of 3"),
    };
    assert!(
        matches!(
            error,
            Error::PartitionCountMismatch {
                configured: 4,
                found: 3,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains('3') && message.contains('4'),
        "the message names both counts: {message}"
    );
}

#[test]
fn mock_refuses_a_topic_with_another_partition_count() {
    let mock = mock_cluster();
    let topic = fresh_topic();
    mock.create_topic(&topic, 3, 1).expect("create topic");
    assert_partition_count_mismatch(KafkaLog::open(Options {
        brokers: mock.bootstrap_servers(),
        topic,
        partitions: 4,
        ..Options::default()
    }));
}

#[test]
fn mock_refuses_a_missing_topic_when_not_creating() {
    let mock = mock_cluster();
    let opened = KafkaLog::open(Options {
        brokers: mock.bootstrap_servers(),
        topic: fresh_topic(),
        create_topic: false,
        timeout_ms: 5_000,
        ..Options::default()
    });
    assert!(
        matches!(opened, Err(Error::Kafka { .. })),
        "{:?}",
        opened.err()
    );
}

/// librdkafka's `murmur2_random` partitioner is Kafka's default; a producer that does not
/// name partitions must put every key where `partition_for` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_partition_for_agrees_with_librdkafkas_murmur2_partitioner() {
    let mock = mock_cluster();
    let topic = fresh_topic();
    let partitions = 7;
    mock.create_topic(&topic, partitions as i32, 1)
        .expect("create topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let mut keys: Vec<String> = ["", "a", "ab", "abc", "abcd", "abcde", "21", "foobar"]
        .into_iter()
        .map(String::from)
        .collect();
    keys.extend((0..200).map(|_| Slugid::nice().to_string()));
    let deliveries: Vec<_> = keys
        .iter()
        .map(|key| {
            producer
                .send_result(FutureRecord::to(&topic).key(key.as_str()).payload("x"))
                .map_err(|(error, _)| error)
                .expect("enqueue")
        })
        .collect();
    for (key, delivery) in keys.iter().zip(futures::future::join_all(deliveries).await) {
        let delivery = delivery.expect("delivery report").expect("delivered");
        assert_eq!(
            delivery.partition as u32,
            partition_for(key.as_bytes(), partitions),
            "key {key:?}"
        );
    }
}

/// The bootstrap address of a real broker, or `None` (with a note) to skip.
fn real_brokers(test: &str) -> Option<String> {
    init_tracing();
    match std::env::var(BROKERS_VARIABLE) {
        Ok(brokers) if !brokers.trim().is_empty() => Some(brokers),
        _ => {
            println!("skipped {test}: {BROKERS_VARIABLE} is not set");
            None
        }
    }
}

/// Opens a log on a fresh topic of the real broker, letting the log create it.
fn open_on_broker(brokers: &str, partitions: u32) -> Arc<dyn EventLog> {
    acquired(open_real(brokers, fresh_topic(), partitions).expect("open the kafka log"))
}

fn open_real(brokers: &str, topic: String, partitions: u32) -> Result<KafkaLog, Error> {
    KafkaLog::open(Options {
        brokers: brokers.to_owned(),
        topic,
        partitions,
        create_topic: true,
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_passes_the_log_suite() {
    let Some(brokers) = real_brokers("broker_passes_the_log_suite") else {
        return;
    };
    let volume = Volume {
        keys: 200,
        events_per_key: 20,
        writers: 8,
        batch: 16,
    };
    log_suite::ordering_per_key(open_on_broker(&brokers, 4), volume).await;
    log_suite::replay_from_offset(open_on_broker(&brokers, 4), 200).await;
    log_suite::high_watermark_counts_appends(open_on_broker(&brokers, 4)).await;
    log_suite::rejects_partitions_out_of_range(open_on_broker(&brokers, 4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_replays_a_large_volume_completely() {
    let Some(brokers) = real_brokers("broker_replays_a_large_volume_completely") else {
        return;
    };
    log_suite::volume(open_on_broker(&brokers, 4), 20_000).await;
}

#[test]
fn broker_refuses_a_topic_with_another_partition_count() {
    let Some(brokers) = real_brokers("broker_refuses_a_topic_with_another_partition_count") else {
        return;
    };
    let topic = fresh_topic();
    let created = open_real(&brokers, topic.clone(), 3).expect("create a topic of 3 partitions");
    drop(created);
    // Creation is asynchronous on some brokers; the count must be the created one regardless.
    std::thread::sleep(Duration::from_millis(100));
    assert_partition_count_mismatch(open_real(&brokers, topic, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_creates_the_topic_with_the_configured_min_insync_replicas() {
    let Some(brokers) =
        real_brokers("broker_creates_the_topic_with_the_configured_min_insync_replicas")
    else {
        return;
    };
    let topic = fresh_topic();
    let options = Options {
        brokers: brokers.clone(),
        topic: topic.clone(),
        partitions: 2,
        create_topic: true,
        min_insync_replicas: 2,
        ..Options::default()
    };
    drop(
        tokio::task::spawn_blocking(move || KafkaLog::open(options))
            .await
            .unwrap()
            .expect("open"),
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("admin client");
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .expect("describe the topic's configuration");
    let config = described[0].as_ref().expect("the topic's configuration");
    let entry = config
        .get("min.insync.replicas")
        .expect("min.insync.replicas");
    assert_eq!(entry.value.as_deref(), Some("2"));
}

/// More records than librdkafka's local queue holds (100,000 messages), sent to slow brokers:
/// `append` must wait for room inside the call and still keep every record, in call order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mock_waits_for_room_when_the_producer_queue_is_full() {
    let mock = mock_cluster();
    let log = open_on_mock(&mock, 4);
    let slow = |delay| {
        for broker in 1..=3 {
            mock.broker_round_trip_time(broker, delay)
                .expect("set the broker's round trip time");
        }
    };
    slow(Duration::from_millis(1000));
    let keys = log_suite::fresh_keys(100);
    let mut appends = Vec::new();
    for index in 0..120_000 {
        let key = &keys[index % keys.len()];
        let envelope = log_suite::envelope(key, index / keys.len());
        let partition = log.partition_of(key);
        appends.push((
            partition,
            log.append(partition, vec![log_suite::entry(&envelope)]),
        ));
    }
    slow(Duration::ZERO);
    let mut last: Vec<Option<u64>> = vec![None; log.partitions() as usize];
    for (partition, appending) in appends {
        let offsets = appending.await.expect("append");
        let expected = last[partition as usize].map_or(0, |offset| offset + 1);
        assert_eq!(offsets, [expected], "partition {partition} in call order");
        last[partition as usize] = Some(expected);
    }
}

/// A process that takes a partition over fences its earlier writer: what the earlier writer
/// appended before stays in the log, nothing it appends after lands, and the new writer's
/// records follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_fences_the_earlier_writer_of_a_partition() {
    let Some(brokers) = real_brokers("broker_fences_the_earlier_writer_of_a_partition") else {
        return;
    };
    let topic = fresh_topic();
    let first = open_real(&brokers, topic.clone(), 1).expect("open the first log");
    first
        .acquire(0)
        .expect("the first writer takes the partition");
    let entry = |text: &str| Entry {
        key: "key".into(),
        payload: text.as_bytes().to_vec(),
    };
    let before = first
        .append(0, vec![entry("first-1"), entry("first-2")])
        .await
        .expect("the first writer appends");
    assert_eq!(before, vec![0, 1]);
    // The first writer's batch ends: its transaction marker takes offset 2.
    let (taken, ended) = first.end_batch(0);
    assert_eq!(taken, 1);
    ended.await.expect("the batch ends");
    first
        .append(0, vec![entry("first-3")])
        .await
        .expect("the first writer appends in its next batch");

    let second = open_real(&brokers, topic.clone(), 1).expect("open the second log");
    second
        .acquire(0)
        .expect("the second writer takes the partition");
    let refused = first.append(0, vec![entry("zombie")]).await;
    assert!(
        matches!(refused, Err(Error::Fenced { partition: 0, .. })),
        "the fenced writer's append must fail as fenced, not {refused:?}"
    );
    let end = second.high_watermark(0).expect("watermark");
    let after = second
        .append(0, vec![entry("second-1")])
        .await
        .expect("the second writer appends");
    assert_eq!(after, vec![end]);
    // The fenced writer stays fenced.
    assert!(first.append(0, vec![entry("zombie-2")]).await.is_err());

    let mut payloads = Vec::new();
    second
        .read(0, 0, &mut |_, payload| {
            payloads.push(String::from_utf8_lossy(payload).into_owned());
            Ok(())
        })
        .expect("read the partition");
    assert_eq!(payloads, ["first-1", "first-2", "first-3", "second-1"]);
}
