#!/usr/bin/env bash
# The event benchmarks of the README, in one run:
#   1. lifecycle throughput (createTask → claimWork → reportCompleted) without and with
#      LISTENERS (default 100) websocket listeners bound to `#` on every exchange, then on
#      task-completed alone;
#   2. lifecycle throughput on the embedded log beside the Kafka backend (which also publishes
#      every exchange message to its Kafka topic), as a ratio.
# Builds the release binary and starts its own queues; the Kafka backend needs a broker:
# KAFKA_BROKERS=host:port, else an Apache Kafka broker is installed and started as the tests do
# (tests/setup/kafka.sh; needs java and mvn).
# TASKS (default 40000) and CONCURRENCY (default 64) set the load.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
binary=target/release/taskfold
tasks=${TASKS:-40000}
concurrency=${CONCURRENCY:-64}
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export TASKCLUSTER_CLIENT_ID=static/taskcluster/root TASKCLUSTER_ACCESS_TOKEN=bench-token

# Starts a queue on `$work/$1` with the environment given after it; sets `root`.
serve() {
    local name=$1
    shift
    local port
    port=$(free_port)
    root=http://127.0.0.1:$port
    env TASKFOLD_ROOT_ACCESS_TOKEN=bench-token RUST_LOG=warn "$@" "$binary" serve \
        --listen "127.0.0.1:$port" --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    until curl -sf "$root/api/queue/v1/ping" >/dev/null; do
        kill -0 "$server_pid" 2>/dev/null || { cat "$work/$name.log"; exit 1; }
        sleep 0.1
    done
}
stop() {
    kill "$server_pid"
    wait "$server_pid" 2>/dev/null || true
}
rate() { sed -n 's/.* \([0-9]*\) lifecycles\/s.*/\1/p' | head -1; }

echo "== Lifecycle without and with ${LISTENERS:-100} websocket listeners bound to # on every exchange"
serve listeners
"$binary" bench lifecycle --root-url "$root" --tasks "$tasks" --concurrency "$concurrency" \
    --listeners "${LISTENERS:-100}"
stop
echo "== The same with the listeners bound to # on task-completed"
serve listeners-completed
"$binary" bench lifecycle --root-url "$root" --tasks "$tasks" --concurrency "$concurrency" \
    --listeners "${LISTENERS:-100}" --listener-exchange task-completed
stop

brokers=${KAFKA_BROKERS:-}
if [ -z "$brokers" ]; then
    command -v java >/dev/null && command -v mvn >/dev/null \
        || { echo "no KAFKA_BROKERS and no java and mvn to run Apache Kafka: skipping Kafka"; exit 0; }
    source tests/setup/kafka.sh
    install_kafka "$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    start_kafka_broker "$work/kafka"
    pids+=("$kafka_pid")
    brokers=$TASKFOLD_TEST_KAFKA_BROKERS
fi
echo "== Lifecycle on the embedded log, then on Kafka ($brokers)"
serve embedded
embedded=$("$binary" bench lifecycle --root-url "$root" --tasks "$tasks" \
    --concurrency "$concurrency" --wakeup-rounds 0 | tee /dev/stderr | rate)
stop
suffix=$(date +%s)
serve kafka TASKFOLD__LOG__BACKEND=kafka TASKFOLD__KAFKA__BROKERS="$brokers" \
    TASKFOLD__LOG__KAFKA__TOPIC="bench-events-$suffix" \
    TASKFOLD__EVENTS__KAFKA_TOPIC_PREFIX="bench-$suffix.taskcluster-queue.v1."
kafka=$("$binary" bench lifecycle --root-url "$root" --tasks "$tasks" \
    --concurrency "$concurrency" --wakeup-rounds 0 | tee /dev/stderr | rate)
stop
python3 -c "print(f'Kafka / embedded lifecycle throughput: {$kafka} / {$embedded} = {$kafka / $embedded:.2f}')"
