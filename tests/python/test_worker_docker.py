"""`taskfold worker --engine docker` end to end: a real server, a real worker process and a real
Docker engine running docker-worker payloads in the local image `taskfold-test/busybox:1`
(tests/setup/busybox-image.sh; nothing is ever pulled).

One server and one worker (capacity 4, on a task queue of their own) serve most tests; the
kill-and-restart test has a server with 3 s claims and workers of its own. Each acceptance
point is one test: success, a failing exit code, a retry exit code, maxRunTime, malformed
payloads (a schema error, a feature the worker does not offer), a missing artifact, a directory
artifact, a cache reused by the next task, cancellation while running, a worker killed and
restarted, the live log followed while the task runs (and read complete by several readers of
a fast-printing task), and the reserved environment variables.

What each worker process logged (RUST_LOG=info) during a test is printed when that test fails.
"""

import subprocess
import threading
import time
import uuid

import pytest
import requests

from worker_helpers import (SHORT_CLAIM_WORK_CONFIG, TIMEOUT, WorkerProcess, artifact_url,
                            artifacts, assert_in_log, assert_run, create_task, docker_ps, fetch,
                            remove_containers, serve, wait_resolved, wait_until)

IMAGE = "taskfold-test/busybox:1"
# Claims expire 3 s after the last reclaim: a killed worker's run is retried within seconds.
RESTART_CONFIG = """
[queue]
claim_timeout_seconds = 3

[api]
claim_work_timeout_seconds = 1
"""


# --- containers ----------------------------------------------------------------------------


def container_running(container):
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                           capture_output=True, text=True).stdout.strip()
    return state == "true"


def remove_containers_of(worker):
    remove_containers(f"taskfold.worker={worker.label}", worker.label)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_server(tmp_path_factory):
    yield from serve(tmp_path_factory, SHORT_CLAIM_WORK_CONFIG)


@pytest.fixture(scope="module")
def docker_worker(docker_server, tmp_path_factory):
    base = tmp_path_factory.mktemp("docker-worker")
    worker = WorkerProcess(docker_server, "docker", base / "data", base, capacity=4).start()
    yield worker
    worker.stop()
    remove_containers_of(worker)


@pytest.fixture
def queue(docker_server):
    return docker_server.queue()


@pytest.fixture
def run_task(docker_worker, queue):
    """Creates a task with a docker payload for the shared worker; its taskId."""

    def create(payload, **overrides):
        assert docker_worker.alive(), "the shared worker process exited"
        full = {"image": IMAGE, "maxRunTime": 60, **payload}
        return create_task(queue, docker_worker.task_queue_id, payload=full, **overrides)

    return create


# --- helpers -------------------------------------------------------------------------------


def wait_running(queue, task_id, run_id=0, timeout=TIMEOUT):
    def running():
        runs = queue.status(task_id)["status"]["runs"]
        return len(runs) > run_id and runs[run_id]["state"] == "running"

    assert wait_until(running, timeout), \
        f"run {run_id} of {task_id} not running within {timeout} s: {queue.status(task_id)}"


def wait_container(task_id, run_id=0, timeout=TIMEOUT):
    ids = wait_until(lambda: docker_ps(f"taskfold.task-id={task_id}",
                                       f"taskfold.run-id={run_id}"), timeout)
    assert ids, f"no container for run {run_id} of {task_id} within {timeout} s"
    return ids


def task_log(server, task_id, run_id=0):
    """The run's backing log, with the TTY's `\\r\\n` made `\\n`."""
    return fetch(server, task_id, run_id, "public/logs/live_backing.log").replace("\r\n", "\n")


def assert_log_artifacts(queue, task_id, run_id=0):
    """After the run: the backing log is an s3 artifact and the live log a link to it."""
    listed = artifacts(queue, task_id, run_id)
    assert listed.get("public/logs/live_backing.log") == "s3", listed
    assert listed.get("public/logs/live.log") == "link", listed
    assert queue.artifact(task_id, str(run_id), "public/logs/live.log") is not None


# --- the acceptance points -----------------------------------------------------------------


