"""The official Node client (npm `taskcluster-client`) drives the real server through a task's
life, artifacts, signed URLs, temporary credentials and errors: `tests/node/interop.mjs`, which
stops at the first answer that is not Taskcluster's. tests/run.sh installs the client and names
its directory in `TASKFOLD_NODE_MODULES`."""

import os
import subprocess

from conftest import REPO, ROOT_CLIENT, ROOT_TOKEN

SCRIPT = os.path.join(REPO, "tests", "node", "interop.mjs")
SERVICES = os.path.join(REPO, "tests", "node", "services.mjs")


def run_node(server, script):
    modules = os.environ.get("TASKFOLD_NODE_MODULES")
    assert modules and os.path.isdir(os.path.join(modules, "taskcluster-client")), \
        "TASKFOLD_NODE_MODULES must name a node_modules with taskcluster-client (tests/run.sh)"
    env = dict(os.environ, TASKCLUSTER_ROOT_URL=server.root_url,
               TASKCLUSTER_CLIENT_ID=ROOT_CLIENT, TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN)
    env.pop("TASKCLUSTER_CERTIFICATE", None)
    done = subprocess.run(["node", script], env=env, capture_output=True, text=True, timeout=120)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_node_client_drives_auth_secrets_index_and_hooks(server):
    assert "every service method as Taskcluster answers" in run_node(server, SERVICES)


def test_the_node_client_works_unmodified(server):
    assert "every step as Taskcluster answers" in run_node(server, SCRIPT)
