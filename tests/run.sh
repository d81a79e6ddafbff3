#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine (idempotently:
# anything already present is kept), starts the services they talk to, and runs the whole
# suite. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH:/usr/local/go/bin"
# A first run needs room under the target directory: the Rust builds, and SeaweedFS's Go
# modules while it builds (4 GB for some minutes). Said first, so that a full disk is plain.
df -h . | awk 'NR == 2 { print "disk: " $4 " free of " $2 " here" }'

XTERM_VERSION=5.5.0
AXE_CORE_VERSION=4.10.3
DOCKER_EXEC_WEBSOCKET_SERVER_VERSION=1.4.0

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Build tools for rdkafka's bundled librdkafka and libsql (C compiler, make, perl for
# librdkafka's configure, Python for the helper below and, with venv, the interop tests).
missing=()
for tool in cc c++ make perl python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing build tools (missing: ${missing[*]})"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential perl python3 python3-venv
fi

# A Docker engine, a static busybox for the test image, and an SSH server, for the worker's
# tests against real engines.
packages=()
command -v dockerd >/dev/null || packages+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 && ! ldd /bin/busybox >/dev/null 2>&1 \
    || packages+=(busybox-static)
[ -x /usr/sbin/sshd ] || packages+=(openssh-server)
command -v ssh >/dev/null || packages+=(openssh-client)
# Interactive sessions: tmux drives `taskfold shell`, headless Chromium the browser page,
# util-linux's setsid gives SSH shells their terminal.
command -v tmux >/dev/null || packages+=(tmux)
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v setsid >/dev/null || packages+=(util-linux)
# The REDIS task kind's tests start a redis-server of their own.
command -v redis-server >/dev/null || packages+=(redis-server)
command -v curl >/dev/null || packages+=(curl ca-certificates)
# Node.js and npm, for the official Node client's interop test.
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
# Go, to build SeaweedFS (the S3-compatible store of the s3 blob backend's tests) from its
# module; a Go of 1.21 or later fetches the newer toolchain SeaweedFS's go.mod asks for.
command -v go >/dev/null || packages+=(golang-go)
if [ ${#packages[@]} -gt 0 ]; then
    echo "installing ${packages[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# The official Taskcluster Python client and pytest, in a venv under the target directory, for
# the interop tests that drive the real server (tests/python).
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target_dir/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check taskcluster pytest prometheus-client pyyaml jsonschema websocket-client confluent-kafka trustme boto3 aiosmtpd kombu

# The official Node client, pinned, in a directory of its own under the target directory.
node_dir="$target_dir/node-interop"
if [ ! -f "$node_dir/node_modules/taskcluster-client/package.json" ]; then
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --silent --no-audit --no-fund \
        taskcluster-client@87.1.3 slugid@5.0.1
fi
export TASKFOLD_NODE_MODULES="$node_dir/node_modules"
# Taskcluster's Pulse consumer (`consume()`), pinned, beside it, for the AMQP tests: npm has it as
# taskcluster-lib-pulse (the monorepo's `@taskcluster/lib-pulse` is not published).
lib_pulse_installed=$(node -p "try { require('$node_dir/node_modules/taskcluster-lib-pulse/package.json').version }
                               catch (e) { '' }")
if [ "$lib_pulse_installed" != 11.1.0 ]; then
    npm install --prefix "$node_dir" --silent --no-audit --no-fund --save-exact \
        taskcluster-lib-pulse@11.1.0
fi
# axe-core, pinned, beside it: the console's browser tests inject its axe.min.js into each page
# for an accessibility scan.
axe_installed=$(node -p "try { require('$node_dir/node_modules/axe-core/package.json').version }
                         catch (e) { '' }")
if [ "$axe_installed" != "$AXE_CORE_VERSION" ]; then
    npm install --prefix "$node_dir" --silent --no-audit --no-fund --save-exact \
        "axe-core@$AXE_CORE_VERSION"
fi
export TASKFOLD_AXE_JS="$node_dir/node_modules/axe-core/axe.min.js"
# docker-exec-websocket-server, pinned, beside it: its client (`DockerExecClient`, in versions
# before 3.0.0) is what docker-worker's interactive tutorial connects with.
dews_installed=$(node -p "try { require('$node_dir/node_modules/docker-exec-websocket-server/package.json').version }
                          catch (e) { '' }")
if [ "$dews_installed" != "$DOCKER_EXEC_WEBSOCKET_SERVER_VERSION" ]; then
    npm install --prefix "$node_dir" --silent --no-audit --no-fund --save-exact \
        "docker-exec-websocket-server@$DOCKER_EXEC_WEBSOCKET_SERVER_VERSION"
fi
# Where the tests leave what they make for people to look at (the console's screenshots),
# unless the caller chose a place.
export TASKFOLD_TEST_ARTIFACTS="${TASKFOLD_TEST_ARTIFACTS:-$target_dir/test-artifacts}"
mkdir -p "$TASKFOLD_TEST_ARTIFACTS"

# The official Go client (client-go, from the Go module proxy, pinned in tests/go/go.mod), in
# a program of the tests' own; modules and build cache under the target directory.
command -v go >/dev/null || { echo "the Go toolchain is needed to build tests/go"; exit 1; }
(cd tests/go && env GOMODCACHE="$target_dir/go/mod" GOCACHE="$target_dir/go/cache" \
    GOFLAGS=-buildvcs=false go build -o "$target_dir/go-interop/go-interop" .)
export TASKFOLD_GO_INTEROP="$target_dir/go-interop/go-interop"

# xterm.js for the browser page, from its npm package (Debian bookworm's libjs-xterm is a
# CommonJS stub that browsers cannot load).
xterm_dir="$target_dir/xterm-$XTERM_VERSION"
if [ ! -f "$xterm_dir/lib/xterm.js" ]; then
    mkdir -p "$xterm_dir"
    curl -fsSL "https://registry.npmjs.org/@xterm/xterm/-/xterm-$XTERM_VERSION.tgz" \
        | tar -xz -C "$xterm_dir" --strip-components=1
fi
export TASKFOLD__SESSIONS__XTERM_DIR="$xterm_dir"

# Apache Kafka's broker, from Maven Central, for the Kafka backend's end-to-end tests; Java
# runs it and Maven fetches it.
packages=()
command -v java >/dev/null || packages+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || packages+=(maven)
if [ ${#packages[@]} -gt 0 ]; then
    echo "installing ${packages[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
source tests/setup/kafka.sh
install_kafka "$target_dir"
# Tests that need brokers of their own (a cluster to lose a broker of) start them with this.
export TASKFOLD_TEST_KAFKA_SCRIPT="$PWD/tests/setup/kafka.sh"
# RabbitMQ, Debian's, for the AMQP (Pulse) tests, which start brokers of their own with
# tests/setup/rabbitmq.sh.
source tests/setup/rabbitmq.sh
install_rabbitmq

work=$(mktemp -d)
kafka_pid=
dockerd_pid=
sshd_pid=
s3_pid=
stop() {
    if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
cleanup() {
    stop "$kafka_pid"
    stop "$sshd_pid"
    stop "$s3_pid"
    stop "$dockerd_pid"
    rm -rf "$work"
}
trap cleanup EXIT

# A Docker engine: the one running, else our own. This machine has no bridge networking, so
# containers get loopback only.
if ! docker info >/dev/null 2>&1; then
    as_root dockerd --bridge=none --iptables=false >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; cat "$work/dockerd.log"; exit 1; }
fi
bash tests/setup/busybox-image.sh taskfold-test/busybox:1
export TASKFOLD_TEST_IMAGE=taskfold-test/busybox:1

# An SSH server on loopback with generated keys, for the SSH engine's tests.
source tests/setup/sshd.sh
start_sshd "$work/sshd"

# An S3-compatible object store on loopback (SeaweedFS, built once), for the s3 blob backend.
source tests/setup/s3.sh
start_s3 "$target_dir" "$work/s3"

# One Kafka broker (KRaft, broker and controller in one process) for the Kafka backend's tests;
# sets TASKFOLD_TEST_KAFKA_BROKERS.
start_kafka_broker "$work/kafka"

cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
# Benchmarks run once each in test mode, so they are known to work; then every test.
cargo test --benches
cargo test
# The fuzz targets (log records, Hawk headers, createTask bodies), each for a bounded time.
bash tests/fuzz.sh
# Last, so that its summary closes the output: the official Python client against the real
# `taskfold serve`.
cargo build --quiet
TASKFOLD_BINARY="$target_dir/debug/taskfold" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python