def test_a_successful_task_completes_with_its_log_and_artifacts(docker_server, queue, run_task):
    task_id = run_task({
        "command": ["sh", "-c",
                    "echo hello-from-the-task; mkdir -p /work/out; "
                    "printf 'file content' > /work/out/result.txt"],
        "artifacts": {"public/result.txt": {"type": "file", "path": "/work/out/result.txt"}},
    })
    status = wait_resolved(queue, task_id)
    log = task_log(docker_server, task_id)
    assert_run(status, 0, "completed", "completed", "scheduled")
    assert status["state"] == "completed"
    assert len(status["runs"]) == 1

    listed = artifacts(queue, task_id)
    assert listed.get("public/result.txt") == "s3", listed
    assert_log_artifacts(queue, task_id)
    assert fetch(docker_server, task_id, 0, "public/result.txt") == "file content"
    # After the run, live.log resolves (link) to the backing log's content.
    assert fetch(docker_server, task_id, 0, "public/logs/live.log").replace("\r\n", "\n") == log

    assert_in_log(log, f"Task ID: {task_id}", "=== Task Starting ===", "hello-from-the-task",
                  "=== Task Finished ===", "Successful task run with exit code: 0")
    assert log.index("=== Task Starting ===") < log.index("hello-from-the-task") \
        < log.index("=== Task Finished ===")
    # The container is removed once the run is over.
    assert wait_until(lambda: not docker_ps(f"taskfold.task-id={task_id}"), 10), \
        docker_ps(f"taskfold.task-id={task_id}")


def test_a_non_zero_exit_code_fails_the_run(docker_server, queue, run_task):
    task_id = run_task({"command": ["sh", "-c", "echo about-to-fail; exit 3"]})
    status = wait_resolved(queue, task_id)
    log = task_log(docker_server, task_id)
    assert_run(status, 0, "failed", "failed")
    assert status["state"] == "failed"
    assert len(status["runs"]) == 1, "a failed run is not retried"
    assert "about-to-fail" in log
    assert "Unsuccessful task run with exit code: 3" in log, log
    assert_log_artifacts(queue, task_id)


def test_a_retry_exit_code_is_an_intermittent_task_exception(docker_server, queue, run_task):
    script = ('if [ "$RUN_ID" = 0 ]; then echo transient-problem; exit 36; fi; '
              'echo recovered-on-run-$RUN_ID')
    payload = {"command": ["sh", "-c", script], "onExitStatus": {"retry": [36]}}
    retried = run_task(payload, retries=1)
    not_retried = run_task(payload, retries=0)

    # retries > 0: the queue makes run 1 (reasonCreated task-retry), which completes.
    status = wait_resolved(queue, retried, run_id=1)
    assert_run(status, 0, "exception", "intermittent-task", "scheduled")
    assert_run(status, 1, "completed", "completed", "task-retry")
    assert status["state"] == "completed"
    log0 = task_log(docker_server, retried, 0)
    assert "transient-problem" in log0
    assert "Unsuccessful task run with exit code: 36" in log0, log0
    assert "recovered-on-run-1" in task_log(docker_server, retried, 1)

    # retries = 0: the exception is final.
    status = wait_resolved(queue, not_retried)
    assert_run(status, 0, "exception", "intermittent-task")
    time.sleep(1)
    status = queue.status(not_retried)["status"]
    assert status["state"] == "exception" and len(status["runs"]) == 1, status


def test_max_run_time_kills_the_container_and_keeps_artifacts_and_log(docker_server, queue,
                                                                       run_task):
    task_id = run_task({
        "command": ["sh", "-c",
                    "mkdir -p /work/out; echo partial-output > /work/out/partial.txt; "
                    "echo started-long-task; sleep 60; echo never-printed"],
        "maxRunTime": 3,
        "artifacts": {"public/partial.txt": {"type": "file", "path": "/work/out/partial.txt"}},
    })
    status = wait_resolved(queue, task_id)
    log = task_log(docker_server, task_id)
    assert_run(status, 0, "failed", "failed")
    assert "started-long-task" in log
    assert "never-printed" not in log
    assert "Task timeout after 3 seconds" in log, log
    assert "=== Task Finished ===" in log
    assert "Unsuccessful task run with exit code" in log, log

    listed = artifacts(queue, task_id)
    assert listed.get("public/partial.txt") == "s3", listed
    assert fetch(docker_server, task_id, 0, "public/partial.txt") == "partial-output\n"
    assert_log_artifacts(queue, task_id)
    assert wait_until(lambda: not docker_ps(f"taskfold.task-id={task_id}"), 10), \
        "the killed container was not removed"


def test_a_payload_failing_the_schema_is_malformed(docker_server, queue, run_task):
    task_id = run_task({"command": ["true"], "maxRunTime": 0, "bogusField": True,
                        "env": {"NUMBER": 5}})
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "exception", "malformed-payload")
    time.sleep(1)
    status = queue.status(task_id)["status"]
    assert status["state"] == "exception" and len(status["runs"]) == 1, \
        f"a malformed payload is not retried: {status}"
    log = task_log(docker_server, task_id)
    assert_in_log(log, "maxRunTime", "bogusField", "payload/env/NUMBER")
    assert "=== Task Starting ===" not in log, "the command must not run"
    assert not docker_ps(f"taskfold.task-id={task_id}")


