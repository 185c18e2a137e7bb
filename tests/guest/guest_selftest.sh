#!/usr/bin/env bash
# Self-test of the integration-test guest (scripts/guest): builds it, then
# boots it to check that a script's exit status and output come back, that
# the guest mounts a 9P share from a real diod on the host over QEMU user
# networking, and that memfd-backed guest RAM lets a vhost-user disk work.
# Usage: tests/guest/guest_selftest.sh [GUEST_DIR]   (default: build/guest)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
GUEST=${1:-$top/build/guest}
RUN=("$top/scripts/guest/run-guest.py" --guest "$GUEST" --timeout 180)

TMP=$(mktemp -d /tmp/ioplane-guest-selftest-XXXXXX)
DIOD_PID='' QSD_PID=''
cleanup() {
    for pid in $DIOD_PID $QSD_PID; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
passed=0
fail() {
    echo "FAIL: $*"
    [ -f "$TMP/out" ] && { echo "--- guest console (tail):"; tail -40 "$TMP/out"; }
    for l in diod qsd; do
        [ -s "$TMP/$l.log" ] && { echo "--- $l log (tail):"; tail -20 "$TMP/$l.log"; }
    done
    echo "$passed passed, 1 failed"
    exit 1
}
pass() { echo "ok: $*"; passed=$((passed + 1)); }

# guest SCRIPT [run-guest options]: boots it; console in $TMP/out, status in $status.
guest() {
    local script=$1
    shift
    status=0
    "${RUN[@]}" --script "$script" "$@" >"$TMP/out" 2>&1 || status=$?
}

"$top/scripts/guest/make-guest.sh" "$GUEST" || fail "make-guest.sh"
kver=$(sed -n 's/^linux-image-\([^ ]*\) .*/\1/p' "$GUEST/stamp")
pass "guest built ($kver)"

printf 'uname -r\nexit 3\n' >"$TMP/uname.sh"
guest "$TMP/uname.sh"
[ "$status" -eq 3 ] || fail "exit 3 in the guest gave status $status"
grep -qx "$kver" <(tr -d '\r' <"$TMP/out") || fail "no line '$kver' (uname -r) on the console"
pass "exit status and output of a guest script"

# 9P: diod on the host's loopback; QEMU's user network makes it 10.0.2.2 in the guest.
if ! command -v diod >/dev/null; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends diod
fi
share=$TMP/share
mkdir "$share"
token="host-$RANDOM-$$"
echo "$token" >"$share/from-host"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# -c /dev/null: none of /etc/diod.conf; -n: no MUNGE authentication.
diod -f -n -c /dev/null -L stderr -l "127.0.0.1:$port" -e "$share" >"$TMP/diod.log" 2>&1 &
DIOD_PID=$!
for _ in $(seq 100); do
    (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    kill -0 "$DIOD_PID" 2>/dev/null || fail "diod exited"
    sleep 0.1
done
cat >"$TMP/9p.sh" <<EOF
set -e
mount -t 9p -o trans=tcp,port=$port,aname=$share,version=9p2000.L,uname=root,access=user 10.0.2.2 /mnt
echo "read: \$(cat /mnt/from-host)"
echo "written by the guest" >/mnt/from-guest
umount /mnt
EOF
guest "$TMP/9p.sh" --net
[ "$status" -eq 0 ] || fail "9P guest script: status $status"
grep -q "read: $token" "$TMP/out" || fail "the guest did not read the host's file"
[ "$(cat "$share/from-guest" 2>/dev/null)" = "written by the guest" ] || fail "the guest's file is not on the host"
pass "9P share from diod over --net: guest reads and writes"

# --memfd exists for vhost-user devices: qemu-storage-daemon (the same QEMU
# packages) serves a vhost-user-blk disk that the guest writes.
truncate -s 16M "$TMP/disk.img"
qemu-storage-daemon --blockdev driver=file,node-name=d0,filename="$TMP/disk.img" \
    --export type=vhost-user-blk,id=e0,node-name=d0,writable=on,addr.type=unix,addr.path="$TMP/vub.sock" \
    >"$TMP/qsd.log" 2>&1 &
QSD_PID=$!
for _ in $(seq 100); do [ -S "$TMP/vub.sock" ] && break; sleep 0.1; done
printf 'echo written-over-vhost-user | dd of=/dev/vda conv=sync,fsync 2>/dev/null\n' >"$TMP/memfd.sh"
guest "$TMP/memfd.sh" --memfd --memory 256 -- -chardev socket,id=vu,path="$TMP/vub.sock" -device vhost-user-blk-pci,chardev=vu
[ "$status" -eq 0 ] || fail "--memfd with vhost-user-blk: status $status"
[ "$(head -c 23 "$TMP/disk.img")" = written-over-vhost-user ] || fail "the guest's write to the vhost-user-blk disk is not in the image"
pass "--memfd: vhost-user-blk from qemu-storage-daemon"

echo "$passed passed, 0 failed"
