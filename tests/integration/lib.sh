# Helpers for integration tests that run the real daemon.
# Source it; set DAEMON to the binary first.

TMP=$(mktemp -d /tmp/ioplane-it-XXXXXX)
DAEMON_PID=
cleanup() {
    # (Not `[ ... ] && kill`: under set -e a daemon that already died would
    # end the trap before the rm.)
    if [ -n "$DAEMON_PID" ]; then kill -9 "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    [ -f "$TMP/daemon.log" ] && { echo "--- daemon log (tail):"; tail -30 "$TMP/daemon.log"; }
    exit 1
}
pass() { echo "ok: $*"; }

# start_daemon ARGS...: runs the daemon in the background, waits for its pidfile.
start_daemon() {
    rm -f "$TMP/pid"
    "$DAEMON" --pidfile "$TMP/pid" "$@" >>"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 200); do
        [ -s "$TMP/pid" ] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited during startup"
        sleep 0.05
    done
    fail "daemon did not start"
}

# stop_daemon: SIGTERM, expects exit status 0.
stop_daemon() {
    kill -TERM "$DAEMON_PID"
    local status=0
    wait "$DAEMON_PID" || status=$?
    DAEMON_PID=
    [ "$status" -eq 0 ] || fail "daemon exit status $status after SIGTERM"
}

daemon_alive() { kill -0 "$DAEMON_PID" 2>/dev/null; }
