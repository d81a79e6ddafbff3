"""The Secrets service (`/api/secrets/v1/`) driven by the official Python client against the real
server: set, get (404 missing, 410 expired), remove, list with pages, the scopes of each, bad
input refused with nothing stored, a restart that keeps everything, and a value that never
shows in the server's log, its metrics, error bodies or task history."""

import datetime
import glob
import os

import requests
import taskcluster

from conftest import ROOT_CLIENT, ROOT_TOKEN, date_in, failure, walk

HOUR = datetime.timedelta(hours=1)


def limited(server, service, scopes):
    now = datetime.datetime.now(datetime.timezone.utc)
    credentials = taskcluster.createTemporaryCredentials(
        ROOT_CLIENT, ROOT_TOKEN, now - datetime.timedelta(minutes=1), now + HOUR, scopes)
    return server.client(service, credentials=credentials)


def test_a_secret_is_set_read_listed_and_removed(server):
    secrets = server.client("Secrets")
    name = f"project/{os.urandom(4).hex()}/deploy key"
    expires = date_in(HOUR)
    assert secrets.set(name, {"secret": {"token": "s3cr3t", "n": [1, 2]}, "expires": expires}) == {}
    assert secrets.get(name) == {"secret": {"token": "s3cr3t", "n": [1, 2]}, "expires": expires}
    assert name in secrets.list()["secrets"]
    # Set again: replaced.
    secrets.set(name, {"secret": {"token": "rotated"}, "expires": expires})
    assert secrets.get(name)["secret"] == {"token": "rotated"}
    secrets.remove(name)
    error = failure(secrets.get, name)
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")
    assert name not in secrets.list()["secrets"]
    # Removing what is not there is no error.
    secrets.remove(name)


def test_an_expired_secret_answers_410_and_is_not_listed(server):
    secrets = server.client("Secrets")
    name = f"expired/{os.urandom(4).hex()}"
    secrets.set(name, {"secret": {"a": 1}, "expires": date_in(-datetime.timedelta(seconds=5))})
    error = failure(secrets.get, name)
    assert (error.status_code, error.body["code"]) == (410, "ResourceExpired")
    assert name not in secrets.list()["secrets"]
    error = failure(secrets.get, f"missing/{os.urandom(4).hex()}")
    assert (error.status_code, error.body["code"]) == (404, "ResourceNotFound")


def test_the_list_pages_in_name_order(fresh_server):
    secrets = fresh_server.start().client("Secrets")
    names = [f"page/{i:03d}" for i in range(23)]
    for name in reversed(names):
        secrets.set(name, {"secret": {"i": name}, "expires": date_in(HOUR)})
    pages = walk(secrets.list, limit=10)
    assert [len(page["secrets"]) for page in pages] == [10, 10, 3]
    assert [name for page in pages for name in page["secrets"]] == names


def test_each_method_needs_its_scope(server):
    server.client("Secrets").set("scoped/a", {"secret": {"a": 1}, "expires": date_in(HOUR)})
    reader = limited(server, "Secrets", ["secrets:get:scoped/a"])
    assert reader.get("scoped/a")["secret"] == {"a": 1}
    for call, args in [(reader.get, ("scoped/b",)),
                       (reader.set, ("scoped/a", {"secret": {}, "expires": date_in(HOUR)})),
                       (reader.remove, ("scoped/a",)),
                       (reader.list, ())]:
        error = failure(call, *args)
        assert (error.status_code, error.body["code"]) == (403, "InsufficientScopes"), call
    # remove needs the set scope, as in Taskcluster.
    writer = limited(server, "Secrets", ["secrets:set:scoped/*", "secrets:list-secrets"])
    writer.remove("scoped/a")
    assert "scoped/a" not in writer.list()["secrets"]
    anonymous = server.client("Secrets", credentials={})
    assert failure(anonymous.get, "scoped/a").status_code == 403


def test_bad_input_is_refused_and_nothing_is_stored(server):
    secrets = server.client("Secrets")
    bodies = [
        {"secret": "a string", "expires": date_in(HOUR)},
        {"secret": {"a": 1}},
        {"secret": {"a": 1}, "expires": "tomorrow"},
        {"secret": {"a": 1}, "expires": date_in(HOUR), "extra": True},
    ]
    for body in bodies:
        error = failure(secrets.set, "bad/one", body)
        assert (error.status_code, error.body["code"]) == (400, "InputValidationError"), body
        # The value is never echoed.
        assert error.body["requestInfo"]["payload"].get("secret") in (None, "(OMITTED)")
    big = {"secret": {"blob": "x" * (3 << 20)}, "expires": date_in(HOUR)}
    error = failure(secrets.set, "bad/big", big)
    assert error.status_code == 413 and error.body["code"] == "InputTooLarge"
    for name in ["bad/one", "bad/big"]:
        assert failure(secrets.get, name).status_code == 404
    for name in ["a\x01b", "x" * 1025]:
        error = failure(secrets.set, name, {"secret": {"a": 1}, "expires": date_in(HOUR)})
        assert (error.status_code, error.body["code"]) == (400, "InvalidRequestArguments")


def test_secrets_survive_a_restart_and_never_show_in_logs_or_metrics(fresh_server):
    server = fresh_server.start()
    secrets = server.client("Secrets")
    value = f"value-{os.urandom(8).hex()}"
    for i in range(30):
        secrets.set(f"durable/{i}", {"secret": {"v": value}, "expires": date_in(HOUR)})
    error = failure(secrets.set, "durable/x", {"secret": {"v": value}, "expires": "never"})
    assert value not in str(error.body)
    server.stop()
    server.start()
    secrets = server.client("Secrets")
    assert all(secrets.get(f"durable/{i}")["secret"] == {"v": value} for i in range(30))
    assert len(walk(secrets.list, limit=1000)[0]["secrets"]) == 30
    metrics = requests.get(f"{server.root_url}/metrics").text
    assert value not in metrics
    for log in glob.glob(os.path.join(server.log_dir, "*.log")):
        assert value not in open(log, errors="replace").read(), log
