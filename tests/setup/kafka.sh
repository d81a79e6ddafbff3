# Apache Kafka for the Kafka backend's tests: installs the broker's jars from Maven Central and
# starts KRaft brokers on loopback, each node a combined broker and controller in one JVM.
#
# Sourced by run.sh, which calls `install_kafka TARGET_DIR` and `start_kafka_broker DIR`. Run as
# a script, it serves tests that need brokers of their own (TASKFOLD_TEST_KAFKA_SCRIPT names it):
#
#   bash kafka.sh cluster DIR [NODES]   starts NODES (default 3) nodes under DIR/node-<id> and
#                                       prints their bootstrap addresses; a node's pid is in
#                                       DIR/node-<id>/pid, its log in DIR/node-<id>/server.log
#   bash kafka.sh restart NODE_DIR      starts a stopped node again on its old ports and data
#
# Both need TASKFOLD_TEST_KAFKA_HOME, the directory whose libs/ holds the jars.

KAFKA_VERSION=${KAFKA_VERSION:-4.4.0}
# Each JVM stays small: the suite also runs a Rust build, Docker and Chromium beside it.
KAFKA_HEAP=${KAFKA_HEAP:--Xmx512m -Xms128m}

# Copies the broker and its runtime dependencies into TARGET_DIR/kafka-<version>/libs (once; the
# Maven repository lives in TARGET_DIR/m2) and exports TASKFOLD_TEST_KAFKA_HOME.
install_kafka() {
    local target_dir=$1
    local home="$target_dir/kafka-$KAFKA_VERSION"
    local pom
    pom="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/kafka/pom.xml"
    if [ ! -f "$home/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
        echo "installing Apache Kafka $KAFKA_VERSION from Maven Central"
        rm -rf "$home"
        mvn --quiet --batch-mode -Dstyle.color=never -f "$pom" \
            -Dmaven.repo.local="$target_dir/m2" -Dkafka.version="$KAFKA_VERSION" \
            dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$home/libs.partial"
        mv "$home/libs.partial" "$home/libs"
    fi
    export TASKFOLD_TEST_KAFKA_HOME="$home"
}

# Prints COUNT distinct free loopback ports, one a line.
free_ports() {
    python3 - "$1" <<'PYTHON'
import socket, sys
sockets = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in sockets:
    s.bind(("127.0.0.1", 0))
for s in sockets:
    print(s.getsockname()[1])
PYTHON
}

# Writes DIR/server.properties and DIR/log4j2.properties for node ID of a cluster of REPLICAS
# nodes whose controllers are VOTERS (`id@host:port,...`); the broker listens on PORT, the
# controller on CONTROLLER_PORT.
write_kafka_config() {
    local dir=$1 id=$2 port=$3 controller_port=$4 voters=$5 replicas=$6
    local min_isr=$((replicas > 1 ? 2 : 1))
    mkdir -p "$dir/data"
    cat >"$dir/server.properties" <<CONFIG
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# Consumer groups form at once instead of waiting for more members.
group.initial.rebalance.delay.ms=0
# The internal topics fit the cluster, and few partitions keep their creation quick.
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$replicas
share.coordinator.state.topic.min.isr=$min_isr
# A node that dies is fenced, and leaves the in-sync replicas, within seconds rather than the
# defaults' 9 to 30, so that tests losing one wait little.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=5000
CONFIG
    cat >"$dir/log4j2.properties" <<CONFIG
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
CONFIG
    echo "127.0.0.1:$port" >"$dir/address"
}

# Formats DIR's storage for CLUSTER_ID.
format_kafka_storage() {
    local dir=$1 cluster_id=$2
    java -cp "$TASKFOLD_TEST_KAFKA_HOME/libs/*" kafka.tools.StorageTool format --ignore-formatted \
        --cluster-id "$cluster_id" --config "$dir/server.properties" >"$dir/format.log" 2>&1 \
        || { echo "formatting Kafka storage in $dir failed:"; cat "$dir/format.log"; return 1; }
}

# Starts the node configured in DIR in the background and writes its pid to DIR/pid.
launch_kafka_node() {
    local dir=$1
    # A restarted node's readiness is read from a fresh log.
    [ ! -f "$dir/server.log" ] || mv "$dir/server.log" "$dir/server.log.previous"
    # shellcheck disable=SC2086 # KAFKA_HEAP holds several options.
    java $KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$TASKFOLD_TEST_KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties" \
        >>"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
}

# Waits until the node in DIR logs that it started; on failure prints its log and fails.
await_kafka_node() {
    local dir=$1 pid
    pid=$(cat "$dir/pid")
    for _ in $(seq 1 600); do
        if grep -q 'Kafka Server started' "$dir/server.log" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "Kafka in $dir exited:"; kafka_node_log "$dir"
            return 1
        fi
        sleep 0.1
    done
    echo "Kafka in $dir did not start within 60 s:"; kafka_node_log "$dir"
    kill "$pid" 2>/dev/null
    return 1
}

# What the node in DIR printed, and the end of its log.
kafka_node_log() {
    cat "$1/stdout.log" 2>/dev/null
    tail -n 200 "$1/server.log" 2>/dev/null
}

# A random cluster id in the form Kafka's storage tool wants (16 bytes, URL-safe base64).
new_cluster_id() {
    python3 -c 'import base64, uuid
print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))'
}

