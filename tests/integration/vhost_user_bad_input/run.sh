#!/usr/bin/env bash
# Runs vhost_user_bad_input (a malformed vhost-user-blk front end) against
# the daemon: a 2 GiB sparse image, a 2-queue export in an IOThread. Then
# checks that the daemon is alive, that a well-behaved front end still gets
# correct service, that its log has no sanitizer report, and that SIGTERM
# ends it with status 0.
#
#   run.sh DAEMON VHOSTBADBIN [IOPLANE_VUBLK]
#
# VHOST_BAD_INPUT_ARGS adds arguments to the program (e.g. "--skip NAME").
# With IOPLANE_VUBLK (tools/vublk), a short verified random-write run of it
# is the final good front end as well.
set -euo pipefail
# shellcheck disable=SC2034  # lib.sh's start_daemon runs it
DAEMON=$1
BADBIN=$2
VUBLK=${3:-}
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# lib.sh's cleanup stops at a failed kill under set -e (a daemon that died
# already) and leaves $TMP behind: this one always removes it.
cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill -9 "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}

# Sanitizer builds: leaks reported at exit, any report fatal.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# fail(), with the start of a sanitizer report first (the log's tail that
# fail() shows is the bottom of a long stack).
die() {
    if grep -q -E "ERROR: [A-Za-z]*Sanitizer|runtime error:|WARNING: ThreadSanitizer" "$TMP/daemon.log"; then
        echo "--- sanitizer report (head):"
        grep -m1 -A40 -E "ERROR: [A-Za-z]*Sanitizer|runtime error:|WARNING: ThreadSanitizer" "$TMP/daemon.log"
    fi
    fail "$@"
}

sanitizer_reports() {
    grep -E "ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|WARNING: ThreadSanitizer|SUMMARY: [A-Za-z]*Sanitizer" \
        "$TMP/daemon.log" || true
}

truncate -s 2G "$TMP/disk.img"
start_daemon --object iothread,id=io0 \
    --blockdev driver=file,node-name=d0,filename="$TMP/disk.img" \
    --export type=vhost-user-blk,id=e0,node-name=d0,writable=on,addr.type=unix,addr.path="$TMP/vhost.sock",iothread=io0,num-queues=2
for _ in $(seq 100); do [ -S "$TMP/vhost.sock" ] && break; sleep 0.05; done

status=0
# shellcheck disable=SC2086  # word splitting of the extra arguments is wanted
"$BADBIN" --socket "$TMP/vhost.sock" --pid "$DAEMON_PID" --log "$TMP/daemon.log" ${VHOST_BAD_INPUT_ARGS:-} || status=$?
daemon_alive || die "the daemon died (program exit status $status)"
[ "$status" -eq 0 ] || die "vhost_user_bad_input: exit status $status"

# The last word goes to a well-behaved front end.
"$BADBIN" --socket "$TMP/vhost.sock" --case good_client --no-good-after >/dev/null || die "final good client"
if [ -n "$VUBLK" ]; then
    "$VUBLK" --socket "$TMP/vhost.sock" --rw randwrite --bs 4k --iodepth 8 --queues 2 --runtime 1 --verify \
        --size $((64 << 20)) >"$TMP/vublk.log" 2>&1 || { cat "$TMP/vublk.log"; fail "ioplane-vublk --verify"; }
fi
daemon_alive || die "the daemon died"

reports=$(sanitizer_reports)
[ -z "$reports" ] || die "sanitizer report in the daemon's log"
# lib.sh's stop_daemon, with die() for a sanitizer report at exit (LeakSanitizer).
kill -TERM "$DAEMON_PID"
exit_status=0
wait "$DAEMON_PID" || exit_status=$?
DAEMON_PID=
[ "$exit_status" -eq 0 ] || die "daemon exit status $exit_status after SIGTERM"
reports=$(sanitizer_reports)
[ -z "$reports" ] || die "sanitizer report at exit"
echo "vhost_user_bad_input: every case passed; the daemon survived, served a good front end and exited cleanly"
