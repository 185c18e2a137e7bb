#!/usr/bin/env bash
# blockdev-mirror of a disk in use: Debian's Linux 6.1 in a guest (QEMU, TCG,
# memfd RAM) writes to a vhost-user-blk export of a qcow2 image served from
# an IOThread while the host mirrors it over QMP.
#   1. copy-mode write-blocking, sync full, into a qcow2 target; after
#      BLOCK_JOB_READY, block-job-complete while four guest writers keep
#      writing, and they go on writing after the pivot. The export then
#      serves the target (query-block-exports), the filter is gone, the
#      guest saw no I/O error, and after the daemon exits: the target passes
#      qemu-img check, equals block for block what the guest wrote (every
#      block's last generation over the prefilled image) and the md5 the
#      guest read of the whole disk; the source holds, in each block, a
#      generation written before the pivot (one the guest had finished
#      before complete, or a later one started before the pivot) and none
#      written after it: the source was no longer written.
#   2. copy-mode background, sync full; after BLOCK_JOB_READY the guest
#      writes on, then stops and syncs; the host cancels the ready job
#      (block-job-cancel without force: QEMU's "complete without pivot",
#      BLOCK_JOB_COMPLETED). The guest stays on the source (the export's
#      node, and a write it makes after the cancel reaches the source only);
#      the target equals the disk as the guest read it at the cancel.
# The guest's writers are told the host's phase over QEMU user networking
# (nc from a small TCP server on the host's loopback): the host steers
# by their progress on the console, without fixed sleeps.
# Usage: vhost_user_blk_mirror.sh DAEMON [GUEST_DIR]
set -euo pipefail
. "$(dirname "$0")/guest_lib.sh" "$@"
SOCK=$TMP/vub.sock
QMP=$TMP/qmp.sock
MiB=1048576

# The guest's script. @PORT@ (the phase server) and @MODE@ (mirror or
# cancel) are filled in by the host driver. Writer w (0..3) writes blocks
# w, w+4, w+8, w+12: block k is 64 KiB at 32 KiB unit k*128+7+(k%4)*3 (so
# each write covers two half 64 KiB mirror chunks), holding the line
# "ioplane mirror block K generation G" repeated; each round it asks the
# host's phase first and ends when the phase is "stop".
cat >"$TMP/guest.sh.in" <<'EOF'
PORT=@PORT@
MODE=@MODE@
# (busybox's nc: its wget crashes in this static build)
phase() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        p=$(timeout 30 nc -w 20 10.0.2.2 "$PORT" </dev/null 2>/dev/null)
        [ -n "$p" ] && { echo "$p"; return 0; }
        sleep 1
    done
    echo unreachable
}
block_seek() { echo $(($1 * 128 + 7 + ($1 % 4) * 3)); }
writer() {
    w=$1
    g=0
    while :; do
        p=$(phase)
        [ "$p" = stop ] && break
        [ "$p" = unreachable ] && { echo "writer $w: the host's phase server is unreachable"; return 1; }
        g=$((g + 1))
        for k in $w $((w + 4)) $((w + 8)) $((w + 12)); do
            yes "ioplane mirror block $k generation $g" | head -c 65536 >/tmp/block$w
            dd if=/tmp/block$w of=/dev/vda bs=32k seek=$(block_seek $k) oflag=direct conv=notrunc 2>/tmp/err$w ||
                { echo "writer $w: dd failed: $(tr '\n' ' ' </tmp/err$w)"; return 1; }
        done
        echo "writer $w gen $g phase $p done"
    done
    echo "writer $w last gen $g"
}
pids=
for w in 0 1 2 3; do
    writer $w &
    pids="$pids $!"
done
failed=0
for pid in $pids; do wait $pid || failed=1; done
[ $failed = 0 ] || { echo "a writer failed"; exit 1; }
sync
whole_md5() { dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1; }
if [ "$MODE" = cancel ]; then
    echo "quiesced"
    n=0
    until [ "$(phase)" = cancelled ]; do
        n=$((n + 1))
        [ $n -lt 300 ] || { echo "no cancel from the host"; exit 1; }
        sleep 1
    done
    echo "at cancel md5: $(whole_md5)"
    # A write after the cancel: the guest is still on the source.
    yes "ioplane mirror after cancel" | head -c 65536 >/tmp/after
    dd if=/tmp/after of=/dev/vda bs=64k seek=960 oflag=direct conv=notrunc 2>/dev/null || exit 1
    sync
    echo "after cancel md5: $(whole_md5)"
else
    echo "disk md5: $(whole_md5)"
fi
echo "io errors: $(dmesg | grep -ci 'I/O error')"
EOF

