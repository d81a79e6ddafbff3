#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for a bounded time and fails on any crash (a panic, an
# overflow caught by debug assertions, a failed assertion of the target). Prints the
# executions each target ran.
#
#   bash tests/fuzz.sh                       # every target, 60 s each
#   TASKFOLD_FUZZ_SECONDS=10 bash tests/fuzz.sh log_record
#   TASKFOLD_FUZZ_TOOLCHAIN=stable bash tests/fuzz.sh
#
# cargo fuzz needs nightly features: a nightly toolchain is used when one is installed,
# otherwise the stable one with RUSTC_BOOTSTRAP=1. Without sanitizers (the crate has no unsafe
# code), with debug assertions. Builds go to target/fuzz, the corpora it grows to
# target/fuzz/corpus/<target> (the committed seeds in fuzz/seeds/<target> are read too), and a
# crashing input to target/fuzz/artifacts/<target>.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECONDS_EACH="${TASKFOLD_FUZZ_SECONDS:-60}"
CARGO_FUZZ_VERSION="0.13.1"
# A crashing input is never longer than this; long enough for a realistic task definition.
declare -A MAX_LEN=([log_record]=4096 [hawk_header]=20000 [create_task_body]=16384)
TARGETS=("$@")
if [ "${#TARGETS[@]}" -eq 0 ]; then
    TARGETS=(log_record hawk_header create_task_body)
fi

# Builds hold the lock file CARGO_BUILD_LOCK names, when one is named (a machine whose builds
# take turns).
lock() {
    if [ -n "${CARGO_BUILD_LOCK:-}" ]; then
        flock "$CARGO_BUILD_LOCK" "$@"
    else
        "$@"
    fi
}

if ! cargo fuzz --version 2> /dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
    lock cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

# TASKFOLD_FUZZ_TOOLCHAIN picks one (e.g. `stable`, to check what a machine without nightly
# does).
TOOLCHAIN_NAME="${TASKFOLD_FUZZ_TOOLCHAIN:-}"
if [ -z "$TOOLCHAIN_NAME" ]; then
    if rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
        TOOLCHAIN_NAME=nightly
    else
        TOOLCHAIN_NAME=stable
    fi
fi
TOOLCHAIN=("+$TOOLCHAIN_NAME")
if [ "${TOOLCHAIN_NAME#nightly}" = "$TOOLCHAIN_NAME" ]; then
    export RUSTC_BOOTSTRAP=1
fi
echo "fuzzing with $(rustc "${TOOLCHAIN[@]}" --version), ${SECONDS_EACH} s per target"

export CARGO_TARGET_DIR="$ROOT/target/fuzz"
cd "$ROOT/fuzz"
FLAGS=(--sanitizer none --debug-assertions)
for target in "${TARGETS[@]}"; do
    lock cargo "${TOOLCHAIN[@]}" fuzz build "${FLAGS[@]}" "$target"
done

failed=0
summary=()
for target in "${TARGETS[@]}"; do
    corpus="$CARGO_TARGET_DIR/corpus/$target"
    artifacts="$CARGO_TARGET_DIR/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    output="$CARGO_TARGET_DIR/$target.log"
    status=0
    cargo "${TOOLCHAIN[@]}" fuzz run "${FLAGS[@]}" "$target" "$corpus" "$ROOT/fuzz/seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len="${MAX_LEN[$target]}" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" > "$output" 2>&1 || status=$?
    executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$output" | tail -n 1)"
    if [ "$status" -ne 0 ]; then
        failed=1
        tail -n 60 "$output"
        summary+=("$target: CRASHED after ${executions:-?} executions (exit $status); input in $artifacts")
    else
        summary+=("$target: ${executions:-?} executions in ${SECONDS_EACH} s, 0 crashes")
    fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
