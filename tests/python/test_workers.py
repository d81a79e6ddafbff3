"""What the queue learns about task queues and workers from claimWork: listTaskQueues and
getTaskQueue, counts and the pending and claimed listings, listWorkers and getWorker with the
runs a worker claimed, quarantine (a quarantined worker gets no work, others do, and lifting it
lets the worker claim again), and declareWorker. Also the deprecated endpoints the official
client still has: the provisioner and worker-type views of the task queues, and claimTask."""

import datetime
import time
import uuid

import taskcluster

from conftest import (ROOT_TOKEN, claim, failure, new_task_id, task_definition, date_in,
                      limited_queue, make_server, walk)

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


def test_task_queue_counts_and_listings_after_claim_work(server, queue, task_queue_id):
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
    # Several queues at once, in the order asked; any queue's scopes missing refuses them all.
    other = task_queue_id + "z"
    assert queue.taskQueueCountsBatch({"taskQueueIds": [other, task_queue_id]}) == {
        "taskQueueCounts": [queue.taskQueueCounts(other), queue.taskQueueCounts(task_queue_id)]}
    assert queue.taskQueueCountsBatch({"taskQueueIds": []}) == {"taskQueueCounts": []}
    for body in ({"taskQueueIds": [task_queue_id, task_queue_id]}, {"taskQueueIds": ["x"]},
                 {"taskQueueIds": [task_queue_id], "limit": 1}, {},
                 {"taskQueueIds": [f"interop/w{i}" for i in range(1001)]}):
        error = failure(queue.taskQueueCountsBatch, body)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError"), body
    # Counts are public reads (the anonymous role's).
    anonymous = server.queue(credentials={})
    assert anonymous.taskQueueCountsBatch({"taskQueueIds": [task_queue_id]}) == \
        {"taskQueueCounts": [queue.taskQueueCounts(task_queue_id)]}

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


# --- the deprecated endpoints -----------------------------------------------------------------

PROVISIONER_FIELDS = {"provisionerId", "stability", "description", "expires", "lastDateActive"}
WORKER_TYPE_FIELDS = PROVISIONER_FIELDS | {"workerType", "taskQueueId"}


def test_provisioners_and_worker_types_are_views_of_the_task_queues(server, queue):
    # A provisioner of its own, with two worker types a worker asked for work from.
    provisioner_id = f"p{uuid.uuid4().hex[:20]}"
    worker_types = ["wt-a", "wt-b"]
    for worker_type in worker_types:
        task_queue_id = f"{provisioner_id}/{worker_type}"
        create(queue, task_queue_id)
        claim_one(queue, task_queue_id, "w1")

    pages = walk(queue.listProvisioners, limit=1)
    assert all(len(page["provisioners"]) <= 1 for page in pages)
    listed = [entry for page in pages for entry in page["provisioners"]]
    ids = [entry["provisionerId"] for entry in listed]
    assert ids == sorted(set(ids)) and "interop" in ids
    [provisioner] = [entry for entry in listed if entry["provisionerId"] == provisioner_id]
    assert set(provisioner) == PROVISIONER_FIELDS
    latest = max(queue.getTaskQueue(f"{provisioner_id}/{worker_type}")["lastDateActive"]
                 for worker_type in worker_types)
    assert provisioner["lastDateActive"] == latest
    assert provisioner["expires"] > date_in(datetime.timedelta())
    assert queue.getProvisioner(provisioner_id) == provisioner

    pages = walk(queue.listWorkerTypes, provisioner_id, limit=1)
    assert len(pages) >= 2 and all(len(page["workerTypes"]) <= 1 for page in pages)
    listed = [entry for page in pages for entry in page["workerTypes"]]
    assert [entry["workerType"] for entry in listed] == worker_types
    for entry, worker_type in zip(listed, worker_types):
        task_queue_id = f"{provisioner_id}/{worker_type}"
        assert set(entry) == WORKER_TYPE_FIELDS
        assert (entry["provisionerId"], entry["taskQueueId"]) == (provisioner_id, task_queue_id)
        assert {key: entry[key] for key in queue.getTaskQueue(task_queue_id)} == \
            queue.getTaskQueue(task_queue_id)
        assert queue.getWorkerType(provisioner_id, worker_type) == entry
    assert queue.listWorkerTypes(provisioner_id + "x") == {"workerTypes": []}

    for call, args in ((queue.getProvisioner, (provisioner_id + "x",)),
                       (queue.getWorkerType, (provisioner_id, "wt-c"))):
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound"), args
    error = failure(queue.getProvisioner, "no.dots")
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    # Each needs its own scope.
    limited = limited_queue(server, [f"queue:get-provisioner:{provisioner_id}"])
    assert limited.getProvisioner(provisioner_id) == provisioner
    error = failure(limited.listWorkerTypes, provisioner_id)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert f"queue:list-worker-types:{provisioner_id}" in error.body["message"]


