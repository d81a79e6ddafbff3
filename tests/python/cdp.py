"""A minimal Chrome DevTools Protocol driver: headless Chromium, its pages, navigation,
JavaScript evaluation and typing. Only `websocket-client` and the standard library.

    with Chromium() as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:8080/")
        page.wait_for("document.title == 'ready'")
        page.type_text("hello")
        page.press_enter()
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import websocket

CHROMIUM = os.environ.get("TASKFOLD_TEST_CHROMIUM", "/usr/bin/chromium")


class CdpError(Exception):
    """A DevTools command failed, or a page's JavaScript threw."""


class Connection:
    """One DevTools websocket (the browser's or a page's): commands and their answers, with the
    events that arrive meanwhile kept in `events`."""

    def __init__(self, url, timeout=30):
        # Chromium refuses websocket clients that send an Origin it was not told to allow.
        self.socket = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        command_id = self.next_id
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") != command_id:
                self.events.append(message)
                continue
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            return message.get("result", {})

    def wait_event(self, method, since=0, timeout=30):
        """The first event `method` received after the first `since` events, waiting for it
        at most `timeout` s. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        index = since
        while True:
            for event in self.events[index:]:
                if event.get("method") == method:
                    return event
            index = len(self.events)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {method} within {timeout} s")
            self.socket.settimeout(remaining)
            try:
                self.events.append(json.loads(self.socket.recv()))
            except websocket.WebSocketTimeoutException:
                pass
            finally:
                self.socket.settimeout(self.timeout)

    def close(self):
        self.socket.close()


class Page:
    """A page target: navigate, evaluate, wait, type."""

    def __init__(self, url, target_id=None):
        self.target_id = target_id
        self.connection = Connection(url)
        self.connection.call("Page.enable")
        self.connection.call("Runtime.enable")

    def navigate(self, url, timeout=30):
        """Opens `url` and waits until the page has loaded (its `load` event)."""
        since = len(self.connection.events)
        result = self.connection.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise CdpError(f"navigating to {url}: {result['errorText']}")
        if "loaderId" in result:   # else a navigation within the document: nothing loads
            self.connection.wait_event("Page.loadEventFired", since, timeout)

    def evaluate(self, expression):
        """The value of a JavaScript expression (promises awaited), as JSON would carry it."""
        result = self.connection.call("Runtime.evaluate", expression=expression,
                                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=30, interval=0.1):
        """Evaluates `expression` until it is truthy; its value. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still false after {timeout} s")
            time.sleep(interval)

    def focus(self, selector):
        """Focuses the first element matching the CSS `selector`."""
        found = self.evaluate(
            f"(() => {{ const element = document.querySelector({json.dumps(selector)});"
            f" if (element) element.focus(); return Boolean(element); }})()")
        if not found:
            raise CdpError(f"no element matches {selector!r}")

    def type_text(self, text):
        """Types `text` into the focused element one key at a time (keydown, keypress, input,
        keyup), as a keyboard would: xterm.js 3 reads keypress events. A newline is Enter."""
        for char in text:
            if char in "\r\n":
                self.press_enter()
            else:
                self.press_key(char, text=char)

    def insert_text(self, text):
        """Inserts `text` into the focused element at once, as an input method would (an
        `input` event without key events: xterm.js 4 and later read it, 3 does not)."""
        self.connection.call("Input.insertText", text=text)

    def press_enter(self):
        self.press_key("Enter", code="Enter", text="\r", key_code=13)

    def press_key(self, key, code=None, text=None, key_code=None):
        """A keyDown (typing `text`, if given) and its keyUp."""
        event = {"key": key}
        if code is not None:
            event["code"] = code
        if key_code is not None:
            event["windowsVirtualKeyCode"] = event["nativeVirtualKeyCode"] = key_code
        if text is not None:
            self.connection.call("Input.dispatchKeyEvent", type="keyDown", text=text,
                                 unmodifiedText=text, **event)
        else:
            self.connection.call("Input.dispatchKeyEvent", type="rawKeyDown", **event)
        self.connection.call("Input.dispatchKeyEvent", type="keyUp", **event)

    def console_messages(self):
        """What the page logged and the exceptions it threw so far, as text lines."""
        lines = []
        for event in self.connection.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled":
                values = [arg.get("value", arg.get("description", "")) for arg in params["args"]]
                lines.append(f"console.{params['type']}: " + " ".join(map(str, values)))
            elif event.get("method") == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                lines.append(f"exception: {text}")
        return lines

    def close(self):
        self.connection.close()


class Chromium:
    """A headless Chromium process with a profile of its own, stopped with its whole process
    group. `start()` (or `with`) launches it; `new_page()` opens a tab."""

    def __init__(self, binary=CHROMIUM, window_size=(1024, 768), extra_args=()):
        self.binary = binary
        self.window_size = window_size
        self.extra_args = list(extra_args)
        self.process = None
        self.profile = None
        self.browser = None
        self.pages = []

    def start(self, timeout=30):
        self.profile = tempfile.mkdtemp(prefix="taskfold-chromium-")
        self.log = open(os.path.join(self.profile, "chromium.log"), "w")
        width, height = self.window_size
        self.process = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={width},{height}", *self.extra_args, "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        # Chromium writes the port it chose and the browser target's path once it listens.
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while True:
            lines = []
            if os.path.exists(port_file):
                with open(port_file) as file:
                    lines = file.read().split()
            if len(lines) >= 2:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.read_log()
                self.stop()
                raise RuntimeError(f"chromium did not start within {timeout} s:\n{log}")
            time.sleep(0.05)
        self.port = int(lines[0])
        self.browser = Connection(f"ws://127.0.0.1:{self.port}{lines[1]}")
        return self

    def new_page(self):
        target = self.browser.call("Target.createTarget", url="about:blank")["targetId"]
        page = Page(f"ws://127.0.0.1:{self.port}/devtools/page/{target}", target)
        self.pages.append(page)
        return page

    def close_page(self, page):
        """Closes the page's tab (its websocket connections with it)."""
        page.close()
        self.pages.remove(page)
        self.browser.call("Target.closeTarget", targetId=page.target_id)

    def read_log(self):
        path = os.path.join(self.profile, "chromium.log") if self.profile else None
        if path and os.path.exists(path):
            with open(path, errors="replace") as log:
                return log.read()
        return ""

    def stop(self):
        """Asks Chromium to close, then ends its process group (renderers, zygote, GPU
        process) and removes the profile."""
        for page in self.pages:
            try:
                page.close()
            except Exception:
                pass
        self.pages = []
        if self.browser is not None:
            try:
                self.browser.call("Browser.close")
            except Exception:
                pass
            try:
                self.browser.close()
            except Exception:
                pass
            self.browser = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGTERM)
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left of the group (it may outlive its leader), until it is gone.
            deadline = time.monotonic() + 5
            while self.signal_group(signal.SIGKILL) and time.monotonic() < deadline:
                self.process.poll()   # reaps the leader, whose zombie would count
                time.sleep(0.05)
            self.process.wait()
            self.process = None
            self.log.close()
        if self.profile is not None:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    def signal_group(self, sig):
        """Sends `sig` to Chromium's process group; whether the group still had a process."""
        try:
            os.killpg(self.process.pid, sig)
            return True
        except ProcessLookupError:
            return False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