# The host's side of a case: phase server, guest, QMP. Usage:
# drive.py MODE; writes $TMP/MODE.json (what the checks need) and the guest's
# console to $TMP/MODE.out.
cat >"$TMP/drive.py" <<'EOF'
import json
import os
import re
import socketserver
import subprocess
import sys
import threading
import time

mode, tmp, top, guest = sys.argv[1:5]
sys.path.insert(0, os.path.join(top, "tests/integration"))
from block_jobs import node, wait_job_end  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20
phase = "start"
log = open(f"{tmp}/{mode}.host.log", "w", buffering=1)


def note(msg):
    log.write(f"{time.strftime('%H:%M:%S')} {msg}\n")


class Phase(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(phase.encode())


def set_phase(p):
    global phase
    phase = p
    note(f"phase {p}")


server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Phase)
threading.Thread(target=server.serve_forever, daemon=True).start()
script = open(f"{tmp}/guest.sh.in").read().replace("@PORT@", str(server.server_address[1])).replace("@MODE@", mode)
with open(f"{tmp}/{mode}.sh", "w") as f:
    f.write(script)
out = f"{tmp}/{mode}.out"
vm = subprocess.Popen([f"{top}/scripts/guest/run-guest.py", "--guest", guest, "--script", f"{tmp}/{mode}.sh",
                       "--memfd", "--memory", "256", "--net", "--timeout", "420", "--",
                       "-chardev", f"socket,id=vu,path={tmp}/vub.sock",
                       "-device", "vhost-user-blk-pci,chardev=vu"],
                      stdout=open(out, "w"), stderr=subprocess.STDOUT)


def fail(msg):
    print(f"FAIL ({mode}): {msg}")
    vm.kill()
    vm.wait()
    print("--- guest console (tail):")
    with open(out, errors="replace") as f:
        print("".join(f.readlines()[-30:]))
    sys.exit(1)


def console():
    with open(out, errors="replace") as f:
        return f.read()


def gens():
    """Per writer: [(generation, phase it started in)] finished so far."""
    done = {w: [] for w in range(4)}
    for w, g, p in re.findall(r"writer (\d) gen (\d+) phase (\w+) done", console()):
        done[int(w)].append((int(g), p))
    return done


