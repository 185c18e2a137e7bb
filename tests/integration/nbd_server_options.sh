#!/usr/bin/env bash
# --nbd-server over TCP (loopback), max-connections, and the deadline for a
# client that never negotiates.
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
