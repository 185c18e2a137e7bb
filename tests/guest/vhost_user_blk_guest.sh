#!/usr/bin/env bash
# The vhost-user-blk export under a real VM: Debian's Linux 6.1 virtio-blk
# driver in a guest booted by QEMU (TCG, memfd RAM shared with the daemon).
#   1. O_DIRECT random data written and read back; checksums in the guest
#      and of the image on the host agree; GET_ID gives the export id, the
#      config's size_max becomes the queue's segment limit; the
#      guest switches the cache to writethrough and back (CONFIG_WCE).
#   2. Multiqueue: 2 vCPUs, 2 queues on 2 IOThreads; a writer pinned to each
#      vCPU; both queues served requests (the daemon logs counts per queue).
#   3. Discard and write zeroes (with and without unmap) reach the image:
#      holes where unmapping was allowed, zeroes everywhere they were asked.
#   4. A reboot inside the guest (the driver resets the device on the same
#      connection) and then a new QEMU (a new connection) both see the data.
#   5. The daemon killed (SIGKILL) and restarted under a running guest with
#      four writers: QEMU reconnects and hands the new daemon the in-flight
#      area (INFLIGHT_SHMFD), the guest's I/O resumes without errors, and
#      every block the guest wrote is in the image and reads back.
#   6. The same with qemu-storage-daemon 7.2 serving first and ioplane
#      started in its place: users can swap daemons under a running VM.
#   7. An I/O error injected by blkdebug reaches the guest as EIO (the
#      kernel logs it); the device keeps working, the data stays intact.
# Usage: vhost_user_blk_guest.sh DAEMON [GUEST_DIR]
set -euo pipefail
. "$(dirname "$0")/guest_lib.sh" "$@"
gcc -static -O2 -o "$TMP/blkzero" "$top/tests/guest/blkzero.c" || fail "building blkzero"
SOCK=$TMP/vub.sock
IMG=$TMP/disk.img

# guest NAME [run-guest options] -- [QEMU options]: boots with the disk on
# $SOCK; console in $TMP/NAME.out, exit status in $status.
guest() {
    local name=$1
    shift
    status=0
    "$top/scripts/guest/run-guest.py" --guest "$GUEST" --script "$TMP/$name.sh" --memfd --memory 256 --timeout 300 \
        --file "$TMP/blkzero" "$@" >"$TMP/$name.out" 2>&1 || status=$?
}
disk_args() { echo "-chardev socket,id=vu,path=$SOCK$1 -device vhost-user-blk-pci,chardev=vu$2"; }
guest_fail() {
    echo "--- guest console ($1, tail):"
    tail -30 "$TMP/$1.out"
    fail "$2"
}
# host_md5 OFFSET LEN: of the image range.
host_md5() { python3 -c "import hashlib,sys; f=open(sys.argv[1],'rb'); f.seek($1); print(hashlib.md5(f.read($2)).hexdigest())" "$IMG"; }

# --- 1. data integrity with O_DIRECT, one queue in an IOThread ---
truncate -s 64M "$IMG"
start_daemon --object iothread,id=io0 --blockdev driver=file,node-name=d0,filename="$IMG" \
    --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0
