"""Artifacts through the official client: every storage type (`s3` uploads and downloads through
signed URLs, `reference` redirects, `link` resolved on the server with a scope check per hop,
`error` answered 424, `object` refused), listings in name order with pagination, artifact info
and content, the idempotency rules of a repeated createArtifact, the run states that refuse
one, anonymous and signed access, and expiry."""

import datetime
import os
import time
import urllib.parse

import requests
import taskcluster

from conftest import (claim, failure, new_task_id, task_definition, date_in, walk, limited_queue,
                      wait_for)

EXPIRES = datetime.timedelta(days=1)



def running_task(queue, task_queue_id, **overrides):
    """A new task whose run 0 is claimed; its id and the claim."""
    task_id = new_task_id()
    queue.createTask(task_id, task_definition(task_queue_id, **overrides))
    [claimed] = claim(queue, task_queue_id)
    assert claimed["status"]["taskId"] == task_id
    return task_id, claimed


def s3(content_type, expires=None, **extra):
    return {"storageType": "s3", "contentType": content_type,
            "expires": expires or date_in(EXPIRES), **extra}


def reference(url, expires=None):
    return {"storageType": "reference", "url": url, "contentType": "text/plain",
            "expires": expires or date_in(EXPIRES)}


def link(target, expires=None):
    return {"storageType": "link", "artifact": target, "expires": expires or date_in(EXPIRES)}


def error_artifact(message, reason="file-missing-on-worker"):
    return {"storageType": "error", "reason": reason, "message": message,
            "expires": date_in(EXPIRES)}


def upload(put_url, content_type, data):
    return requests.put(put_url, data=data, headers={"Content-Type": content_type})


def artifact_api(server, task_id, name, run_id="0"):
    """The getArtifact URL, as the clients build it: the name percent-encoded."""
    return server.api(f"/task/{task_id}/runs/{run_id}/artifacts/{urllib.parse.quote(name, '')}")




