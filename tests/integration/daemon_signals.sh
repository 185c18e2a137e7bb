#!/usr/bin/env bash
# The daemon starts its runtime (an IOThread here), reports it, and exits 0
# on SIGTERM and on SIGINT; it raises its open files limit to the hard one;
# --daemonize returns once it serves; bad options exit 1 with a one-line
# error naming the option.
set -euo pipefail
daemon=$1
dir=$(mktemp -d /tmp/ioplane-signals-XXXXXX)
log=$dir/daemon.log
trap 'rm -rf "$dir"' EXIT

# On failure: the daemon's output and its signal masks as seen just before
# the signal was sent (a CI run once saw exit status 130 here; this shows why).
fail() {
    echo "FAIL: $*"
    echo "--- daemon output:"; cat "$log"
    echo "--- daemon signal state before the kill:"; cat "$dir/sigstate" 2>/dev/null
    exit 1
}

for sig in TERM INT; do
    "$daemon" --object iothread,id=io0 >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "ready" "$log" && break
        sleep 0.05
    done
    grep -q "iothread 'io0' running" "$log" || fail "no iothread start line"
    for task in /proc/"$pid"/task/*; do
        echo "$(cat "$task/comm" 2>/dev/null): $(grep -E 'SigBlk|SigIgn' "$task/status" 2>/dev/null | tr '\n\t' '  ')"
    done >"$dir/sigstate"
    kill -"$sig" "$pid"
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || fail "exit status $status after SIG$sig"
    grep -q "iothread 'io0' stopped" "$log" || fail "iothread not stopped on SIG$sig"
    grep -q "exiting" "$log" || fail "no clean exit on SIG$sig"
done

# The soft limit of open files is raised to the hard one at start.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -gt 1024 ]; then
    (ulimit -Sn 1024 && exec "$daemon") >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        grep -q "ready" "$log" && break
        sleep 0.05
    done
    soft=$(awk '/Max open files/ { print $4 }' /proc/"$pid"/limits)
    kill -TERM "$pid"
    wait "$pid" || true
    [ "$soft" = "$hard" ] || fail "open files limit $soft, want the hard limit $hard"
    grep -q "open files limit raised from 1024 to $hard" "$log" || fail "the raise is not logged"
fi

# --daemonize: the parent exits 0 once the daemon is ready, the pidfile
# names the daemon (not the parent), which serves and ends on SIGTERM;
# an error at start-up reaches the parent's exit status and stderr.
truncate -s 1M "$dir/disk.img"
status=0
"$daemon" --daemonize --pidfile "$dir/pid" --blockdev driver=file,node-name=d,filename="$dir/disk.img" \
    --nbd-server addr.type=unix,addr.path="$dir/nbd.sock" --export type=nbd,id=e,node-name=d >"$log" 2>&1 || status=$?
[ "$status" -eq 0 ] || fail "--daemonize: parent exit status $status"
pid=$(cat "$dir/pid")
kill -0 "$pid" 2>/dev/null || fail "--daemonize: the pidfile's process $pid is not running"
[ -S "$dir/nbd.sock" ] || fail "--daemonize: not serving when the parent exited"
nbdinfo --size "nbd+unix:///d?socket=$dir/nbd.sock" | grep -qx 1048576 || fail "--daemonize: the export does not answer"
kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && fail "--daemonize: SIGTERM did not end the daemon"
[ ! -e "$dir/pid" ] || fail "--daemonize: the pidfile stayed"
status=0
"$daemon" --daemonize --blockdev driver=file,node-name=d,filename="$dir/no-such.img" >"$log" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "--daemonize with a bad image: parent exit status $status, want 1"
grep -q "no-such.img" "$log" || fail "--daemonize: the start-up error did not reach the parent's stderr"

status=0
"$daemon" --no-such-option >"$log" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "unknown option: exit status $status, want 1"
grep -q "no-such-option" "$log" || fail "unknown option not named"
"$daemon" --version | grep -q "ioplane-storage-daemon" || fail "--version"
echo "daemon_signals: ok"