def test_claim_task_claims_one_given_run(server, queue, task_queue_id):
    provisioner_id, worker_type = task_queue_id.split("/")
    task_id = create(queue, task_queue_id)
    worker = {"workerGroup": "wg", "workerId": "w1"}

    # The scopes name the task's queue and the worker.
    limited = limited_queue(server, [f"queue:claim-task:{task_queue_id}"])
    error = failure(limited.claimTask, task_id, "0", worker)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    assert "queue:worker-id:wg/w1" in error.body["message"]

    claimed = queue.claimTask(task_id, "0", worker)
    assert set(claimed) == {"status", "runId", "workerGroup", "workerId", "takenUntil", "task",
                            "credentials"}
    assert (claimed["runId"], claimed["workerGroup"], claimed["workerId"]) == (0, "wg", "w1")
    assert claimed["status"]["state"] == "running"
    assert claimed["task"] == queue.task(task_id)
    # It is no longer pending (what claimWork would take from), and the claim is the worker's.
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 0
    assert queue.listPendingTasks(task_queue_id)["tasks"] == []
    [listed] = queue.listClaimedTasks(task_queue_id)["tasks"]
    assert (listed["taskId"], listed["workerId"]) == (task_id, "w1")
    assert queue.getWorker(provisioner_id, worker_type, "wg", "w1")["recentTasks"] == \
        [{"taskId": task_id, "runId": 0}]

    for args, status in (((task_id, "0", worker), 409), ((task_id, "1", worker), 404),
                         ((new_task_id(), "0", worker), 404),
                         ((task_id, "0", {"workerGroup": "wg"}), 400),
                         ((task_id, "0", {**worker, "tasks": 1}), 400)):
        error = failure(queue.claimTask, *args)
        assert error.status_code == status, (args, error.body)

    # Its credentials are the run's, as claimWork's are.
    credentials = claimed["credentials"]
    as_run = server.queue(credentials={key: credentials[key]
                                       for key in ("clientId", "accessToken", "certificate")})
    assert as_run.reportCompleted(task_id, "0")["status"]["state"] == "completed"

    # A quarantined worker is answered `{}`, and the run stays pending.
    quarantined = create(queue, task_queue_id)
    queue.quarantineWorker(provisioner_id, worker_type, "wg", "w1",
                           {"quarantineUntil": date_in(datetime.timedelta(hours=1))})
    assert queue.claimTask(quarantined, "0", worker) == {}
    assert queue.status(quarantined)["status"]["state"] == "pending"
    # Past the deadline, though, the answer is the deadline's 409, as for anyone.
    late = new_task_id()
    queue.createTask(late, task_definition(task_queue_id, deadline=date_in(
        datetime.timedelta(seconds=1))))
    time.sleep(1.5)
    error = failure(queue.claimTask, late, "0", worker)
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    assert "deadline" in error.body["message"]


def test_a_counts_batch_needs_the_scopes_of_every_queue(tmp_path_factory, task_queue_id):
    # A deployment whose anonymous role grants nothing, so counts need scopes.
    server = make_server(tmp_path_factory, '[[auth.roles]]\nrole_id = "anonymous"\nscopes = []\n')
    server.start()
    try:
        other = task_queue_id + "z"
        limited = limited_queue(server, [f"queue:pending-count:{task_queue_id}",
                                         f"queue:claimed-count:{task_queue_id}"])
        counts = limited.taskQueueCountsBatch({"taskQueueIds": [task_queue_id]})
        assert [entry["taskQueueId"] for entry in counts["taskQueueCounts"]] == [task_queue_id]
        error = failure(limited.taskQueueCountsBatch, {"taskQueueIds": [task_queue_id, other]})
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
        assert f"queue:pending-count:{other}" in error.body["message"]
        assert f"queue:claimed-count:{other}" in error.body["message"]
    finally:
        server.stop()
