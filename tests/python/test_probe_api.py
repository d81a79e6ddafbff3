"""What an outside probe of the API found, each checked against the real `taskfold serve`:
metric labels that any client could grow without bound, task authors' HTML served on the
API's own origin, signed upload URLs that outlived their run, unbounded uploads, and errors
that were not in Taskcluster's shape."""

import datetime
import glob
import json
import os
import socket
import uuid

import pytest
import requests
import websocket
from prometheus_client.parser import text_string_to_metric_families

import conftest
from conftest import claim, date_in, make_server, new_task_id, task_definition, wait_for

# The methods `taskfold_http_request_duration_seconds` may name.
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
                 "other"}


def series(server):
    """Every sample of `/metrics`: (name, labels) pairs."""
    text = requests.get(f"{server.root_url}/metrics", timeout=10).text
    return [(sample.name, dict(sample.labels))
            for family in text_string_to_metric_families(text)
            for sample in family.samples]


def raw_request(server, data):
    """Sends `data` on a connection of its own; the answer's status and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def assert_taskcluster_error(response, status, code):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    assert "requestInfo" in body, body
    return body


# --- metric labels come from closed sets ----------------------------------------------------


def test_invented_and_long_methods_add_no_series(server):
    def request_series():
        return [labels for name, labels in series(server)
                if name == "taskfold_http_request_duration_seconds_count"]

    before = len(request_series())
    for number in range(60):
        requests.request(f"INVENTED{number}", server.api("/ping"), timeout=10)
    for number in range(5):
        requests.request("X" * 7000 + str(number), f"{server.root_url}/nowhere/{number}",
                         timeout=10)
    after = request_series()
    assert {labels["method"] for labels in after} <= KNOWN_METHODS
    assert all(len(value) <= 100 for labels in after for value in labels.values())
    # Whatever was invented fits in a handful of series (method `other`, a few statuses).
    assert len(after) - before <= 5, after


@pytest.fixture(scope="module")
def few_queues_server(tmp_path_factory):
    server = make_server(tmp_path_factory, "[metrics]\nmax_task_queues = 3\n").start()
    yield server
    server.stop()


def test_task_queues_past_the_bound_fold_into_other(few_queues_server):
    queue = few_queues_server.queue()
    invented = [f"probe/q{number}-{uuid.uuid4().hex[:8]}" for number in range(12)]
    for task_queue_id in invented:
        queue.createTask(new_task_id(), task_definition(task_queue_id))
    labelled = {labels["task_queue"] for name, labels in series(few_queues_server)
                if "task_queue" in labels}
    assert len(labelled - {"other"}) <= 3, labelled
    assert "other" in labelled
    created = {labels["task_queue"]: None for name, labels in series(few_queues_server)
               if name == "taskfold_tasks_created_total"}
    assert set(created) <= set(invented) | {"other"}
    # Nothing is lost: the folded queues are counted under `other`.
    total = sum(value for family in text_string_to_metric_families(
        requests.get(f"{few_queues_server.root_url}/metrics", timeout=10).text)
        for value in [sample.value for sample in family.samples
                      if sample.name == "taskfold_tasks_created_total"])
    assert total == len(invented)
    pending = {labels["task_queue"] for name, labels in series(few_queues_server)
               if name == "taskfold_pending_tasks"}
    assert len(pending - {"other"}) <= 3


def test_pending_tasks_of_folded_queues_add_up_under_other(few_queues_server):
    def pending_other():
        text = requests.get(f"{few_queues_server.root_url}/metrics", timeout=10).text
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "taskfold_pending_tasks"
                   and sample.labels.get("task_queue") == "other")

    queue = few_queues_server.queue()
    # The bound is reached by the test before, or by these.
    for number in range(4):
        queue.createTask(new_task_id(), task_definition(f"probe/fill{number}"))
    before = pending_other()
    folded = [f"probe/folded{number}-{uuid.uuid4().hex[:8]}" for number in range(3)]
    for task_queue_id in folded:
        queue.createTask(new_task_id(), task_definition(task_queue_id))
    assert wait_for(lambda: pending_other() == before + 3), pending_other()
    claim(queue, folded[0])
    assert wait_for(lambda: pending_other() == before + 2), pending_other()