def test_a_feature_the_worker_does_not_offer_is_malformed(docker_server, queue, run_task):
    task_id = run_task({"command": ["true"], "features": {"dind": True}})
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "exception", "malformed-payload")
    log = task_log(docker_server, task_id)
    assert "dind" in log, log
    assert "=== Task Starting ===" not in log, "the command must not run"
    assert not docker_ps(f"taskfold.task-id={task_id}")


def test_a_feature_needing_a_scope_the_task_lacks_is_malformed(docker_server, queue, run_task):
    """allowPtrace is offered but needs docker-worker:feature:allowPtrace in task.scopes."""
    without = run_task({"command": ["true"], "features": {"allowPtrace": True}})
    with_scope = run_task({"command": ["true"], "features": {"allowPtrace": True}},
                          scopes=["docker-worker:feature:allowPtrace"])
    status = wait_resolved(queue, without)
    assert_run(status, 0, "exception", "malformed-payload")
    assert "docker-worker:feature:allowPtrace" in task_log(docker_server, without)
    assert_run(wait_resolved(queue, with_scope), 0, "completed", "completed")


def test_a_missing_artifact_is_an_error_artifact(docker_server, queue, run_task):
    task_id = run_task({
        "command": ["sh", "-c", "mkdir -p /work/out; echo here > /work/out/present.txt"],
        "artifacts": {
            "public/missing.txt": {"type": "file", "path": "/work/out/not-there.txt"},
            "public/present.txt": {"type": "file", "path": "/work/out/present.txt"},
        },
    })
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "completed", "completed")
    listed = artifacts(queue, task_id)
    assert listed.get("public/missing.txt") == "error", listed
    assert listed.get("public/present.txt") == "s3", listed
    missing = queue.artifact(task_id, "0", "public/missing.txt")
    assert missing["storageType"] == "error"
    assert missing["reason"] == "file-missing-on-worker", missing
    response = requests.get(artifact_url(docker_server, task_id, 0, "public/missing.txt"),
                            timeout=30)
    assert response.status_code == 424, response.text
    assert fetch(docker_server, task_id, 0, "public/present.txt") == "here\n"


def test_a_directory_artifact_uploads_each_file(docker_server, queue, run_task):
    task_id = run_task({
        # The image in its object form.
        "image": {"type": "docker-image", "name": IMAGE},
        "command": ["sh", "-c",
                    "mkdir -p /work/out/sub/deeper; printf A > /work/out/a.txt; "
                    "printf BB > /work/out/sub/b.txt; printf CCC > /work/out/sub/deeper/c.log"],
        "artifacts": {"public/dir": {"type": "directory", "path": "/work/out"}},
    })
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "completed", "completed")
    listed = artifacts(queue, task_id)
    expected = {"public/dir/a.txt": "A", "public/dir/sub/b.txt": "BB",
                "public/dir/sub/deeper/c.log": "CCC"}
    uploaded = {name: kind for name, kind in listed.items() if name.startswith("public/dir")}
    assert uploaded == {name: "s3" for name in expected}, listed
    for name, content in expected.items():
        assert fetch(docker_server, task_id, 0, name) == content


def test_a_cache_is_reused_by_the_next_task(docker_server, queue, run_task):
    cache = f"tests-cache-{uuid.uuid4().hex[:8]}"
    scopes = [f"docker-worker:cache:{cache}"]
    first = run_task({
        "command": ["sh", "-c",
                    'test ! -e /cache/marker || { echo cache-not-empty; exit 9; }; '
                    'echo "written by $TASK_ID" > /cache/marker'],
        "cache": {cache: "/cache"},
    }, scopes=scopes)
    status = wait_resolved(queue, first)
    assert_run(status, 0, "completed", "completed")

    second = run_task({
        "command": ["sh", "-c",
                    "test -f /cache/marker || { echo no-marker; exit 7; }; cat /cache/marker"],
        "cache": {cache: "/cache"},
    }, scopes=scopes)
    status = wait_resolved(queue, second)
    log = task_log(docker_server, second)
    assert_run(status, 0, "completed", "completed")
    assert f"written by {first}" in log, log


def test_a_cache_without_its_scope_is_malformed(docker_server, queue, run_task):
    cache = f"tests-cache-{uuid.uuid4().hex[:8]}"
    task_id = run_task({"command": ["true"], "cache": {cache: "/cache"}})
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "exception", "malformed-payload")
    assert f"docker-worker:cache:{cache}" in task_log(docker_server, task_id)


