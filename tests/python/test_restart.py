"""`kill -9` the server under load and start it again on the same data directory: every
acknowledged call must have survived, and the queue must carry on from there."""

import datetime
import threading
import time

from conftest import claim, date_in, new_task_id, task_definition, wait_for


def test_restart_after_kill_keeps_every_acknowledged_task(fresh_server, task_queue_id):
    server = fresh_server.start()
    queue = server.queue()

    # Some history before the load: a completed task, a running one, a canceled one.
    completed, running, canceled = new_task_id(), new_task_id(), new_task_id()
    other_queue = task_queue_id + "-x"
    for task_id in (completed, running):
        queue.createTask(task_id, task_definition(other_queue))
        [claimed] = claim(queue, other_queue)
        if claimed["status"]["taskId"] == completed:
            queue.reportCompleted(completed, "0")
    queue.createTask(canceled, task_definition(other_queue))
    queue.cancelTask(canceled)
    before = {task_id: queue.status(task_id)["status"] for task_id in (completed, running, canceled)}

    # Load: writers create tasks until the server dies under them.
    acknowledged = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer():
        client = server.queue()
        while not stop.is_set():
            task_id = new_task_id()
            definition = task_definition(task_queue_id)
            try:
                client.createTask(task_id, definition)
            except Exception:
                return
            with lock:
                acknowledged[task_id] = definition

    writers = [threading.Thread(target=writer) for _ in range(8)]
    for thread in writers:
        thread.start()
    while len(acknowledged) < 200:
        time.sleep(0.05)
    server.kill()
    stop.set()
    for thread in writers:
        thread.join()

    server.start()
    queue = server.queue()
    for task_id, definition in acknowledged.items():
        task = queue.task(task_id)
        assert task["metadata"] == definition["metadata"]
        assert queue.status(task_id)["status"]["state"] == "pending"
    for task_id, status in before.items():
        assert queue.status(task_id)["status"] == status

    # Pending work is still claimable, each run once; the running task keeps its claim.
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] >= len(acknowledged)
    claimed = claim(queue, task_queue_id, tasks=32)
    assert claimed
    assert len({c["status"]["taskId"] for c in claimed}) == len(claimed)
    assert queue.reclaimTask(running, "0")["status"]["state"] == "running"
    assert queue.reportCompleted(running, "0")["status"]["state"] == "completed"


def test_claims_that_run_out_while_the_server_is_down_expire_after_restart(
        fresh_quick_server, task_queue_id):
    server = fresh_quick_server.start()
    queue = server.queue()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    server.kill()
    time.sleep(3)  # longer than the 2 s claim
    server.start()
    queue = server.queue()

    def retried():
        return len(queue.status(task_id)["status"]["runs"]) == 2

    assert wait_for(retried), queue.status(task_id)
    runs = queue.status(task_id)["status"]["runs"]
    assert runs[0]["reasonResolved"] == "claim-expired"
    assert runs[1]["state"] == "pending"
    [again] = claim(queue, task_queue_id)
    assert (again["status"]["taskId"], again["runId"]) == (task_id, 1)


def test_a_quarantined_worker_keeps_its_dates_across_a_restart(fresh_server, task_queue_id):
    """The log keeps a worker's quarantine; a restart brings the worker back as of that
    quarantine, not as active at the restart (which would keep it listed a day longer)."""
    server = fresh_server.start()
    queue = server.queue()
    provisioner_id, worker_type = task_queue_id.split("/")
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    claim(queue, task_queue_id, worker_id="w1")
    queue.reportCompleted(task_id, "0")
    until = date_in(datetime.timedelta(hours=1))
    queue.quarantineWorker(provisioner_id, worker_type, "wg", "w1",
                           {"quarantineUntil": until, "quarantineInfo": "bad disk"})
    time.sleep(1.1)
    restarted = date_in(datetime.timedelta())
    server.stop()
    server.start()
    worker = server.queue().getWorker(provisioner_id, worker_type, "wg", "w1")
    assert worker["quarantineUntil"] == until
    assert worker["quarantineDetails"][-1]["quarantineInfo"] == "bad disk"
    assert worker["lastDateActive"] < restarted, (worker, restarted)
    assert worker["firstClaim"] < restarted, (worker, restarted)


def test_a_dependent_waits_across_a_restart_for_a_rerun_of_its_failed_dependency(
        fresh_server, task_queue_id):
    server = fresh_server.start()
    queue = server.queue()
    dependency, dependent = new_task_id(), new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id))
    queue.createTask(dependent, task_definition(task_queue_id + "-d", dependencies=[dependency]))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == dependency
    queue.reportFailed(dependency, "0")

    # The replay registers the dependent again; the failure it finds satisfies nothing.
    server.kill()
    server.start()
    queue = server.queue()
    assert queue.status(dependent)["status"]["state"] == "unscheduled"
    queue.rerunTask(dependency)
    [claimed] = claim(queue, task_queue_id)
    assert (claimed["status"]["taskId"], claimed["runId"]) == (dependency, 1)
    queue.reportCompleted(dependency, "1")
    assert wait_for(lambda: queue.status(dependent)["status"]["state"] == "pending"), \
        queue.status(dependent)
