"""The exchange message schemas of schemas/asyncapi.yaml, for the tests that read what Taskfold emits.

    import exchange_schemas
    exchange_schemas.validate("task-completed", body)          # or the full exchange name
    exchange_schemas.validate_headers("task-completed", record.headers(), key=record.key(),
                                      payload=body)
    exchange_schemas.validate_listener_message(frame)          # a websocket `message` frame
    exchange_schemas.validate_sse_data(data)                   # the JSON of an SSE `data:` field
    exchange_schemas.validate_schema("ListenerError", frame)   # any `components.schemas` entry
    exchange_schemas.routing_key("task-completed", body)       # the primary routing key expected

Each raises `jsonschema.ValidationError` when the message does not match, and `KeyError` for an
exchange the file does not describe. Schemas are JSON Schema (validated with the Draft 2020-12
validator); `#/components/...` references resolve within the AsyncAPI document, and
`format: date-time` is checked (RFC 3339).
"""

import datetime
import functools
import os
import re

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schemas", "asyncapi.yaml")
EXCHANGE_PREFIX = "exchange/taskcluster-queue/v1/"
CE_TYPE_PREFIX = "taskcluster-queue.v1."
# Where the document lives in the reference registry; its `#/...` references resolve against it.
DOC_URI = "urn:taskfold:schemas:asyncapi.yaml"
# Exchanges whose Kafka key and routing key are about a task group rather than a task.
GROUP_EXCHANGES = ("task-group-resolved", "task-group-sealed", "task-group-priority-changed")
# The headers every Kafka record has exactly once.
REQUIRED_HEADERS = (
    "taskcluster-routing-key",
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "ce_subject",
    "content-type",
)

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$"
)

FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value):
    """RFC 3339 `date-time` (what JSON Schema's format means), without an extra package."""
    if not isinstance(value, str):
        return True
    match = _RFC3339.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    # Leap seconds (:60) are legal in RFC 3339; datetime cannot hold them.
    datetime.datetime(year, month, day, hour, minute, min(second, 59))
    if second > 60:
        return False
    if match.group(9) is not None and (int(match.group(9)) > 23 or int(match.group(10)) > 59):
        return False
    return True


