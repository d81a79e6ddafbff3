"""What the queue learns about task queues and workers from claimWork: listTaskQueues and
getTaskQueue, counts and the pending and claimed listings, listWorkers and getWorker with the
runs a worker claimed, quarantine (a quarantined worker gets no work, others do, and lifting it
lets the worker claim again), and declareWorker."""

import datetime
import time

import taskcluster

from conftest import ROOT_TOKEN, claim, failure, new_task_id, task_definition, date_in, walk

WORKER_FIELDS = {"provisionerId", "workerType", "workerGroup", "workerId", "recentTasks",
                 "expires", "firstClaim"}




def create(queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    return task_id


def claim_one(queue, task_queue_id, worker_id):
    """Claims the one pending task as `worker_id`; its taskId."""
    [claimed] = claim(queue, task_queue_id, worker_id=worker_id)
    return claimed["status"]["taskId"]


def test_task_queue_counts_and_listings_after_claim_work(queue, task_queue_id):
    first, second, third = (create(queue, task_queue_id) for _ in range(3))
    # Equal priorities: claimed in the order they were created.
    assert claim_one(queue, task_queue_id, "w1") == first

    pages = walk(queue.listTaskQueues, limit=1000)
    entries = [tq for page in pages for tq in page["taskQueues"]
               if tq["taskQueueId"] == task_queue_id]
    assert len(entries) == 1
    assert set(entries[0]) == {"taskQueueId", "stability", "description", "expires",
                               "lastDateActive"}
    assert entries[0]["stability"] in ("experimental", "stable", "deprecated")
    task_queue = queue.getTaskQueue(task_queue_id)
    assert set(task_queue) == set(entries[0])
    assert task_queue["taskQueueId"] == task_queue_id
    assert task_queue["expires"] > date_in(datetime.timedelta())
    error = failure(queue.getTaskQueue, "interop/" + task_queue_id.split("/")[1] + "x")
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")

    counts = queue.taskQueueCounts(task_queue_id)
    assert (counts["taskQueueId"], counts["pendingTasks"], counts["claimedTasks"]) == \
        (task_queue_id, 2, 1)

    pending = queue.listPendingTasks(task_queue_id)["tasks"]
    assert sorted((p["taskId"], p["runId"]) for p in pending) == sorted([(second, 0), (third, 0)])
    for entry in pending:
        assert set(entry) == {"taskId", "runId", "task", "inserted"}
        assert entry["task"] == queue.task(entry["taskId"])
    pages = walk(queue.listPendingTasks, task_queue_id, limit=1)
    assert all(len(page["tasks"]) <= 1 for page in pages)
    walked = [p["taskId"] for page in pages for p in page["tasks"]]
    assert sorted(walked) == sorted([second, third])

    [claimed] = queue.listClaimedTasks(task_queue_id)["tasks"]
    assert set(claimed) == {"taskId", "runId", "workerGroup", "workerId", "claimed", "task"}
    assert (claimed["taskId"], claimed["runId"], claimed["workerGroup"], claimed["workerId"]) == \
        (first, 0, "wg", "w1")
    assert claimed["task"] == queue.task(first)

    queue.reportCompleted(first, "0")
    assert queue.listClaimedTasks(task_queue_id)["tasks"] == []
    # A queue nobody used counts nothing.
    unused = queue.taskQueueCounts(task_queue_id + "z")
    assert (unused["pendingTasks"], unused["claimedTasks"]) == (0, 0)
    provisioner_id, worker_type = task_queue_id.split("/")
    assert queue.taskQueueCounts(task_queue_id) == {
        "provisionerId": provisioner_id, "workerType": worker_type,
        "taskQueueId": task_queue_id, "pendingTasks": 2, "claimedTasks": 0}
    # Pending tasks are listed in the order they were inserted, page after page.
    assert [p["taskId"] for p in pending] == [second, third]
    assert walked == [second, third]


def test_workers_and_the_runs_they_claimed(queue, task_queue_id):
    provisioner_id, worker_type = task_queue_id.split("/")
    first = create(queue, task_queue_id)
    claim_one(queue, task_queue_id, "w1")
    first_claim = queue.getWorker(provisioner_id, worker_type, "wg", "w1")["firstClaim"]
    second = create(queue, task_queue_id)
    claim_one(queue, task_queue_id, "w1")
    third = create(queue, task_queue_id)
    claim_one(queue, task_queue_id, "w2")

    worker = queue.getWorker(provisioner_id, worker_type, "wg", "w1")
    assert WORKER_FIELDS <= set(worker)
    assert (worker["provisionerId"], worker["workerType"], worker["workerGroup"],
            worker["workerId"]) == (provisioner_id, worker_type, "wg", "w1")
    assert worker["recentTasks"] == [{"taskId": first, "runId": 0}, {"taskId": second, "runId": 0}]
    assert worker["firstClaim"] == first_claim
    assert worker["expires"] > date_in(datetime.timedelta())

    workers = queue.listWorkers(provisioner_id, worker_type)
    assert "continuationToken" not in workers
    by_id = {w["workerId"]: w for w in workers["workers"]}
    assert set(by_id) == {"w1", "w2"}
    assert by_id["w1"]["workerGroup"] == "wg"
    assert by_id["w1"]["firstClaim"] == first_claim
    assert by_id["w1"]["latestTask"] == {"taskId": second, "runId": 0}
    assert by_id["w2"]["latestTask"] == {"taskId": third, "runId": 0}
    assert "quarantineUntil" not in by_id["w1"]
    pages = walk(queue.listWorkers, provisioner_id, worker_type, limit=1)
    assert sorted(w["workerId"] for page in pages for w in page["workers"]) == ["w1", "w2"]

    for args in (("wg", "nobody"), ("other", "w1")):
        error = failure(queue.getWorker, provisioner_id, worker_type, *args)
        assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")
    error = failure(queue.getWorker, provisioner_id, worker_type + "x", "wg", "w1")
    assert error.status_code == 404


def test_quarantine_keeps_a_worker_from_work_until_lifted(quick_server, task_queue_id):
    queue = quick_server.queue()
    provisioner_id, worker_type = task_queue_id.split("/")
    until = date_in(datetime.timedelta(hours=1))
    quarantine = {"quarantineUntil": until, "quarantineInfo": "its disk is failing"}
    error = failure(queue.quarantineWorker, provisioner_id, worker_type, "wg", "w1", quarantine)
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")

    # Claims expire after 2 s on this server: each run is resolved right away.
    first = create(queue, task_queue_id)
    assert claim_one(queue, task_queue_id, "w1") == first
    queue.reportCompleted(first, "0")

    worker = queue.quarantineWorker(provisioner_id, worker_type, "wg", "w1", quarantine)
    assert WORKER_FIELDS <= set(worker)
    assert (worker["workerId"], worker["quarantineUntil"]) == ("w1", until)
    assert queue.getWorker(provisioner_id, worker_type, "wg", "w1")["quarantineUntil"] == until

    waiting = create(queue, task_queue_id)
    started = time.monotonic()
    assert claim(queue, task_queue_id, worker_id="w1") == []
    # A quarantined worker is held for the whole poll (1 s here), not answered at once.
    assert time.monotonic() - started >= 0.9
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 1
    assert claim_one(queue, task_queue_id, "w2") == waiting
    queue.reportCompleted(waiting, "0")

    def listed(**query):
        return {w["workerId"]: w for w in
                queue.listWorkers(provisioner_id, worker_type, query=query)["workers"]}

    quarantined = listed(quarantined="true")
    assert set(quarantined) == {"w1"}
    assert quarantined["w1"]["quarantineUntil"] == until
    assert set(listed(quarantined="false")) == {"w2"}
    assert set(listed()) == {"w1", "w2"}

    lifted = queue.quarantineWorker(provisioner_id, worker_type, "wg", "w1",
                                    {"quarantineUntil": date_in(-datetime.timedelta(minutes=1))})
    assert lifted["quarantineUntil"] < date_in(datetime.timedelta())
    assert listed(quarantined="true") == {}
    assert set(listed(quarantined="false")) == {"w1", "w2"}
    again = create(queue, task_queue_id)
    assert claim_one(queue, task_queue_id, "w1") == again
    queue.reportCompleted(again, "0")


def test_declare_worker_sets_its_expiry(server, queue, task_queue_id):
    provisioner_id, worker_type = task_queue_id.split("/")
    create(queue, task_queue_id)
    claim_one(queue, task_queue_id, "w1")
    expires = date_in(datetime.timedelta(days=3))
    worker = queue.declareWorker(provisioner_id, worker_type, "wg", "w1", {"expires": expires})
    assert WORKER_FIELDS <= set(worker)
    assert (worker["workerId"], worker["expires"]) == ("w1", expires)
    assert queue.getWorker(provisioner_id, worker_type, "wg", "w1")["expires"] == expires

    # One scope per declared property.
    now = datetime.datetime.now(datetime.timezone.utc)

    def with_scopes(scopes):
        credentials = taskcluster.createTemporaryCredentials(
            "static/taskcluster/root", ROOT_TOKEN, now - datetime.timedelta(minutes=1),
            now + datetime.timedelta(hours=1), scopes)
        return server.queue(credentials=credentials)

    later = date_in(datetime.timedelta(days=4))
    unrelated = with_scopes([f"queue:declare-worker:{task_queue_id}/wg/w2#expires"])
    error = failure(unrelated.declareWorker, provisioner_id, worker_type, "wg", "w1",
                    {"expires": later})
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    allowed = with_scopes([f"queue:declare-worker:{task_queue_id}/wg/w1#expires"])
    assert allowed.declareWorker(provisioner_id, worker_type, "wg", "w1",
                                 {"expires": later})["expires"] == later