cat >"$TMP/data.sh" <<'EOF'
set -e
echo "serial: $(cat /sys/block/vda/serial)"
echo "sectors: $(cat /sys/block/vda/size)"
echo "segments up to: $(cat /sys/block/vda/queue/max_segment_size)"
head -c 8388608 /dev/urandom >/tmp/data
dd if=/tmp/data of=/dev/vda bs=64k seek=16 oflag=direct 2>/dev/null
dd if=/dev/vda of=/tmp/back bs=64k skip=16 count=128 iflag=direct 2>/dev/null
echo "written: $(md5sum </tmp/data | cut -d' ' -f1)"
echo "read: $(md5sum </tmp/back | cut -d' ' -f1)"
# The cache mode (CONFIG_WCE): the driver switches it through the config space.
echo "cache: $(cat /sys/block/vda/cache_type)"
echo "write through" >/sys/block/vda/cache_type
echo "cache now: $(cat /sys/block/vda/cache_type)"
dd if=/tmp/data of=/dev/vda bs=64k seek=16 count=16 oflag=direct 2>/dev/null
echo "write back" >/sys/block/vda/cache_type
echo "cache then: $(cat /sys/block/vda/cache_type)"
EOF
guest data -- $(disk_args "" "")
[ "$status" -eq 0 ] || guest_fail data "guest status $status"
grep -q "serial: vdisk0" "$TMP/data.out" || guest_fail data "GET_ID did not give the export id"
grep -q "sectors: 131072" "$TMP/data.out" || guest_fail data "capacity is not 64 MiB"
grep -q "segments up to: 262144" "$TMP/data.out" || guest_fail data "the driver did not take size_max (256 KiB)"
written=$(sed -n 's/^written: //p' "$TMP/data.out" | tr -d '\r')
read_back=$(sed -n 's/^read: //p' "$TMP/data.out" | tr -d '\r')
[ -n "$written" ] && [ "$written" = "$read_back" ] || guest_fail data "guest read back $read_back, wrote $written"
[ "$(host_md5 1048576 8388608)" = "$written" ] || fail "the image does not hold what the guest wrote"
pass "8 MiB O_DIRECT: guest and image checksums agree, serial and capacity right"
grep -q "cache: write back" "$TMP/data.out" || guest_fail data "the cache did not start as writeback"
grep -q "cache now: write through" "$TMP/data.out" || guest_fail data "the guest could not switch to writethrough"
grep -q "cache then: write back" "$TMP/data.out" || guest_fail data "the guest could not switch back to writeback"
grep -q "the driver chose a writethrough cache: every write is durable" "$TMP/daemon.log" ||
    fail "the daemon did not switch to writethrough"
grep -q "the driver chose a writeback cache" "$TMP/daemon.log" || fail "the daemon did not switch back to writeback"
pass "the guest switched the cache to writethrough and back (CONFIG_WCE)"
stop_daemon

# --- 2. two queues on two IOThreads ---
start_daemon --object iothread,id=io0 --object iothread,id=io1 --blockdev driver=file,node-name=d0,filename="$IMG" \
    --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK",num-queues=2,iothread.0=io0,iothread.1=io1
cat >"$TMP/mq.sh" <<'EOF'
set -e
echo "mq dirs: $(ls /sys/block/vda/mq | wc -l)"
head -c 4194304 /dev/urandom >/tmp/a
head -c 4194304 /dev/urandom >/tmp/b
taskset 1 dd if=/tmp/a of=/dev/vda bs=4k seek=4096 oflag=direct 2>/dev/null &
taskset 2 dd if=/tmp/b of=/dev/vda bs=4k seek=8192 oflag=direct 2>/dev/null &
wait %1
wait %2
echo "a: $(md5sum </tmp/a | cut -d' ' -f1)"
echo "b: $(md5sum </tmp/b | cut -d' ' -f1)"
EOF
guest mq -- -smp 2 $(disk_args "" ",num-queues=2")
[ "$status" -eq 0 ] || guest_fail mq "guest status $status"
grep -q "mq dirs: 2" "$TMP/mq.out" || guest_fail mq "the guest does not see 2 queues"
[ "$(host_md5 16777216 4194304)" = "$(sed -n 's/^a: //p' "$TMP/mq.out" | tr -d '\r')" ] || fail "queue writer a: image differs"
[ "$(host_md5 33554432 4194304)" = "$(sed -n 's/^b: //p' "$TMP/mq.out" | tr -d '\r')" ] || fail "queue writer b: image differs"
for q in 0 1; do
    grep -q "queue $q: started in 'io$q'" "$TMP/daemon.log" || fail "queue $q did not start in io$q"
    n=$(sed -n "s/.*queue $q: stopped at avail index [0-9]* after \([0-9]*\) requests/\1/p" "$TMP/daemon.log" | sort -n | tail -1)
    [ "${n:-0}" -ge 100 ] || fail "queue $q served ${n:-0} requests (a writer's 1024 expected to spread)"
