"""The crash test: `kill -9` the server while writers create tasks and workers claim and complete
them, then start it again on the same data directory.

It proves that every acknowledged createTask and reportCompleted survived, that no run was handed
to two workers (before, across or after the crash), that the pending tasks are still claimable,
and that the runs left running by the crash keep their worker until their claims expire, then are
resolved `exception/claim-expired` and retried.
"""

import collections
import random
import threading
import time

import pytest

from conftest import make_server, new_task_id, task_definition, wait_for

CLAIM_TIMEOUT = 3

# Claims expire within the test; claimWork long-polls 1 s, so threads notice a stop quickly;
# frequent snapshots, so that the restart loads snapshots and replays the events after them.
CRASH_CONFIG = f"""
[queue]
claim_timeout_seconds = {CLAIM_TIMEOUT}
snapshot_every_events = 50

[api]
claim_work_timeout_seconds = 1
"""

CREATORS = 4
WORKERS = 3
DRAINERS = 8
# Creators wait while this many tasks are unclaimed, so the drain after the restart stays short.
MAX_BACKLOG = 200


@pytest.fixture
def crash_server(tmp_path_factory):
    server = make_server(tmp_path_factory, CRASH_CONFIG)
    yield server
    server.stop()


class Acknowledged:
    """What the load saw acknowledged before the server died; a call whose reply did not
    arrive is not in here (except in `completing`, which records what was sent)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.killing = threading.Event()
        self.stop = threading.Event()
        self.unexpected_errors = []
        self.created = {}        # taskId -> its definition
        self.claims = []         # (taskId, runId, workerId)
        self.completing = set()  # (taskId, runId) whose reportCompleted was sent
        self.completed = set()   # (taskId, runId) whose reportCompleted was acknowledged

    def failed(self, error):
        """Errors are expected once the kill is under way; before it, they are a failure."""
        if not self.killing.is_set():
            with self.lock:
                self.unexpected_errors.append(error)

    def backlog(self):
        with self.lock:
            return len(self.created) - len(self.claims)

    def operations(self):
        with self.lock:
            return len(self.created) + len(self.claims) + len(self.completed)


def creator(server, task_queue_id, acknowledged):
    client = server.queue()
    while not acknowledged.stop.is_set():
        if acknowledged.backlog() >= MAX_BACKLOG:
            time.sleep(0.01)
            continue
        task_id = new_task_id()
        definition = task_definition(task_queue_id)
        try:
            client.createTask(task_id, definition)
        except Exception as error:
            acknowledged.failed(error)
            return
        with acknowledged.lock:
            acknowledged.created[task_id] = definition


def claim_work(client, task_queue_id, worker_id, tasks):
    reply = client.claimWork(task_queue_id, {"workerGroup": "crash", "workerId": worker_id,
                                             "tasks": tasks})
    return [(c["status"]["taskId"], c["runId"]) for c in reply["tasks"]]


def worker(server, task_queue_id, worker_id, acknowledged):
    """Claims one run at a time and completes about half of them, leaving the rest running."""
    client = server.queue()
    rng = random.Random(worker_id)
    while not acknowledged.stop.is_set():
        try:
            claimed = claim_work(client, task_queue_id, worker_id, 1)
        except Exception as error:
            acknowledged.failed(error)
            return
        with acknowledged.lock:
            acknowledged.claims.extend((t, r, worker_id) for t, r in claimed)
        for task_id, run_id in claimed:
            if rng.random() < 0.5:
                continue
            with acknowledged.lock:
                acknowledged.completing.add((task_id, run_id))
            try:
                client.reportCompleted(task_id, str(run_id))
            except Exception as error:
                acknowledged.failed(error)
                return
            with acknowledged.lock:
                acknowledged.completed.add((task_id, run_id))


def run_load_and_kill(server, task_queue_id, operations=400):
    """Runs the load until `operations` calls are acknowledged and claims made early in it
    have expired (so the log holds expiries and retries too), then kills the server."""
    acknowledged = Acknowledged()
    threads = [threading.Thread(target=creator, args=(server, task_queue_id, acknowledged))
               for _ in range(CREATORS)]
    threads += [threading.Thread(target=worker,
                                 args=(server, task_queue_id, f"before-{i}", acknowledged))
                for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    long_enough = time.monotonic() + CLAIM_TIMEOUT + 1

    def enough():
        return acknowledged.operations() >= operations and time.monotonic() > long_enough

    try:
        assert wait_for(enough, timeout=30), \
            f"only {acknowledged.operations()} operations acknowledged in 30 s"
    finally:
        acknowledged.killing.set()
        server.kill()
        acknowledged.stop.set()
        for thread in threads:
            thread.join()
    assert not acknowledged.unexpected_errors, acknowledged.unexpected_errors
    return acknowledged


def drain(server, task_queue_id, known_task_ids, restarted_at):
    """Workers claim and complete everything until the queue is empty, all known tasks are
    completed and every claim made before the crash has had time to expire. Returns the
    claims as (taskId, runId, workerId)."""
    claims, errors = [], []
    lock = threading.Lock()
    done = threading.Event()

    def drainer(worker_id):
        client = server.queue()
        while not done.is_set():
            try:
                claimed = claim_work(client, task_queue_id, worker_id, 4)
                with lock:
                    claims.extend((t, r, worker_id) for t, r in claimed)
                for task_id, run_id in claimed:
                    client.reportCompleted(task_id, str(run_id))
            except Exception as error:
                with lock:
                    errors.append(error)
                return

    threads = [threading.Thread(target=drainer, args=(f"after-{i}",)) for i in range(DRAINERS)]
    for thread in threads:
        thread.start()
    queue = server.queue()

    def drained():
        # A pre-crash claim, acknowledged or not, ended before `restarted_at + CLAIM_TIMEOUT`;
        # only after that can no retry run still appear.
        return (time.monotonic() > restarted_at + CLAIM_TIMEOUT + 1
                and queue.pendingTasks(task_queue_id)["pendingTasks"] == 0
                and all(queue.status(task_id)["status"]["state"] == "completed"
                        for task_id in known_task_ids))

    try:
        finished = wait_for(drained, timeout=30)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert finished, "the queue did not drain within 30 s"
    return claims


def statuses(queue, task_ids):
    return {task_id: queue.status(task_id)["status"] for task_id in task_ids}


def is_expired_and_retried(runs, run_id):
    run = runs[run_id]
    return (run["state"] == "exception" and run["reasonResolved"] == "claim-expired"
            and len(runs) > run_id + 1 and runs[run_id + 1]["reasonCreated"] == "retry")


def check_claims_right_after_restart(acknowledged, status):
    """An acknowledged claim not being completed keeps its run and its worker until it
    expires; one that already expired has a retry run."""
    for task_id, run_id, worker_id in acknowledged.claims:
        runs = status[task_id]["runs"]
        run = runs[run_id]
        assert run["workerId"] == worker_id, (task_id, run_id, worker_id, runs)
        if (task_id, run_id) in acknowledged.completed:
            assert run["state"] == "completed", (task_id, run_id, runs)
        elif (task_id, run_id) in acknowledged.completing:
            # The report may or may not have been written before the kill.
            assert (run["state"] in ("running", "completed")
                    or is_expired_and_retried(runs, run_id)), (task_id, run_id, runs)
        else:
            assert run["state"] == "running" or is_expired_and_retried(runs, run_id), \
                (task_id, run_id, worker_id, runs)


def check_claims_after_drain(acknowledged, status):
    """By now every acknowledged claim left running has expired and been retried."""
    for task_id, run_id, worker_id in acknowledged.claims:
        runs = status[task_id]["runs"]
        assert runs[run_id]["workerId"] == worker_id, (task_id, run_id, worker_id, runs)
        if (task_id, run_id) in acknowledged.completed:
            assert runs[run_id]["state"] == "completed", (task_id, run_id, runs)
        elif (task_id, run_id) not in acknowledged.completing:
            assert is_expired_and_retried(runs, run_id), (task_id, run_id, worker_id, runs)


def check_no_run_handed_out_twice(claims_before, claims_after):
    again = {(t, r) for t, r, _ in claims_before} & {(t, r) for t, r, _ in claims_after}
    assert not again, f"runs claimed before the kill handed out again after it: {again}"
    workers = collections.defaultdict(list)
    for task_id, run_id, worker_id in claims_before + claims_after:
        workers[(task_id, run_id)].append(worker_id)
    twice = {run: ids for run, ids in workers.items() if len(ids) > 1}
    assert not twice, f"runs handed out more than once, (taskId, runId): workerIds: {twice}"


def test_kill_under_mixed_load_loses_no_acknowledged_call_and_hands_out_no_run_twice(
        crash_server, task_queue_id):
    server = crash_server.start()
    acknowledged = run_load_and_kill(server, task_queue_id)
    assert len(acknowledged.created) >= 100 and len(acknowledged.claims) >= 30, \
        (len(acknowledged.created), len(acknowledged.claims))
    assert acknowledged.completed

    server.start()
    restarted_at = time.monotonic()
    queue = server.queue()
    # A claimed task may have been created by a call whose reply the kill cut off.
    known_task_ids = set(acknowledged.created) | {t for t, _, _ in acknowledged.claims}
    status = statuses(queue, known_task_ids)

    for task_id, definition in acknowledged.created.items():
        task = queue.task(task_id)
        assert task["metadata"] == definition["metadata"]
        assert task["taskQueueId"] == task_queue_id
    check_claims_right_after_restart(acknowledged, status)
    pending = [t for t in acknowledged.created if status[t]["state"] == "pending"]
    assert pending, "the load left no pending task to claim after the restart"
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] >= len(pending)

    drained = drain(server, task_queue_id, known_task_ids, restarted_at)
    check_no_run_handed_out_twice(acknowledged.claims, drained)
    claimed_after = {(t, r) for t, r, _ in drained}
    assert set(pending) <= {t for t, _ in claimed_after}

    status = statuses(queue, known_task_ids | {t for t, _ in claimed_after})
    check_claims_after_drain(acknowledged, status)
    for task_id, run_id, worker_id in drained:
        assert status[task_id]["runs"][run_id]["workerId"] == worker_id
    assert all(s["state"] == "completed" for s in status.values())
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 0


# The store is written only by its one-second timer, so at every kill it lags the log.
LAGGING_CONFIG = f"""
[queue]
claim_timeout_seconds = 30
snapshot_every_events = 1000000

