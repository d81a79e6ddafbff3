"""The Index service (`/api/index/v1/`) driven by the official Python client against the real
server: insertTask with Taskcluster's rank rule, findTask, deleteTask, listTasks and
listNamespaces with pages, findTasksAtIndex, expired entries, automatic indexing of completed
tasks' `index.` routes, findArtifactFromTask's redirects (signed when the artifact is not
public), bad input, and a restart that keeps everything."""

import datetime
import os

import requests
import taskcluster

from conftest import (ROOT_CLIENT, ROOT_TOKEN, claim, date_in, failure, new_task_id,
                      task_definition, walk)

HOUR = datetime.timedelta(hours=1)


def unique(prefix="t"):
    return f"{prefix}{os.urandom(4).hex()}"


def entry(task_id, rank=0, data=None, expires=None):
    return {"taskId": task_id, "rank": rank, "data": data or {}, "expires": expires or date_in(HOUR)}


def test_insert_find_and_delete_with_the_rank_rule(server):
    index = server.client("Index")
    path = f"{unique('proj')}.branch.latest"
    first, second, third = new_task_id(), new_task_id(), new_task_id()
    inserted = index.insertTask(path, entry(first, rank=5, data={"k": "v"}))
    assert inserted["namespace"] == path and inserted["taskId"] == first
    assert index.findTask(path) == inserted
    # A lower rank leaves the higher one standing, and the answer says so.
    assert index.insertTask(path, entry(second, rank=4))["taskId"] == first
    assert index.findTask(path)["taskId"] == first
    # An equal or higher rank replaces it.
    assert index.insertTask(path, entry(third, rank=5))["taskId"] == third
    assert index.findTask(path)["taskId"] == third
    assert index.deleteTask(path) in (None, {})
    error = failure(index.findTask, path)
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")
    index.deleteTask(path)


def test_lists_of_tasks_and_namespaces_page_in_name_order(server):
    index = server.client("Index")
    top = unique("tree")
    names = [f"n{i:02d}" for i in range(12)]
    for name in names:
        index.insertTask(f"{top}.ns.{name}", entry(new_task_id()))
        index.insertTask(f"{top}.{name}.deeper.task", entry(new_task_id()))
    tasks = walk(index.listTasks, f"{top}.ns", limit=5)
    assert [len(page["tasks"]) for page in tasks] == [5, 5, 2]
    listed = [task for page in tasks for task in page["tasks"]]
    assert [task["namespace"] for task in listed] == [f"{top}.ns.{name}" for name in names]
    assert set(listed[0]) == {"namespace", "taskId", "rank", "data", "expires"}
    namespaces = walk(index.listNamespaces, top, limit=5)
    found = [ns for page in namespaces for ns in page["namespaces"]]
    assert [ns["name"] for ns in found] == sorted(names + ["ns"])
    assert found[0]["namespace"] == f"{top}.{found[0]['name']}"
    # A namespace lives until the day after its latest task expires begins.
    assert found[0]["expires"].endswith("T00:00:00.000Z")
    top_level = [ns["name"] for page in walk(index.listNamespaces, "", limit=1000)
                 for ns in page["namespaces"]]
    assert top in top_level
    assert index.listTasks(f"{top}.n00.deeper")["tasks"][0]["namespace"] == \
        f"{top}.n00.deeper.task"


def test_find_tasks_at_index_answers_what_is_there(server):
    index = server.client("Index")
    top = unique("many")
    ids = {}
    for name in ["a", "b", "c"]:
        ids[name] = new_task_id()
        index.insertTask(f"{top}.{name}", entry(ids[name]))
    found = index.findTasksAtIndex({"indexes": [f"{top}.a", f"{top}.missing", f"{top}.c"]})
    assert sorted(task["taskId"] for task in found["tasks"]) == sorted([ids["a"], ids["c"]])


def test_expired_entries_answer_404_and_are_not_listed(server):
    index = server.client("Index")
    top = unique("old")
    index.insertTask(f"{top}.gone", entry(new_task_id(), expires=date_in(-HOUR)))
    index.insertTask(f"{top}.here", entry(new_task_id()))
    assert failure(index.findTask, f"{top}.gone").status_code == 404
    assert [task["namespace"] for task in index.listTasks(top)["tasks"]] == [f"{top}.here"]


def test_each_method_needs_its_scope(server):
    index = server.client("Index")
    path = f"{unique('scoped')}.task"
    index.insertTask(path, entry(new_task_id()))
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = taskcluster.createTemporaryCredentials(
        ROOT_CLIENT, ROOT_TOKEN, now - datetime.timedelta(minutes=1), now + HOUR,
        [f"index:find-task:{path}"])
    limited = server.client("Index", credentials=credentials)
    assert limited.findTask(path)["namespace"] == path
    for call, args in [(limited.findTask, (f"{path}x",)),
                       (limited.insertTask, (path, entry(new_task_id()))),
                       (limited.deleteTask, (path,)),
                       (limited.listTasks, ("scoped",)),
                       (limited.listNamespaces, ("",))]:
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), call


