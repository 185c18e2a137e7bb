#!/usr/bin/env bash
# ioplane-9pload against diod: every workload for 1 s at concurrency 4 over a
# unix socket (and getattr over TCP), each must complete ops without an error
# and leave the export as it found it, with no fid left unclunked; then the
# error paths: an Rlerror stops the tool with a message naming the request.
# Usage: smoke.sh IOPLANE_9PLOAD [DIOD]. Exit 77: skipped (no diod, not root).
set -euo pipefail
load=$1
diod=${2:-$(command -v diod || echo /usr/sbin/diod)}
[ -x "$diod" ] || { echo "SKIP: diod not found (apt-get install diod)"; exit 77; }
# diod serves attaches as the attaching user (uname root here): it must be root.
[ "$(id -u)" = 0 ] || { echo "SKIP: diod needs root"; exit 77; }

dir=$(mktemp -d /tmp/ioplane-9pload-smoke-XXXXXX)
export_dir=$dir/export
mkdir "$export_dir"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do { kill "$p" && wait "$p"; } 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- stdout:"; cat "$dir/out" 2>/dev/null || true
    echo "--- stderr:"; cat "$dir/err" 2>/dev/null || true
    echo "--- diod log (tail):"; tail -20 "$dir"/diod*.log 2>/dev/null || true
    exit 1
}

# start_diod LISTEN LOG: diod in the foreground of a background job (PID in DIOD_PID).
start_diod() {
    "$diod" -f -n -l "$1" -e "$export_dir" >"$2" 2>&1 &
    DIOD_PID=$!
    pids+=("$DIOD_PID")
}
wait_for() {
    for _ in $(seq 200); do eval "$1" && return 0; sleep 0.05; done
    fail "diod did not start ($1)"
}

sock=$dir/diod.sock
start_diod "$sock" "$dir/diod.log"
wait_for '[ -S "$sock" ]'

# run WANT ARGS...: the tool, output in $dir/out and $dir/err.
run() {
    local want=$1 status=0
    shift
    "$load" "$@" >"$dir/out" 2>"$dir/err" </dev/null || status=$?
    [ "$status" -eq "$want" ] || fail "ioplane-9pload $*: exit status $status, want $want"
}
json_field() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$dir/out"; }

check_run() {
    local name=$1 ops
    [ "$(wc -l <"$dir/out")" -eq 1 ] || fail "$name: output is not one JSON line"
    ops=$(json_field ops)
    [ -n "$ops" ] && [ "$ops" -gt 0 ] || fail "$name: no ops"
    [ "$(json_field interrupted)" = false ] || fail "$name: interrupted"
    [ -n "$(json_field server_cpu_s | grep -v null)" ] || fail "$name: no server CPU time"
    ! grep -qi 'error\|rlerror\|stopped' "$dir/err" || fail "$name: error on stderr"
    [ -z "$(ls -A "$export_dir")" ] || fail "$name: left files in the export: $(ls -A "$export_dir")"
    echo "ok: $name: $ops ops, $(json_field ops_per_s) ops/s, p99 $(json_field lat_p99_us) us"
}

for w in getattr read4k read1m write4k write1m create-unlink readdir open; do
    run 0 --unix "$sock" --aname "$export_dir" --workload "$w" --duration 1 --concurrency 4 \
        --file-size 8M --entries 200 --server-pid "$DIOD_PID"
    check_run "$w"
done
kill -0 "$DIOD_PID" 2>/dev/null || fail "diod died"

# TCP, on a port the kernel picks.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start_diod "127.0.0.1:$port" "$dir/diod-tcp.log"
wait_for "$load --tcp 127.0.0.1:$port --aname $export_dir --workload getattr --duration 0.1 >/dev/null 2>&1"
run 0 --tcp "127.0.0.1:$port" --aname "$export_dir" --workload getattr --duration 1 --concurrency 4 --server-pid "$DIOD_PID"
check_run "getattr over TCP"

# Error paths: a clear message and exit status 1, nothing left behind.
run 1 --unix "$sock" --aname "$dir/not-exported" --workload getattr --duration 1
grep -q "Tattach '.*not-exported': Rlerror" "$dir/err" || fail "no Tattach error message"
echo "ok: a refused Tattach is reported"
# diod 1.0.24 does not implement Tunlinkat: forbidding the Tremove fallback stops the run.
run 1 --unix "$sock" --aname "$export_dir" --workload create-unlink --unlink unlinkat --duration 1
grep -q "Tunlinkat 'probe': Rlerror 95" "$dir/err" || fail "no Tunlinkat error message"
[ -z "$(ls -A "$export_dir")" ] || fail "the failed run left files: $(ls -A "$export_dir")"
echo "ok: an Rlerror stops the run and the clean-up still removes the files"
run 2 --unix "$sock" --workload nope
echo "ok: usage errors"

# Every connection clunked what it made.
kill "${pids[@]}"
wait "${pids[@]}" 2>/dev/null || true
pids=()
! grep -q 'unclunked' "$dir"/diod*.log || fail "fids left unclunked: $(grep unclunked "$dir"/diod*.log | head -3)"
echo "1 passed, 0 failed: ioplane-9pload smoke against diod"
