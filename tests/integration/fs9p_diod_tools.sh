#!/usr/bin/env bash
# The 9P export against diod's client tools (Debian's diod package): listing
# with and without attributes, whole files larger than msize, an export in an
# IOThread, and paths that try to leave the export (a symlink to /etc, "..").
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
start_daemon --object iothread,id=io0 \
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
stop_daemon
pass "clean stop"
