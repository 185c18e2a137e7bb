#!/usr/bin/env bash
# ioplane-vublk against qemu-storage-daemon's vhost-user-blk export: the
# functional checks; --verify workloads on 2 queues in both wait modes and
# with the ring/memory variants (no indirect, no event idx, no REPLY_ACK,
# several memory regions, multi-descriptor data); write-zeroes and a
# transfer whose result is compared on the host side in the image after qsd
# has stopped; a randread run on a null-co node; and the failure paths: a
# back end that stalls or dies under load makes the tool exit 1 saying so.
# Usage: against_qsd.sh IOPLANE_VUBLK [SERVER]. SERVER takes
# qemu-storage-daemon's command line (default: qemu-storage-daemon; ctest
# also runs it with ioplane-storage-daemon). Exit 77: skipped (no
# qemu-storage-daemon).
set -euo pipefail
vublk=$1
qsd=${2:-$(command -v qemu-storage-daemon || true)}
[ -n "$qsd" ] || { echo "SKIP: qemu-storage-daemon not found (scripts/install-deps.sh test)"; exit 77; }
command -v python3 >/dev/null || { echo "FAIL: python3 is needed (scripts/install-deps.sh test)"; exit 1; }

dir=$(mktemp -d /tmp/ioplane-vublk-test-XXXXXX)
QSD_PID=
cleanup() {
    if [ -n "$QSD_PID" ]; then kill -KILL "$QSD_PID" 2>/dev/null || true; wait "$QSD_PID" 2>/dev/null || true; fi
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "--- stdout:"; cat "$dir/out" 2>/dev/null || true
    echo "--- stderr:"; cat "$dir/err" 2>/dev/null || true
    echo "--- qsd log (tail):"; tail -20 "$dir/qsd.log" 2>/dev/null || true
    exit 1
}

img=$dir/disk.img
sock=$dir/vhost.sock
truncate -s 64M "$img"

# start_qsd BLOCKDEV: qsd exporting node "d" on $sock with 2 queues.
start_qsd() {
    rm -f "$sock"
    "$qsd" --blockdev "$1" \
        --export "type=vhost-user-blk,id=e0,node-name=d,addr.type=unix,addr.path=$sock,writable=on,num-queues=2" \
        >"$dir/qsd.log" 2>&1 &
    QSD_PID=$!
    for _ in $(seq 200); do
        [ -S "$sock" ] && return 0
        kill -0 "$QSD_PID" 2>/dev/null || fail "qemu-storage-daemon exited: $(cat "$dir/qsd.log")"
        sleep 0.05
    done
    fail "qemu-storage-daemon did not create $sock"
}
stop_qsd() {
    kill -TERM "$QSD_PID"
    wait "$QSD_PID" || true
    QSD_PID=
}

# run WANT ARGS...: the tool with --json on $sock, output in $dir/out, $dir/err.
run() {
    local want=$1 status=0
    shift
    timeout 60 "$vublk" --socket "$sock" --json "$@" >"$dir/out" 2>"$dir/err" </dev/null || status=$?
    [ "$status" -eq "$want" ] || fail "ioplane-vublk $*: exit status $status, want $want"
}
# field EXPR: a Python expression over the JSON result `r`.
field() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($1)" "$dir/out"; }

# check_workload NAME: the last run completed I/O, no errors, verify clean if on.
check_workload() {
    local name=$1
    [ "$(field 'r["ios"] > 0 and r["errors"] == 0 and r["failure"] is None')" = True ] || fail "$name: no I/O or errors"
    [ "$(field 'all(q["ios"] > 0 for q in r["per_queue"])')" = True ] || fail "$name: a queue did no I/O"
    if [ "$(field 'r["verify"] is not None')" = True ]; then
        [ "$(field 'r["verify"]["mismatches"] == 0 and r["verify"]["blocks_checked"] > 0')" = True ] ||
            fail "$name: verify found mismatches or checked nothing"
    fi
    echo "ok: $name: $(field 'round(r["iops"])') IOPS, p99 $(field 'r["lat_p99_us"]') us, verified $(field '(r["verify"] or {}).get("blocks_checked", "-")') blocks"
}

# ---------------------------------------------------------------- a file node

start_qsd "driver=file,node-name=d,filename=$img"

run 0 --check all
[ "$(field 'sorted(c["name"] for c in r["checks"] if c["outcome"] == "ok")')" = \
  "['discard', 'flush', 'get-id', 'rw', 'write-zeroes']" ] || fail "checks: not all ok"