@functools.lru_cache(maxsize=None)
def _document():
    with open(PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def load():
    """The parsed AsyncAPI document (shared; do not modify it)."""
    return _document()


@functools.lru_cache(maxsize=None)
def _registry():
    resource = Resource.from_contents(_document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOC_URI, resource)


@functools.lru_cache(maxsize=None)
def _validator(pointer):
    """A validator for the schema at JSON pointer `pointer` (`/components/schemas/X`)."""
    return jsonschema.Draft202012Validator(
        {"$ref": DOC_URI + "#" + pointer},
        registry=_registry(),
        format_checker=FORMAT_CHECKER,
    )


def _follow(pointer):
    """The object at `pointer`, following AsyncAPI `$ref`s; returns (pointer, object)."""
    node = _document()
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    seen = set()
    while isinstance(node, dict) and set(node) == {"$ref"}:
        ref = node["$ref"]
        if not ref.startswith("#/") or ref in seen:
            raise ValueError(f"cannot follow $ref {ref!r} in {PATH}")
        seen.add(ref)
        pointer = ref[1:]
        node = _document()
        for part in pointer.lstrip("/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return pointer, node


@functools.lru_cache(maxsize=None)
def _exchanges():
    """Short exchange name -> JSON pointer of its (Kafka) message, from `x-taskcluster-exchange`."""
    found = {}
    for channel_id, channel in _document()["channels"].items():
        full = channel.get("x-taskcluster-exchange")
        if full is None:
            continue
        assert full.startswith(EXCHANGE_PREFIX), full
        (message_id,) = channel["messages"]
        pointer, _ = _follow(f"/channels/{channel_id}/messages/{message_id}")
        found[full[len(EXCHANGE_PREFIX):]] = pointer
    return found


def exchanges():
    """The short names of every exchange the document describes."""
    return sorted(_exchanges())


def short_name(exchange):
    """`task-completed` for `task-completed` or `exchange/taskcluster-queue/v1/task-completed`."""
    name = exchange[len(EXCHANGE_PREFIX):] if exchange.startswith(EXCHANGE_PREFIX) else exchange
    if name not in _exchanges():
        raise KeyError(f"no exchange {exchange!r} in {PATH}")
    return name


def _raise_first(validator, instance):
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error


def validate(exchange, payload):
    """Checks a message body against the schema of `exchange` (short or full name)."""
    pointer = _exchanges()[short_name(exchange)]
    _raise_first(_validator(pointer + "/payload"), payload)


def routing_key(exchange, payload):
    """The primary routing key Taskcluster would publish `payload` on, built from the payload."""
    name = short_name(exchange)

    def word(value):
        return "_" if value is None else str(value)

    if name in GROUP_EXCHANGES:
        words = [payload["taskGroupId"], payload["schedulerId"]]
    else:
        status = payload["status"]
        words = [
            status["taskId"],
            payload.get("runId"),
            payload.get("workerGroup"),
            payload.get("workerId"),
            status["provisionerId"],
            status["workerType"],
            status["schedulerId"],
            status["taskGroupId"],
        ]
    return ".".join(["primary"] + [word(w) for w in words] + ["_"])


def _decode(name, value):
    if isinstance(value, str):
        return value
    if not isinstance(value, (bytes, bytearray)):
        raise jsonschema.ValidationError(f"Kafka header {name!r} has no value ({value!r})")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as e:
        raise jsonschema.ValidationError(f"Kafka header {name!r} is not UTF-8: {e}") from None


def validate_headers(exchange, headers, key=None, payload=None):
    """Checks a Kafka record's headers, a list of (name, bytes) tuples, for `exchange`.

    Every header but `taskcluster-cc` must appear once; `ce_type` must name the exchange and
    `ce_specversion` be `1.0`; the whole set must match the message's `headers` schema. With
    `key` (bytes or str), `ce_subject` must equal it; with `payload`, the routing key must be the
    one built from it. Returns the headers as a dict of str (`taskcluster-cc` a list, if present).
    """
    name = short_name(exchange)
    decoded = {}
    for header, value in headers or ():
        value = _decode(header, value)
        if header == "taskcluster-cc":
            decoded.setdefault(header, []).append(value)
        elif header in decoded:
            raise jsonschema.ValidationError(f"Kafka header {header!r} appears more than once")
        else:
            decoded[header] = value
    missing = [h for h in REQUIRED_HEADERS if h not in decoded]
    if missing:
        raise jsonschema.ValidationError(f"Kafka headers {missing} missing (have {sorted(decoded)})")
    if decoded["ce_specversion"] != "1.0":
        raise jsonschema.ValidationError(f"ce_specversion is {decoded['ce_specversion']!r}, not '1.0'")
    if decoded["ce_type"] != CE_TYPE_PREFIX + name:
        raise jsonschema.ValidationError(
            f"ce_type is {decoded['ce_type']!r}, not {CE_TYPE_PREFIX + name!r}"
        )
    _raise_first(_validator(_exchanges()[name] + "/headers"), decoded)
    if key is not None:
        key = _decode("(key)", key)
        if decoded["ce_subject"] != key:
            raise jsonschema.ValidationError(
                f"ce_subject {decoded['ce_subject']!r} is not the record key {key!r}"
            )
    if payload is not None:
        expected = routing_key(name, payload)
        if decoded["taskcluster-routing-key"] != expected:
            raise jsonschema.ValidationError(
                f"routing key {decoded['taskcluster-routing-key']!r}, expected {expected!r}"
            )
    return decoded


def validate_listen_request(request):
    """Checks what a client sends to open a websocket listener."""
    _raise_first(_validator("/components/schemas/ListenRequest"), request)


def validate_listener_ready(frame):
    """Checks the websocket listener's first frame (`{"type": "ready", ...}`)."""
    _raise_first(_validator("/components/schemas/ListenerReady"), frame)


def validate_listener_message(frame):
    """Checks a websocket `{"type": "message", ...}` frame, its payload against its exchange."""
    _raise_first(_validator("/components/schemas/ListenerMessage"), frame)


def validate_sse_data(data):
    """Checks the parsed `data:` of a Server-Sent Event (a listener message without `type`)."""
    _raise_first(_validator("/components/schemas/ListenerEvent"), data)


def validate_schema(name, instance):
    """Checks `instance` against `components.schemas.<name>` (e.g. `ListenerError`, `SseError`)."""
    if name not in _document()["components"]["schemas"]:
        raise KeyError(f"no schema {name!r} in {PATH}")
    _raise_first(_validator(f"/components/schemas/{name}"), instance)
