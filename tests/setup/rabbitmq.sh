# RabbitMQ (Debian's rabbitmq-server) for the AMQP (Pulse) tests: private brokers on free
# loopback ports, each with its own node name, data, logs and Erlang cookie under a directory of
# its own, so that neither a broker of the machine's (the Debian service, running or not) nor
# another test's is ever touched.
#
# Sourced by run.sh, which calls `install_rabbitmq`. Run as a script, it serves the tests that
# need a broker (TASKFOLD_TEST_RABBITMQ_SCRIPT names it):
#
#   bash rabbitmq.sh start DIR   starts a broker under DIR (on the port it had there before, if
#                                it ran there, else a free one), waits until it accepts
#                                connections and prints its amqp:// URL; its log is DIR/log/
#   bash rabbitmq.sh stop DIR    stops it and waits until it is gone; its data stay, so that a
#                                start on DIR brings the same broker back (durable exchanges,
#                                queues and persistent messages included)

RABBITMQ_BIN=/usr/lib/rabbitmq/bin

# Installs Debian's rabbitmq-server once. The package's service is of no use to the tests:
# neither started by the install (policy-rc.d says no while it runs) nor started at boot.
install_rabbitmq() {
    [ -x "$RABBITMQ_BIN/rabbitmq-server" ] && return 0
    echo "installing rabbitmq-server"
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        own_policy=1
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    [ -z "$own_policy" ] || as_root rm -f "$policy"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    else
        as_root update-rc.d rabbitmq-server disable >/dev/null 2>&1 || true
    fi
}

# Prints a free loopback port.
rabbitmq_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs COMMAND… with the environment of the broker under DIR (which must hold its `port`).
with_rabbitmq_env() {
    local dir=$1
    shift
    local port
    port=$(cat "$dir/port")
    env HOME="$dir" \
        RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_NODENAME="taskfold-$port@localhost" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$port" \
        RABBITMQ_DIST_PORT="$(cat "$dir/dist_port")" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/pid" \
        "$@"
}

# Starts the broker under DIR in the background; prints its URL once it accepts connections.
start_rabbitmq() {
    local dir=$1
    mkdir -p "$dir/mnesia" "$dir/log"
    [ -f "$dir/port" ] || rabbitmq_free_port >"$dir/port"
    [ -f "$dir/dist_port" ] || rabbitmq_free_port >"$dir/dist_port"
    # One Erlang scheduler (`+S 1:1`): the broker shares a small machine with the queue and the
    # test's clients, and with a scheduler per core it spends CPU on waking and balancing
    # schedulers that the queue needs (benches/amqp.sh: about a third less broker CPU per
    # message on 2 cores). Debian's scripts already turn off the schedulers' busy waiting
    # (`+sbwt none +sbwtdcpu none +sbwtdio none`, RabbitMQ's advice for shared hosts).
    # TASKFOLD_RABBITMQ_ERL_ARGS replaces these flags (empty: Erlang's defaults).
    echo "SERVER_ADDITIONAL_ERL_ARGS=\"${TASKFOLD_RABBITMQ_ERL_ARGS-+S 1:1}\"" >"$dir/rabbitmq-env.conf"
    # No plugins (the management UI would want ports of its own), and the guest user (which
    # RabbitMQ allows from loopback only).
    echo '[].' >"$dir/enabled_plugins"
    echo '[].' >"$dir/advanced.config"
    cat >"$dir/rabbitmq.conf" <<CONFIG
listeners.tcp.default = 127.0.0.1:$(cat "$dir/port")
disk_free_limit.absolute = 50MB
CONFIG
    # From DIR, where Erlang leaves what it dumps when a node fails.
    (cd "$dir" && with_rabbitmq_env "$dir" setsid "$RABBITMQ_BIN/rabbitmq-server") \
        >>"$dir/stdout.log" 2>&1 </dev/null &
    local script=$! port
    port=$(cat "$dir/port")
    for _ in $(seq 1 600); do
        if python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1)" \
            2>/dev/null; then
            echo "amqp://guest:guest@127.0.0.1:$port/%2f"
            return 0
        fi
        if ! kill -0 "$script" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "RabbitMQ did not start under $dir:" >&2
    cat "$dir/stdout.log" >&2
    return 1
}

# Stops the broker under DIR as its service would, with SIGTERM to the Erlang VM (whose pid
# RabbitMQ wrote), and waits until it is gone.
stop_rabbitmq() {
    local dir=$1 pid
    pid=$(cat "$dir/pid" 2>/dev/null) || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$dir/pid"
            return 0
        fi
        sleep 0.1
    done
    echo "RabbitMQ under $dir did not stop" >&2
    return 1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-}" in
        start) start_rabbitmq "$2" ;;
        stop) stop_rabbitmq "$2" ;;
        *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
    esac
fi
