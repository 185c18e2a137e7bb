#!/usr/bin/env bash
# x-blockdev-set-iothread under load: fio (nbd engine, QD 32, crc32c verify)
# writes and verifies through the export while the node is moved 200 times
# between two IOThreads and the main loop (the test that aborts
# qemu-storage-daemon 7.2). fio runs back to back until the moves are done;
# every run must finish with no error and no verify failure, and the daemon
# must exit cleanly afterwards.
# Usage: qmp_live_move.sh DAEMON [MOVES]
set -euo pipefail
DAEMON=$1
MOVES=${2:-200}
. "$(dirname "$0")/lib.sh"
truncate -s 64M "$TMP/disk.img"
start_daemon --object iothread,id=io0 --object iothread,id=io1,poll-max-ns=0 \
    --blockdev driver=file,node-name=disk,filename="$TMP/disk.img" \
    --nbd-server addr.type=unix,addr.path="$TMP/nbd.sock" \
    --export type=nbd,id=e0,node-name=disk,writable=on,iothread=io0 \
    --chardev socket,id=c0,path="$TMP/qmp.sock",server=on,wait=off --monitor chardev=c0
URI="nbd+unix:///disk?socket=$TMP/nbd.sock"

# fio, back to back, until the mover says stop; each run in its own 8 MiB
# region so that a verify covers what that run wrote.
(
    run=0
    while [ ! -e "$TMP/moves-done" ]; do
        fio --name=live-move --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=32 \
            --offset=$(( (run % 6) * 8 ))M --size=8M --verify=crc32c --do_verify=1 --verify_backlog=64 \
            --verify_fatal=1 --output="$TMP/fio-$run.txt" >/dev/null 2>&1 ||
            { echo "fio run $run failed"; cat "$TMP/fio-$run.txt"; exit 1; }
        grep -q "err= 0" "$TMP/fio-$run.txt" || { echo "fio run $run reported errors"; exit 1; }
        run=$((run + 1))
    done
    echo "$run" >"$TMP/fio-runs"
) &
FIO_LOOP=$!

python3 "$(dirname "$0")/qmp_move_loop.py" "$TMP/qmp.sock" "$MOVES" ||
    { touch "$TMP/moves-done"; wait $FIO_LOOP || true; fail "moves"; }
touch "$TMP/moves-done"
wait $FIO_LOOP || fail "fio under moves"
pass "$MOVES moves between io0, io1 and the main loop under fio QD32 verify ($(cat "$TMP/fio-runs") fio runs, no error)"
daemon_alive || fail "daemon died"
stop_daemon
pass "daemon exited cleanly"
