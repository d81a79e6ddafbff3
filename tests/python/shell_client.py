"""A small client of Taskfold's interactive-session websocket (schemas/interactive.md): binary
frames whose byte 0 is the opcode (those of docker-exec-websocket-server), `stopped` carrying an
`i32le` exit status.

It reads synchronously, with a deadline per wait, and records everything it received: the
shell's output, `resume`/`pause`, `stopped`, `shutdown`, `error` and the websocket close (code
and reason), so that a failing test can say exactly what came over the wire.
"""

import json
import re
import struct
import time

import websocket

STDIN = 0
STDOUT = 1
STDERR = 2
RESIZE = 50
RESUME = 100
PAUSE = 101
END = 102
STOPPED = 200
SHUTDOWN = 201
ERROR = 202

NAMES = {STDIN: "stdin", STDOUT: "stdout", STDERR: "stderr", RESIZE: "resize", RESUME: "resume",
         PAUSE: "pause", END: "end", STOPPED: "stopped", SHUTDOWN: "shutdown", ERROR: "error"}

DEFAULT_TIMEOUT = 30


class Closed(Exception):
    """The websocket closed (or dropped) before what a wait waited for."""


class HandshakeRefused(Exception):
    """The server answered the websocket upgrade with an HTTP error."""

    def __init__(self, status, body, headers):
        super().__init__(f"handshake refused: {status} {body!r}")
        self.status = status
        self.body = body
        self.headers = headers or {}

    def json(self):
        return json.loads(self.body)


def handshake_failure(socket_url, timeout=DEFAULT_TIMEOUT):
    """The HTTP error a websocket upgrade to `socket_url` gets; fails if the upgrade succeeds."""
    try:
        ws = websocket.create_connection(socket_url, timeout=timeout)
    except websocket.WebSocketBadStatusException as error:
        body = error.resp_body
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        return HandshakeRefused(error.status_code, body, error.resp_headers)
    ws.close()
    raise AssertionError(f"the websocket upgrade to {socket_url} was accepted")


