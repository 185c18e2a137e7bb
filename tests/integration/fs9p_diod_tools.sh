#!/usr/bin/env bash
# The 9P export against diod's client tools (Debian's diod package): listing
# with and without attributes, whole files larger than msize, an export in an
# IOThread, and paths that try to leave the export (a symlink to /etc, "..");
# then a read-only export added and removed live over QMP.
set -euo pipefail
DAEMON=$1
. "$(dirname "$0")/lib.sh"
command -v diodcat >/dev/null || PATH=$PATH:/usr/sbin
command -v diodcat >/dev/null || { echo "SKIP: diodcat not found (scripts/install-deps.sh test installs diod)"; exit 77; }

share=$TMP/share
mkdir -p "$share/sub/deeper"
echo hello >"$share/a.txt"
head -c 3M /dev/urandom >"$share/sub/big.bin"   # many times the 64 KiB msize diodcat asks for
ln -s /etc "$share/etc_link"
ln -s ../../.. "$share/sub/up"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_daemon --chardev socket,id=c0,path="$TMP/qmp.sock",server=on,wait=off --monitor chardev=c0 \
    --object iothread,id=io0 \
    --export type=9p,id=s0,path="$share",addr.type=inet,addr.host=127.0.0.1,addr.port="$PORT",iothread=io0
srv=(-s "127.0.0.1:$PORT" -a "$share")

[ "$(diodls "${srv[@]}" | sort | tr '\n' ' ')" = "a.txt etc_link sub " ] || fail "diodls of the root"
diodls "${srv[@]}" -l | grep -q ' 4 .* etc_link$' || fail "diodls -l: etc_link (a 4-byte symlink) missing"
pass "diodls"

[ "$(diodcat "${srv[@]}" a.txt)" = hello ] || fail "diodcat a.txt"
diodcat "${srv[@]}" sub/big.bin | cmp - "$share/sub/big.bin" || fail "diodcat of a 3 MiB file"
pass "diodcat, including a file larger than msize"

# Escapes: each must fail, and the daemon must keep serving.
for path in etc_link/passwd sub/up/etc/passwd ../etc/passwd sub/../../etc/passwd; do
    if out=$(diodcat "${srv[@]}" "$path" 2>&1); then fail "diodcat $path succeeded: ${out:0:80}"; fi
    echo "$out" | grep -q "root:" && fail "diodcat $path printed /etc/passwd"
done
[ "$(diodcat "${srv[@]}" a.txt)" = hello ] || fail "daemon stopped serving after escape attempts"
pass "symlinks and .. stay inside the export"

# aname must name this export (its path or id).
diodls -s "127.0.0.1:$PORT" -a /elsewhere >/dev/null 2>&1 && fail "attach with a foreign aname succeeded"
[ "$(diodcat -s "127.0.0.1:$PORT" -a s0 a.txt)" = hello ] || fail "attach by export id"
pass "aname"
# Live over QMP: block-export-add with the same keys, read-only, then
# block-export-del (safe mode refused while a client is connected, hard
# mode disconnects it and reports BLOCK_EXPORT_DELETED).
PORT2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PYTHONPATH=$(dirname "$0") python3 - "$TMP/qmp.sock" "$share" "$PORT2" <<'PY' || fail "9P export over QMP"
import sys
from qmp import Qmp
import p9
sock, share, port = sys.argv[1], sys.argv[2], sys.argv[3]
q = Qmp(sock)
q.ok("block-export-add", type="9p", id="live0", path=share, readonly=True,
     addr={"type": "inet", "host": "127.0.0.1", "port": port})
assert any(e["id"] == "live0" and e["type"] == "9p" for e in q.ok("query-block-exports"))
c = p9.Client.tcp("127.0.0.1", int(port))
c.version()
root = c.new_fid()
c.attach(root)
f = c.new_fid()
c.walk(root, f, ["a.txt"])
c.lopen(f, p9.O_RDONLY)
assert c.read(f, 0, 100) == b"hello\n"
try:
    c.lcreate(root, "new", p9.O_RDWR | p9.O_CREAT, 0o644)
    raise AssertionError("create on a read-only export succeeded")
except p9.P9Error as e:
    assert e.errno == 30, e  # EROFS
err = q.error("block-export-del", id="live0")
assert "in use" in err["desc"], err
q.ok("block-export-del", id="live0", mode="hard")
q.wait_event("BLOCK_EXPORT_DELETED")
assert not any(e["id"] == "live0" for e in q.ok("query-block-exports"))
print("ok: 9P export added, used, refused and removed over QMP")
PY
pass "QMP block-export-add/del of a 9P export"
stop_daemon
pass "clean stop"
