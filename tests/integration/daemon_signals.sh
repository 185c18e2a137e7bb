#!/usr/bin/env bash
# The daemon starts its runtime (an IOThread here), reports it, and exits 0
# on SIGTERM and on SIGINT; it raises its open files limit to the hard one;
# bad options exit 1 with a one-line error naming the option.
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

status=0
"$daemon" --no-such-option >"$log" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "unknown option: exit status $status, want 1"
grep -q "no-such-option" "$log" || fail "unknown option not named"
"$daemon" --version | grep -q "ioplane-storage-daemon" || fail "--version"
echo "daemon_signals: ok"
