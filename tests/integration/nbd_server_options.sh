#!/usr/bin/env bash
# --nbd-server over TCP (loopback), max-connections, and the deadline for a
# client that never negotiates; a unix socket a live daemon listens on is
# refused to a second one, a stale one (its daemon killed) is replaced.
set -euo pipefail
DAEMON=$1
. "$(dirname "$0")/lib.sh"
truncate -s 16M "$TMP/disk.img"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_daemon --blockdev driver=file,node-name=disk,filename="$TMP/disk.img" \
    --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port="$PORT",max-connections=2 \
    --export type=nbd,id=e0,node-name=disk,writable=on
URI="nbd://127.0.0.1:$PORT/disk"
qemu-io -f raw "$URI" -c 'write -P 0x42 0 64k' -c 'read -P 0x42 0 64k' | grep -q "Pattern verification failed" &&
    fail "TCP read back"
pass "TCP export: qemu-io write/read"

python3 - "$PORT" <<'PY' || fail "max-connections / handshake deadline"
import socket, sys, time
port = int(sys.argv[1])
def connect():
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s
a, b = connect(), connect()
assert a.recv(18)[:8] == b"NBDMAGIC" and b.recv(18)[:8] == b"NBDMAGIC"
c = connect()
c.settimeout(5)
data = c.recv(18)
assert data == b"", "third connection should be refused (closed), got %r" % data
print("ok: third connection refused with max-connections=2")
start = time.time()
a.settimeout(20)
while a.recv(4096):  # never negotiates: the server closes it after its deadline
    pass
took = time.time() - start
assert 5 < took < 15, took
print("ok: silent client disconnected after %.1f s" % took)
PY
daemon_alive || fail "daemon died"
stop_daemon
pass "server options"

SOCK=$TMP/nbd.sock
ARGS=(--blockdev driver=file,node-name=disk,filename="$TMP/disk.img" --nbd-server addr.type=unix,addr.path="$SOCK"
      --export type=nbd,id=e0,node-name=disk)
start_daemon "${ARGS[@]}"
status=0
"$DAEMON" "${ARGS[@]}" >"$TMP/second.log" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a second daemon on the same unix socket: exit status $status"
grep -q "unix socket '$SOCK' is in use by a running server" "$TMP/second.log" ||
    fail "no clear error for a socket in use: $(cat "$TMP/second.log")"
nbdinfo --size "nbd+unix:///disk?socket=$SOCK" >/dev/null || fail "the first daemon lost its socket"
pass "a unix socket in use by a live daemon is refused, and keeps serving"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=
[ -S "$SOCK" ] || fail "the killed daemon left no socket file (the case to test)"
start_daemon "${ARGS[@]}"
nbdinfo --size "nbd+unix:///disk?socket=$SOCK" >/dev/null || fail "the stale socket was not replaced"
stop_daemon
pass "a stale unix socket (its daemon killed) is replaced"