def tampered(url):
    """`url` with its signature changed (the query parameter named like one)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    signatures = [i for i, (key, _) in enumerate(query) if "signature" in key.lower()]
    assert signatures, f"no signature in {url}"
    key, value = query[signatures[0]]
    query[signatures[0]] = (key, value[:-1] + ("A" if value[-1:] != "A" else "B"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def test_s3_upload_then_download_through_get_artifact(server, queue, task_queue_id):
    task_id, claimed = running_task(queue, task_queue_id)
    worker = server.queue(credentials=claimed["credentials"])
    name = "public/build/hello.txt"
    created = worker.createArtifact(task_id, "0", name, s3("text/plain"))
    assert set(created) == {"storageType", "contentType", "expires", "putUrl"}
    assert (created["storageType"], created["contentType"]) == ("s3", "text/plain")
    # `expires` is when the putUrl stops working: Taskcluster's 45 minutes.
    assert date_in(datetime.timedelta(minutes=44)) < created["expires"] \
        < date_in(datetime.timedelta(minutes=46))

    response = upload(created["putUrl"], "text/plain", b"hello, artifacts")
    assert 200 <= response.status_code < 300, response.text

    got = queue.getArtifact(task_id, "0", name)
    assert got["storageType"] == "s3"
    # A public name's URL needs no credentials at all.
    assert requests.get(got["url"]).content == b"hello, artifacts"
    latest = queue.getLatestArtifact(task_id, name)
    assert latest["storageType"] == "s3"
    assert requests.get(latest["url"]).content == b"hello, artifacts"

    # Raw HTTP: a 303 whose Location is the body's url, and a browser-like client gets the bytes.
    raw = requests.get(artifact_api(server, task_id, name), allow_redirects=False)
    assert raw.status_code == 303
    assert raw.json()["storageType"] == "s3"
    assert raw.headers["Location"] == raw.json()["url"]
    assert raw.headers["x-taskcluster-artifact-storage-type"] == "s3"
    followed = requests.get(artifact_api(server, task_id, name))
    assert (followed.status_code, followed.content) == (200, b"hello, artifacts")


def test_s3_uploads_are_checked(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    first = queue.createArtifact(task_id, "0", "public/up/firstblob",
                                 s3("text/plain", contentLength=5))["putUrl"]
    other = queue.createArtifact(task_id, "0", "public/up/otherblob", s3("text/plain"))["putUrl"]

    response = upload(first, "application/json", b"12345")
    assert 400 <= response.status_code < 500, "a Content-Type other than the artifact's"
    response = upload(first, "text/plain", b"123456")
    assert 400 <= response.status_code < 500, "a length other than the declared contentLength"
    response = upload(tampered(first), "text/plain", b"12345")
    assert 400 <= response.status_code < 500, "a tampered signature"
    # The URL signed for one name does not upload another.
    assert "firstblob" in first
    response = upload(first.replace("firstblob", "otherblob"), "text/plain", b"12345")
    assert 400 <= response.status_code < 500, "a URL signed for another name"
    assert requests.get(queue.getArtifact(task_id, "0", "public/up/otherblob")["url"]) \
        .status_code != 200

    assert 200 <= upload(first, "text/plain", b"12345").status_code < 300
    assert requests.get(queue.getArtifact(task_id, "0", "public/up/firstblob")["url"]) \
        .content == b"12345"
    assert 200 <= upload(other, "text/plain", b"other").status_code < 300
    assert requests.get(queue.getArtifact(task_id, "0", "public/up/otherblob")["url"]) \
        .content == b"other"


def test_a_private_s3_artifact_is_read_through_signed_urls(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    name = "private/secret.bin"
    put_url = queue.createArtifact(task_id, "0", name, s3("application/octet-stream"))["putUrl"]
    assert 200 <= upload(put_url, "application/octet-stream", b"\x00secret\xff").status_code < 300

    url = queue.getArtifact(task_id, "0", name)["url"]
    assert requests.get(url).content == b"\x00secret\xff"
    unsigned = url.split("?")[0]
    assert unsigned != url
    assert 400 <= requests.get(unsigned).status_code < 500
    assert 400 <= requests.get(tampered(url)).status_code < 500

    # The queue itself refuses anonymous callers, and a signed queue URL gets the 303.
    response = requests.get(artifact_api(server, task_id, name), allow_redirects=False)
    assert (response.status_code, response.json()["code"]) == (403, "InsufficientScopes")
    signed = queue.buildSignedUrl("getArtifact", task_id, "0", name)
    response = requests.get(signed, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["x-taskcluster-artifact-storage-type"] == "s3"
    assert requests.get(response.headers["Location"]).content == b"\x00secret\xff"
    assert requests.get(signed).content == b"\x00secret\xff"


def test_reference_artifacts_redirect_to_their_url(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    url = "https://example.com/logs/live.log?x=1"
    created = queue.createArtifact(task_id, "0", "private/live.log", reference(url))
    assert created == {"storageType": "reference"}

    assert queue.getArtifact(task_id, "0", "private/live.log") == \
        {"storageType": "reference", "url": url}
    assert queue.getLatestArtifact(task_id, "private/live.log")["url"] == url
    signed = queue.buildSignedUrl("getArtifact", task_id, "0", "private/live.log")
    response = requests.get(signed, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == url
    assert response.headers["x-taskcluster-artifact-storage-type"] == "reference"
    assert response.json() == {"storageType": "reference", "url": url}


def test_links_are_followed_with_a_scope_check_per_name(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    open_url, private_url = "https://example.com/open", "https://example.com/private"
    for name, body in (("public/open", reference(open_url)),
                       ("private/target", reference(private_url)),
                       ("public/to-open", link("public/open")),
                       ("public/chain", link("public/to-open")),
                       ("public/to-private", link("private/target")),
                       ("public/loop-a", link("public/loop-b")),
                       ("public/loop-b", link("public/loop-a")),
                       ("public/self", link("public/self")),
                       ("public/dangling", link("public/missing"))):
        assert queue.createArtifact(task_id, "0", name, body) == \
            {"storageType": body["storageType"]}

    # Resolved on the server: the reply is the final artifact's.
    assert queue.getArtifact(task_id, "0", "public/chain") == \
        {"storageType": "reference", "url": open_url}
    response = requests.get(artifact_api(server, task_id, "public/to-open"),
                            allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == open_url
    assert queue.getLatestArtifact(task_id, "public/to-private")["url"] == private_url

    public_only = limited_queue(server, ["queue:get-artifact:public/*"])
    assert public_only.getArtifact(task_id, "0", "public/to-open")["url"] == open_url
    for reader in (public_only, server.queue(credentials={})):
        error = failure(reader.getArtifact, task_id, "0", "public/to-private")
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
        assert "queue:get-artifact:private/target" in error.body["message"]

    for name in ("public/loop-a", "public/self"):
        error = failure(queue.getArtifact, task_id, "0", name)
        assert (error.status_code, error.body["code"]) == (400, "InputError")
    error = failure(queue.getArtifact, task_id, "0", "public/dangling")
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")

    # Info does not follow the link; a link made without a contentType has the default one.
    info = queue.artifactInfo(task_id, "0", "public/to-private")
    assert (info["storageType"], info["name"], info["contentType"]) == \
        ("link", "public/to-private", "application/binary")


def test_an_error_artifact_answers_424(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    created = queue.createArtifact(task_id, "0", "public/missing.log",
                                   error_artifact("the log was never written"))
    assert created == {"storageType": "error"}
    expected = {"reason": "file-missing-on-worker", "message": "the log was never written"}
    for call, args in ((queue.getArtifact, (task_id, "0", "public/missing.log")),
                       (queue.getLatestArtifact, (task_id, "public/missing.log"))):
        error = failure(call, *args)
        assert error.status_code == 424
        assert error.body == expected
    response = requests.get(artifact_api(server, task_id, "public/missing.log"))
    assert (response.status_code, response.json()) == (424, expected)
    info = queue.artifactInfo(task_id, "0", "public/missing.log")
    assert (info["storageType"], info["contentType"]) == ("error", "application/binary")


def test_object_artifacts_are_refused(queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    body = {"storageType": "object", "contentType": "text/plain", "expires": date_in(EXPIRES)}
    assert failure(queue.createArtifact, task_id, "0", "public/object", body).status_code == 400
    assert failure(queue.artifactInfo, task_id, "0", "public/object").status_code == 404


def test_listings_are_in_name_order_and_paginate(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    names = ["public/echo", "public/alpha", "private/delta", "public/charlie", "public/bravo"]
    expires = {}
    for name in names:
        expires[name] = date_in(EXPIRES)
        queue.createArtifact(task_id, "0", name, reference(f"https://example.com/{name}",
                                                          expires=expires[name]))
    expires["public/foxtrot"] = date_in(EXPIRES)
    queue.createArtifact(task_id, "0", "public/foxtrot",
                         s3("text/plain", expires=expires["public/foxtrot"], contentLength=3))
    names.append("public/foxtrot")

    listed = queue.listArtifacts(task_id, "0")
    assert "continuationToken" not in listed
    assert [a["name"] for a in listed["artifacts"]] == sorted(names)
    for entry in listed["artifacts"]:
        assert entry["contentType"] == "text/plain"
        assert entry["expires"] == expires[entry["name"]]
        if entry["name"] != "public/foxtrot":
            assert set(entry) == {"storageType", "name", "expires", "contentType"}
            assert entry["storageType"] == "reference"
    assert queue.listLatestArtifacts(task_id)["artifacts"] == listed["artifacts"]

    for call, args in ((queue.listArtifacts, (task_id, "0")),
                       (queue.listLatestArtifacts, (task_id,))):
        pages = walk(call, *args, limit=2)
        assert all(len(page["artifacts"]) <= 2 for page in pages)
        assert [a for page in pages for a in page["artifacts"]] == listed["artifacts"]

    assert failure(queue.listArtifacts, task_id, "1").status_code == 404
    assert failure(queue.listArtifacts, new_task_id(), "0").status_code == 404

    # An s3 artifact whose size the worker reported is listed with it.
    [foxtrot] = [a for a in listed["artifacts"] if a["name"] == "public/foxtrot"]
    assert (foxtrot["storageType"], foxtrot.get("contentLength")) == ("s3", 3)


def test_info_and_content_and_what_latest_means(queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    expires = date_in(EXPIRES)
    queue.createArtifact(task_id, "0", "public/log", reference("https://example.com/0",
                                                               expires=expires))
    queue.createArtifact(task_id, "0", "public/error",
                         error_artifact("too big", reason="too-large-file-on-worker"))
    queue.createArtifact(task_id, "0", "public/link", link("public/log"))
    put_url = queue.createArtifact(task_id, "0", "public/blob", s3("text/plain"))["putUrl"]
    assert 200 <= upload(put_url, "text/plain", b"blob").status_code < 300

    info = {"storageType": "reference", "name": "public/log", "expires": expires,
            "contentType": "text/plain"}
    assert queue.artifactInfo(task_id, "0", "public/log") == info
    assert queue.latestArtifactInfo(task_id, "public/log") == info
    error = failure(queue.artifactInfo, task_id, "0", "public/nothing")
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")

    assert queue.artifact(task_id, "0", "public/log") == \
        {"storageType": "reference", "url": "https://example.com/0"}
    assert queue.latestArtifact(task_id, "public/link") == \
        {"storageType": "reference", "url": "https://example.com/0"}
    assert queue.artifact(task_id, "0", "public/error") == \
        {"storageType": "error", "reason": "too-large-file-on-worker", "message": "too big"}
    content = queue.latestArtifact(task_id, "public/blob")
    assert content["storageType"] == "s3"
    assert requests.get(content["url"]).content == b"blob"

    # A new run is the latest one: its artifacts, not run 0's.
    queue.reportFailed(task_id, "0")
    queue.rerunTask(task_id)
    assert queue.listLatestArtifacts(task_id)["artifacts"] == []
    assert failure(queue.latestArtifactInfo, task_id, "public/log").status_code == 404
    assert failure(queue.getLatestArtifact, task_id, "public/log").status_code == 404
    assert queue.artifactInfo(task_id, "0", "public/log") == info
    [claimed] = claim(queue, task_queue_id)
    assert claimed["runId"] == 1
    queue.createArtifact(task_id, "1", "public/log", reference("https://example.com/1"))
    assert queue.getLatestArtifact(task_id, "public/log")["url"] == "https://example.com/1"
    assert queue.getArtifact(task_id, "0", "public/log")["url"] == "https://example.com/0"


def test_create_artifact_is_idempotent_within_taskclusters_rules(queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    expires = date_in(EXPIRES)
    body = s3("text/plain", expires=expires)
    first = queue.createArtifact(task_id, "0", "public/s3", body)
    again = queue.createArtifact(task_id, "0", "public/s3", body)
    assert (again["storageType"], again["contentType"]) == ("s3", "text/plain")
    assert "putUrl" in again
    assert 200 <= upload(first["putUrl"], "text/plain", b"s3").status_code < 300

    def conflict(name, changed):
        error = failure(queue.createArtifact, task_id, "0", name, changed)
        assert (error.status_code, error.body["code"]) == (409, "RequestConflict"), changed

    conflict("public/s3", s3("application/json", expires=expires))
    conflict("public/s3", s3("text/plain", expires=date_in(EXPIRES - datetime.timedelta(hours=1))))
    conflict("public/s3", reference("https://example.com/s3", expires=expires))
    # Expiry may be extended.
    later = date_in(EXPIRES + datetime.timedelta(hours=1))
    queue.createArtifact(task_id, "0", "public/s3", s3("text/plain", expires=later))
    assert queue.artifactInfo(task_id, "0", "public/s3")["expires"] == later

    # A reference may point somewhere else, and may become a link.
    ref_expires = date_in(EXPIRES)
    queue.createArtifact(task_id, "0", "public/ref", reference("https://example.com/a",
                                                               expires=ref_expires))
    queue.createArtifact(task_id, "0", "public/ref", reference("https://example.com/a",
                                                               expires=ref_expires))
    queue.createArtifact(task_id, "0", "public/ref", reference("https://example.com/b",
                                                               expires=ref_expires))
    assert queue.getArtifact(task_id, "0", "public/ref")["url"] == "https://example.com/b"
    conflict("public/ref", reference("https://example.com/c",
                                     expires=date_in(datetime.timedelta(hours=1))))
    queue.createArtifact(task_id, "0", "public/ref", link("public/s3", expires=ref_expires))
    assert queue.getArtifact(task_id, "0", "public/ref")["storageType"] == "s3"

    error_body = error_artifact("gone")
    queue.createArtifact(task_id, "0", "public/err", error_body)
    assert queue.createArtifact(task_id, "0", "public/err", error_body) == {"storageType": "error"}
    conflict("public/err", dict(error_body, message="another message"))


def test_runs_that_take_no_artifacts(server, queue, task_queue_id):
    body = reference("https://example.com/x")
    # The scope comes first: no credentials is a 403 even for a task that does not exist.
    error = failure(server.queue(credentials={}).createArtifact, new_task_id(), "0", "public/x",
                    body)
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    error = failure(queue.createArtifact, new_task_id(), "0", "public/x", body)
    assert (error.status_code, error.body["code"]) == (400, "InputError")

    pending = new_task_id()
    queue.createTask(pending, task_definition(task_queue_id))
    error = failure(queue.createArtifact, pending, "0", "public/x", body)
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    unscheduled = new_task_id()
    queue.createTask(unscheduled, task_definition(task_queue_id, dependencies=[pending]))
    assert failure(queue.listLatestArtifacts, unscheduled).status_code == 404
    assert failure(queue.createArtifact, unscheduled, "0", "public/x", body).status_code == 400
    queue.cancelTask(pending)

    now = datetime.datetime.now(datetime.timezone.utc)
    task_id, _ = running_task(queue, task_queue_id,
                              expires=taskcluster.stringDate(now + datetime.timedelta(hours=2)))
    error = failure(queue.createArtifact, task_id, "1", "public/x", body)
    assert (error.status_code, error.body["code"]) == (400, "InputError")
    for expires in (date_in(datetime.timedelta(hours=3)), date_in(-datetime.timedelta(hours=1))):
        error = failure(queue.createArtifact, task_id, "0", "public/x",
                        reference("https://example.com/x", expires=expires))
        assert (error.status_code, error.body["code"]) == (400, "InputError"), expires
    for invalid in ({"storageType": "s3", "contentType": "text/plain"},
                    {"storageType": "blob", "contentType": "text/plain",
                     "expires": date_in(datetime.timedelta(hours=1))},
                    dict(error_artifact("x"), reason="no-such-reason")):
        error = failure(queue.createArtifact, task_id, "0", "public/x", invalid)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError"), invalid
    error = failure(queue.createArtifact, task_id, "0", "public/caf\u00e9", body)
    assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")
    within = reference("https://example.com/x", date_in(datetime.timedelta(hours=1)))
    queue.createArtifact(task_id, "0", "public/x", within)

    queue.reportCompleted(task_id, "0")
    error = failure(queue.createArtifact, task_id, "0", "public/late", within)
    assert (error.status_code, error.body["code"]) == (409, "RequestConflict")

    # A run resolved `exception` still takes artifacts for a while (25 minutes).
    broken, _ = running_task(queue, task_queue_id)
    queue.reportException(broken, "0", {"reason": "malformed-payload"})
    assert queue.createArtifact(broken, "0", "public/x", body) == {"storageType": "reference"}


def test_anonymous_callers_read_public_artifacts_only(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    queue.createArtifact(task_id, "0", "public/report", reference("https://example.com/r"))
    queue.createArtifact(task_id, "0", "private/report", reference("https://example.com/p"))
    anonymous = server.queue(credentials={})
    assert anonymous.getArtifact(task_id, "0", "public/report")["url"] == "https://example.com/r"
    assert anonymous.latestArtifact(task_id, "public/report")["url"] == "https://example.com/r"
    for call, args in ((anonymous.getArtifact, (task_id, "0", "private/report")),
                       (anonymous.getLatestArtifact, (task_id, "private/report")),
                       (anonymous.artifact, (task_id, "0", "private/report"))):
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")
    error = failure(anonymous.createArtifact, task_id, "0", "public/mine",
                    reference("https://example.com/m"))
    assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes")

    # getArtifact checks the scope before it looks for the task, so a private name is a 403
    # whether or not the task exists; a public one is a 404.
    unknown = new_task_id()
    for call, args in ((anonymous.getArtifact, (unknown, "0", "private/report")),
                       (anonymous.getLatestArtifact, (unknown, "private/report"))):
        assert failure(call, *args).status_code == 403
    for call, args in ((anonymous.getArtifact, (unknown, "0", "public/report")),
                       (anonymous.getLatestArtifact, (unknown, "public/report")),
                       (anonymous.getArtifact, (task_id, "1", "public/report")),
                       (anonymous.getArtifact, (task_id, "0", "public/nothing"))):
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound"), args


def test_an_expired_artifact_is_gone(queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    expires = date_in(datetime.timedelta(seconds=2))
    queue.createArtifact(task_id, "0", "public/short", reference("https://example.com/s",
                                                                 expires=expires))
    assert queue.getArtifact(task_id, "0", "public/short")["url"] == "https://example.com/s"
    while date_in(datetime.timedelta()) <= expires:
        time.sleep(0.2)
    time.sleep(0.1)
    error = failure(queue.getArtifact, task_id, "0", "public/short")
    assert (error.status_code, error.body["code"]) == (410, "ResourceExpired")
    assert failure(queue.getLatestArtifact, task_id, "public/short").status_code == 410
    # Listings still show it until it is deleted.
    assert [a["name"] for a in queue.listArtifacts(task_id, "0")["artifacts"]] == ["public/short"]


def test_an_expired_s3_artifacts_blob_is_deleted(server, queue, task_queue_id):
    task_id, _ = running_task(queue, task_queue_id)
    expires = date_in(datetime.timedelta(seconds=2))
    put_url = queue.createArtifact(task_id, "0", "public/short.bin",
                                   s3("application/octet-stream", expires=expires))["putUrl"]
    assert upload(put_url, "application/octet-stream", b"soon gone").ok
    kept = queue.createArtifact(task_id, "0", "public/kept.bin",
                                s3("application/octet-stream"))["putUrl"]
    assert upload(kept, "application/octet-stream", b"kept").ok
    run_dir = os.path.join(server.data_dir, "blobs", task_id, "0")
    assert len(os.listdir(run_dir)) == 2
    assert wait_for(lambda: len(os.listdir(run_dir)) == 1, timeout=15)
    error = failure(queue.getArtifact, task_id, "0", "public/short.bin")
    assert (error.status_code, error.body["code"]) == (410, "ResourceExpired")
    assert requests.get(queue.getArtifact(task_id, "0", "public/kept.bin")["url"]).content == \
        b"kept"
