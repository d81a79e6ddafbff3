#!/usr/bin/env bash
# The cluster benchmarks of the README, in one run, with the same load tool throughout
# (`taskfold bench lifecycle`: createTask → claimWork → reportCompleted):
#   1. one node on the embedded log;
#   2. one node on the Kafka log (a broker on the same machine);
#   3. three nodes of one cluster on the Kafka log, the clients spread over all three.
# For each: lifecycles/s and the servers' CPU seconds per 1,000 lifecycles (from /proc); for
# the cluster also the share of calls a node forwarded to another.
# The Kafka runs need a broker: KAFKA_BROKERS=host:port, else one is installed and started as
# the tests do (tests/setup/kafka.sh; needs java and mvn). TASKS (default 30000) and
# CONCURRENCY (default 64) set the load; BINARY a prebuilt binary (default: a release build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BINARY:-}" ]; then
    cargo build --release --quiet
    BINARY=target/release/taskfold
fi
tasks=${TASKS:-30000}
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

if [ -z "${KAFKA_BROKERS:-}" ]; then
    source tests/setup/kafka.sh
    target_dir=$(cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
    install_kafka "$target_dir"
    start_kafka_broker "$work/kafka" >/dev/null
    pids+=("$kafka_pid")
    KAFKA_BROKERS=$TASKFOLD_TEST_KAFKA_BROKERS
fi

# Starts a node named $1 with the environment and arguments given after `--`; appends its pid
# to `nodes` and its URL to `roots`.
serve() {
    local name=$1 port
    shift
    port=$(free_port)
    local environment=() arguments=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do environment+=("$1"); shift; done
    [ $# -gt 0 ] && shift
    arguments=("$@")
    env TASKFOLD_ROOT_ACCESS_TOKEN=bench-token RUST_LOG=warn "${environment[@]}" "$BINARY" serve \
        --listen "127.0.0.1:$port" --data-dir "$work/$name" \
        "${arguments[@]/@PORT@/$port}" >"$work/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    nodes+=("$pid")
    roots+=("http://127.0.0.1:$port")
    until curl -sf "http://127.0.0.1:$port/api/queue/v1/ping" >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log"; exit 1; }
        sleep 0.1
    done
}
cpu_seconds() {
    local total=0 pid ticks
    for pid in "$@"; do
        ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        total=$((total + ticks))
    done
    echo "$total $(getconf CLK_TCK)" | awk '{printf "%.2f", $1 / $2}'
}
stop_nodes() {
    for pid in "${nodes[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${nodes[@]}"; do wait "$pid" 2>/dev/null || true; done
}
metric_sum() {
    local name=$1 root total=0 value
    for root in "${roots[@]}"; do
        value=$(curl -s "$root/metrics" | awk -v name="$name" '{split($1, parts, "{"); if (parts[1] == name) sum += $2} END {printf "%d", sum}')
        total=$((total + value))
    done
    echo "$total"
}
# Runs the load against `roots`, prints lifecycles/s and CPU per 1,000 lifecycles.
measure() {
    local label=$1 before after output rate_ lifecycles url_args=()
    for root in "${roots[@]}"; do url_args+=(--root-url "$root"); done
    before=$(cpu_seconds "${nodes[@]}")
    output=$("$BINARY" bench lifecycle "${url_args[@]}" --tasks "$tasks" \
        --concurrency "$concurrency" --wakeup-rounds 0)
    after=$(cpu_seconds "${nodes[@]}")
    rate_=$(echo "$output" | sed -n 's/.* \([0-9]*\) lifecycles\/s.*/\1/p' | head -1)
    lifecycles=$(echo "$output" | sed -n 's/^\([0-9]*\) lifecycles.*/\1/p' | head -1)
    lifecycles=${lifecycles:-$tasks}
    echo "$label: $rate_ lifecycles/s, $(echo "$before $after $lifecycles" \
        | awk '{printf "%.2f", ($2 - $1) * 1000 / $3}') server CPU-s per 1,000 lifecycles"
}

nodes=() roots=()
serve embedded
measure "one node, embedded log"
stop_nodes

topic=bench-$(date +%s)
nodes=() roots=()
serve kafka TASKFOLD__LOG__BACKEND=kafka TASKFOLD__KAFKA__BROKERS="$KAFKA_BROKERS" \
    TASKFOLD__LOG__KAFKA__TOPIC="$topic-single" TASKFOLD__EVENTS__KAFKA_TOPIC_PREFIX="$topic-single."
measure "one node, Kafka log"
stop_nodes

nodes=() roots=()
for index in 1 2 3; do
    serve "node-$index" TASKFOLD__LOG__BACKEND=kafka TASKFOLD__KAFKA__BROKERS="$KAFKA_BROKERS" \
        TASKFOLD__LOG__KAFKA__TOPIC="$topic-cluster" TASKFOLD__EVENTS__KAFKA_TOPIC_PREFIX="$topic-cluster." \
        TASKFOLD__LOG__PARTITIONS=12 TASKFOLD__CLUSTER__SECRET=bench-cluster-secret-0123456789 -- \
        --node-id "node-$index" --advertise "http://127.0.0.1:@PORT@"
done
# Until every partition is served.
until curl -s "${roots[0]}/api/queue/v1/__cluster__" | python3 -c '
import json, sys
view = json.load(sys.stdin)
owners = {p["owner"] for p in view["partitions"]}
sys.exit(None in owners or len(owners) < 3)'; do sleep 0.5; done
measure "three nodes, Kafka log"
forwarded=$(metric_sum taskfold_forwarded_calls_total)
requests=$(metric_sum taskfold_http_request_duration_seconds_count)
echo "three nodes: $forwarded calls forwarded of $requests requests ($(echo "$forwarded $requests" | awk '{printf "%.0f", 100 * $1 / $2}') %)"
stop_nodes
