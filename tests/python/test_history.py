"""`GET /task/<taskId>/history`, a Taskfold extension of the Queue API, through the official
client's own request machinery (Hawk signing, URL building, errors): every event of a task in
order, with who caused it, a page at a time, kept across restarts, and the same scopes and 404 as
`task`. Every answer is checked against schemas/task-history-response.json; `taskfold task
history` prints the same events, one per line."""

import datetime
import functools
import json
import os
import subprocess

import jsonschema
import pytest
import taskcluster

from conftest import (BINARY, REPO, ROOT_CLIENT, ROOT_TOKEN, failure, limited_queue,
                      make_server, new_task_id, task_definition, wait_for, walk)

# The endpoint as the client's API references describe theirs, so that `_makeApiCall` builds,
# signs and checks the call as it does for any generated method.
TASK_HISTORY = {
    "args": ["taskId"],
    "method": "get",
    "name": "taskHistory",
    "query": ["continuationToken", "limit"],
    "route": "/task/<taskId>/history",
    "stability": "experimental",
    "type": "function",
}

with open(os.path.join(REPO, "schemas", "task-history-response.json")) as schema_file:
    SCHEMA = json.load(schema_file)


def task_history(queue, task_id, **options):
    """One page of the task's history, checked against the schema."""
    page = queue._makeApiCall(TASK_HISTORY, task_id, **options)
    jsonschema.validate(page, SCHEMA, format_checker=jsonschema.FormatChecker())
    return page


def whole_history(queue, task_id, limit=1000):
    pages = walk(functools.partial(task_history, queue), task_id, limit=limit)
    return [event for page in pages for event in page["events"]]


def worker_queue(server, name):
    """A client named `name` (named temporary credentials) that may claim from any queue."""
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = taskcluster.createTemporaryCredentials(
        ROOT_CLIENT, ROOT_TOKEN, now - datetime.timedelta(minutes=1),
        now + datetime.timedelta(hours=1), ["queue:claim-work:*", "queue:worker-id:*"],
        name=name)
    return server.queue(credentials=credentials)


def run_queue(server, claim):
    """A client with the temporary credentials a claim gave the run (a copy: the client turns
    the strings of the credentials it is given into bytes)."""
    return server.queue(credentials=dict(claim["credentials"]))


def summary(event):
    """What a test expects of an event: kind, run, worker, reasons, caller."""
    keys = ("kind", "runId", "workerGroup", "workerId", "reasonCreated", "reasonResolved",
            "clientId")
    return {key: event[key] for key in keys if key in event}