[api]
claim_work_timeout_seconds = 1
"""

ROUNDS = 30


def store_and_log_ends(data_dir):
    """Per partition, (the offset its store reflects, the end of its durable log), read from
    `taskfold log inspect` with the server down."""
    import re
    import subprocess

    from conftest import BINARY

    report = subprocess.run([BINARY, "log", "inspect", "--data-dir", data_dir],
                            capture_output=True, text=True, check=True).stdout
    ends = [int(end) for end in re.findall(r"^partition \d+: offsets \d+\.\.(\d+)", report, re.M)]
    stores = [int(at) for at in re.findall(r"store: reflects offsets \.\.(\d+)", report)]
    return list(zip(stores, ends)), report


def test_thirty_kills_at_random_moments_with_the_store_lagging(tmp_path_factory, task_queue_id):
    server = make_server(tmp_path_factory, LAGGING_CONFIG)
    rng = random.Random(17)
    group = new_task_id()
    created, completed, claims = set(), set(), {}
    try:
        for round_number in range(ROUNDS):
            server.start()
            queue = server.queue()
            # Everything acknowledged in earlier rounds is there, as it was last seen.
            listed = {}
            token = None
            while created:
                query = {"limit": 1000, **({"continuationToken": token} if token else {})}
                page = queue.listTaskGroup(group, query=query)
                listed.update({entry["status"]["taskId"]: entry["status"]
                               for entry in page["tasks"]})
                token = page.get("continuationToken")
                if not token:
                    break
            missing = created - set(listed)
            assert not missing, f"round {round_number}: acknowledged tasks lost: {missing}"
            for (task_id, run_id), worker_id in claims.items():
                run = listed[task_id]["runs"][run_id]
                assert run["workerId"] == worker_id, (round_number, task_id, run_id, run)
                if (task_id, run_id) in completed:
                    assert run["state"] == "completed", (round_number, task_id, run_id, run)

            acknowledged = Acknowledged()
            stop_at = time.monotonic() + rng.uniform(0.2, 1.5)

            def create():
                client = server.queue()
                while not acknowledged.stop.is_set():
                    task_id = new_task_id()
                    try:
                        client.createTask(task_id, task_definition(task_queue_id,
                                                                   taskGroupId=group))
                    except Exception as error:
                        acknowledged.failed(error)
                        return
                    with acknowledged.lock:
                        acknowledged.created[task_id] = None

            threads = [threading.Thread(target=create) for _ in range(3)]
            threads += [threading.Thread(target=worker, args=(
                server, task_queue_id, f"r{round_number}-{i}", acknowledged)) for i in range(2)]
            for thread in threads:
                thread.start()
            while time.monotonic() < stop_at:
                time.sleep(0.01)
            acknowledged.killing.set()
            server.kill()
            acknowledged.stop.set()
            for thread in threads:
                thread.join()
            assert not acknowledged.unexpected_errors, acknowledged.unexpected_errors

            created |= set(acknowledged.created)
            completed |= acknowledged.completed
            for task_id, run_id, worker_id in acknowledged.claims:
                earlier = claims.setdefault((task_id, run_id), worker_id)
                assert earlier == worker_id, \
                    f"run {task_id}/{run_id} claimed by {earlier} and again by {worker_id}"
                created.add(task_id)

            ends, report = store_and_log_ends(server.data_dir)
            assert ends, report
            for store, end in ends:
                assert store <= end, f"a store ahead of the durable log:\n{report}"
        assert len(created) > 100 and completed, (len(created), len(completed))
    finally:
        server.stop()
