"""What an outside probe of the release build found, each against the real binary: damage in the
event log refuses the start until `taskfold log repair`; a failed log stops the server instead of
answering from state it lost; a private live log stays private across restarts; and waiting
claimWork calls cannot take the descriptors the server needs to accept connections."""

import hashlib
import os
import resource
import struct
import subprocess
import threading
import time

import mohawk
import pytest
import requests

from conftest import (BINARY, ROOT_CLIENT, ROOT_TOKEN, claim, make_server, new_task_id,
                      task_definition, wait_for)

ONE_PARTITION = """
[log]
partitions = 1
"""


def segment_records(path):
    """(start, end) of each valid record of a segment file: `length | crc32c | payload`."""
    data = open(path, "rb").read()
    records, position = [], 0
    while position + 8 <= len(data):
        (length,) = struct.unpack_from("<I", data, position)
        if length == 0 or position + 8 + length > len(data):
            break
        records.append((position, position + 8 + length))
        position += 8 + length
    return records


def digest_tree(root):
    """Every file under `root` (but the lock) with a hash of its bytes."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            if name != "lock":
                path = os.path.join(directory, name)
                files[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return files


def test_damage_before_the_tail_refuses_the_start_until_repaired(tmp_path_factory,
                                                                 task_queue_id):
    server = make_server(tmp_path_factory, ONE_PARTITION).start()
    queue = server.queue()
    task_ids = [new_task_id() for _ in range(200)]
    for task_id in task_ids:
        queue.createTask(task_id, task_definition(task_queue_id))
    server.stop()

    partition = os.path.join(server.data_dir, "log", "partition-0000")
    [segment] = sorted(os.path.join(partition, name) for name in os.listdir(partition)
                       if name.endswith(".seg"))
    records = segment_records(segment)
    # Every createTask appends the same events (each task is its own group).
    per_task, rest = divmod(len(records), len(task_ids))
    assert rest == 0 and per_task >= 1, (len(records), len(task_ids))
    damaged = 39
    start, end = records[damaged]
    with open(segment, "r+b") as file:
        file.seek(end - 3)
        byte = file.read(1)
        file.seek(end - 3)
        file.write(bytes([byte[0] ^ 0x04]))
    before = digest_tree(os.path.join(server.data_dir, "log"))

    with pytest.raises(RuntimeError) as refused:
        server.start()
    message = str(refused.value)
    assert segment in message and f"byte {start}" in message, message
    assert "taskfold log repair" in message, message
    assert digest_tree(os.path.join(server.data_dir, "log")) == before, \
        "a refused start changed the log"

    segment_bytes = os.path.getsize(segment)
    repair = subprocess.run([BINARY, "log", "repair", "--data-dir", server.data_dir],
                            capture_output=True, text=True, timeout=60)
    assert repair.returncode == 0, repair.stderr
    assert "set aside" in repair.stdout, repair.stdout
    set_aside = os.path.join(server.data_dir, "log", "set-aside")
    copied = sum(os.path.getsize(os.path.join(directory, name))
                 for directory, _, names in os.walk(set_aside) for name in names)
    assert copied == segment_bytes - start
    assert os.path.getsize(segment) == start

    server.start()
    queue = server.queue()
    whole = damaged // per_task
    for task_id in task_ids[:whole]:
        assert queue.status(task_id)["status"]["taskId"] == task_id
    for task_id in task_ids[whole + 1:]:
        response = requests.get(server.api(f"/task/{task_id}/status"))
        assert response.status_code == 404, (task_id, response.text)
    server.stop()


@pytest.fixture
def small_disk(tmp_path_factory):
    """A 24 MB tmpfs: a disk that fills up. Mounting needs root, which the test command has."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mount_point = str(tmp_path_factory.mktemp("small-disk"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mount_point], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", mount_point], check=False)


