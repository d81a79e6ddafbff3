"""`s3` artifacts with `[blobs] backend = "s3"`, against the S3-compatible server that
tests/setup/s3.sh starts (SeaweedFS): the official client's upload and download flow unchanged,
the objects really in the bucket under the files' layout, a second node on another data
directory serving the same blobs, and expiry deleting the objects."""

import datetime
import hashlib
import os
import shutil
import socket
import urllib.parse
import uuid

import pytest
import requests
import taskcluster

from conftest import claim, make_server, new_task_id, task_definition, date_in, wait_for

S3 = {name: os.environ.get(f"TASKFOLD_TEST_S3_{name}")
      for name in ("ENDPOINT", "BUCKET", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY")}
if not S3["ENDPOINT"]:
    pytest.skip("TASKFOLD_TEST_S3_ENDPOINT is not set: no S3 server (tests/setup/s3.sh)",
                allow_module_level=True)

boto3 = pytest.importorskip("boto3")

# More than one part of the store's multipart uploads (8 MiB).
LARGE = bytes(range(256)) * (9 * 4096 + 17)


@pytest.fixture
def prefix():
    """A key prefix of the test's own, so that its objects are told from other tests'."""
    return f"tests-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def bucket():
    client = boto3.client("s3", endpoint_url=S3["ENDPOINT"], region_name="us-east-1",
                          aws_access_key_id=S3["ACCESS_KEY_ID"],
                          aws_secret_access_key=S3["SECRET_ACCESS_KEY"])
    return client


def keys(bucket, prefix):
    listed = bucket.list_objects_v2(Bucket=S3["BUCKET"], Prefix=prefix)
    return {entry["Key"]: entry["Size"] for entry in listed.get("Contents", [])}


def key(prefix, task_id, run_id, name):
    return f"{prefix}blobs/{task_id}/{run_id}/{hashlib.sha256(name.encode()).hexdigest()}"


def s3_server(tmp_path_factory, prefix):
    """A server with the s3 backend, not started; its secret comes from the environment."""
    server = make_server(tmp_path_factory, f"""
[blobs]
backend = "s3"

[blobs.s3]
endpoint = "{S3["ENDPOINT"]}"
bucket = "{S3["BUCKET"]}"
access_key_id = "{S3["ACCESS_KEY_ID"]}"
prefix = "{prefix}"
allow_http = true
""")
    server.env = {"TASKFOLD__BLOBS__S3__SECRET_ACCESS_KEY": S3["SECRET_ACCESS_KEY"]}
    return server


@pytest.fixture
def server(tmp_path_factory, prefix):
    server = s3_server(tmp_path_factory, prefix)
    yield server
    server.stop()


def running_task(queue, task_queue_id, **overrides):
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, **overrides))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    return task_id, claimed


def s3(content_type, expires=None):
    return {"storageType": "s3", "contentType": content_type,
            "expires": expires or date_in(datetime.timedelta(days=1))}


def upload(put_url, content_type, data):
    return requests.put(put_url, data=data, headers={"Content-Type": content_type})


def download(queue, task_id, name):
    response = requests.get(queue.getArtifact(task_id, "0", name)["url"])
    assert response.status_code == 200, response.text
    return response


