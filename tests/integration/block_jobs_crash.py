#!/usr/bin/python3
"""SIGKILL during each block job: the daemon serves the top of a qcow2 chain
over NBD to a client that writes 4 KiB blocks and flushes every few writes,
runs a job on the chain (rate-limited, so that the kill lands mid-copy),
and is killed at a random moment. Jobs: block-stream, block-commit of the
middle layer, blockdev-mirror (before and after ready), block-commit of the
active layer (before its complete, and after the pivot, when the base is
the disk), blockdev-backup. After every kill:
 - `qemu-img check` finds no corruption in any image (leaked clusters are
   what a crash leaves, as in qcow2_crash.py);
 - the disk (the top's chain as its header now says, or the base after an
   active commit's pivot) holds every write that a completed flush
   covered, each other block its old content or the one being written,
   and everything else as the chain made it.
Usage: block_jobs_crash.py DAEMON [ROUNDS] (default 2 per job).
Needs Debian's python3-libnbd and qemu-utils."""
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_jobs import BLOCK, SIZE, make_chain, run  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20
FLUSH_EVERY = 8


class FlushingWriter(threading.Thread):
    """Writes blocks (each at most once) and flushes every FLUSH_EVERY
    writes: `durable` holds what a completed flush covered, `attempted`
    every value sent."""

    def __init__(self, uri, seed):
        super().__init__(daemon=True)
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.rng = random.Random(seed)
        self.durable, self.attempted = {}, {}

    def run(self):
        blocks = list(range(SIZE // BLOCK))
        self.rng.shuffle(blocks)
        pending = {}
        try:
            for i, block in enumerate(blocks):
                value = i % 250 + 3
                self.attempted[block] = value
                self.h.pwrite(bytes([value]) * BLOCK, block * BLOCK)
                pending[block] = value
                if len(pending) == FLUSH_EVERY:
                    self.h.flush()
                    self.durable.update(pending)
                    pending.clear()
                time.sleep(0.001)
        except Exception:  # noqa: BLE001 (the daemon was killed)
            pass


def check_images(paths):
    for p in paths:
        r = run("qemu-img", "check", "--output=json", p, ok=(0, 3))
        c = json.loads(r.stdout)
        assert not c.get("corruptions") and not c.get("check-errors"), f"{p}: {c}"


def verify_disk(path, model, w, label, d):
    raw = f"{d}/now.raw"
    run("qemu-img", "convert", "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        data = f.read()
    os.unlink(raw)
    for b in range(SIZE // BLOCK):
        got = data[b * BLOCK]
        block = data[b * BLOCK:(b + 1) * BLOCK]
        assert block == bytes([got]) * BLOCK, f"{label}: block {b} is torn"
        if b in w.durable:
            assert got == w.durable[b], f"{label}: block {b} lost a flushed write: {got:#x} != {w.durable[b]:#x}"
        elif b in w.attempted:
            assert got in (model[b], w.attempted[b]), f"{label}: block {b}: {got:#x}"
        else:
            assert got == model[b], f"{label}: block {b} changed: {got:#x} != {model[b]:#x}"


def node_of(q, path):
    for n in q.ok("query-named-block-nodes", flat=True):
        if n.get("file") == path and n["drv"] == "qcow2":
            return n["node-name"]
    raise AssertionError(f"no node for {path}")


def one_round(daemon, kind, rnd, rng):
    d = tempfile.mkdtemp(prefix=f"jobs-crash-{kind}-")
    paths, model = make_chain(d, "c")
    target = f"{d}/target.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", target, str(SIZE))
    qmp_sock, sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--object", "iothread,id=io0",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--nbd-server", f"addr.type=unix,addr.path={sock}"]
    disk = paths[2]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, sock)
        q = Qmp(qmp_sock)
        q.ok("blockdev-add", driver="qcow2", node_name="top", file={"driver": "file", "filename": paths[2]})
        q.ok("block-export-add", type="nbd", id="e", node_name="top", writable=True, iothread="io0")
        w = FlushingWriter(f"nbd+unix:///top?socket={sock}", rng.random())
        w.start()
        time.sleep(0.2)
        speed = 8 * MiB
        if kind == "stream":
            q.ok("block-stream", job_id="j", device="top", speed=speed)
        elif kind == "commit":
            q.ok("block-commit", job_id="j", device="top", top_node=node_of(q, paths[1]),
                 base_node=node_of(q, paths[0]), speed=speed)
        elif kind in ("mirror", "mirror-ready"):
            q.ok("blockdev-add", driver="qcow2", node_name="tgt", file={"driver": "file", "filename": target})
            q.ok("blockdev-mirror", job_id="j", device="top", target="tgt", sync="full",
                 speed=0 if kind == "mirror-ready" else speed)
            if kind == "mirror-ready":
                q.wait_event("BLOCK_JOB_READY", timeout=60)
        elif kind in ("active-commit", "active-commit-pivot"):
            q.ok("block-commit", job_id="j", device="top", speed=0 if kind == "active-commit-pivot" else speed)
            if kind == "active-commit-pivot":
                q.wait_event("BLOCK_JOB_READY", timeout=60)
                q.ok("block-job-complete", device="j")
                q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
                disk = paths[0]  # the base is the disk from now on
        elif kind == "backup":
            q.ok("blockdev-add", driver="qcow2", node_name="tgt", file={"driver": "file", "filename": target})
            q.ok("blockdev-backup", job_id="j", device="top", target="tgt", sync="full", speed=speed)
        time.sleep(rng.uniform(0.2, 1.2))
        os.kill(dmn.pid, signal.SIGKILL)
        dmn.proc.wait()
        w.join(timeout=10)
        check_images(paths + [target])
        verify_disk(disk, model, w, f"{kind} round {rnd}", d)
    return len(w.durable)


def main():
    daemon = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    rng = random.Random(int(os.environ.get("SEED", time.time())))
    for kind in ("stream", "commit", "mirror", "mirror-ready", "active-commit", "active-commit-pivot", "backup"):
        flushed = [one_round(daemon, kind, r, rng) for r in range(rounds)]
        print(f"ok: SIGKILL during {kind}: images check clean, all {sum(flushed)} flushed writes are there")
    print("block_jobs_crash: ok")


if __name__ == "__main__":
    main()