def test_a_failed_log_stops_the_server_and_loses_nothing_acknowledged(tmp_path_factory,
                                                                      small_disk, task_queue_id):
    server = make_server(tmp_path_factory, ONE_PARTITION)
    server.data_dir = os.path.join(small_disk, "data")
    os.mkdir(server.data_dir)
    server.start()
    queue = server.queue()
    acknowledged = []
    big = "x" * 200_000
    for _ in range(400):
        task_id = new_task_id()
        try:
            queue.createTask(task_id, task_definition(task_queue_id, payload={"blob": big}))
        except Exception as error:  # noqa: BLE001 - any failure is the full disk showing
            failed_with = error
            break
        acknowledged.append(task_id)
    else:
        pytest.fail("the disk never filled up")
    assert len(acknowledged) > 10
    assert getattr(failed_with, "status_code", 500) >= 500, failed_with

    # From the failure on, nothing answers from state the log lost: health says 503 (or
    # nothing: the process has exited), and no acknowledged task is ever a 404.
    def probe():
        try:
            ping = requests.get(server.api("/ping"), timeout=5)
            assert ping.status_code == 503, ping.text
            heartbeat = requests.get(f"{server.root_url}/__heartbeat__", timeout=5)
            assert heartbeat.status_code == 503, heartbeat.text
            status = requests.get(server.api(f"/task/{acknowledged[0]}/status"), timeout=5)
            assert status.status_code != 404, status.text
        except requests.ConnectionError:
            pass
        return server.process.poll() is not None

    assert wait_for(probe, timeout=30), "the server kept running on a failed log"
    assert server.process.returncode != 0
    server.log.close()
    log = open(os.path.join(server.log_dir, f"server-{server.starts}.log")).read()
    assert "the event log failed" in log, log

    subprocess.run(["mount", "-o", "remount,size=512m", small_disk], check=True)
    server.start()
    queue = server.queue()
    for task_id in acknowledged:
        assert queue.status(task_id)["status"]["taskId"] == task_id
    server.stop()


def push_live_log(server, task_id, data, name, final=False):
    url = f"{server.root_url}/livelog/{task_id}/0?offset=0&name={name}"
    if final:
        url += "&final=true"
    sender = mohawk.Sender({"id": ROOT_CLIENT, "key": ROOT_TOKEN, "algorithm": "sha256"}, url,
                           "POST", content=data, content_type="application/octet-stream")
    response = requests.post(url, data=data, headers={
        "Authorization": sender.request_header,
        "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text


def test_a_private_live_log_stays_private_across_restarts(tmp_path_factory, task_queue_id):
    server = make_server(tmp_path_factory).start()
    queue = server.queue()
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    push_live_log(server, task_id, b"a secret line\n", "private/logs/live.log")

    def anonymous_read():
        # Each start has a port of its own.
        return requests.get(f"{server.root_url}/livelog/{task_id}/0", timeout=5)

    assert anonymous_read().status_code == 403

    # Still running after a restart: the name is known from disk, not from memory.
    server.stop()
    server.start()
    response = anonymous_read()
    assert response.status_code == 403, response.text

    # Resolved without a final push: after a restart its file is removed, never served.
    server.queue().reportCompleted(task_id, "0")
    server.stop()
    live_logs = os.path.join(server.data_dir, "livelogs")
    assert any(name.startswith(task_id) for name in os.listdir(live_logs))
    server.start()
    assert wait_for(lambda: not any(name.startswith(task_id)
                                    for name in os.listdir(live_logs)), timeout=15), \
        os.listdir(live_logs)
    response = anonymous_read()
    assert response.status_code == 404, response.text
    assert "a secret line" not in response.text
    server.stop()


def open_file_limits(pid):
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-file limit")


WAITING_CONFIG = """
[api]
claim_work_timeout_seconds = 5
"""


def test_waiting_claims_are_bounded_and_the_server_keeps_accepting(tmp_path_factory,
                                                                   task_queue_id):
    server = make_server(tmp_path_factory, WAITING_CONFIG)

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 4096))

    server.preexec = low_limit
    server.start()
    # The soft limit is raised to the hard one at start.
    assert open_file_limits(server.process.pid) == ("4096", "4096")
    server.stop()

    # With no room to raise it, waiting claims are bounded by what the limit leaves.
    def tight_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    server.preexec = tight_limit
    server.start()
    queue = server.queue()
    answers = []
    lock = threading.Lock()

    def claim_work():
        try:
            claimed = claim(queue, task_queue_id)
            outcome = ("tasks", len(claimed))
        except Exception as error:  # noqa: BLE001 - the status says which
            outcome = (getattr(error, "status_code", None),
                       (getattr(error, "body", None) or {}).get("code"))
        with lock:
            answers.append(outcome)

    threads = [threading.Thread(target=claim_work) for _ in range(150)]
    for thread in threads:
        thread.start()
    refused = wait_for(lambda: [a for a in answers if a[0] == 503], timeout=10)
    assert refused, answers
    assert all(code == "ServiceUnavailable" for _, code in refused)
    # While the others wait, the server still accepts and answers.
    assert requests.get(server.api("/ping"), timeout=10).status_code == 200
    for thread in threads:
        thread.join()
    assert ("tasks", 0) in answers, answers
    server.stop()
