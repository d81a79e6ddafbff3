"""The partition stores: a store that is missing, of another layout, or whose files are cut
short is detected at start and rebuilt from the log, with a log line saying so; nothing of the
state is lost."""

import glob
import os
import shutil
import subprocess

import requests

import pytest

from conftest import BINARY, claim, new_task_id, task_definition, wait_for


def fill(server, task_queue_id):
    """Tasks in every state a store keeps: completed (with an artifact), failed, running,
    pending and unscheduled-behind-a-dependency; returns their statuses."""
    queue = server.queue()
    ids = []
    for _ in range(12):
        task_id = new_task_id()
        queue.createTask(task_id, task_definition(task_queue_id))
        ids.append(task_id)
    claimed = claim(queue, task_queue_id, tasks=8)
    for index, entry in enumerate(claimed):
        task_id, run_id = entry["status"]["taskId"], str(entry["runId"])
        if index < 4:
            queue.createArtifact(task_id, run_id, "public/result.txt", {
                "storageType": "reference", "expires": entry["status"]["expires"],
                "contentType": "text/plain", "url": "https://example.invalid/result.txt",
            })
            queue.reportCompleted(task_id, run_id)
        elif index < 6:
            queue.reportFailed(task_id, run_id)
    waiting = new_task_id()
    definition = task_definition(task_queue_id + "-later")
    definition["dependencies"] = [ids[-1]]
    queue.createTask(waiting, definition)
    ids.append(waiting)
    return {task_id: queue.status(task_id)["status"] for task_id in ids}


def store_dirs(server):
    return sorted(glob.glob(os.path.join(server.data_dir, "store", "partition-*")))


def restart_and_check(server, statuses, expected_line):
    server.start()
    queue = server.queue()
    for task_id, status in statuses.items():
        assert queue.status(task_id)["status"] == status
    completed = [task_id for task_id, status in statuses.items() if status["state"] == "completed"]
    artifacts = queue.listArtifacts(completed[0], "0")["artifacts"]
    assert [artifact["name"] for artifact in artifacts] == ["public/result.txt"]
    server.stop()
    log = open(os.path.join(server.log_dir, f"server-{server.starts}.log")).read()
    assert expected_line in log, log
    # Rebuilt, the store serves the next start without another rebuild.
    server.start()
    assert server.queue().status(completed[0])["status"]["state"] == "completed"
    server.stop()
    log = open(os.path.join(server.log_dir, f"server-{server.starts}.log")).read()
    assert "rebuilding it from the log" not in log and "building it from the log" not in log


def test_a_deleted_store_is_built_again_from_the_log(fresh_server, task_queue_id):
    server = fresh_server.start()
    statuses = fill(server, task_queue_id)
    server.stop()
    dirs = store_dirs(server)
    assert dirs, "the server wrote partition stores"
    shutil.rmtree(os.path.join(server.data_dir, "store"))
    restart_and_check(server, statuses, "no partition store: building it from the log")


def test_a_store_of_another_layout_is_rebuilt(fresh_server, task_queue_id):
    server = fresh_server.start()
    statuses = fill(server, task_queue_id)
    server.stop()
    for directory in store_dirs(server):
        with open(os.path.join(directory, "layout"), "w") as layout:
            layout.write("0\n")
    restart_and_check(server, statuses, "it has layout 0, this build reads layout 1")


def test_a_store_with_truncated_files_is_rebuilt(fresh_server, task_queue_id):
    server = fresh_server.start()
    statuses = fill(server, task_queue_id)
    server.stop()
    cut = 0
    for directory in store_dirs(server):
        for path in glob.glob(os.path.join(directory, "fjall", "**", "*"), recursive=True):
            if os.path.isfile(path) and os.path.getsize(path) > 16 and "lock" not in path:
                with open(path, "r+b") as file:
                    file.truncate(os.path.getsize(path) // 2)
                cut += 1
    assert cut > 0
    restart_and_check(server, statuses, "the partition store cannot serve: rebuilding it from the log")


def test_inspect_shows_each_store_offset_beside_the_log_end(fresh_server, task_queue_id):
    server = fresh_server.start()
    fill(server, task_queue_id)
    server.stop()
    report = subprocess.run([BINARY, "log", "inspect", "--data-dir", server.data_dir],
                            capture_output=True, text=True, check=True).stdout
    assert report.count("store: reflects offsets ..") == len(store_dirs(server)), report
    assert "0 behind the log's end" in report, report


RETENTION_CONFIG = """
[log]
retention_hours = 0.0001

[log.embedded]
segment_bytes = 4096
preallocate_bytes = 0
"""


def segment_counts(server):
    return [len(glob.glob(os.path.join(directory, "*.seg")))
            for directory in sorted(glob.glob(os.path.join(server.data_dir, "log", "partition-*")))]


def test_retention_deletes_the_log_the_stores_hold_and_nothing_is_lost(tmp_path_factory,
                                                                         task_queue_id):
    from conftest import make_server
    server = make_server(tmp_path_factory, RETENTION_CONFIG).start()
    try:
        statuses = fill(server, task_queue_id)
        queue = server.queue()
        for _ in range(150):
            queue.createTask(new_task_id(), task_definition(task_queue_id + "-filler"))
        grown = segment_counts(server)
        assert max(grown) > 1, grown
        # The stores flush within a second; retention runs every ten.
        assert wait_for(lambda: sum(segment_counts(server)) < sum(grown), timeout=40), \
            (grown, segment_counts(server))
        server.kill()
        report = subprocess.run([BINARY, "log", "inspect", "--data-dir", server.data_dir],
                                capture_output=True, text=True, check=True).stdout
        assert "offsets 0.." not in report or report.count("offsets 0..") < len(grown), report
        server.start()
        queue = server.queue()
        for task_id, status in statuses.items():
            assert queue.status(task_id)["status"] == status
            assert queue.task(task_id)["taskQueueId"].startswith(task_queue_id)
            # The history outlives the log it was read from.
            history = requests.get(server.api(f"/task/{task_id}/history")).json()["events"]
            assert history[0]["kind"] == "task-defined", history
    finally:
        server.stop()
