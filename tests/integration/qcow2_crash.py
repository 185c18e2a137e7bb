#!/usr/bin/python3
"""qcow2 crash safety: the daemon serves a qcow2 image over NBD (export in an
IOThread) while a client keeps 16 allocating writes and a flush in flight;
the daemon is killed with SIGKILL at a random moment. After every kill:
 - `qemu-img check` finds no corruption (leaked clusters are allowed, and
   `qemu-img check -r leaks` must repair them);
 - every write acknowledged before a flush that completed reads back;
 - every other written sector holds its old or its new content, and
   nothing else changed.
Rounds alternate between a 64 KiB-cluster image and a 512-byte-cluster image
over a backing file (copy-on-write, new L2 tables and refcount blocks all the
time), and between direct and throttled file I/O (200 IOPS: the kill lands
in a longer stream of writes). A flush that wrote L2 tables before the
refcounts they rely on, with 20 ms between them, fails this test.
Usage: qcow2_crash.py DAEMON [ROUNDS] (default 150).
Needs Debian's python3-libnbd (the `nbd` module)."""
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

import nbd

KiB, MiB = 1 << 10, 1 << 20
SIZE = 32 * MiB
SECTOR = 512


def run(*cmd, ok=(0,)):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    if r.returncode not in ok:
        sys.exit(f"FAIL: {' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def read_raw(img, work):
    out = os.path.join(work, "now.raw")
    run("qemu-img", "convert", "-O", "raw", img, out)
    with open(out, "rb") as f:
        return bytearray(f.read())


def start_daemon(daemon, img, sock, log, slow):
    """`slow`: the image file's I/O is throttled (a throttle filter between
    the qcow2 node and its file), which widens the windows between metadata
    writes that a kill must be able to hit."""
    if os.path.exists(sock):
        os.unlink(sock)
    file = f"file.driver=file,file.filename={img}"
    if slow:
        file = f"file.driver=throttle,file.throttle-group=slow,file.file.driver=file,file.file.filename={img}"
    args = [daemon, "--object", "iothread,id=io0", "--object", "throttle-group,id=slow,limits.iops-total=200",
            "--blockdev", f"driver=qcow2,node-name=n,{file}",
            "--nbd-server", f"addr.type=unix,addr.path={sock}",
            "--export", "type=nbd,id=e,node-name=n,name=x,writable=on,iothread=io0"]
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"FAIL: the daemon did not start (status {proc.poll()})")
        time.sleep(0.01)
    return proc


def connect(sock):
    """The socket listens before the export exists (as in
    qemu-storage-daemon, --nbd-server comes first): retry until it does."""
    deadline = time.monotonic() + 20
    while True:
        h = nbd.NBD()
        try:
            h.connect_uri(f"nbd+unix:///x?socket={sock}")
            return h
        except nbd.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def pick_regions(rng, count, cluster):
    """Disjoint regions, each written once in a round: sizes from a sector
    to a few clusters, often not cluster aligned (copy-on-write)."""
    regions, used = [], []
    while len(regions) < count:
        length = rng.choice([SECTOR, 4 * KiB, 12 * KiB, 64 * KiB, 100 * KiB, 3 * cluster])
        offset = rng.randrange(0, SIZE - length) // SECTOR * SECTOR
        if any(offset < e and s < offset + length for s, e in used):
            continue
        used.append((offset, offset + length))
        regions.append((offset, length))
    return regions