def test_blobs_go_to_the_bucket_and_come_back(server, bucket, prefix, task_queue_id):
    queue = server.start().queue()
    task_id, claimed = running_task(queue, task_queue_id)
    worker = server.queue(credentials=claimed["credentials"])
    small, large = "public/build/hello.txt", "private/build/large.bin"
    put_url = worker.createArtifact(task_id, "0", small, s3("text/plain"))["putUrl"]
    assert put_url.startswith(f"{server.root_url}/blobs/"), "clients see Taskfold's URLs"
    assert upload(put_url, "text/plain", b"hello, bucket").ok
    large_url = worker.createArtifact(task_id, "0", large,
                                      s3("application/octet-stream"))["putUrl"]
    assert upload(large_url, "application/octet-stream", LARGE).ok

    response = download(queue, task_id, small)
    assert (response.content, response.headers["Content-Type"]) == (b"hello, bucket",
                                                                    "text/plain")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response = download(queue, task_id, large)
    assert response.content == LARGE
    assert response.headers["Content-Type"] == "application/octet-stream"
    head = requests.head(queue.getArtifact(task_id, "0", large)["url"],
                         headers={"Accept-Encoding": "identity"})
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(LARGE)))

    # The objects are in the bucket, laid out as the files backend lays out files; no file.
    assert keys(bucket, prefix) == {key(prefix, task_id, 0, small): len(b"hello, bucket"),
                                    key(prefix, task_id, 0, large): len(LARGE)}
    stored = bucket.get_object(Bucket=S3["BUCKET"], Key=key(prefix, task_id, 0, small))
    assert stored["Body"].read() == b"hello, bucket"
    assert not os.path.exists(os.path.join(server.data_dir, "blobs"))

    # An artifact is uploaded once, on this backend too.
    again = upload(put_url, "text/plain", b"other bytes!!")
    assert again.status_code == 409, again.text
    assert download(queue, task_id, small).content == b"hello, bucket"
    # An upload that breaks off leaves nothing behind, and the artifact can still be uploaded.
    broken = worker.createArtifact(task_id, "0", "public/broken", s3("text/plain"))["putUrl"]
    url = urllib.parse.urlsplit(broken)
    with socket.create_connection((url.hostname, url.port)) as connection:
        connection.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
                           "Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n12345"
                           .encode())
        connection.shutdown(socket.SHUT_WR)
        connection.recv(4096)
    assert set(keys(bucket, prefix)) == {key(prefix, task_id, 0, name) for name in (small, large)}
    assert upload(broken, "text/plain", b"whole").ok
    assert download(queue, task_id, "public/broken").content == b"whole"


def test_another_node_on_the_same_bucket_serves_the_same_blobs(
        server, tmp_path_factory, prefix, task_queue_id):
    queue = server.start().queue()
    task_id, _ = running_task(queue, task_queue_id)
    public, private = "public/report.html", "private/data.bin"
    for name, content_type, data in ((public, "text/html", b"<p>shared</p>"),
                                     (private, "application/octet-stream", LARGE)):
        put_url = queue.createArtifact(task_id, "0", name, s3(content_type))["putUrl"]
        assert upload(put_url, content_type, data).ok
    server.stop()

    # A node with a data directory of its own: the same log (copied, as a shared log would
    # hold it), no blobs on its disk, the same bucket.
    other = s3_server(tmp_path_factory, prefix)
    shutil.copytree(os.path.join(server.data_dir, "log"), os.path.join(other.data_dir, "log"))
    try:
        other_queue = other.start().queue()
        response = download(other_queue, task_id, public)
        assert (response.content, response.headers["Content-Type"]) == (b"<p>shared</p>",
                                                                        "text/html")
        assert response.headers["Content-Disposition"] == "attachment"
        assert download(other_queue, task_id, private).content == LARGE
        assert not os.path.exists(os.path.join(other.data_dir, "blobs"))
    finally:
        other.stop()


def test_expiry_deletes_the_objects(server, bucket, prefix, task_queue_id):
    queue = server.start().queue()
    now = datetime.datetime.now(datetime.timezone.utc)
    # An artifact that expires before its task, one that lives as long as its task, and a
    # task that expires in seconds.
    task_id, _ = running_task(
        queue, task_queue_id,
        deadline=taskcluster.stringDate(now + datetime.timedelta(seconds=3)),
        expires=taskcluster.stringDate(now + datetime.timedelta(seconds=6)))
    for name, expires in (("public/soon.bin", now + datetime.timedelta(seconds=2)),
                          ("public/later.bin", now + datetime.timedelta(seconds=6))):
        put_url = queue.createArtifact(task_id, "0", name, s3(
            "application/octet-stream", expires=taskcluster.stringDate(expires)))["putUrl"]
        assert upload(put_url, "application/octet-stream", name.encode()).ok
    queue.reportCompleted(task_id, "0")
    soon, later = (key(prefix, task_id, 0, name) for name in ("public/soon.bin",
                                                              "public/later.bin"))
    assert set(keys(bucket, prefix)) == {soon, later}

    assert wait_for(lambda: set(keys(bucket, prefix)) == {later}, timeout=20), \
        keys(bucket, prefix)
    # Then the task expires, and every object of it goes.
    assert wait_for(lambda: not keys(bucket, prefix), timeout=20), keys(bucket, prefix)


def test_a_wrong_secret_stops_the_start(tmp_path_factory, prefix):
    server = s3_server(tmp_path_factory, prefix)
    server.env = {"TASKFOLD__BLOBS__S3__SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(RuntimeError) as raised:
        server.start()
    server.stop()
    message = str(raised.value)
    assert "[blobs.s3]" in message and "panicked" not in message, message
