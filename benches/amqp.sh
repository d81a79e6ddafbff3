#!/usr/bin/env bash
# What publishing to an AMQP broker (`[events] amqp_url`, Pulse) costs the queue: lifecycle
# throughput (createTask → claimWork → reportCompleted) on the embedded log with the AMQP
# publishers off and on, alternating ROUNDS (default 2) times in one run, then the ratio of the
# totals, and the CPU time the queue (and the broker, when this script starts it) spent per
# thousand lifecycles: on a small machine the broker's share of the cores weighs on the ratio.
# With the publishers on, every exchange message goes to the broker, persistent and confirmed,
# before the partition store may be written past it.
# Builds the release binary (BINARY names another) and starts its own queues; the broker is
# AMQP_URL, else a RabbitMQ of its own started as the tests do (tests/setup/rabbitmq.sh; needs
# Debian's rabbitmq-server). TASKS (default 40000) and CONCURRENCY (default 64) set the load.
# That broker runs one Erlang scheduler (see tests/setup/rabbitmq.sh); TASKFOLD_RABBITMQ_ERL_ARGS
# gives its Erlang VM flags instead (empty: Erlang's defaults), to tell what the broker's
# configuration changes from what Taskfold's code does.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${BINARY:-}" ]; then
    cargo build --release --quiet
fi
binary=${BINARY:-target/release/taskfold}
tasks=${TASKS:-40000}
concurrency=${CONCURRENCY:-64}
rounds=${ROUNDS:-2}
work=$(mktemp -d)
pids=()
broker_dir=
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -z "$broker_dir" ] || bash tests/setup/rabbitmq.sh stop "$broker_dir" || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export TASKCLUSTER_CLIENT_ID=static/taskcluster/root TASKCLUSTER_ACCESS_TOKEN=bench-token

amqp_url=${AMQP_URL:-}
if [ -z "$amqp_url" ]; then
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
        || { echo "no AMQP_URL and no rabbitmq-server to start a broker: skipping"; exit 0; }
    broker_dir="$work/rabbitmq"
    amqp_url=$(bash tests/setup/rabbitmq.sh start "$broker_dir")
fi

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
# CPU time (clock ticks) process $1 has used so far; 0 for none.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
broker_pid() { cat "$broker_dir/pid" 2>/dev/null || echo 0; }
# Runs the load on `root`; prints its rate, and adds the CPU ticks the queue and the broker
# spent on it to `queue_ticks` and `broker_ticks` (through the file `$work/ticks`).
lifecycles() {
    local queue_before broker_before
    queue_before=$(ticks "$server_pid")
    broker_before=$(ticks "$(broker_pid)")
    "$binary" bench lifecycle --root-url "$root" --tasks "$tasks" --concurrency "$concurrency" \
        --wakeup-rounds 0 | tee /dev/stderr | rate
    echo "$(($(ticks "$server_pid") - queue_before)) $(($(ticks "$(broker_pid)") - broker_before))" \
        >"$work/ticks"
}

off=0
on=0
off_ticks=0
on_ticks=0
broker_ticks=0
for round in $(seq 1 "$rounds"); do
    echo "== Round $round: lifecycle without AMQP publishing"
    serve "off-$round"
    off=$((off + $(lifecycles)))
    off_ticks=$((off_ticks + $(cut -d' ' -f1 "$work/ticks")))
    stop
    echo "== Round $round: lifecycle publishing to $amqp_url"
    serve "on-$round" TASKFOLD__EVENTS__AMQP_URL="$amqp_url"
    on=$((on + $(lifecycles)))
    on_ticks=$((on_ticks + $(cut -d' ' -f1 "$work/ticks")))
    broker_ticks=$((broker_ticks + $(cut -d' ' -f2 "$work/ticks")))
    stop
done
python3 - "$on" "$off" "$rounds" "$tasks" "$off_ticks" "$on_ticks" "$broker_ticks" \
    "$(getconf CLK_TCK)" "${AMQP_URL:+external}" <<'PYTHON'
import sys
on, off, rounds, tasks, off_ticks, on_ticks, broker_ticks, hz = map(int, sys.argv[1:9])
external = sys.argv[9]
per_thousand = lambda ticks: ticks / hz / (rounds * tasks / 1000)
print(f"AMQP on / off lifecycle throughput: {on / rounds:.0f} / {off / rounds:.0f} = {on / off:.2f}")
print(f"queue CPU per 1000 lifecycles: {per_thousand(on_ticks):.3f} s on, "
      f"{per_thousand(off_ticks):.3f} s off = {on_ticks / max(off_ticks, 1):.2f}")
if not external:
    print(f"broker CPU per 1000 lifecycles: {per_thousand(broker_ticks):.3f} s")
PYTHON
