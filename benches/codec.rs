//! Codec cost per event for a realistic task-defined envelope (about 1 KiB encoded), and the
//! cost of the createTask body it comes from: JSON bytes to a checked task definition.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use taskfold::log::codec;
use taskfold::model::task::CreateTaskRequest;
use taskfold::model::{Envelope, Event, Slugid, TaskDefinition, Timestamp};

/// The allocator the `taskfold` binary runs with, so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A realistic task definition, as JSON (also a valid createTask body).
fn definition_json(task_id: Slugid) -> serde_json::Value {
    serde_json::json!({
        "provisionerId": "proj-releng",
        "workerType": "b-linux-large",
        "taskQueueId": "proj-releng/b-linux-large",
        "schedulerId": "taskcluster-github",
        "projectId": "releng",
        "taskGroupId": task_id.to_string(),
        "dependencies": [Slugid::nice().to_string(), Slugid::nice().to_string()],
        "requires": "all-completed",
        "routes": ["index.project.releng.branch.main.latest.build-linux64", "checks"],
        "priority": "medium",
        "retries": 5,
        "created": "2026-11-22T10:00:00.000Z",
        "deadline": "2026-11-23T10:00:00.000Z",
        "expires": "2027-11-22T10:00:00.000Z",
        "scopes": ["secrets:get:project/releng/build", "docker-worker:cache:releng-checkouts-v1"],
        "payload": {
            "image": "releng/build-linux:2026-11-20",
            "command": ["/bin/bash", "-c", "./mach build && ./mach package && ./mach upload-symbols"],
            "env": {"MOZ_BUILD_DATE": "20261122100000", "TASKCLUSTER_CACHES": "/builds/worker/checkouts",
                    "GECKO_HEAD_REPOSITORY": "https://example.com/releng/gecko", "GECKO_HEAD_REV": "0123456789abcdef0123456789abcdef01234567"},
            "maxRunTime": 7200,
            "cache": {"releng-checkouts-v1": "/builds/worker/checkouts"},
            "artifacts": {"public/build": {"type": "directory", "path": "/builds/worker/artifacts", "expires": "2027-11-22T10:00:00.000Z"}},
            "features": {"taskclusterProxy": true, "chainOfTrust": true}
        },
        "metadata": {
            "name": "build-linux64/opt",
            "description": "Linux64 opt build",
            "owner": "release@example.com",
            "source": "https://example.com/releng/gecko/file/0123456789abcdef/taskcluster/ci/build"
        },
        "tags": {"kind": "build", "label": "build-linux64/opt", "createdForUser": "release@example.com"},
        "extra": {"treeherder": {"symbol": "B", "machine": {"platform": "linux64"}}}
    })
}

fn task_defined() -> Envelope {
    let task_id = Slugid::nice();
    let definition: TaskDefinition = serde_json::from_value(definition_json(task_id)).unwrap();
    Envelope {
        key: task_id.to_string(),
        at: Timestamp::from_millis(1_763_805_600_000),
        client_id: None,
        event: Event::TaskDefined {
            task_id,
            definition: Arc::new(definition),
        },
    }
}

fn codec_benches(c: &mut Criterion) {
    let envelope = task_defined();
    let bytes = codec::encode(&envelope).unwrap();
    eprintln!("task-defined envelope: {} bytes encoded", bytes.len());
    let mut group = c.benchmark_group("codec_task_defined");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut buffer = Vec::with_capacity(2048);
        b.iter(|| {
            buffer.clear();
            codec::encode_into(black_box(&envelope), &mut buffer).unwrap();
            buffer.len()
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| codec::decode::<Envelope>(black_box(&bytes)).unwrap())
    });
    group.finish();

    // What createTask does with its body before authorizing it: the request read from the
    // bytes (payload and extra straight to their compact text), then checked.
    let task_id = Slugid::nice();
    let body = serde_json::to_vec(&definition_json(task_id)).unwrap();
    let mut group = c.benchmark_group("create_task_body");
    group.throughput(Throughput::Elements(1));
    group.bench_function("to_definition", |b| {
        b.iter(|| {
            CreateTaskRequest::from_json(black_box(&body))
                .unwrap()
                .into_definition(task_id)
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
