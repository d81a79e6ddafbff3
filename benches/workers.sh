#!/usr/bin/env bash
# The worker benchmarks of the README, in one run, side by side:
#   1. a trivial Docker task (`true`) through queue + worker, one at a time, beside a bare
#      `docker run --rm IMAGE true`;
#   2. a trivial SSH task beside a bare `ssh host true` over a warm master connection;
#   3. sustained throughput of trivial Docker tasks through a worker of capacity 8.
# Needs a running Docker engine and Debian's busybox-static and openssh-server (as the tests
# do); builds the release binary and the test image, starts its own queue, workers and sshd.
# TASKS (default 40) and THROUGHPUT_TASKS (default 160) set the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cargo build --release --quiet
binary=target/release/taskfold
image=taskfold-test/busybox:1
bash tests/setup/busybox-image.sh "$image"
work=$(mktemp -d)
sshd_pid=
pids=()
cleanup() {
    for pid in "${pids[@]}" $sshd_pid; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
source tests/setup/sshd.sh
start_sshd "$work/sshd" >/dev/null
cat >"$work/worker.toml" <<CONFIG
[[worker.ssh.targets]]
name = "bench-host"
host = "127.0.0.1"
port = $TASKFOLD_TEST_SSH_PORT
user = "$(id -un)"
host_key = "$TASKFOLD_TEST_SSH_HOST_KEY"
identity_file = "$TASKFOLD_TEST_SSH_KEY"
CONFIG

export TASKCLUSTER_CLIENT_ID=static/taskcluster/root TASKCLUSTER_ACCESS_TOKEN=bench-token
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
root=http://127.0.0.1:$port
TASKFOLD_ROOT_ACCESS_TOKEN=bench-token "$binary" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/queue" >"$work/serve.log" 2>&1 &
pids+=($!)
until curl -sf "$root/api/queue/v1/ping" >/dev/null; do sleep 0.1; done
worker() {
    local id=$1
    shift
    "$binary" worker --root-url "$root" --task-queue-id "bench/$id" --worker-group bench \
        --worker-id "$id" --data-dir "$work/$id" "$@" >"$work/$id.log" 2>&1 &
    pids+=($!)
}
worker docker-1 --capacity 1
worker ssh-1 --capacity 1 --engine ssh --config "$work/worker.toml"
worker docker-8 --capacity 8

control="$work/ssh-master"
ssh -M -S "$control" -fN -p "$TASKFOLD_TEST_SSH_PORT" -i "$TASKFOLD_TEST_SSH_KEY" \
    -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    127.0.0.1
docker_payload="{\"image\": \"$image\", \"command\": [\"true\"], \"maxRunTime\": 60}"

echo "== Docker: queue + worker (capacity 1) beside docker run --rm"
"$binary" bench tasks --root-url "$root" --task-queue-id bench/docker-1 \
    --payload "$docker_payload" --tasks "${TASKS:-40}" --baseline "docker run --rm $image true"
echo "== SSH: queue + worker (capacity 1) beside ssh over a warm master"
"$binary" bench tasks --root-url "$root" --task-queue-id bench/ssh-1 \
    --payload '{"target": "bench-host", "script": "true", "maxRunTime": 60}' \
    --tasks "${TASKS:-40}" --baseline "ssh -S $control -p $TASKFOLD_TEST_SSH_PORT 127.0.0.1 true"
echo "== Docker: throughput, worker capacity 8, 16 tasks in flight"
"$binary" bench tasks --root-url "$root" --task-queue-id bench/docker-8 \
    --payload "$docker_payload" --tasks "${THROUGHPUT_TASKS:-160}" --concurrency 16
ssh -S "$control" -O exit 127.0.0.1 2>/dev/null || true
