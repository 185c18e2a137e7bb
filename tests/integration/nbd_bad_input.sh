#!/usr/bin/env bash
# Runs nbd_bad_input.py and nbd_stalled_reader.py against the daemon (export
# in an IOThread, a QMP monitor for live moves), then checks the daemon is
# alive and exits cleanly.
set -euo pipefail
DAEMON=$1
. "$(dirname "$0")/lib.sh"
truncate -s 16M "$TMP/disk.img"
start_daemon --object iothread,id=io0 \
    --blockdev driver=file,node-name=disk,filename="$TMP/disk.img" \
    --nbd-server addr.type=unix,addr.path="$TMP/nbd.sock" \
    --export type=nbd,id=e0,node-name=disk,writable=on,iothread=io0 \
    --chardev socket,id=m0,path="$TMP/qmp.sock",server=on,wait=off --monitor chardev=m0
python3 "$(dirname "$0")/nbd_bad_input.py" "$TMP/nbd.sock" disk $((16 << 20)) || fail "bad input cases"
python3 "$(dirname "$0")/nbd_stalled_reader.py" "$TMP/nbd.sock" disk "$TMP/qmp.sock" || fail "stalled reader cases"
daemon_alive || fail "daemon died"
stop_daemon
echo "nbd_bad_input: daemon survived and exited cleanly"
