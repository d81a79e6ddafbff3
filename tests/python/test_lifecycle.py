"""A task's life through the official client: create, read, claim, reclaim, resolve, and the
retries, reruns and cancellations around it."""

import re

from conftest import claim, failure, new_task_id, task_definition, wait_for


def test_create_claim_reclaim_complete(queue, task_queue_id):
    task_id = new_task_id()
    definition = task_definition(task_queue_id, routes=["index.interop.a"], tags={"k": "v"})
    status = queue.createTask(task_id, definition)["status"]
    assert status["taskId"] == task_id
    assert status["state"] == "pending"
    assert status["taskQueueId"] == task_queue_id
    assert (status["provisionerId"], status["workerType"]) == tuple(task_queue_id.split("/"))
    assert status["runs"] == [{"runId": 0, "state": "pending", "reasonCreated": "scheduled",
                               "scheduled": status["runs"][0]["scheduled"]}]

    task = queue.task(task_id)
    # Every field present, defaults filled in, dates in Taskcluster's millisecond form.
    assert task["schedulerId"] == "-"
    assert task["projectId"] == "none"
    assert task["taskGroupId"] == task_id
    assert task["priority"] == "lowest"
    assert task["retries"] == 5
    assert task["routes"] == ["index.interop.a"]
    assert task["tags"] == {"k": "v"}
    assert task["payload"] == definition["payload"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", task["expires"])
    assert queue.status(task_id)["status"] == status

    [claimed] = claim(queue, task_queue_id, tasks=4)
    assert claimed["runId"] == 0
    assert (claimed["workerGroup"], claimed["workerId"]) == ("wg", "w1")
    assert claimed["task"] == task
    run = claimed["status"]["runs"][0]
    assert run["state"] == "running"
    assert run["takenUntil"] == claimed["takenUntil"]
    credentials = claimed["credentials"]
    assert credentials["clientId"].startswith(f"task-client/{task_id}/0/on/wg/w1/until/")
    assert isinstance(credentials["certificate"], str)

    reclaimed = queue.reclaimTask(task_id, "0")
    assert set(reclaimed) == {"status", "runId", "workerGroup", "workerId", "takenUntil",
                              "credentials"}
    assert reclaimed["takenUntil"] >= claimed["takenUntil"]
    assert reclaimed["status"]["runs"][0]["takenUntil"] == reclaimed["takenUntil"]

    completed = queue.reportCompleted(task_id, "0")["status"]
    assert completed["state"] == "completed"
    assert completed["runs"][0]["reasonResolved"] == "completed"
    # A repeat is fine; another resolution is not.
    assert queue.reportCompleted(task_id, "0")["status"] == completed
    error = failure(queue.reportFailed, task_id, "0")
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")
    error = failure(queue.reclaimTask, task_id, "0")
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")


def test_create_task_is_idempotent_and_a_different_definition_conflicts(queue, task_queue_id):
    task_id = new_task_id()
    definition = task_definition(task_queue_id)
    first = queue.createTask(task_id, definition)
    assert queue.createTask(task_id, definition) == first

    changed = dict(definition, metadata=dict(definition["metadata"], name="another"))
    error = failure(queue.createTask, task_id, changed)
    assert error.status_code == 409
    assert error.body["code"] == "RequestConflict"
    assert queue.task(task_id)["metadata"]["name"] == "interop"


def test_report_failed_then_rerun(queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    claim(queue, task_queue_id)
    assert queue.reportFailed(task_id, "0")["status"]["state"] == "failed"
    status = queue.rerunTask(task_id)["status"]
    assert status["state"] == "pending"
    assert status["runs"][1]["reasonCreated"] == "rerun"
    [claimed] = claim(queue, task_queue_id)
    assert claimed["runId"] == 1


def test_worker_shutdown_is_retried(queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, retries=2))
    claim(queue, task_queue_id)
    status = queue.reportException(task_id, "0", {"reason": "worker-shutdown"})["status"]
    assert status["state"] == "pending"
    assert status["retriesLeft"] == 1
    assert [(run["state"], run.get("reasonResolved"), run["reasonCreated"])
            for run in status["runs"]] == [
        ("exception", "worker-shutdown", "scheduled"),
        ("pending", None, "retry"),
    ]
    # A repeat with the same reason is fine.
    assert queue.reportException(task_id, "0", {"reason": "worker-shutdown"})["status"] == status
    [claimed] = claim(queue, task_queue_id, worker_id="w2")
    assert claimed["runId"] == 1

    status = queue.reportException(task_id, "1", {"reason": "malformed-payload"})["status"]
    assert status["state"] == "exception"
    assert len(status["runs"]) == 2

    error = failure(queue.reportException, task_id, "1", {"reason": "no-such-reason"})
    assert (error.status_code, error.body["code"]) == (400, "InputValidationError")


def test_cancel(queue, task_queue_id):
    pending = new_task_id()
    queue.createTask(pending, task_definition(task_queue_id))
    status = queue.cancelTask(pending)["status"]
    assert status["state"] == "exception"
    assert status["runs"][0]["reasonResolved"] == "canceled"
    assert queue.cancelTask(pending)["status"] == status
    # A canceled task no longer counts as pending work.
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 0

    running = new_task_id()
    queue.createTask(running, task_definition(task_queue_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == running
    assert queue.cancelTask(running)["status"]["runs"][0]["reasonResolved"] == "canceled"
    # The worker learns of it when it next reclaims.
    error = failure(queue.reclaimTask, running, "0")
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")


def test_dependencies_and_schedule_task(queue, task_queue_id):
    dependency = new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id))
    dependent = new_task_id()
    status = queue.createTask(dependent, task_definition(task_queue_id,
                                                         dependencies=[dependency]))["status"]
    assert status["state"] == "unscheduled"
    assert queue.scheduleTask(dependent)["status"]["state"] == "pending"
    assert queue.scheduleTask(dependent)["status"]["state"] == "pending"

    missing = new_task_id()
    error = failure(queue.createTask, new_task_id(),
                    task_definition(task_queue_id, dependencies=[missing]))
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    assert missing in error.body["message"]


def test_pending_count(queue, task_queue_id):
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 0
    for _ in range(3):
        queue.createTask(new_task_id(), task_definition(task_queue_id))
    counts = queue.pendingTasks(task_queue_id)
    provisioner_id, worker_type = task_queue_id.split("/")
    assert counts == {"provisionerId": provisioner_id, "workerType": worker_type,
                      "taskQueueId": task_queue_id, "pendingTasks": 3}
    claim(queue, task_queue_id)
    assert queue.pendingTasks(task_queue_id)["pendingTasks"] == 2


def test_priorities_order_claims(queue, task_queue_id):
    low = new_task_id()
    high = new_task_id()
    queue.createTask(low, task_definition(task_queue_id, priority="low"))
    queue.createTask(high, task_definition(task_queue_id, priority="very-high"))
    claimed = claim(queue, task_queue_id, tasks=2)
    assert claimed[0]["status"]["taskId"] == high
    # A caller may get fewer than it asked for; the other one is still there.
    claimed_ids = {c["status"]["taskId"] for c in claimed}
    if low not in claimed_ids:
        assert [c["status"]["taskId"] for c in claim(queue, task_queue_id)] == [low]


def test_dates_are_normalized_before_idempotency_compares_them(queue, task_queue_id):
    task_id = new_task_id()
    definition = task_definition(task_queue_id)
    # Whole seconds without a fraction: stored and returned with milliseconds.
    definition["created"] = definition["created"][:19] + "Z"
    definition["deadline"] = definition["deadline"][:19] + "Z"
    queue.createTask(task_id, definition)
    task = queue.task(task_id)
    assert task["created"] == definition["created"][:19] + ".000Z"
    assert task["deadline"] == definition["deadline"][:19] + ".000Z"
    # The same instants written the other way are the same task.
    again = dict(definition, created=task["created"], deadline=task["deadline"])
    assert queue.createTask(task_id, again)["status"]["taskId"] == task_id


def test_dependents_are_scheduled_when_their_dependencies_resolve(queue, task_queue_id):
    dependency = new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id, priority="highest"))
    needs_success, needs_resolution = new_task_id(), new_task_id()
    queue.createTask(needs_success, task_definition(task_queue_id, dependencies=[dependency]))
    queue.createTask(needs_resolution, task_definition(
        task_queue_id, dependencies=[dependency], requires="all-resolved"))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == dependency
    queue.reportFailed(dependency, "0")

    def scheduled():
        return queue.status(needs_resolution)["status"]["state"] == "pending"

    assert wait_for(scheduled)
    # A failed dependency never satisfies `all-completed`.
    assert queue.status(needs_success)["status"]["state"] == "unscheduled"

    # Created after its dependency completed: pending at once.
    completed = new_task_id()
    queue.createTask(completed, task_definition(task_queue_id, priority="highest"))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == completed
    queue.reportCompleted(completed, "0")
    late = new_task_id()
    status = queue.createTask(late, task_definition(task_queue_id, dependencies=[completed]))
    assert status["status"]["state"] == "pending"