def wait_until(what, cond, timeout=300):
    deadline = time.monotonic() + timeout
    while not cond():
        if vm.poll() is not None:
            fail(f"the guest ended (status {vm.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    note(f"reached: {what}")


def each_writer(what, n, in_phase=None):
    wait_until(what, lambda: all(sum(1 for _, p in d if in_phase in (None, p)) >= n for d in gens().values()))


def export_node(q):
    exports = q.ok("query-block-exports")
    assert len(exports) == 1 and exports[0]["id"] == "vdisk0", exports
    return exports[0]["node-name"]


def job_status(q, job):
    jobs = [j for j in q.ok("query-block-jobs") if j["device"] == job]
    return jobs[0]["status"] if jobs else None


q = Qmp(f"{tmp}/qmp.sock")
try:
    result = {}
    each_writer("2 generations of every writer before the mirror", 2)
    assert export_node(q) == "src"
    q.ok("blockdev-add", driver="qcow2", node_name="dst", backing=None,
         file={"driver": "file", "filename": f"{tmp}/{mode}-dst.qcow2"})
    copy_mode = "write-blocking" if mode == "mirror" else "background"
    # 8 MiB/s: the first pass over the prefilled 16 MiB takes a couple of
    # seconds, with the guest's writes landing during it.
    q.ok("blockdev-mirror", job_id="m", device="src", target="dst", sync="full", copy_mode=copy_mode,
         filter_node_name="mfilter", speed=8 * MiB)
    note(f"blockdev-mirror {copy_mode} started")
    filt = node(q, "mfilter")
    assert filt and filt["drv"] == "mirror_top", filt
    result["gens_at_start"] = {w: len(d) for w, d in gens().items()}
    e = q.wait_event("BLOCK_JOB_READY", timeout=240)
    q.sock.settimeout(60)  # (wait_event leaves what remained of its timeout)
    assert e["data"]["device"] == "m", e
    note("BLOCK_JOB_READY")
    result["gens_at_ready"] = {w: len(d) for w, d in gens().items()}
    set_phase("ready")
    # Writes while the job is ready (in sync: through the filter, or copied
    # by the background loop).
    each_writer("a generation of every writer while ready", 1, "ready")
    assert job_status(q, "m") == "ready", q.ok("query-block-jobs")
    if mode == "mirror":
        # Every generation the console reports as done was acknowledged
        # before the pivot: the source must hold it or a later one.
        result["done_before_complete"] = {w: max(g for g, _ in d) for w, d in gens().items()}
        q.ok("block-job-complete", device="m")
        statuses, final = wait_job_end(q, "m", timeout=240)
        q.sock.settimeout(60)
        assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], (statuses, final)
        note(f"completed: {statuses}")
        set_phase("pivoted")
        assert export_node(q) == "dst", q.ok("query-block-exports")
        assert node(q, "mfilter") is None, "the mirror_top filter is still there"
        assert node(q, "src") is not None, "the source node went (it was added on the command line)"
        assert q.ok("query-block-jobs") == [], q.ok("query-block-jobs")
        # The guest writes on, on the target.
        each_writer("2 generations of every writer after the pivot", 2, "pivoted")
        set_phase("stop")
    else:
        set_phase("stop")
        wait_until("the guest's writers stopped and synced", lambda: "quiesced" in console())
        q.ok("block-job-cancel", device="m")
        statuses, final = wait_job_end(q, "m", timeout=240)
        q.sock.settimeout(60)
        # Cancel of a ready job: it completes without the pivot.
        assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], (statuses, final)
        note(f"cancelled: {statuses}")
        assert export_node(q) == "src", q.ok("query-block-exports")
        assert node(q, "mfilter") is None, "the mirror_top filter is still there"
        assert node(q, "dst") is not None
        set_phase("cancelled")
    try:
        status = vm.wait(timeout=420)
    except subprocess.TimeoutExpired:
        fail("the guest did not finish")
    if status != 0:
        fail(f"guest status {status}")
    text = console()
    for w in range(4):
        m = re.search(rf"writer {w} last gen (\d+)", text)
        if not m:
            fail(f"writer {w} did not finish")
        result.setdefault("last", {})[w] = int(m.group(1))
        d = gens()[w]
        if [g for g, _ in d] != list(range(1, len(d) + 1)) or len(d) != int(m.group(1)):
            fail(f"writer {w}: generations reported {d}")
        if mode == "mirror":
            # The first generation started after the pivot: the source holds
            # none of it or later ones.
            result.setdefault("first_after", {})[w] = min(g for g, p in d if p == "pivoted")
    errors = re.search(r"io errors: (\d+)", text)
    if not errors or errors.group(1) != "0":
        fail("the guest saw I/O errors: " + "; ".join(re.findall(r".*I/O error.*", text)[:5]))
    for key in ("disk md5", "at cancel md5", "after cancel md5"):
        m = re.search(rf"^{key}: ([0-9a-f]{{32}})", text, re.M)
        if m:
            result[key] = m.group(1)
    q.ok("blockdev-del", node_name="dst" if mode == "cancel" else "src")
    with open(f"{tmp}/{mode}.json", "w") as f:
        json.dump(result, f)
    print(f"{mode}: generations per writer at the mirror's start {result['gens_at_start']}, at ready "
          f"{result['gens_at_ready']}, in all {result['last']}")
except (AssertionError, EOFError, OSError) as e:
    fail(f"{type(e).__name__}: {e}")
EOF

# The checks after the daemon exits. Usage: check.py MODE
cat >"$TMP/check.py" <<'EOF'
import hashlib
import json
import subprocess
import sys

mode, tmp = sys.argv[1:3]
MiB = 1 << 20
SIZE = 64 * MiB
r = json.load(open(f"{tmp}/{mode}.json"))


def raw(name):
    subprocess.run(["qemu-img", "check", "-q", f"{tmp}/{mode}-{name}.qcow2"], check=True)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", f"{tmp}/{mode}-{name}.qcow2",
                    f"{tmp}/{mode}-{name}.raw"], check=True)
    return open(f"{tmp}/{mode}-{name}.raw", "rb").read()


def prefilled():
    img = bytearray(SIZE)
    img[0:8 * MiB] = b"\x5a" * (8 * MiB)
    img[24 * MiB:32 * MiB] = b"\xa5" * (8 * MiB)
    return img


def offset(k):
    return (k * 128 + 7 + (k % 4) * 3) * 32768


