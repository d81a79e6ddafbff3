"""How fast the web console shows its pages, in headless Chromium (tests/python/cdp.py):

- time to first render of a task page and of a 5,000-task group page: from navigation start
  (the page's time origin) to the moment the element that carries the page's content first
  appears in the DOM (`[data-testid=task-state]` with text; the first `[data-testid=group-row]`;
  and, for the group, the moment its total count reads 5,000), noted by a MutationObserver
  installed before the page's own scripts; beside it the browser's first-contentful-paint
  (`performance.getEntriesByType('paint')`) and the `load` event;
- the size of the console's scripts as served gzipped (and plain).

Each page is loaded `--runs` times in a fresh tab with the browser cache disabled (a first
visit); the table shows the median and the worst. The 5,000 tasks are made with the official
Python client's createTask from `--threads` threads; no worker runs, so they stay pending.

Runs with the test venv (tests/run.sh's, or any with `taskcluster`, `requests`, `slugid` and
`websocket-client`):

    python benches/console.py [--tasks 5000] [--runs 5] [--binary target/release/taskfold]
    python benches/console.py --root-url URL   # a running server; credentials from
                                               # TASKCLUSTER_CLIENT_ID / _ACCESS_TOKEN

Without `--root-url` it starts `taskfold serve` (TASKFOLD_BINARY, else target/debug/taskfold)
on a free port and a temporary data directory, and stops it at the end.
"""

import argparse
import concurrent.futures
import datetime
import gzip
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from urllib.parse import urljoin

import requests
import slugid
import taskcluster

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "python"))
from cdp import Chromium  # noqa: E402

ROOT_CLIENT = "static/taskcluster/root"
# Notes, on `window.__firstSeen`, when each watched selector first matches (ms since the
# navigation started); installed before the page's own scripts run.
OBSERVER = """
window.__firstSeen = {};
(() => {
  const watched = {
    task: () => { const e = document.querySelector('[data-testid=task-state]');
                  return e && e.textContent.trim(); },
    row: () => document.querySelector('[data-testid=group-row]'),
    total: () => { const e = document.querySelector(
                     '[data-testid=group-count][data-state=total]');
                   return e && e.textContent.replace(/[^0-9]/g, '') === window.__expectTotal; },
  };
  const look = () => {
    for (const [name, test] of Object.entries(watched)) {
      if (!(name in window.__firstSeen) && test()) window.__firstSeen[name] = performance.now();
    }
  };
  new MutationObserver(look).observe(document, {childList: true, subtree: true,
                                                characterData: true, attributes: true});
})();
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `taskfold serve` of the bench's own, on a temporary data directory."""

    def __init__(self, binary):
        self.binary = binary
        self.token = slugid.nice() + slugid.nice()
        self.dir = tempfile.mkdtemp(prefix="taskfold-console-bench-")
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.process = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", os.path.join(self.dir, "data")],
            stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TASKFOLD_ROOT_ACCESS_TOKEN=self.token, RUST_LOG="warn"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{self.root_url}/api/queue/v1/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"taskfold serve did not start; see {self.dir}/server.log")
            time.sleep(0.05)

    def credentials(self):
        return {"clientId": ROOT_CLIENT, "accessToken": self.token}

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def definition(task_queue_id, group_id):
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "taskQueueId": task_queue_id,
        "taskGroupId": group_id,
        "created": taskcluster.stringDate(now),
        "deadline": taskcluster.stringDate(now + datetime.timedelta(hours=2)),
        "payload": {"image": "busybox", "command": ["true"], "maxRunTime": 60},
        "metadata": {"name": "console bench task", "description": "one of the group's tasks",
                     "owner": "bench@example.com", "source": "https://example.com/bench"},
    }


def make_group(queue, count, threads):
    """`count` pending tasks in one new group, made from `threads` threads; (groupId, one of
    its taskIds, seconds taken)."""
    group_id = slugid.nice()
    task_queue_id = f"console-bench/q{slugid.nice()[:8].lower().replace('-', 'x')}"
    task_ids = [slugid.nice() for _ in range(count)]
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda task_id: queue.createTask(task_id,
                                                       definition(task_queue_id, group_id)),
                      task_ids))
    return group_id, task_ids[0], time.monotonic() - started


