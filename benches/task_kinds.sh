#!/usr/bin/env bash
# The REST task kind's benchmark of the README: a REST task (a GET over HTTPS, the server's
# certificate from a private CA passed as `cacert`) through queue + worker (`--engine rest`,
# capacity 1), one at a time, scheduled → resolved, beside the bare call (`curl --cacert`,
# which also makes a new connection and TLS handshake each time, as the engine does).
# Needs openssl, curl and python3; starts its own HTTPS server, queue and worker.
# TASKS (default 40) sets the size; PROFILE=debug uses the debug binary instead of building
# the release one (slower, but no 8-minute build).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${PROFILE:-release}" = debug ]; then
    cargo build --quiet
    binary=target/debug/taskfold
else
    cargo build --release --quiet
    binary=target/release/taskfold
fi
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

# A private CA and a certificate of 127.0.0.1 signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench-ca \
    -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -days 1 -extfile "$work/san.ext" -out "$work/server.pem" 2>/dev/null
echo '{"hello": "world"}' >"$work/hello.json"
api_port=$(free_port)
python3 - "$work" "$api_port" >"$work/api.log" 2>&1 <<'PYTHON' &
import functools, http.server, ssl, sys
work, port = sys.argv[1], int(sys.argv[2])
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=work)
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(f"{work}/server.pem", f"{work}/server.key")
httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
httpd.serve_forever()
PYTHON
pids+=($!)
url=https://127.0.0.1:$api_port/hello.json
until curl -sf --cacert "$work/ca.pem" "$url" >/dev/null; do sleep 0.1; done

export TASKCLUSTER_CLIENT_ID=static/taskcluster/root TASKCLUSTER_ACCESS_TOKEN=bench-token
port=$(free_port)
root=http://127.0.0.1:$port
TASKFOLD_ROOT_ACCESS_TOKEN=bench-token "$binary" serve --listen "127.0.0.1:$port" \
    --data-dir "$work/queue" >"$work/serve.log" 2>&1 &
pids+=($!)
until curl -sf "$root/api/queue/v1/ping" >/dev/null; do sleep 0.1; done
"$binary" worker --root-url "$root" --task-queue-id bench/rest-1 --worker-group bench \
    --worker-id rest-1 --data-dir "$work/rest-1" --engine rest >"$work/rest-1.log" 2>&1 &
pids+=($!)

payload=$(python3 -c 'import json, sys; print(json.dumps({"url": sys.argv[1], "cacert": open(sys.argv[2]).read()}))' \
    "$url" "$work/ca.pem")
echo "== REST: queue + worker (capacity 1) beside curl --cacert (${PROFILE:-release} binary)"
"$binary" bench tasks --root-url "$root" --task-queue-id bench/rest-1 \
    --payload "$payload" --tasks "${TASKS:-40}" \
    --baseline "curl -sf -o /dev/null --cacert $work/ca.pem $url"