def test_a_dependent_that_needs_success_waits_for_a_rerun_of_its_failed_dependency(
        queue, task_queue_id):
    # As in Taskcluster: a failure leaves an `all-completed` dependent unscheduled, and the
    # dependency's completion after a rerun schedules it.
    dependency = new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id))
    dependents_queue = task_queue_id + "-d"
    needs_success, needs_resolution = new_task_id(), new_task_id()
    queue.createTask(needs_success, task_definition(dependents_queue, dependencies=[dependency]))
    queue.createTask(needs_resolution, task_definition(
        dependents_queue, dependencies=[dependency], requires="all-resolved"))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == dependency
    queue.reportFailed(dependency, "0")
    assert wait_for(lambda: queue.status(needs_resolution)["status"]["state"] == "pending")
    assert queue.status(needs_success)["status"]["state"] == "unscheduled"

    assert queue.rerunTask(dependency)["status"]["state"] == "pending"
    [claimed] = claim(queue, task_queue_id)
    assert (claimed["status"]["taskId"], claimed["runId"]) == (dependency, 1)
    queue.reportCompleted(dependency, "1")
    assert wait_for(lambda: queue.status(needs_success)["status"]["state"] == "pending"), \
        queue.status(needs_success)
    assert queue.status(needs_success)["status"]["runs"][0]["reasonCreated"] == "scheduled"
    # The `all-resolved` dependent was scheduled once, by the failure.
    assert len(queue.status(needs_resolution)["status"]["runs"]) == 1


def test_retries_run_out_and_intermittent_tasks_retry_as_task_retry(queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, retries=1))
    claim(queue, task_queue_id)
    status = queue.reportException(task_id, "0", {"reason": "intermittent-task"})["status"]
    assert status["runs"][1]["reasonCreated"] == "task-retry"
    assert status["retriesLeft"] == 0
    claim(queue, task_queue_id)
    status = queue.reportException(task_id, "1", {"reason": "worker-shutdown"})["status"]
    # No retries left: the task stays resolved.
    assert status["state"] == "exception"
    assert len(status["runs"]) == 2


def test_a_repeated_create_answers_with_the_current_status(queue, task_queue_id):
    task_id = new_task_id()
    definition = task_definition(task_queue_id)
    queue.createTask(task_id, definition)
    claim(queue, task_queue_id)
    status = queue.createTask(task_id, definition)["status"]
    assert status["state"] == "running"
    assert len(status["runs"]) == 1