def test_a_retried_task_history_names_each_worker_and_caller_and_survives_restarts(
        fresh_server, task_queue_id, tmp_path):
    server = fresh_server.start()
    queue = server.queue()
    worker = worker_queue(server, "tests/worker")
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))

    def claim(worker_id):
        claimed = worker.claimWork(task_queue_id, {"workerGroup": "wg", "workerId": worker_id,
                                                   "tasks": 1})["tasks"]
        assert [c["status"]["taskId"] for c in claimed] == [task_id]
        return claimed[0]

    first = claim("w1")
    reclaimed = run_queue(server, first).reclaimTask(task_id, "0")
    status = run_queue(server, reclaimed).reportException(task_id, "0",
                                                          {"reason": "worker-shutdown"})
    assert status["status"]["runs"][1]["state"] == "pending"
    second = claim("w2")
    run_queue(server, second).reportCompleted(task_id, "1")

    root, first_run = ROOT_CLIENT, first["credentials"]["clientId"]
    reclaimed_run, second_run = (reclaimed["credentials"]["clientId"],
                                 second["credentials"]["clientId"])
    expected = [
        {"kind": "task-defined", "clientId": root},
        {"kind": "run-pending", "runId": 0, "reasonCreated": "scheduled", "clientId": root},
        {"kind": "run-claimed", "runId": 0, "workerGroup": "wg", "workerId": "w1",
         "clientId": "tests/worker"},
        {"kind": "run-reclaimed", "runId": 0, "workerGroup": "wg", "workerId": "w1",
         "clientId": first_run},
        {"kind": "run-resolved", "runId": 0, "workerGroup": "wg", "workerId": "w1",
         "reasonResolved": "worker-shutdown", "clientId": reclaimed_run},
        # The automatic retry is part of reportException's decision.
        {"kind": "run-pending", "runId": 1, "reasonCreated": "retry",
         "clientId": reclaimed_run},
        {"kind": "run-claimed", "runId": 1, "workerGroup": "wg", "workerId": "w2",
         "clientId": "tests/worker"},
        {"kind": "run-resolved", "runId": 1, "workerGroup": "wg", "workerId": "w2",
         "reasonResolved": "completed", "clientId": second_run},
    ]
    page = task_history(queue, task_id)
    assert page["taskId"] == task_id
    assert "continuationToken" not in page
    events = page["events"]
    assert [summary(event) for event in events] == expected
    assert len({event["partition"] for event in events}) == 1
    offsets = [event["offset"] for event in events]
    assert offsets == sorted(set(offsets))
    times = [event["time"] for event in events]
    assert times == sorted(times)

    # A page at a time.
    pages = walk(functools.partial(task_history, queue), task_id, limit=2)
    assert [len(p["events"]) for p in pages] == [2, 2, 2, 2]
    assert [event for p in pages for event in p["events"]] == events

    # The command line prints one line per event.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("TASKCLUSTER_")}
    env.update(TASKCLUSTER_ROOT_URL=server.root_url, TASKCLUSTER_CLIENT_ID=ROOT_CLIENT,
               TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN)
    printed = subprocess.run([BINARY, "task", "history", task_id], cwd=str(tmp_path), env=env,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert len(lines) == len(events)
    assert lines[2].startswith(events[2]["time"] + "  run-claimed")
    assert "run 0  worker wg/w1  by tests/worker" in lines[2]
    assert f"(partition {events[2]['partition']}, offset {events[2]['offset']})" in lines[2]
    assert "reason worker-shutdown" in lines[4]

    # Across a restart that replays the whole log.
    server.kill()
    server.start()
    assert whole_history(server.queue(), task_id) == events

    # Across one that opens a partition store holding these events, with nothing to replay.
    queue = server.queue()
    for _ in range(80):
        queue.createTask(new_task_id(), task_definition(task_queue_id + "-filler"))
    server.stop()
    report = subprocess.run([BINARY, "log", "inspect", "--data-dir", server.data_dir],
                            capture_output=True, text=True, check=True).stdout
    partition = report.split(f"partition {events[0]['partition']}:")[1]
    stored = int(partition.split("store: reflects offsets ..")[1].split(" ")[0])
    assert stored > events[-1]["offset"], report
    assert "(0 behind the log's end)" in partition.split("partition ")[0], report
    server.start()
    assert whole_history(server.queue(), task_id) == events
    assert whole_history(server.queue(), task_id, limit=3) == events


# A deployment whose anonymous role reads no tasks, so that missing scopes show.
PRIVATE_CONFIG = """
[[auth.roles]]
role_id = "anonymous"
scopes = ["queue:status:*"]
"""


@pytest.fixture(scope="module")
def private_server(tmp_path_factory):
    server = make_server(tmp_path_factory, PRIVATE_CONFIG).start()
    yield server
    server.stop()


def test_bad_tokens_unknown_tasks_and_missing_scopes(private_server, task_queue_id):
    server = private_server
    queue = server.queue()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    queue.cancelTask(task_id)
    events = task_history(queue, task_id)["events"]
    assert [summary(event) for event in events] == [
        {"kind": "task-defined", "clientId": ROOT_CLIENT},
        {"kind": "run-pending", "runId": 0, "reasonCreated": "scheduled",
         "clientId": ROOT_CLIENT},
        {"kind": "run-resolved", "runId": 0, "reasonResolved": "canceled",
         "clientId": ROOT_CLIENT},
    ]

    # Tokens this listing did not give: not base64url, and another listing's (a name's).
    for token in ("%%%", "cHVibGljL2E"):
        error = failure(lambda: task_history(queue, task_id, query={"continuationToken": token}))
        assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    error = failure(lambda: task_history(queue, task_id, query={"limit": "two"}))
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")

    missing = new_task_id()
    error = failure(task_history, queue, missing)
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")
    assert missing in error.body["message"]
    # The message `task` gives, up to the details of the call.
    first_lines = error.body["message"].split("\n")[:2]
    assert first_lines == failure(queue.task, missing).body["message"].split("\n")[:2]

    reader = limited_queue(server, [f"queue:get-task:{task_id}"])
    assert task_history(reader, task_id)["events"] == events
    stranger = limited_queue(server, [f"queue:get-task:{missing}"])
    error = failure(task_history, stranger, task_id)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    # The scope comes first, as for `task`: a 403 even for a task that does not exist.
    anonymous = server.queue(credentials={})
    for task in (task_id, missing):
        error = failure(task_history, anonymous, task)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
        assert failure(anonymous.task, task).status_code == 403


def test_anonymous_callers_read_histories_where_they_read_tasks(server, queue, task_queue_id):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    anonymous = server.queue(credentials={})
    assert anonymous.task(task_id)["taskQueueId"] == task_queue_id
    assert task_history(anonymous, task_id) == task_history(queue, task_id)


def test_the_queues_own_doings_have_no_client(server, queue, task_queue_id):
    dependency, dependent = new_task_id(), new_task_id()
    queue.createTask(dependency, task_definition(task_queue_id, priority="highest"))
    queue.createTask(dependent, task_definition(task_queue_id + "-d", dependencies=[dependency]))
    queue.changeTaskPriority(dependent, {"newPriority": "high"})
    [claimed] = queue.claimWork(task_queue_id, {"workerGroup": "wg", "workerId": "w1",
                                                "tasks": 1})["tasks"]
    run = run_queue(server, claimed)
    run.createArtifact(dependency, "0", "public/note", {
        "storageType": "reference", "url": "https://example.com/note",
        "contentType": "text/plain",
        "expires": taskcluster.stringDate(datetime.datetime.now(datetime.timezone.utc)
                                          + datetime.timedelta(hours=1))})
    run.reportCompleted(dependency, "0")
    assert wait_for(lambda: queue.status(dependent)["status"]["state"] == "pending")

    artifact = task_history(queue, dependency)["events"][3]
    assert summary(artifact) == {"kind": "artifact-created", "runId": 0, "workerGroup": "wg",
                                 "workerId": "w1",
                                 "clientId": claimed["credentials"]["clientId"]}
    assert artifact["name"] == "public/note"
    events = task_history(queue, dependent)["events"]
    assert [event["kind"] for event in events] == [
        "task-defined", "priority-changed", "dependency-satisfied", "run-pending"]
    assert events[1]["priority"] == "high"
    assert events[1]["clientId"] == ROOT_CLIENT
    # Scheduled by the dependency's resolution: the queue's own doing.
    assert events[2]["dependency"] == dependency
    assert "clientId" not in events[2] and "clientId" not in events[3]
