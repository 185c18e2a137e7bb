#!/usr/bin/env bash
# ioplane-qmp against the real qemu-storage-daemon (one-shot commands,
# key=value arguments, error replies, interactive mode, events, quit), then
# against a fake server in Python for `top` (qemu has no x-query-export-stats)
# and for servers that hang up, send garbage, send huge lines or stay silent.
# Usage: qmp_client.sh IOPLANE_QMP [QEMU_STORAGE_DAEMON]. Exit 77: skipped.
set -euo pipefail
qmp=$1
daemon=${2:-qemu-storage-daemon}
command -v "$daemon" >/dev/null || { echo "SKIP: $daemon not found"; exit 77; }

dir=$(mktemp -d /tmp/ioplane-qmp-XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- stdout:"; cat "$dir/out" 2>/dev/null; echo "--- stderr:"; cat "$dir/err" 2>/dev/null; exit 1; }
wait_for_socket() {
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    fail "no socket $1"
}
# run STATUS ARGS...: the tool with stdin from /dev/null, output in $dir/out and $dir/err.
run() {
    local want=$1 status=0
    shift
    "$qmp" "$@" >"$dir/out" 2>"$dir/err" </dev/null || status=$?
    [ "$status" -eq "$want" ] || fail "ioplane-qmp $*: exit status $status, want $want"
}
has() { grep -q -e "$2" "$dir/$1" || fail "$1 lacks '$2'"; }

sock=$dir/qmp.sock
"$daemon" --chardev socket,id=c0,path="$sock",server=on,wait=off --monitor chardev=c0 >"$dir/daemon.log" 2>&1 &
daemon_pid=$!
pids+=("$daemon_pid")
wait_for_socket "$sock"

run 0 -s "$sock" query-version
has out '"qemu": {'
run 0 -s "$sock" --raw query-version
[ "$(wc -l <"$dir/out")" -eq 1 ] || fail "--raw output is not one line"
has out '"return":{"package"'

run 0 -s "$sock" blockdev-add driver=null-co node-name=n0 size=1048576
run 0 -s "$sock" query-named-block-nodes flat=true
has out '"node-name": "n0"'
has out '"virtual-size": 1048576'  # the size went out as a number

run 1 -s "$sock" no-such-command
has err '^CommandNotFound: The command no-such-command has not been found'
[ ! -s "$dir/out" ] || fail "error reply printed on stdout"
run 1 -s "$sock" blockdev-add driver=null-co node-name=n0
has err "^GenericError: .*n0"

run 2 -s "$dir/missing.sock" query-version
[ "$(wc -l <"$dir/err")" -eq 1 ] || fail "connection error is not one line"
has err "missing.sock"
run 2 -s "$sock" query-version stray-word
has err "expected key=value"
run 1 -s "$sock" top -n 1 -i 0.1
has err "^CommandNotFound: .*x-query-export-stats"

# Interactive: both line syntaxes, an error that does not end the session,
# events (a job reports its states), and "exit" ignoring what follows.
status=0
printf '%s\n' 'query-version' \
    '{"execute": "query-named-block-nodes", "arguments": {"flat": true}}' \
    'no-such-command' \
    "blockdev-create job-id=j0 options.driver=file options.filename=$dir/img options.size=65536" \
    'blockdev-add {"driver": "null-co", "node-name": "n1"}' \
    'query-named-block-nodes' \
    'exit' 'query-version' | "$qmp" -s "$sock" >"$dir/out" 2>"$dir/err" || status=$?
[ "$status" -eq 0 ] || fail "interactive: exit status $status"
[ "$(grep -c '"qemu": {' "$dir/out")" -eq 1 ] || fail "interactive: not exactly one query-version reply"
has out '"node-name": "n1"'
has out '^event: {.*"event":"JOB_STATUS_CHANGE"'
has err '^CommandNotFound: The command no-such-command'

# quit ends the server; its hanging up afterwards is no error.
echo quit | "$qmp" -s "$sock" >"$dir/out" 2>"$dir/err" || fail "interactive quit: exit status $?"
for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$daemon_pid" 2>/dev/null && fail "daemon still running after quit"
echo "qmp_client: qemu-storage-daemon checks ok"

python3=$(command -v python3 || true)
if [ -z "$python3" ]; then
    echo "qmp_client: no python3, fake-server checks skipped"
    exit 0
fi
# fake.py MODE SOCKET: serves connections one after another until killed.
cat >"$dir/fake.py" <<'EOF'
import json, socket, sys
mode, path = sys.argv[1], sys.argv[2]
srv = socket.socket(socket.AF_UNIX)
srv.bind(path)
srv.listen(4)
calls = 0

def send(c, obj):
    c.sendall((json.dumps(obj) + "\r\n").encode())

def op(n):  # 1% of requests fail and take >= 100us, the rest 10..100us; 50us mean
    return {"requests": n, "bytes": n * 4096, "errors": n // 100, "total-time-ns": n * 50000,
            "latency-histogram": {"boundaries": [10000, 100000], "bins": [0, n - n // 100, n // 100]}}

def stats(k):  # e0 goes away at the third call, e1 comes at the second
    ids = {1: ["e0"], 2: ["e0", "e1"]}.get(k, ["e1"])
    return [{"id": i, "type": "nbd", "node-name": "disk-" + i, "connections": 1,
             "ops": {"read": op(100 * k), "write": op(10 * k), "flush": op(k)}} for i in ids]

while True:
    c, _ = srv.accept()
    try:
        if mode == "close":
            continue
        if mode == "garbage":
            c.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            continue
        send(c, {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
                         "capabilities": []}})
        for line in c.makefile():
            req = json.loads(line)
            if req["execute"] == "qmp_capabilities":
                send(c, {"return": {}, "id": req["id"]})
            elif mode == "huge":
                c.sendall(b'{"return": "' + b"x" * (80 << 20) + b'"}\r\n')
            elif mode == "stats":
                calls += 1
                send(c, {"event": "NOISE", "data": {}, "timestamp": {"seconds": 0, "microseconds": 0}})
                send(c, {"return": {}, "id": "not-yours"})
                send(c, {"return": stats(calls), "id": req["id"]})
    except OSError:
        pass
    finally:
        c.close()
EOF
for mode in stats close garbage huge silent; do
    "$python3" "$dir/fake.py" "$mode" "$dir/$mode.sock" &
    pids+=($!)
done
for mode in stats close garbage huge silent; do wait_for_socket "$dir/$mode.sock"; done

run 0 -s "$dir/stats.sock" top -i 0.2 -n 2
[ "$(grep -c '^ID  *NODE  *CONN  *RD-IOPS' "$dir/out")" -eq 2 ] || fail "top: not two tables"
[ "$(grep -c '^$' "$dir/out")" -eq 1 ] || fail "top: tables not separated by one blank line"
# First table: e0 with rates (LAT-us, P99-us, ERRORS are exact), e1 new; second: e0 gone.
awk '/^ID/ { t++ } t == 1 && $1 == "e0" { print $9, $10, $11 }' "$dir/out" | grep -qx '50.0 100.0 1' ||
    fail "top: e0 latency/p99/errors"
awk '/^ID/ { t++ } t == 1 && $1 == "e1" && $4 == "-" && $11 == "-" { ok = 1 } END { exit !ok }' "$dir/out" ||
    fail "top: new export e1 not shown with '-'"
awk '/^ID/ { t++ } t == 2 && $1 == "e0" { bad = 1 } t == 2 && $1 == "e1" && $4 > 0 { ok = 1 } END { exit bad || !ok }' \
    "$dir/out" || fail "top: second table"

run 2 -s "$dir/close.sock" query-version
has err "closed the connection"
run 2 -s "$dir/garbage.sock" query-version
has err "not a JSON object"
run 2 -s "$dir/huge.sock" query-version
has err "longer than"
run 2 -s "$dir/silent.sock" --timeout 0.3 query-version
has err "timed out"
for f in out err; do [ "$(wc -c <"$dir/$f")" -lt 1000 ] || fail "misbehaving server: $f too long"; done
echo "qmp_client: ok"
