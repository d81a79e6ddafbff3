"""How big a task may be and what one costs: `[api] max_task_bytes` bounds a task definition
(as `task` returns it, compact), a larger one is Taskcluster's 413 `InputTooLarge` through the
official client, and the queue's memory grows by a bounded multiple of the tasks it keeps."""

import json
import time

import pytest

from conftest import failure, make_server, new_task_id, task_definition

# Small, so that the limit's edges are quick to reach.
LIMIT = 300_000
LIMIT_CONFIG = f"""
[api]
max_task_bytes = {LIMIT}
"""


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    server = make_server(tmp_path_factory, LIMIT_CONFIG).start()
    yield server
    server.stop()


def compact_size(definition):
    """The bytes of a definition as the queue counts them: compact JSON, UTF-8."""
    return len(json.dumps(definition, separators=(",", ":"), ensure_ascii=False).encode())


def with_text(task_queue_id, length):
    return task_definition(task_queue_id, payload={"text": "x" * length})


def test_a_task_up_to_the_limit_is_kept_and_one_byte_more_is_a_413(limited_server, task_queue_id):
    queue = limited_server.queue()
    # The size of a definition with a known payload, read back as the queue keeps it.
    probe = new_task_id()
    queue.createTask(probe, with_text(task_queue_id, 1000))
    overhead = compact_size(queue.task(probe)) - 1000

    at_limit = with_text(task_queue_id, LIMIT - overhead)
    task_id = new_task_id()
    queue.createTask(task_id, at_limit)
    kept = queue.task(task_id)
    assert compact_size(kept) == LIMIT
    assert kept["payload"] == at_limit["payload"]

    over = with_text(task_queue_id, LIMIT - overhead + 1)
    task_id = new_task_id()
    error = failure(queue.createTask, task_id, over)
    assert (error.status_code, error.body["code"]) == (413, "InputTooLarge")
    assert "max_task_bytes" in error.body["message"]
    assert f"{LIMIT + 1} bytes" in error.body["message"]
    assert "\n\n---\n\n* method:     createTask\n* errorCode:  InputTooLarge\n" \
           "* statusCode: 413\n" in error.body["message"]
    assert error.body["requestInfo"]["method"] == "createTask"
    assert error.body["requestInfo"]["params"] == {"taskId": task_id}
    assert failure(queue.task, task_id).status_code == 404


def memory_mib(pid):
    """VmRSS and VmHWM of a process, in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024
    return fields


TASKS = 4
# What the queue's memory may grow by, per byte of the task bodies it keeps: each task's
# definition is held once as compact text; the rest is what a request needs for a moment and
# the allocator keeps for the next one.
FACTOR = 4
SLACK_MIB = 64


def test_memory_grows_by_a_bounded_multiple_of_the_tasks_kept(fresh_server, task_queue_id):
    server = fresh_server.start()
    queue = server.queue()
    # About 8 MB each of many small values, the shape that costs most as a parsed tree.
    payload = {"values": [{"a": i % 10, "b": [1, 2]} for i in range(450_000)]}
    definition = task_definition(task_queue_id, payload=payload)
    body_bytes = compact_size(definition)
    time.sleep(0.5)
    before = memory_mib(server.process.pid)
    for _ in range(TASKS):
        queue.createTask(new_task_id(), task_definition(task_queue_id, payload=payload))
    time.sleep(1)
    after = memory_mib(server.process.pid)
    growth = after["VmRSS"] - before["VmRSS"]
    bound = FACTOR * TASKS * body_bytes / 2**20 + SLACK_MIB
    print(f"{TASKS} tasks of {body_bytes / 2**20:.1f} MiB: RSS {before['VmRSS']:.0f} -> "
          f"{after['VmRSS']:.0f} MiB (peak {after['VmHWM']:.0f}), bound +{bound:.0f} MiB")
    assert growth < bound