def load(browser, address, wanted, expect_total="", timeout=120):
    """Loads `address` in a fresh uncached tab; the ms from navigation start to each of
    `wanted` first appearing, to first-contentful-paint and to the load event."""
    page = browser.new_page()
    try:
        page.set_viewport(1280, 800)
        page.disable_cache()
        page.add_init_script(f"window.__expectTotal = {expect_total!r};" + OBSERVER)
        page.navigate(address, timeout=timeout)
        page.wait_for("(w => w.every(n => n in window.__firstSeen))"
                      f"({list(wanted)!r})", timeout=timeout, interval=0.05)
        timings = page.evaluate(
            "({seen: window.__firstSeen,"
            " fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,"
            " load: performance.getEntriesByType('navigation')[0].loadEventEnd})")
        result = {name: timings["seen"][name] for name in wanted}
        result["fcp"] = timings["fcp"]
        result["load"] = timings["load"]
        return result
    finally:
        browser.close_page(page)


def script_sizes(root_url, page_path):
    """(url, gzipped bytes, plain bytes) of each script the page names."""
    html = requests.get(urljoin(root_url, page_path), timeout=10).text
    sizes = []
    for src in re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html):
        address = urljoin(urljoin(root_url, page_path), src)
        zipped = requests.get(address, headers={"Accept-Encoding": "gzip"}, stream=True,
                              timeout=30)
        raw = zipped.raw.read()
        encoding = zipped.headers.get("Content-Encoding")
        plain = gzip.decompress(raw) if encoding == "gzip" else raw
        sizes.append((address, len(raw) if encoding == "gzip" else None, len(plain)))
    return sizes


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a", "n/a"
    return f"{statistics.median(values):8.0f}", f"{max(values):8.0f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root-url", help="a running server (else one is started)")
    parser.add_argument("--binary", default=os.environ.get(
        "TASKFOLD_BINARY", os.path.join(REPO, "target", "debug", "taskfold")))
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    server = None
    if args.root_url:
        root_url = args.root_url.rstrip("/")
        credentials = {"clientId": os.environ["TASKCLUSTER_CLIENT_ID"],
                       "accessToken": os.environ["TASKCLUSTER_ACCESS_TOKEN"]}
    else:
        server = Server(args.binary)
        root_url, credentials = server.root_url, server.credentials()
    try:
        queue = taskcluster.Queue({"rootUrl": root_url, "credentials": credentials,
                                   "maxRetries": 5})
        print(f"making {args.tasks} tasks in one group ({args.threads} threads)…", flush=True)
        group_id, task_id, seconds = make_group(queue, args.tasks, args.threads)
        print(f"made in {seconds:.1f} s ({args.tasks / seconds:.0f} tasks/s)")

        rows = []
        with Chromium(window_size=(1280, 800)) as browser:
            # One load first, so that Chromium's own start-up costs are not counted.
            load(browser, f"{root_url}/tasks/{task_id}", ["task"])
            task_runs = [load(browser, f"{root_url}/tasks/{task_id}", ["task"])
                         for _ in range(args.runs)]
            group_runs = [load(browser, f"{root_url}/groups/{group_id}", ["row", "total"],
                               expect_total=str(args.tasks))
                          for _ in range(args.runs)]
        for label, runs, key in (
                ("task page: state shown", task_runs, "task"),
                ("task page: first-contentful-paint", task_runs, "fcp"),
                ("task page: load event", task_runs, "load"),
                (f"group of {args.tasks}: first row shown", group_runs, "row"),
                (f"group of {args.tasks}: total reads {args.tasks}", group_runs, "total"),
                (f"group of {args.tasks}: first-contentful-paint", group_runs, "fcp"),
                (f"group of {args.tasks}: load event", group_runs, "load")):
            rows.append((label, *summary([run[key] for run in runs])))

        width = max(len(row[0]) for row in rows)
        print(f"\n{'time from navigation start (ms)':<{width}}  {'median':>8}  {'worst':>8}")
        for label, median, worst in rows:
            print(f"{label:<{width}}  {median}  {worst}")
        print(f"({args.runs} loads each, fresh tab, cache disabled, 1280×800)\n")
        for address, zipped, plain in script_sizes(root_url, f"/tasks/{task_id}"):
            name = address.rsplit("/", 1)[-1]
            shown = f"{zipped:,} bytes gzipped" if zipped is not None else "not gzipped"
            print(f"{name}: {shown}, {plain:,} bytes plain")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