echo "ok: checks: $(field '", ".join(c["name"] + " " + c["outcome"] for c in r["checks"])')"

run 0 --rw randrw --queues 2 --iodepth 16 --runtime 1.5 --verify --wait event --size 32M
check_workload "randrw verify, 2 queues, event"
run 0 --rw randwrite --queues 2 --iodepth 16 --runtime 1.5 --verify --wait poll --size 32M
check_workload "randwrite verify, 2 queues, poll"
run 0 --rw randread --queues 2 --iodepth 8 --runtime 1 --verify --no-indirect --mem-regions 3 --segments 4 --size 16M
check_workload "randread verify, direct chains, 3 memory regions, 4 data descriptors"
[ "$(field 'r["indirect"]')" = False ] || fail "--no-indirect: indirect still used"
run 0 --rw write --queues 2 --iodepth 4 --bs 64k --runtime 1 --verify --no-event-idx --no-reply-ack --size 16M
check_workload "seq write 64k verify, no event idx, no REPLY_ACK"
[ "$(field 'r["event_idx"] or r["reply_ack"]')" = False ] || fail "the negative options were not honoured"

# Write-zeroes in the tool's check area at 20 MiB (blocks 1-2 and 5 zeroed,
# the rest keep their data), and 1 MiB of random data written at 8 MiB.
run 0 --check write-zeroes --offset 20M
head -c 1M /dev/urandom >"$dir/pattern"
run 0 --write-from "$dir/pattern" --offset 8M
[ "$(field 'r["transferred"]')" = 1048576 ] || fail "--write-from transferred $(field 'r["transferred"]')"
run 0 --read-to "$dir/readback" --offset 8M --length 1M
cmp "$dir/pattern" "$dir/readback" || fail "--read-to does not give back what --write-from wrote"
echo "ok: 1 MiB through the device and back"
stop_qsd

# Host side, after qsd flushed and exited: the image holds the data.
cmp -i 0:8388608 -n 1048576 "$dir/pattern" "$img" || fail "the image does not hold the data written at 8 MiB"
python3 - "$img" <<'EOF' || fail "the image's write-zeroes area is wrong"
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(20 << 20)
    area = f.read(8 * 4096)
blocks = [area[i * 4096:(i + 1) * 4096] for i in range(8)]
zero = [i for i, b in enumerate(blocks) if b == bytes(4096)]
assert zero == [1, 2, 5], "zeroed blocks %s, expected [1, 2, 5]" % zero
EOF
echo "ok: the image holds the transfer and the zeroed blocks"

# ---------------------------------------------------------------- a null-co node

# (qsd 7.2 takes no "1G" here: bytes.)
start_qsd "driver=null-co,node-name=d,size=1073741824"
run 0 --rw randread --queues 2 --iodepth 16 --runtime 1 --server-pid "$QSD_PID"
check_workload "null-co randread, 2 queues"
[ "$(field 'r["capacity"]')" = 1073741824 ] || fail "null-co capacity $(field 'r["capacity"]')"
[ "$(field 'r["server_cpu_s"] is not None')" = True ] || fail "no server CPU time"

# A back end that stops answering (SIGSTOP): exit 1 after --timeout.
( sleep 1; kill -STOP "$QSD_PID" ) &
stopper=$!
run 1 --rw randread --queues 2 --iodepth 16 --runtime 20 --timeout 2
wait "$stopper"
kill -CONT "$QSD_PID"
grep -q 'no request completed within 2000 ms' "$dir/err" || fail "no message about the stalled back end"
echo "ok: a stalled back end is reported: $(grep -m1 FAILED "$dir/err")"
stop_qsd
start_qsd "driver=null-co,node-name=d,size=1073741824"

# The back end dying under load: exit 1 naming it, well before the run's end.
# (Disowned, so that the shell does not announce the kill.)
disown "$QSD_PID"
start=$SECONDS
( sleep 1; kill -KILL "$QSD_PID" ) &
killer=$!
run 1 --rw randread --queues 2 --iodepth 16 --runtime 20
wait "$killer"
QSD_PID=
[ $((SECONDS - start)) -lt 10 ] || fail "the tool took $((SECONDS - start)) s to notice the back end died"
grep -q 'closed the control connection' "$dir/err" || fail "no message about the back end going away"
echo "ok: the back end's death is reported: $(grep -m1 FAILED "$dir/err")"
echo PASS