# Starts one node under DIR, exports TASKFOLD_TEST_KAFKA_BROKERS and sets kafka_pid.
start_kafka_broker() {
    local dir=$1 ports
    mapfile -t ports < <(free_ports 2)
    write_kafka_config "$dir" 1 "${ports[0]}" "${ports[1]}" "1@127.0.0.1:${ports[1]}" 1
    format_kafka_storage "$dir" "$(new_cluster_id)"
    launch_kafka_node "$dir"
    kafka_pid=$(cat "$dir/pid")
    await_kafka_node "$dir"
    export TASKFOLD_TEST_KAFKA_BROKERS="127.0.0.1:${ports[0]}"
    echo "Apache Kafka $KAFKA_VERSION ready on $TASKFOLD_TEST_KAFKA_BROKERS"
}

# Starts NODES nodes under DIR/node-<id>, every one a voter of the controller quorum, and prints
# their bootstrap addresses (comma-separated).
start_kafka_cluster() {
    local dir=$1 nodes=${2:-3} ports voters="" id cluster_id addresses="" formats=() format
    mapfile -t ports < <(free_ports $((2 * nodes)))
    for id in $(seq 1 "$nodes"); do
        voters+="${voters:+,}$id@127.0.0.1:${ports[$((2 * id - 1))]}"
        addresses+="${addresses:+,}127.0.0.1:${ports[$((2 * id - 2))]}"
    done
    cluster_id=$(new_cluster_id)
    for id in $(seq 1 "$nodes"); do
        write_kafka_config "$dir/node-$id" "$id" "${ports[$((2 * id - 2))]}" \
            "${ports[$((2 * id - 1))]}" "$voters" "$nodes"
        format_kafka_storage "$dir/node-$id" "$cluster_id" &
        formats+=($!)
    done
    for format in "${formats[@]}"; do wait "$format" || return 1; done
    for id in $(seq 1 "$nodes"); do launch_kafka_node "$dir/node-$id"; done
    for id in $(seq 1 "$nodes"); do await_kafka_node "$dir/node-$id" || return 1; done
    echo "$addresses"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    : "${TASKFOLD_TEST_KAFKA_HOME:?the directory whose libs/ holds the jars of Kafka}"
    case "${1:-}" in
        cluster) start_kafka_cluster "$2" "${3:-3}" ;;
        restart) launch_kafka_node "$2"; await_kafka_node "$2" ;;
        *) echo "usage: $0 cluster DIR [NODES] | restart NODE_DIR" >&2; exit 2 ;;
    esac
fi