def test_canceling_a_running_task_removes_its_container(docker_server, queue, run_task):
    task_id = run_task({"command": ["sh", "-c", "echo sleeping; sleep 60"]})
    wait_running(queue, task_id)
    wait_container(task_id)
    assert queue.status(task_id)["status"]["runs"][0]["state"] == "running"

    canceled_at = time.monotonic()
    status = queue.cancelTask(task_id)["status"]
    assert_run(status, 0, "exception", "canceled")
    gone = wait_until(lambda: not docker_ps(f"taskfold.task-id={task_id}"), 10, interval=0.1)
    elapsed = time.monotonic() - canceled_at
    print(f"the container was gone {elapsed:.2f} s after cancelTask")
    assert gone, f"the container still exists {elapsed:.1f} s after cancelTask: " \
        f"{docker_ps(f'taskfold.task-id={task_id}')}"
    assert elapsed < 10

    # The worker reports nothing over the cancel, and the queue does not retry it.
    time.sleep(3)
    status = queue.status(task_id)["status"]
    assert status["state"] == "exception", status
    assert len(status["runs"]) == 1, status
    assert_run(status, 0, "exception", "canceled")


def test_the_live_log_can_be_followed_while_the_task_runs(docker_server, queue, run_task):
    task_id = run_task({"command": ["sh", "-c",
                                    "echo line-1; sleep 4; echo line-2; sleep 4; echo line-3"]})
    wait_running(queue, task_id)
    assert wait_until(lambda: artifacts(queue, task_id).get("public/logs/live.log")
                      == "reference", 30), artifacts(queue, task_id)

    received = ""
    seen_early = None
    with requests.get(artifact_url(docker_server, task_id, 0, "public/logs/live.log"),
                      stream=True, timeout=(10, 30)) as response:
        assert response.status_code == 200, response.text
        for chunk in response.iter_content(chunk_size=None):
            received += chunk.decode("utf-8", errors="replace")
            if seen_early is None and "line-1" in received:
                # Read while the task still runs: it has not printed line-3 yet.
                seen_early = {"state": queue.status(task_id)["status"]["runs"][0]["state"],
                              "line-3 already": "line-3" in received}
    received = received.replace("\r\n", "\n")
    assert seen_early == {"state": "running", "line-3 already": False}, seen_early
    for line in (f"Task ID: {task_id}", "=== Task Starting ===", "line-1", "line-2", "line-3",
                 "=== Task Finished ==="):
        assert line in received, f"{line!r} not in the streamed live log:\n{received}"

    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "completed", "completed")
    assert_log_artifacts(queue, task_id)
    log = task_log(docker_server, task_id)
    assert received in log, "the live log is a prefix of (or equal to) the backing log"
    assert "Successful task run with exit code: 0" in log


def test_the_live_log_stream_is_complete_when_the_task_prints_fast(docker_server, queue,
                                                                   run_task):
    """Three readers follow a log that grows every few milliseconds: each stream ends cleanly
    (its final chunk arrives) with exactly the bytes of the backing log."""
    task_id = run_task({"command": ["sh", "-c",
                                    "i=0; while [ $i -lt 100 ]; do echo fast-line-$i; "
                                    "i=$((i+1)); sleep 0.03; done"]})
    wait_running(queue, task_id)
    assert wait_until(lambda: artifacts(queue, task_id).get("public/logs/live.log")
                      == "reference", 30), artifacts(queue, task_id)

    results = {}

    def follow(reader):
        received = b""
        try:
            with requests.get(artifact_url(docker_server, task_id, 0, "public/logs/live.log"),
                              stream=True, timeout=(10, 30)) as response:
                assert response.status_code == 200, response.text
                for chunk in response.iter_content(chunk_size=None):
                    received += chunk
            results[reader] = ("complete", received)
        except Exception as error:  # noqa: BLE001 -- reported below, per reader
            results[reader] = (f"{type(error).__name__}: {error}", received)

    readers = [threading.Thread(target=follow, args=(reader,)) for reader in range(3)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=TIMEOUT)
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "completed", "completed")
    log = task_log(docker_server, task_id)
    assert "fast-line-99" in log
    summary = {reader: (outcome, len(received)) for reader, (outcome, received) in
               results.items()}
    print(f"backing log: {len(log)} characters; readers: {summary}")
    for reader, (outcome, received) in sorted(results.items()):
        assert outcome == "complete", \
            f"reader {reader}'s stream broke after {len(received)} bytes: {outcome}"
        assert received.decode().replace("\r\n", "\n") == log, f"reader {reader}"
    assert len(results) == 3


