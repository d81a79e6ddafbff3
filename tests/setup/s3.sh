# An S3-compatible object store on loopback, for the tests of `[blobs] backend = "s3"`
# (sourced by run.sh): SeaweedFS (Apache-2.0), built once from its Go module into the cargo
# target directory, run as one `weed server` process (master, volume, filer and S3 gateway)
# with a static access key and one bucket.
#
# install_seaweedfs TARGET_DIR   builds `weed` if TARGET_DIR/seaweedfs/VERSION/weed is missing
# start_s3 TARGET_DIR DIR        starts it with its data under DIR; sets s3_pid and exports
#   TASKFOLD_TEST_S3_ENDPOINT, _BUCKET, _ACCESS_KEY_ID and _SECRET_ACCESS_KEY

SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6

seaweedfs_binary() {
    echo "$1/seaweedfs/$SEAWEEDFS_VERSION/weed"
}

install_seaweedfs() {
    local target_dir=$1
    local binary
    binary=$(seaweedfs_binary "$target_dir")
    [ -x "$binary" ] && return 0
    echo "building SeaweedFS $SEAWEEDFS_VERSION (a long build, done once per target directory)"
    local go_env=(GOMODCACHE="$target_dir/go/mod" GOCACHE="$target_dir/go/cache" GOFLAGS=-buildvcs=false)
    # `go install module@version` refuses modules whose go.mod has replace directives, as
    # SeaweedFS's does: build inside a copy of the module instead, so its go.mod applies.
    local source
    source=$(env "${go_env[@]}" go mod download -json "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
    local build_dir="$target_dir/seaweedfs/build"
    rm -rf "$build_dir"
    mkdir -p "$(dirname "$binary")"
    cp -r "$source" "$build_dir"
    chmod -R u+w "$build_dir"
    (cd "$build_dir" && env "${go_env[@]}" go build -o "$binary.partial" ./weed)
    mv "$binary.partial" "$binary"
    # The binary is what is kept: the sources and Go's module and build caches (gigabytes) go.
    rm -rf "$build_dir"
    env "${go_env[@]}" go clean -cache -modcache
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_s3() {
    local target_dir=$1 dir=$2
    install_seaweedfs "$target_dir"
    mkdir -p "$dir/data"
    local access_key=taskfold-test secret_key bucket=taskfold-blobs
    secret_key=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
    cat >"$dir/s3.json" <<CONFIG
{"identities": [{"name": "taskfold-test",
                 "credentials": [{"accessKey": "$access_key", "secretKey": "$secret_key"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
CONFIG
    local ports=()
    for _ in $(seq 1 8); do ports+=("$(free_port)"); done
    local s3_port=${ports[6]}
    # Every listener on loopback and on ports of its own (other test runs may share the
    # machine); the catalogs SeaweedFS serves besides S3 are off; small volumes, so that the
    # store's memory and disk stay modest.
    GOMAXPROCS=2 GOMEMLIMIT=512MiB "$(seaweedfs_binary "$target_dir")" server \
        -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$dir/data" \
        -master.port="${ports[0]}" -master.port.grpc="${ports[1]}" \
        -master.telemetry=false -master.volumeSizeLimitMB=64 \
        -volume.port="${ports[2]}" -volume.port.grpc="${ports[3]}" -volume.max=16 \
        -volume.preStopSeconds=0 \
        -filer -filer.port="${ports[4]}" -filer.port.grpc="${ports[5]}" \
        -filer.localSocket="$dir/filer.sock" \
        -s3 -s3.port="$s3_port" -s3.port.grpc="${ports[7]}" -s3.config="$dir/s3.json" \
        -s3.localSocket="$dir/s3.sock" -s3.port.iceberg=0 -s3.port.lance=0 \
        >"$dir/weed.log" 2>&1 &
    s3_pid=$!
    local endpoint="http://127.0.0.1:$s3_port"
    # Ready once the bucket could be made (200) or is there (409): the S3 gateway answers
    # before the filer behind it does.
    local status=
    for _ in $(seq 1 600); do
        if ! kill -0 "$s3_pid" 2>/dev/null; then
            echo "weed exited:"; cat "$dir/weed.log"; return 1
        fi
        status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT \
            --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
            "$endpoint/$bucket" || true)
        [ "$status" = 200 ] || [ "$status" = 409 ] && break
        sleep 0.1
    done
    if [ "$status" != 200 ] && [ "$status" != 409 ]; then
        echo "SeaweedFS did not make the bucket (last status $status):"; cat "$dir/weed.log"
        return 1
    fi
    export TASKFOLD_TEST_S3_ENDPOINT=$endpoint
    export TASKFOLD_TEST_S3_BUCKET=$bucket
    export TASKFOLD_TEST_S3_ACCESS_KEY_ID=$access_key
    export TASKFOLD_TEST_S3_SECRET_ACCESS_KEY=$secret_key
    echo "SeaweedFS S3 ready on $endpoint (bucket $bucket)"
}