def one_round(daemon, img, work, rng, cluster, log, slow):
    before = read_raw(img, work)
    sock = os.path.join(work, "nbd.sock")
    proc = start_daemon(daemon, img, sock, log, slow)
    h = connect(sock)
    regions = pick_regions(rng, 64, cluster)
    data = [rng.randbytes(n) for _, n in regions]
    completed, durable = set(), set()
    state = {"inflight": 0, "flushes": 0}

    def on_write(i):
        def cb(err):
            state["inflight"] -= 1
            if getattr(err, "value", err) == 0:  # libnbd passes a ctypes int
                completed.add(i)
            return 1
        return cb

    def on_flush(covered):
        def cb(err):
            state["inflight"] -= 1
            if getattr(err, "value", err) == 0:  # libnbd passes a ctypes int
                durable.update(covered)
                state["flushes"] += 1
            return 1
        return cb

    killer = threading.Timer(rng.uniform(0.05, 0.6) if slow else rng.uniform(0.01, 0.4),
                             lambda: os.kill(proc.pid, signal.SIGKILL))
    killer.start()
    try:
        i = 0
        while True:
            while state["inflight"] < 16 and i < len(regions):
                off, _ = regions[i]
                state["inflight"] += 1
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data[i])), off, completion=on_write(i))
                i += 1
                if i % 8 == 0:
                    state["inflight"] += 1
                    h.aio_flush(completion=on_flush(frozenset(completed)))
            if i >= len(regions) and state["inflight"] == 0:
                state["inflight"] += 1
                h.aio_flush(completion=on_flush(frozenset(completed)))
                while state["inflight"]:
                    h.poll(-1)
                time.sleep(0.5)  # all written and flushed: the kill comes at rest
                break
            h.poll(-1)
    except nbd.Error:
        pass  # the daemon died under us
    killer.join()
    proc.wait()
    del h
    if proc.returncode != -signal.SIGKILL:
        sys.exit(f"FAIL: the daemon ended with status {proc.returncode}, not by SIGKILL (see {log.name})")

    check = run("qemu-img", "check", "--output=json", img, ok=(0, 3))
    report = json.loads(check.stdout)
    if report.get("corruptions", 0) or report.get("check-errors", 0):
        sys.exit(f"FAIL: qemu-img check after SIGKILL: {check.stdout}")
    leaks = report.get("leaks", 0)
    if leaks:
        run("qemu-img", "check", "-r", "leaks", img, ok=(0,))
        again = json.loads(run("qemu-img", "check", "--output=json", img).stdout)
        if again.get("leaks", 0) or again.get("corruptions", 0):
            sys.exit(f"FAIL: qemu-img check -r leaks left {again}")

    after = read_raw(img, work)
    written = bytearray(len(before))  # which sectors a write of this round covers
    for off, n in regions:
        written[off:off + n] = b"\1" * n
    for idx, ((off, n), new) in enumerate(zip(regions, data)):
        got = after[off:off + n]
        if idx in durable:
            if got != new:
                sys.exit(f"FAIL: write at {off}+{n} was flushed but does not read back")
            continue
        for s in range(0, n, SECTOR):
            g = got[s:s + SECTOR]
            if g != new[s:s + SECTOR] and g != before[off + s:off + s + SECTOR]:
                sys.exit(f"FAIL: sector at {off + s} holds neither its old nor its new content")
    for off in range(0, len(before), SECTOR):
        if not written[off] and after[off:off + SECTOR] != before[off:off + SECTOR]:
            sys.exit(f"FAIL: sector at {off} changed although nothing wrote it")
    return len(durable), len(completed), leaks


def main():
    daemon = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    rng = random.Random(20261207)
    work = tempfile.mkdtemp(prefix="qcow2-crash-")
    plain = os.path.join(work, "plain.qcow2")
    base = os.path.join(work, "base.qcow2")
    overlay = os.path.join(work, "overlay.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", plain, SIZE)
    run("qemu-img", "create", "-q", "-f", "qcow2", base, SIZE)
    run("qemu-io", "-c", f"write -P 0x5a 0 {SIZE}", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", base, "-F", "qcow2", overlay)
    totals = {"durable": 0, "completed": 0, "leaky": 0}
    start = time.monotonic()
    with open(os.path.join(work, "daemon.log"), "w") as log:
        for r in range(rounds):
            img, cluster = (plain, 64 * KiB) if r % 2 == 0 else (overlay, SECTOR)
            d, c, leaks = one_round(daemon, img, work, rng, cluster, log, slow=r % 4 >= 2)
            totals["durable"] += d
            totals["completed"] += c
            totals["leaky"] += bool(leaks)
    subprocess.run(["rm", "-rf", work])
    print(f"qcow2_crash: {rounds} SIGKILLs, {totals['completed']} writes acknowledged, {totals['durable']} of them "
          f"flushed and read back, {totals['leaky']} rounds left leaks (repaired), no corruption "
          f"({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    main()