class ShellClient:
    """One session's websocket, seen from the user's side."""

    def __init__(self, socket_url, timeout=DEFAULT_TIMEOUT):
        self.socket_url = socket_url
        self.timeout = timeout
        self.output = bytearray()      # stdout
        self.errors_output = bytearray()  # stderr
        self.frames = []               # (opcode name, payload) of every frame received
        self.resumed = 0
        self.paused = False
        self.exit_status = None
        self.shutdown = False
        self.error = None
        self.closed = False
        self.close_code = None
        self.close_reason = None
        try:
            self.ws = websocket.create_connection(socket_url, timeout=timeout)
        except websocket.WebSocketBadStatusException as error:
            raise HandshakeRefused(error.status_code, error.resp_body, error.resp_headers)

    # --- sending ----------------------------------------------------------------------------

    def _send(self, opcode, payload=b""):
        self.ws.send_binary(bytes([opcode]) + payload)

    def send_input(self, data):
        if isinstance(data, str):
            data = data.encode()
        self._send(STDIN, data)

    def run(self, line):
        """Types `line` and Enter."""
        self.send_input(line + "\n")

    def resize(self, rows, cols):
        self._send(RESIZE, struct.pack("<HH", rows, cols))

    def pause(self):
        self._send(PAUSE)

    def resume(self):
        self._send(RESUME)

    def end_input(self):
        self._send(END)

    def close(self, code=1000, reason=""):
        if not self.closed:
            try:
                self.ws.close(status=code, reason=reason.encode(), timeout=2)
            except Exception:
                pass
            self.closed = True
        try:
            self.ws.shutdown()
        except Exception:
            pass

    def drop(self):
        """Drops the connection without a websocket close: a user who went away."""
        try:
            self.ws.shutdown()
        except Exception:
            pass
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- receiving --------------------------------------------------------------------------

    def _receive(self, deadline):
        """Receives one frame and records it; False when the deadline passed first."""
        if self.closed:
            raise Closed(self.describe())
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.ws.settimeout(remaining)
        try:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return False
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError) as error:
            self.closed = True
            self.frames.append(("dropped", str(error).encode()))
            raise Closed(self.describe())
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            data = frame.data or b""
            if len(data) >= 2:
                self.close_code = struct.unpack("!H", data[:2])[0]
                self.close_reason = data[2:].decode("utf-8", "replace")
            self.frames.append(("close", data))
            self.closed = True
            try:
                self.ws.shutdown()
            except Exception:
                pass
            raise Closed(self.describe())
        if opcode in (websocket.ABNF.OPCODE_PING, websocket.ABNF.OPCODE_PONG):
            return True
        data = frame.data
        if isinstance(data, str):
            data = data.encode()
        if opcode == websocket.ABNF.OPCODE_TEXT:
            # The protocol has no text frames; record it as such.
            self.frames.append(("text", bytes(data)))
            return True
        data = bytes(data)
        if not data:
            self.frames.append(("empty", b""))
            return True
        op, payload = data[0], data[1:]
        self.frames.append((NAMES.get(op, f"op{op}"), payload))
        if op == STDOUT:
            self.output += payload
        elif op == STDERR:
            self.errors_output += payload
        elif op == RESUME:
            self.resumed += 1
            self.paused = False
        elif op == PAUSE:
            self.paused = True
        elif op == STOPPED:
            assert len(payload) == 4, f"stopped frame of {len(payload)} payload bytes: {payload!r}"
            self.exit_status = struct.unpack("<i", payload)[0]
        elif op == SHUTDOWN:
            self.shutdown = True
        elif op == ERROR:
            self.error = payload.decode("utf-8", "replace")
        return True

    def wait(self, condition, what, timeout=None):
        """Receives frames until `condition()` holds; fails saying `what` did not happen."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not condition():
            try:
                if not self._receive(deadline):
                    raise AssertionError(f"{what} within the timeout; {self.describe()}")
            except Closed:
                if condition():
                    return
                raise AssertionError(f"{what} before the socket closed; {self.describe()}")

    def read_for(self, seconds):
        """Receives (and records) whatever comes for `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while self._receive(deadline):
                pass
        except Closed:
            pass

    def wait_ready(self, timeout=None):
        """Waits for the first `resume`: the shell runs and takes input."""
        self.wait(lambda: self.resumed > 0, "no resume frame", timeout)
        return self

    def read_until(self, pattern, timeout=None, start=0):
        """Waits until `pattern` (bytes, str or compiled regex) appears in stdout after offset
        `start`; the match (a regex match object, or the end offset for a plain string)."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        if isinstance(pattern, bytes):
            pattern = re.compile(re.escape(pattern))
        elif isinstance(pattern.pattern, str):
            pattern = re.compile(pattern.pattern.encode(), pattern.flags & ~re.UNICODE)
        found = []

        def seen():
            match = pattern.search(bytes(self.output), start)
            if match:
                found.append(match)
            return bool(match)

        self.wait(seen, f"{pattern.pattern!r} not seen in stdout", timeout)
        return found[-1]

    def mark(self):
        """The current end of stdout, to read only what comes next."""
        return len(self.output)

    def wait_stopped(self, timeout=None):
        """Waits for `stopped`; the exit status."""
        self.wait(lambda: self.exit_status is not None, "no stopped frame", timeout)
        return self.exit_status

    def wait_closed(self, timeout=None):
        """Reads until the websocket closes; (close code, reason)."""
        self.wait(lambda: self.closed, "the socket did not close", timeout)
        return self.close_code, self.close_reason

    def describe(self):
        frames = [(name, payload[:200]) for name, payload in self.frames[-30:]]
        return (f"stdout={bytes(self.output[-2000:])!r} exit_status={self.exit_status} "
                f"shutdown={self.shutdown} error={self.error!r} closed={self.closed} "
                f"close=({self.close_code}, {self.close_reason!r}) last frames={frames}")
