"""A minimal Chrome DevTools Protocol driver: headless Chromium, its pages, navigation,
JavaScript evaluation, typing, clicking, waiting for elements, viewport emulation and
screenshots. Only `websocket-client` and the standard library.

    with Chromium() as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:8080/")
        page.wait_for("document.title == 'ready'")
        page.type_text("hello")
        page.press_enter()
        page.set_viewport(375, 812, mobile=True)
        page.click("button[data-action=save]")
        page.wait_for_selector("[data-testid=message]")
        page.screenshot("/tmp/page.png")
"""

import base64

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
        # Native dialogs (alert, confirm, prompt) are accepted as they open, and kept here.
        self.accept_dialogs = True
        self.dialogs = []

    def call(self, method, timeout=None, **params):
        """Sends a command and returns its result. `timeout` (s) bounds the wait for the answer
        (default: the connection's); past it, TimeoutError (a late answer is dropped)."""
        self.next_id += 1
        command_id = self.next_id
        self.socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self.receive(deadline, f"no answer to {method}")
            if message.get("id") != command_id:
                continue
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            return message.get("result", {})

    def receive(self, deadline, what):
        """The next message (an event or an answer); events are also kept in `events`, and a
        native dialog is accepted as it opens, since it would block the page. TimeoutError
        (saying `what`) past `deadline`."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(what)
        self.socket.settimeout(remaining)
        try:
            message = json.loads(self.socket.recv())
        except websocket.WebSocketTimeoutException:
            raise TimeoutError(what) from None
        finally:
            self.socket.settimeout(self.timeout)
        if "method" in message:
            self.events.append(message)
            if message["method"] == "Page.javascriptDialogOpening" and self.accept_dialogs:
                self.dialogs.append(message["params"])
                self.next_id += 1
                self.socket.send(json.dumps({
                    "id": self.next_id, "method": "Page.handleJavaScriptDialog",
                    "params": {"accept": True,
                               "promptText": message["params"].get("defaultPrompt", "")}}))
        return message

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
            self.receive(deadline, f"no {method} within {timeout} s")

    def close(self):
        self.socket.close()


class Page:
    """A page target: navigate, evaluate, wait, type, click, emulate a screen, screenshot."""

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

    def evaluate(self, expression, timeout=None):
        """The value of a JavaScript expression (promises awaited), as JSON would carry it.
        `timeout` (s) bounds the wait for the answer: past it, TimeoutError (a hung page)."""
        result = self.connection.call("Runtime.evaluate", timeout=timeout, expression=expression,
                                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"{expression[:200]!r} threw: {text}")
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

    def wait_for_selector(self, selector, timeout=30, visible=False):
        """Waits until an element matches the CSS `selector` (and, with `visible`, has a box
        on screen); raises TimeoutError naming it."""
        check = "(e => e && (e.getClientRects().length > 0))" if visible else "(e => Boolean(e))"
        try:
            self.wait_for(f"{check}(document.querySelector({json.dumps(selector)}))", timeout)
        except TimeoutError:
            raise TimeoutError(f"no element matches {selector!r} after {timeout} s") from None

    def count(self, selector):
        """How many elements match the CSS `selector`."""
        return self.evaluate(f"document.querySelectorAll({json.dumps(selector)}).length")

    def text(self, selector):
        """The trimmed text of the first element matching `selector`, None if there is none."""
        return self.evaluate(f"(e => e ? e.textContent.trim() : null)"
                             f"(document.querySelector({json.dumps(selector)}))")

    def attributes(self, selector, *names):
        """For each element matching `selector`, a dict of its attributes `names` (None for
        those it lacks), in document order."""
        return self.evaluate(
            f"Array.from(document.querySelectorAll({json.dumps(selector)}), e => "
            f"Object.fromEntries({json.dumps(names)}.map(n => [n, e.getAttribute(n)])))")

    def responsive(self, timeout=2):
        """Whether the page answers a trivial evaluation within `timeout` s (a hung tab does
        not: its main thread is busy)."""
        try:
            return self.evaluate("1 + 1", timeout=timeout) == 2
        except TimeoutError:
            return False

    def click(self, selector, timeout=30):
        """Clicks the first element matching `selector` with the mouse, as a user would: waits
        for it to be visible, scrolls it into view and presses and releases the left button at
        its centre."""
        self.wait_for_selector(selector, timeout, visible=True)
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.scrollIntoView({{block: 'center', inline: 'center'}});"
            f" const r = e.getBoundingClientRect();"
            f" return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            extra = {} if kind == "mouseMoved" else {"button": "left", "clickCount": 1}
            self.connection.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                                 **extra)

    def fill(self, selector, text):
        """Replaces the value of the input matching `selector` with `text`, as typing would
        (focus, select all, insert: one `input` event, which frameworks' controlled inputs
        read)."""
        self.focus(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        if text:
            self.insert_text(text)
        else:
            self.press_key("Delete", code="Delete", key_code=46)

    def select_option(self, selector, value):
        """Chooses `value` in the <select> matching `selector` and sends `input` and `change`
        events, as picking it with the mouse would."""
        self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" e.value = {json.dumps(value)};"
            f" e.dispatchEvent(new Event('input', {{bubbles: true}}));"
            f" e.dispatchEvent(new Event('change', {{bubbles: true}})); }})()")

    def set_viewport(self, width, height, mobile=False, scale=1):
        """Emulates a screen of `width`×`height` CSS pixels (`mobile`: a phone's viewport and
        touch-sized layout) until `reset_viewport`."""
        self.connection.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                             deviceScaleFactor=scale, mobile=mobile)
        self.connection.call("Emulation.setTouchEmulationEnabled", enabled=mobile)

    def reset_viewport(self):
        self.connection.call("Emulation.clearDeviceMetricsOverride")
        self.connection.call("Emulation.setTouchEmulationEnabled", enabled=False)

    def screenshot(self, path, full_page=False):
        """Saves a PNG of the viewport (or, with `full_page`, of the whole document) to
        `path`, making its folder; the path."""
        params = {"format": "png"}
        if full_page:
            metrics = self.connection.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"],
                                "height": min(size["height"], 16384), "scale": 1})
        data = self.connection.call("Page.captureScreenshot", **params)["data"]
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as file:
            file.write(base64.b64decode(data))
        return path

    def add_init_script(self, source):
        """Runs `source` in every document this page loads from now on, before the page's own
        scripts (e.g. an observer that notes when an element first appears)."""
        self.connection.call("Page.addScriptToEvaluateOnNewDocument", source=source)

    def disable_cache(self, disabled=True):
        """Loads every resource from the network, as a first visit would."""
        self.connection.call("Network.enable")
        self.connection.call("Network.setCacheDisabled", cacheDisabled=disabled)

    def bypass_csp(self, enabled=True):
        """Has the page ignore its Content-Security-Policy from its next load on (so that a
        test can add scripts of its own, such as axe-core)."""
        self.connection.call("Page.setBypassCSP", enabled=enabled)

    def run_script(self, source):
        """Runs a script's source in the page as a global script (its `var`s and functions
        become the window's), bypassing the page's CSP, as DevTools' console does."""
        result = self.connection.call("Runtime.evaluate", expression=source, returnByValue=False,
                                      timeout=60)
        if "exceptionDetails" in result:
            raise CdpError(f"the script threw: {result['exceptionDetails'].get('text')}")

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
