"""The official Go client (taskcluster client-go, from the Go module proxy) drives Auth, Secrets,
Index and Hooks of the real server: `tests/go/main.go`, which stops at the first answer that is not
Taskcluster's. tests/run.sh builds it and names the binary in `TASKFOLD_GO_INTEROP`."""

import os
import subprocess

from conftest import ROOT_CLIENT, ROOT_TOKEN


def test_the_go_client_drives_auth_secrets_index_and_hooks(server):
    binary = os.environ.get("TASKFOLD_GO_INTEROP")
    assert binary and os.access(binary, os.X_OK), \
        "TASKFOLD_GO_INTEROP must name the built tests/go program (tests/run.sh)"
    env = dict(os.environ, TASKCLUSTER_ROOT_URL=server.root_url,
               TASKCLUSTER_CLIENT_ID=ROOT_CLIENT, TASKCLUSTER_ACCESS_TOKEN=ROOT_TOKEN)
    env.pop("TASKCLUSTER_CERTIFICATE", None)
    done = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=120)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every service method as Taskcluster answers" in done.stdout
