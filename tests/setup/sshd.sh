# Starts an sshd on 127.0.0.1 with fresh host and client keys under DIR (sourced by run.sh).
# Exports TASKFOLD_TEST_SSH_PORT, TASKFOLD_TEST_SSH_KEY (the client's private key),
# TASKFOLD_TEST_SSH_HOST_KEY (the server's public key, `type base64`) and sets sshd_pid.
start_sshd() {
    local dir=$1
    mkdir -p "$dir"
    chmod 700 "$dir"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/authorized_keys"
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$dir/sshd_config" <<CONFIG
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
MaxSessions 64
MaxStartups 64
LogLevel ERROR
CONFIG
    # sshd refuses to start without its privilege separation directory.
    as_root mkdir -p /run/sshd
    as_root chmod 0755 /run/sshd
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    sshd_pid=$!
    for _ in $(seq 1 100); do
        ssh-keyscan -p "$port" 127.0.0.1 >/dev/null 2>&1 && break
        sleep 0.1
    done
    export TASKFOLD_TEST_SSH_PORT=$port
    export TASKFOLD_TEST_SSH_KEY=$dir/client_key
    TASKFOLD_TEST_SSH_HOST_KEY=$(cut -d' ' -f1,2 "$dir/host_key.pub")
    export TASKFOLD_TEST_SSH_HOST_KEY
    echo "sshd ready on 127.0.0.1:$port"
}