done
pass "2 queues in io0 and io1: both served requests, both writers' data in the image"
stop_daemon

# --- 3. discard and write zeroes (discard=unmap: QEMU's default ignores them) ---
rm -f "$IMG"
truncate -s 64M "$IMG"
start_daemon --object iothread,id=io0 --blockdev driver=file,node-name=d0,filename="$IMG",discard=unmap \
    --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0
cat >"$TMP/zero.sh" <<'EOF'
set -e
head -c 8388608 /dev/urandom | dd of=/dev/vda bs=1M oflag=direct 2>/dev/null
blkdiscard -o 0 -l 1048576 /dev/vda            # DISCARD
/blkzero punch /dev/vda 2097152 1048576         # WRITE_ZEROES, unmap allowed
/blkzero zeroout /dev/vda 4194304 1048576       # WRITE_ZEROES, no unmap
dd if=/dev/vda bs=1M count=8 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1 >/tmp/sum
echo "sum: $(cat /tmp/sum)"
EOF
guest zero -- $(disk_args "" "")
[ "$status" -eq 0 ] || guest_fail zero "guest status $status"
python3 - "$IMG" <<'EOF' || fail "discard/write-zeroes not as expected in the image (above)"
import os, sys
MiB = 1 << 20
fd = os.open(sys.argv[1], os.O_RDONLY)
def hole_at(off):
    try:
        return os.lseek(fd, off, os.SEEK_HOLE) == off
    except OSError:
        return False
def zero(off, n):
    return os.pread(fd, n, off) == bytes(n)
checks = {
    "discarded range is a hole": hole_at(0) and zero(0, MiB),
    "data after the discard intact": not zero(MiB, MiB),
    "write zeroes with unmap left a hole": hole_at(2 * MiB) and zero(2 * MiB, MiB),
    "write zeroes without unmap reads zero": zero(4 * MiB, MiB),
    "data after it intact": not zero(5 * MiB, MiB),
}
for what, ok in checks.items():
    print(("ok   " if ok else "FAIL ") + what)
sys.exit(0 if all(checks.values()) else 1)
EOF
pass "discard and write zeroes: holes and zeroes in the image"

# --- 4. reboot in the guest, then a new QEMU ---
cat >"$TMP/reboot.sh" <<'EOF'
set -e
if [ "$(dd if=/dev/vda bs=512 skip=20000 count=1 2>/dev/null | head -c 6)" != booted ]; then
    echo "first boot"
    head -c 1048576 /dev/urandom >/tmp/d
    dd if=/tmp/d of=/dev/vda bs=64k seek=200 oflag=direct 2>/dev/null
    md5sum </tmp/d | cut -d' ' -f1 | dd of=/dev/vda bs=512 seek=20001 conv=sync oflag=direct 2>/dev/null
    echo booted | dd of=/dev/vda bs=512 seek=20000 conv=sync oflag=direct 2>/dev/null
    reboot -f
