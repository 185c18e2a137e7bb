#!/usr/bin/env bash
# The NBD export against real clients: qemu-img, qemu-io, nbdinfo, nbdcopy,
# fio's nbd engine; durability after FLUSH/FUA across kill -9; clean SIGTERM.
set -euo pipefail
DAEMON=$1
. "$(dirname "$0")/lib.sh"

IMG=$TMP/disk.img
SOCK=$TMP/nbd.sock
truncate -s 64M "$IMG"
URI="nbd+unix:///disk?socket=$SOCK"
start_nbd() {
    start_daemon --object iothread,id=io0 \
        --blockdev driver=file,node-name=disk,filename="$IMG",discard=unmap \
        --nbd-server addr.type=unix,addr.path="$SOCK" \
        --export type=nbd,id=e0,node-name=disk,writable=on,iothread=io0
}
start_nbd

nbdinfo --list "nbd+unix://?socket=$SOCK" | grep -q 'export="disk"' || fail "nbdinfo --list does not show the export"
pass "nbdinfo --list"

qemu-img info --output=json "$URI" | grep -q '"virtual-size": 67108864' || fail "qemu-img info: wrong size"
pass "qemu-img info"

qemu-io -f raw "$URI" -c 'write -P 0xab 0 1M' -c 'write -z 1M 1M' -c 'write -P 0xcd 2M 1M' \
    -c 'discard 2M 1M' -c 'write -P 0x11 8M 4k' >/dev/null || fail "qemu-io writes"
out=$(qemu-io -f raw "$URI" -c 'read -P 0xab 0 1M' -c 'read -P 0 1M 1M' -c 'read -P 0 2M 1M' -c 'read -P 0x11 8M 4k')
echo "$out" | grep -q "Pattern verification failed" && fail "qemu-io pattern mismatch: $out"
pass "qemu-io write/read -P, write -z, discard"

# Many requests in flight at once, then verified.
cmds=()
for i in $(seq 0 63); do cmds+=(-c "aio_write -P $((i % 250 + 1)) $((i * 65536 + 16777216)) 64k"); done
qemu-io -f raw "$URI" "${cmds[@]}" -c aio_flush >/dev/null || fail "qemu-io aio writes"
cmds=()
for i in $(seq 0 63); do cmds+=(-c "read -P $((i % 250 + 1)) $((i * 65536 + 16777216)) 64k"); done
qemu-io -f raw "$URI" "${cmds[@]}" | grep -q "Pattern verification failed" && fail "parallel writes read back wrong"
pass "qemu-io 64 parallel aio writes"

# Block status against the file's real holes: 2M..3M was discarded, 3M.. never written.
map=$(nbdinfo --map "$URI")
echo "$map" | awk '$1 == 0 && /data/ {ok=1} END {exit !ok}' || fail "nbdinfo --map: offset 0 should be data: $map"
# extent_type OFFSET: the type of the extent containing OFFSET.
extent_type() { echo "$map" | awk -v o="$1" '$1 <= o && o < $1 + $2 {print $4; exit}'; }
[[ "$(extent_type 2097152)" == hole* ]] || fail "nbdinfo --map: discarded range should be a hole: $map"
[[ "$(extent_type $((8 << 20)))" == data ]] || fail "nbdinfo --map: written 4k at 8M should be data: $map"
pass "nbdinfo --map shows data and holes"

qemu-img convert -f raw -O raw "$URI" "$TMP/copy.img" || fail "qemu-img convert"
qemu-img compare -f raw -F raw "$URI" "$TMP/copy.img" >/dev/null || fail "qemu-img compare differs"
pass "qemu-img convert + compare"

head -c 8M /dev/urandom >"$TMP/random.bin"
truncate -s 64M "$TMP/random.bin"
nbdcopy "$TMP/random.bin" "$URI" || fail "nbdcopy in"
nbdcopy "$URI" "$TMP/back.bin" || fail "nbdcopy out"
[ "$(sha256sum <"$TMP/random.bin")" = "$(sha256sum <"$TMP/back.bin")" ] || fail "nbdcopy round trip differs"
pass "nbdcopy round trip"

fio --name=verify --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=16 --size=16M \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --output="$TMP/fio.txt" >/dev/null 2>&1 ||
    { cat "$TMP/fio.txt"; fail "fio verify"; }
grep -q "err= 0" "$TMP/fio.txt" || fail "fio reported errors"
pass "fio nbd engine, randwrite QD16 with crc32c verify"

# Durability: acknowledged after FLUSH or FUA survives kill -9.
qemu-io -f raw "$URI" -c 'write -P 0x5a 32M 64k' -c flush -c 'write -f -P 0x6b 40M 4k' >/dev/null ||
    fail "durability writes"
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
DAEMON_PID=
cmp <(head -c 65536 /dev/zero | tr '\0' '\132') <(dd if="$IMG" bs=64k skip=512 count=1 status=none) ||
    fail "flushed write lost after kill -9"
cmp <(head -c 4096 /dev/zero | tr '\0' '\153') <(dd if="$IMG" bs=4k skip=10240 count=1 status=none) ||
    fail "FUA write lost after kill -9"
pass "FLUSH and FUA data survive kill -9"

start_nbd
qemu-io -f raw "$URI" -c 'read -P 0xab 0 1M' | grep -q "Pattern verification failed" && fail "data after restart"
stop_daemon
grep -q "exiting" "$TMP/daemon.log" || fail "no clean exit"
pass "restart, then SIGTERM: exit 0"
echo "nbd_clients: all passed"
