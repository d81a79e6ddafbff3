"""What happens with time: claims that run out, deadlines that pass, tasks that expire, long
polls that end empty, and parked workers sharing the work that arrives."""

import datetime
import os
import subprocess
import sys
import threading
import time

import requests
import taskcluster

from conftest import (ROOT_CLIENT, ROOT_TOKEN, claim, failure, new_task_id, task_definition,
                      wait_for)


def test_an_expired_claim_is_retried(quick_server, task_queue_id):
    queue = quick_server.queue()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, retries=1))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id

    def retried():
        status = queue.status(task_id)["status"]
        return status if len(status["runs"]) == 2 else None

    status = wait_for(retried)
    assert status, queue.status(task_id)
    assert status["runs"][0]["state"] == "exception"
    assert status["runs"][0]["reasonResolved"] == "claim-expired"
    assert status["runs"][1]["reasonCreated"] == "retry"
    assert status["retriesLeft"] == 0
    [again] = claim(queue, task_queue_id)
    assert again["runId"] == 1


def test_a_passed_deadline_resolves_the_task(quick_server, task_queue_id):
    queue = quick_server.queue()
    now = datetime.datetime.now(datetime.timezone.utc)
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(
        task_queue_id, created=taskcluster.stringDate(now),
        deadline=taskcluster.stringDate(now + datetime.timedelta(seconds=2))))

    def resolved():
        status = queue.status(task_id)["status"]
        return status if status["state"] == "exception" else None

    status = wait_for(resolved)
    assert status, queue.status(task_id)
    assert status["runs"][-1]["reasonResolved"] == "deadline-exceeded"
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 0


def test_an_expired_task_is_forgotten_with_its_blobs_for_good(fresh_server, task_queue_id):
    queue = fresh_server.start().queue()
    now = datetime.datetime.now(datetime.timezone.utc)
    group_id = new_task_id()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(
        task_queue_id, taskGroupId=group_id, created=taskcluster.stringDate(now),
        deadline=taskcluster.stringDate(now + datetime.timedelta(seconds=3)),
        expires=taskcluster.stringDate(now + datetime.timedelta(seconds=4))))
    keeper = new_task_id()
    queue.createTask(keeper, task_definition(task_queue_id, taskGroupId=group_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    put_url = queue.createArtifact(task_id, "0", "public/out.txt", {
        "storageType": "s3", "contentType": "text/plain",
        "expires": taskcluster.stringDate(now + datetime.timedelta(seconds=4))})["putUrl"]
    assert requests.put(put_url, data=b"out", headers={"Content-Type": "text/plain"}).ok
    queue.reportCompleted(task_id, "0")
    blobs = os.path.join(fresh_server.data_dir, "blobs", task_id)
    assert os.listdir(blobs)

    def gone():
        try:
            queue.status(task_id)
        except taskcluster.exceptions.TaskclusterRestFailure as error:
            return error.status_code == 404
        return False

    assert wait_for(gone, timeout=20)
    assert failure(queue.task, task_id).status_code == 404
    assert [entry["status"]["taskId"] for entry in queue.listTaskGroup(group_id)["tasks"]] == \
        [keeper]
    assert wait_for(lambda: not os.path.exists(blobs))
    # A task depending on it now is refused, as one depending on a task that never existed.
    error = failure(queue.createTask, new_task_id(),
                    task_definition(task_queue_id, dependencies=[task_id]))
    assert error.status_code == 400

    # The expiry is in the log: a restart (from the snapshot or the log) does not bring it back.
    fresh_server.stop()
    queue = fresh_server.start().queue()
    assert failure(queue.task, task_id).status_code == 404
    assert queue.status(keeper)["status"]["state"] == "pending"


def test_an_empty_long_poll_ends_with_no_tasks(quick_server, task_queue_id):
    started = time.monotonic()
    assert claim(quick_server.queue(), task_queue_id) == []
    assert time.monotonic() - started >= 0.9


def test_parked_workers_share_the_work_that_arrives(server, queue, task_queue_id):
    results = []
    lock = threading.Lock()

    def worker(worker_id):
        tasks = claim(server.queue(), task_queue_id, worker_id=worker_id)
        with lock:
            results.append(tasks)

    workers = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for thread in workers:
        thread.start()
    time.sleep(1)  # let all three park
    created = {new_task_id() for _ in range(3)}
    for task_id in created:
        queue.createTask(task_id, task_definition(task_queue_id))
    for thread in workers:
        thread.join(timeout=30)
    claimed = [t["status"]["taskId"] for tasks in results for t in tasks]
    # Each task went to exactly one worker, and no worker came back empty while work waited.
    assert sorted(claimed) == sorted(created)
    assert all(len(tasks) == 1 for tasks in results)


def test_a_worker_that_goes_away_while_parked_gets_no_task_claimed(server, queue,
                                                                   task_queue_id):
    """A claimWork whose client is killed while it waits claims nothing: the task that arrives
    afterwards stays pending, and the next worker gets it (instead of it sitting in a run nobody
    holds until the claim expires)."""
    parked = subprocess.Popen([sys.executable, "-c", f"""
import taskcluster
queue = taskcluster.Queue({{"rootUrl": {server.root_url!r}, "maxRetries": 0,
    "credentials": {{"clientId": {ROOT_CLIENT!r}, "accessToken": {ROOT_TOKEN!r}}}}})
queue.claimWork({task_queue_id!r}, {{"workerGroup": "wg", "workerId": "gone", "tasks": 1}})
"""])
    try:
        time.sleep(1.5)  # let the claim park
    finally:
        parked.kill()
        parked.wait()
    time.sleep(0.5)  # let the server see the connection end
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    time.sleep(0.5)
    status = queue.status(task_id)["status"]
    assert [run["state"] for run in status["runs"]] == ["pending"], status
    [claimed] = claim(queue, task_queue_id, worker_id="here")
    assert claimed["status"]["taskId"] == task_id
    assert claimed["status"]["runs"][0]["workerId"] == "here"


def test_claim_work_takes_as_many_as_asked_when_they_wait(queue, task_queue_id):
    created = {new_task_id() for _ in range(5)}
    for task_id in created:
        queue.createTask(task_id, task_definition(task_queue_id))
    claimed = claim(queue, task_queue_id, tasks=3)
    assert len(claimed) == 3
    assert {c["status"]["taskId"] for c in claimed} < created
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 2