fi
want=$(dd if=/dev/vda bs=512 skip=20001 count=1 2>/dev/null | head -c 32)
got=$(dd if=/dev/vda bs=64k skip=200 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
echo "after reboot: want $want got $got"
[ "$want" = "$got" ]
EOF
guest reboot --allow-reboot -- $(disk_args "" "")
[ "$status" -eq 0 ] || guest_fail reboot "guest status $status"
grep -q "first boot" "$TMP/reboot.out" || guest_fail reboot "the first boot did not run"
grep -q "after reboot" "$TMP/reboot.out" || guest_fail reboot "no second boot"
cp "$TMP/reboot.sh" "$TMP/again.sh"
guest again -- $(disk_args "" "")
[ "$status" -eq 0 ] || guest_fail again "a new QEMU does not see the data (status $status)"
grep -q "after reboot" "$TMP/again.out" || guest_fail again "data marker missing for the new QEMU"
pass "reboot in the guest (device reset on one connection) and a new QEMU (reconnect) see the data"
stop_daemon

# --- 5. the daemon killed and restarted under a running guest ---
DAEMON_ARGS=(--object iothread,id=io0 --blockdev driver=file,node-name=d0,filename="$IMG"
             --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0)
cat >"$TMP/restart.sh" <<'EOF'
set -e
# Block i (64 KiB at 32 MiB + i * 64 KiB) holds 64 KiB of the byte pattern i.
# Four writers (blocks w, w+4, ...) keep several requests in flight, which
# the daemon completes out of order: the restarted one must resubmit just
# those (in-flight tracking), or the guest sees a request completed twice.
writer() {
    i=$1
    while [ $i -lt 200 ]; do
        head -c 65536 /dev/zero | tr '\000' "\\$(printf %03o $((i % 256)))" >/tmp/block$1
        dd if=/tmp/block$1 of=/dev/vda bs=64k seek=$((512 + i)) oflag=direct 2>/dev/null
        echo "progress $i"
        i=$((i + 4))
    done
    echo "writer $1 done"
}
for w in 0 1 2 3; do writer $w & done
wait
i=0
while [ $i -lt 200 ]; do
    head -c 65536 /dev/zero | tr '\000' "\\$(printf %03o $((i % 256)))" >/tmp/block
    [ "$(dd if=/dev/vda bs=64k skip=$((512 + i)) count=1 iflag=direct 2>/dev/null | md5sum)" = "$(md5sum </tmp/block)" ]
    i=$((i + 1))
done
echo "all written"
EOF
# under_writing_guest NAME START_FIRST: starts the first back end with
# START_FIRST, boots the guest running restart.sh on $SOCK (reconnect=1), kills it
# (SIGKILL) after 20 blocks, starts ioplane in its place (DAEMON_ARGS), and
# checks the guest finished without an I/O error and every block is in the
# image. The daemon's log gets "--- NAME: first back end killed".
under_writing_guest() {
    local name=$1 start_first=$2
    $start_first
    "$top/scripts/guest/run-guest.py" --guest "$GUEST" --script "$TMP/restart.sh" --memfd --memory 256 --timeout 300 \
        -- $(disk_args ",reconnect=1" "") >"$TMP/$name.out" 2>&1 &
    local qemu_pid=$!
    for _ in $(seq 600); do grep -q "progress 20" "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "progress 20" "$TMP/$name.out" || guest_fail "$name" "the guest made no progress"
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=
    rm -f "$SOCK"
    echo "--- $name: first back end killed at $(grep -c progress "$TMP/$name.out") blocks" >>"$TMP/daemon.log"
    sleep 1
    start_daemon "${DAEMON_ARGS[@]}"
    status=0
    wait "$qemu_pid" || status=$?
    [ "$status" -eq 0 ] || guest_fail "$name" "guest status $status after ioplane took over"
    [ "$(grep -c "writer . done" "$TMP/$name.out")" -eq 4 ] || guest_fail "$name" "a writer failed"
    grep -q "all written" "$TMP/$name.out" || guest_fail "$name" "the guest read back other data"
    ! grep -qE "is not a head|I/O error|blk_update_request" "$TMP/$name.out" || guest_fail "$name" "the guest saw I/O errors"
    python3 - "$IMG" <<'EOF' || fail "$name: blocks written across the takeover are not in the image"
import sys
f = open(sys.argv[1], "rb")
for i in range(200):
    f.seek(32 * 1048576 + i * 65536)
    if f.read(65536) != bytes([i % 256]) * 65536:
        sys.exit(f"block {i} differs")
EOF
    grep -q "front end connected" <(sed -n "/--- $name: first back end killed/,\$p" "$TMP/daemon.log") ||
        fail "$name: QEMU did not reconnect"
}
start_ioplane() { start_daemon "${DAEMON_ARGS[@]}"; }
under_writing_guest restart start_ioplane
grep -q "in-flight tracking for 1 queues" <(sed -n '/--- restart: first back end killed/,$p' "$TMP/daemon.log") ||
    fail "QEMU did not hand the restarted daemon its in-flight area"
resubmitted=$(sed -n 's/.*previous back end left \([0-9]*\) requests in flight.*/\1/p' "$TMP/daemon.log" | tail -1)
pass "daemon killed and restarted under 4 writing guest processes: QEMU reconnected with the in-flight area" \
    "(${resubmitted:-0} requests resubmitted), I/O resumed, all 200 blocks in the image"
stop_daemon

# --- 6. qemu-storage-daemon replaced by ioplane under a running guest ---
# The guest negotiated its features with qemu-storage-daemon 7.2, which QEMU
# keeps across the reconnect: ioplane must offer them all (SIZE_MAX and
# TOPOLOGY among them).
truncate -s 0 "$IMG"
truncate -s 64M "$IMG"
start_qsd() {
    qemu-storage-daemon --object iothread,id=io0 --blockdev driver=file,node-name=d0,filename="$IMG" \
        --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0 \
        >"$TMP/qsd.log" 2>&1 &
    DAEMON_PID=$!  # killed by the cleanup if a check fails
    for _ in $(seq 100); do [ -S "$SOCK" ] && return 0; sleep 0.05; done
    fail "qemu-storage-daemon did not start: $(tail -3 "$TMP/qsd.log")"
}
under_writing_guest takeover start_qsd
pass "qemu-storage-daemon 7.2 killed under 4 writing guest processes, ioplane started in its place: QEMU" \
    "reconnected, I/O resumed, all 200 blocks in the image"
stop_daemon

# --- 7. an injected I/O error: the guest sees it, the device keeps working ---
# blkdebug fails the first write at sector 8192 with EIO; the guest's write
# there fails (the kernel logs the I/O error), its retry and every other
# request succeed, and the image holds what the retry wrote.
truncate -s 0 "$IMG"
truncate -s 64M "$IMG"
start_daemon --object iothread,id=io0 \
    --blockdev driver=blkdebug,node-name=dbg,image.driver=file,image.filename="$IMG",inject-error.0.event=write_aio,inject-error.0.sector=8192,inject-error.0.once=on \
    --export type=vhost-user-blk,id=vdisk0,node-name=dbg,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0
cat >"$TMP/fault.sh" <<'EOF'
head -c 4096 /dev/urandom >/tmp/a
if dd if=/tmp/a of=/dev/vda bs=4k seek=1024 count=1 oflag=direct 2>/tmp/err; then
    echo "first write: succeeded"
else
    echo "first write: failed: $(tr '\n' ' ' </tmp/err)"
fi
dd if=/tmp/a of=/dev/vda bs=4k seek=1024 count=1 oflag=direct 2>/dev/null && echo "retry: ok"
dd if=/tmp/a of=/dev/vda bs=4k seek=2048 count=1 oflag=direct 2>/dev/null && echo "elsewhere: ok"
dd if=/dev/vda of=/tmp/b bs=4k skip=1024 count=1 iflag=direct 2>/dev/null && cmp /tmp/a /tmp/b && echo "read back: ok"
echo "kernel: $(dmesg | grep -c 'I/O error, dev vda, sector 8192')"
echo "data: $(md5sum </tmp/a | cut -d' ' -f1)"
EOF
guest fault -- $(disk_args "" "")
[ "$status" -eq 0 ] || guest_fail fault "guest status $status"
grep -q "first write: failed: .*Input/output error" "$TMP/fault.out" || guest_fail fault "the injected write error did not reach the guest"
grep -q "kernel: [1-9]" "$TMP/fault.out" || guest_fail fault "the guest kernel logged no I/O error at sector 8192"
for what in "retry: ok" "elsewhere: ok" "read back: ok"; do
    grep -q "$what" "$TMP/fault.out" || guest_fail fault "after the error: no '$what'"
done
[ "$(host_md5 4194304 4096)" = "$(sed -n 's/^data: //p' "$TMP/fault.out" | tr -d '\r')" ] || fail "the retried write is not in the image"
pass "an injected EIO reached the guest (kernel: I/O error at sector 8192); the retry, other I/O and the data are intact"
stop_daemon