def pattern(k, g):
    line = f"ioplane mirror block {k} generation {g}\n".encode()
    return (line * (65536 // len(line) + 1))[:65536]


def fail(msg):
    print(f"FAIL ({mode}): {msg}")
    sys.exit(1)


def md5(b):
    return hashlib.md5(b).hexdigest()


def first_difference(a, b):
    return next((i for i in range(0, len(a), 4096) if a[i:i + 4096] != b[i:i + 4096]), None)


src, dst = raw("src"), raw("dst")
model = prefilled()
for k in range(16):
    model[offset(k):offset(k) + 65536] = pattern(k, r["last"][str(k % 4)])
if mode == "mirror":
    # The target: every block's last generation, over the prefilled image,
    # and what the guest read at the end.
    d = first_difference(dst, model)
    if d is not None:
        fail(f"the target differs from what the guest wrote at {d}")
    if md5(dst) != r["disk md5"]:
        fail(f"the target's md5 {md5(dst)} is not the guest's {r['disk md5']}")
    # The source: outside the written blocks the prefilled data; each half
    # block from a generation written before the pivot.
    pre = prefilled()
    for k in range(16):
        o = offset(k)
        pre[o:o + 65536] = src[o:o + 65536]
        lo, hi = r["done_before_complete"][str(k % 4)], r["first_after"][str(k % 4)] - 1
        for half in (0, 32768):
            got = src[o + half:o + half + 32768]
            gen = next((g for g in range(1, r["last"][str(k % 4)] + 1)
                        if pattern(k, g)[half:half + 32768] == got), None)
            if gen is None or not lo <= gen <= hi:
                fail(f"source block {k} half {half // 32768}: generation {gen}, expected one of {lo}..{hi} "
                     "(finished before complete .. started before the pivot)")
    d = first_difference(src, pre)
    if d is not None:
        fail(f"the source changed outside the guest's blocks at {d}")
    print(f"ok: the target equals what the guest wrote (md5 {md5(dst)} as the guest read it); the source holds "
          "only generations written before the pivot")
else:
    after = 960 * 65536
    line = b"ioplane mirror after cancel\n"
    model[after:after + 65536] = (line * (65536 // len(line) + 1))[:65536]
    d = first_difference(src, model)
    if d is not None:
        fail(f"the source differs from what the guest wrote at {d}")
    if md5(src) != r["after cancel md5"]:
        fail(f"the source's md5 {md5(src)} is not the guest's after the cancel {r['after cancel md5']}")
    if md5(dst) != r["at cancel md5"]:
        fail(f"the target's md5 {md5(dst)} is not the guest's at the cancel {r['at cancel md5']}"
             f" (first difference from the source at {first_difference(dst, src)})")
    if dst[after:after + 65536] != bytes(65536) or dst[:after] != src[:after] or dst[after + 65536:] != src[after + 65536:]:
        fail("the target is not the source without the write made after the cancel")
    print(f"ok: the target equals the disk at the cancel (md5 {md5(dst)}); the write after it reached the source only")
EOF

# run_case MODE: prefilled qcow2 source and an empty qcow2 target, the
# daemon with the source exported from io0, the guest and the host driver,
# then the checks on the images.
run_case() {
    local mode=$1
    qemu-img create -q -f qcow2 "$TMP/$mode-src.qcow2" 64M
    qemu-io -f qcow2 -c "write -q -P 0x5a 0 8M" -c "write -q -P 0xa5 24M 8M" "$TMP/$mode-src.qcow2" >/dev/null
    qemu-img create -q -f qcow2 "$TMP/$mode-dst.qcow2" 64M
    rm -f "$SOCK" "$QMP"
    echo "--- case $mode" >>"$TMP/daemon.log"
    start_daemon --object iothread,id=io0 \
        --blockdev driver=qcow2,node-name=src,file.driver=file,file.filename="$TMP/$mode-src.qcow2" \
        --export type=vhost-user-blk,id=vdisk0,node-name=src,writable=on,addr.type=unix,addr.path="$SOCK",iothread=io0 \
        --chardev socket,id=qmp0,path="$QMP",server=on,wait=off --monitor chardev=qmp0
    for _ in $(seq 100); do [ -S "$SOCK" ] && [ -S "$QMP" ] && break; sleep 0.05; done
    /usr/bin/python3 "$TMP/drive.py" "$mode" "$TMP" "$top" "$GUEST" || fail "case $mode (host log: $(tr '\n' '|' <"$TMP/$mode.host.log"))"
    stop_daemon
    python3 "$TMP/check.py" "$mode" "$TMP" || fail "case $mode: the images"
}

run_case mirror
pass "write-blocking mirror of the disk in use, complete under 4 writing guest processes: the export serves" \
    "the target, which passed qemu-img check and equals the disk the guest read; the source stopped at the pivot;" \
    "no I/O error in the guest"
run_case cancel
pass "background mirror cancelled when ready: BLOCK_JOB_COMPLETED, the guest stays on the source, the target" \
    "equals the disk at the cancel and passed qemu-img check; no I/O error in the guest"