def test_bad_input_is_refused_and_nothing_is_stored(server):
    index = server.client("Index")
    for path in ["a..b", ".a", "a.", "a b", "x" * 256]:
        error = failure(index.insertTask, path, entry(new_task_id()))
        assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments"), path
    path = f"{unique('bad')}.task"
    for body in [{"taskId": "nope", "rank": 0, "data": {}, "expires": date_in(HOUR)},
                 {"taskId": new_task_id(), "rank": "high", "data": {}, "expires": date_in(HOUR)},
                 {"taskId": new_task_id(), "rank": 0, "data": [], "expires": date_in(HOUR)},
                 {"taskId": new_task_id(), "rank": 0, "data": {}},
                 {**entry(new_task_id()), "extra": 1}]:
        error = failure(index.insertTask, path, body)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError"), body
    assert failure(index.findTask, path).status_code == 404


def run_to_completion(queue, task_queue_id, task_id, definition, artifacts=(), fail=False):
    queue.createTask(task_id, definition)
    (claimed,) = claim(queue, task_queue_id)
    run_id = claimed["runId"]
    credentials = claimed["credentials"]
    worker = taskcluster.Queue({"rootUrl": queue.options["rootUrl"], "credentials": credentials,
                                "maxRetries": 0})
    for name, body in artifacts:
        worker.createArtifact(task_id, run_id, name, body)
    if fail:
        return worker.reportFailed(task_id, run_id)
    return worker.reportCompleted(task_id, run_id)


def test_completed_tasks_are_indexed_by_their_routes(server, queue, task_queue_id):
    index = server.client("Index")
    top = unique("auto")
    task_id = new_task_id()
    expires = date_in(datetime.timedelta(days=3))
    definition = task_definition(
        task_queue_id, routes=[f"index.{top}.a.latest", f"index.{top}.b.{task_id}",
                               "index.bad..path", "notify.email.x"],
        expires=expires, extra={"index": {"rank": 7, "data": {"push": 12}}})
    run_to_completion(queue, task_queue_id, task_id, definition)
    # Durable before reportCompleted answered: no waiting.
    found = index.findTask(f"{top}.a.latest")
    assert found == {"namespace": f"{top}.a.latest", "taskId": task_id, "rank": 7,
                     "data": {"push": 12}, "expires": expires}
    assert index.findTask(f"{top}.b.{task_id}")["taskId"] == task_id
    # A later task of lower rank does not replace it; a failed one is not indexed at all.
    lower, failed = new_task_id(), new_task_id()
    run_to_completion(queue, task_queue_id, lower, task_definition(
        task_queue_id, routes=[f"index.{top}.a.latest"], extra={"index": {"rank": 3}}))
    run_to_completion(queue, task_queue_id, failed, task_definition(
        task_queue_id, routes=[f"index.{top}.failed"]), fail=True)
    assert index.findTask(f"{top}.a.latest")["taskId"] == task_id
    assert failure(index.findTask, f"{top}.failed").status_code == 404
    # Defaults: rank 0, data {}, the task's expires.
    plain = new_task_id()
    run_to_completion(queue, task_queue_id, plain, task_definition(
        task_queue_id, routes=[f"index.{top}.plain"], expires=expires))
    assert index.findTask(f"{top}.plain") == {"namespace": f"{top}.plain", "taskId": plain,
                                             "rank": 0, "data": {}, "expires": expires}


def test_find_artifact_from_task_redirects_to_the_latest_artifact(server, queue, task_queue_id):
    index = server.client("Index")
    path = f"{unique('art')}.latest"
    task_id = new_task_id()
    target = "https://example.com/build.log"
    artifacts = [(name, {"storageType": "reference", "url": target, "contentType": "text/plain",
                         "expires": date_in(HOUR)}) for name in ["public/build.log",
                                                                  "private/build.log"]]
    run_to_completion(queue, task_queue_id, task_id,
                      task_definition(task_queue_id, routes=[f"index.{path}"]), artifacts)
    public = index.buildUrl("findArtifactFromTask", path, "public/build.log")
    response = requests.get(public, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == \
        f"{server.root_url}/api/queue/v1/task/{task_id}/artifacts/public/build.log"
    # The queue's URL answers with the artifact's own.
    onward = requests.get(response.headers["Location"], allow_redirects=False)
    assert (onward.status_code, onward.headers["Location"]) == (303, target)
    # A private one: the caller needs the scope, and gets a signed URL that works alone.
    private = index.buildSignedUrl("findArtifactFromTask", path, "private/build.log")
    response = requests.get(private, allow_redirects=False)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert "bewit=" in location and f"/task/{task_id}/artifacts/private/build.log" in location
    onward = requests.get(location, allow_redirects=False)
    assert (onward.status_code, onward.headers["Location"]) == (303, target)
    anonymous = requests.get(
        index.buildUrl("findArtifactFromTask", path, "private/build.log"), allow_redirects=False)
    assert anonymous.status_code == 403
    assert failure(index.findArtifactFromTask, f"{path}.none", "public/build.log") \
        .status_code == 404


def test_the_index_survives_a_restart(fresh_server):
    server = fresh_server.start()
    index = server.client("Index")
    ids = {f"keep.n{i}.task": new_task_id() for i in range(40)}
    for path, task_id in ids.items():
        index.insertTask(path, entry(task_id))
    server.stop()
    server.start()
    index = server.client("Index")
    assert all(index.findTask(path)["taskId"] == task_id for path, task_id in ids.items())
    names = [ns["name"] for page in walk(index.listNamespaces, "keep", limit=1000)
             for ns in page["namespaces"]]
    assert len(names) == 40
