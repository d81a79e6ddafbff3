"""Apache Kafka brokers of a test's own, started by tests/setup/kafka.sh (the script tests/run.sh
uses for the suite's shared broker): KRaft nodes on loopback, each a broker and a controller in
one JVM, every one a voter of the controller quorum.

The script needs TASKFOLD_TEST_KAFKA_HOME, the directory whose libs/ holds Kafka's jars
(tests/run.sh installs them and sets it, and sets TASKFOLD_TEST_KAFKA_SCRIPT to the script);
`available()` says why not when it is missing, for a test to skip with.
"""

import os
import signal
import subprocess
import time

from conftest import REPO

SCRIPT = os.environ.get("TASKFOLD_TEST_KAFKA_SCRIPT",
                        os.path.join(REPO, "tests", "setup", "kafka.sh"))
HOME = os.environ.get("TASKFOLD_TEST_KAFKA_HOME", "")
# Formatting and starting a node takes a few seconds; a loaded machine may take many more.
START_TIMEOUT = 120


def available():
    """None when brokers can be started here, else the reason they cannot."""
    if not HOME:
        return ("TASKFOLD_TEST_KAFKA_HOME is not set (tests/run.sh installs Apache Kafka and "
                "sets it)")
    if not os.path.isdir(os.path.join(HOME, "libs")):
        return f"TASKFOLD_TEST_KAFKA_HOME ({HOME}) has no libs/"
    return None


class KafkaCluster:
    """NODES nodes under `work_dir/node-<id>`; a node is numbered from 1."""

    def __init__(self, work_dir, nodes=3):
        self.work_dir = str(work_dir)
        self.nodes = nodes
        self.bootstrap = None

    def node_dir(self, node):
        return os.path.join(self.work_dir, f"node-{node}")

    def pid(self, node):
        with open(os.path.join(self.node_dir(node), "pid")) as file:
            return int(file.read())

    def address(self, node):
        with open(os.path.join(self.node_dir(node), "address")) as file:
            return file.read().strip()

    def start(self):
        """Starts every node and returns once each has started; fails with the script's output
        (which holds a failed node's log)."""
        done = self._script("cluster", self.work_dir, str(self.nodes))
        self.bootstrap = done.stdout.strip().splitlines()[-1]
        return self

    def kill(self, node):
        """`kill -9`: the node loses what it had not written and leaves the cluster at once."""
        os.kill(self.pid(node), signal.SIGKILL)
        self._await_exit(self.pid(node))

    def restart(self, node):
        """Starts a killed node again on its ports and data."""
        self._script("restart", self.node_dir(node))

    def stop(self):
        """Ends every node still running; the data goes with the test's directory, so nothing
        needs a clean shutdown."""
        for node in range(1, self.nodes + 1):
            try:
                pid = self.pid(node)
                os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                continue
            self._await_exit(pid)

    def logs(self):
        """Every node's log, for a failing test's message."""
        parts = []
        for node in range(1, self.nodes + 1):
            path = os.path.join(self.node_dir(node), "server.log")
            if os.path.exists(path):
                with open(path) as file:
                    parts.append(f"--- node {node} ({path}), last lines:\n"
                                 + "".join(file.readlines()[-40:]))
        return "\n".join(parts)

    def _script(self, *args):
        env = dict(os.environ, TASKFOLD_TEST_KAFKA_HOME=HOME)
        done = subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True,
                              timeout=START_TIMEOUT)
        if done.returncode != 0:
            raise AssertionError(f"{SCRIPT} {' '.join(args)} failed ({done.returncode}):\n"
                                 + done.stdout + done.stderr)
        return done

    @staticmethod
    def _await_exit(pid):
        """The nodes are not our children (the script started them), so poll for the pid; a
        zombie has exited too."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as file:
                    if file.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return
            except FileNotFoundError:
                return
            time.sleep(0.05)
        raise AssertionError(f"Kafka node {pid} did not exit within 30 s")