def test_a_log_written_faster_than_it_is_read_is_kept_whole(docker_server, queue, run_task):
    """A container that writes 40 MB at once and exits is done long before the worker has read
    its output: the worker keeps reading until Docker has handed over the last byte."""
    task_id = run_task({"command": ["sh", "-c",
                                    "yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij"
                                    " | head -c 41943040; echo; echo the-last-line"]})
    status = wait_resolved(queue, task_id)
    assert_run(status, 0, "completed", "completed")
    log = task_log(docker_server, task_id)
    assert len(log) > 40 * 1024 * 1024, len(log)
    assert "the-last-line" in log[-4096:]


def test_reserved_environment_variables_cannot_be_overridden(docker_server, docker_worker,
                                                             queue, run_task):
    names = ["TASK_ID", "RUN_ID", "TASKCLUSTER_ROOT_URL", "TASKCLUSTER_WORKER_GROUP",
             "TASKCLUSTER_WORKER_POOL", "TASKCLUSTER_WORKER_TYPE", "MY_VARIABLE"]
    script = "; ".join(f'echo "ENV {name}=${name}"' for name in names)
    task_id = run_task({
        "command": ["sh", "-c", script],
        "env": {name: "overridden" for name in names[:-1]} | {"MY_VARIABLE": "mine"},
    })
    status = wait_resolved(queue, task_id)
    log = task_log(docker_server, task_id)
    assert_run(status, 0, "completed", "completed")
    seen = dict(line[len("ENV "):].split("=", 1) for line in log.splitlines()
                if line.startswith("ENV "))
    assert seen == {
        "TASK_ID": task_id,
        "RUN_ID": "0",
        "TASKCLUSTER_ROOT_URL": docker_server.root_url,
        "TASKCLUSTER_WORKER_GROUP": docker_worker.worker_group,
        "TASKCLUSTER_WORKER_POOL": docker_worker.task_queue_id,
        "TASKCLUSTER_WORKER_TYPE": docker_worker.task_queue_id.split("/", 1)[1],
        "MY_VARIABLE": "mine",
    }, log


# --- a worker killed and restarted ---------------------------------------------------------


@pytest.fixture
def restart_server(tmp_path_factory):
    yield from serve(tmp_path_factory, RESTART_CONFIG)


def test_a_killed_worker_s_container_is_removed_on_restart_and_the_run_retried(
        restart_server, tmp_path):
    queue = restart_server.queue()
    worker_id = f"restart-{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "worker-data"
    first = WorkerProcess(restart_server, "docker", data_dir, tmp_path, worker_id=worker_id,
                          capacity=1)
    # Same group, id and data directory: the same worker, restarted.
    second = WorkerProcess(restart_server, "docker", data_dir, tmp_path,
                           task_queue_id=first.task_queue_id, worker_id=worker_id, capacity=1)
    second.starts = 1  # its log files follow the first's
    try:
        first.start()
        payload = {"image": IMAGE, "maxRunTime": 120, "command": [
            "sh", "-c", 'if [ "$RUN_ID" = 0 ]; then echo run-0-sleeps; sleep 60; fi; '
                        'echo done-on-run-$RUN_ID']}
        task_id = create_task(queue, first.task_queue_id, payload=payload, retries=2)
        wait_running(queue, task_id)
        [container] = wait_container(task_id, 0)
        # Created is not enough: kill the worker once the command runs.
        assert wait_until(lambda: container_running(container), 30), \
            f"container {container} of run 0 never ran"

        first.kill()
        time.sleep(1)
        assert docker_ps(f"taskfold.task-id={task_id}", "taskfold.run-id=0") == [container], \
            "the container outlives its SIGKILLed worker"
        assert container_running(container), "the command keeps running without its worker"

        second.start()
        removed = wait_until(
            lambda: not docker_ps(f"taskfold.task-id={task_id}", "taskfold.run-id=0"), 30)
        assert removed, "the restarted worker did not remove the leftover container"

        status = wait_resolved(queue, task_id, run_id=1)
        assert_run(status, 0, "exception", "claim-expired", "scheduled")
        assert_run(status, 1, "completed", "completed", "retry")
        assert status["state"] == "completed"
        run = status["runs"][1]
        assert (run["workerGroup"], run["workerId"]) == (second.worker_group, worker_id)
        assert second.alive()
        log = task_log(restart_server, task_id, 1)
        assert "done-on-run-1" in log, log
        assert "Successful task run with exit code: 0" in log
    finally:
        for worker in (first, second):
            if worker.alive():
                worker.stop()
        remove_containers_of(first)
