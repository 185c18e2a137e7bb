#!/usr/bin/python3
"""blockdev-reopen of a qcow2 node's `backing`, compared step by step with
qemu-storage-daemon 7.2:

- a top image over base1 (its header names base1), base2 beside it; the
  top is exported over NBD and what a reader sees at offset 0 is recorded
  after every step (base1's 0x11, base2's 0x22, or zeroes);
- reopen with backing = base2, then null (detached: the unallocated part
  reads as zeroes), then base1 again;
- refused: backing left out while the node has one ("backing is missing"),
  a node that does not exist, a cycle (base1 over top), options that are not
  the child's own, a wrong type;
- read-only and backing changed in one reopen;
- query-named-block-nodes' backing depth of the top after each step;
- a throttle node moved to another throttle group: 20 reads through its
  export are slow before (10 IOPS) and fast after, and the old group can
  be deleted then.

Every reply, depth and read is recorded; ioplane's record must equal
qemu-storage-daemon's. Then `qemu-img check` and the top image's header,
which a reopen does not rewrite.
Usage: block_reopen.py DAEMON. Needs qemu-img, qemu-io and qemu-storage-daemon."""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_jobs import run  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402
from qmp_transcript import Transcript, compare_transcripts  # noqa: E402

MiB = 1 << 20


def make_images(d):
    for name, pattern in (("base1", 0x11), ("base2", 0x22)):
        run("qemu-img", "create", "-q", "-f", "qcow2", f"{d}/{name}.qcow2", "8M")
        run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern} 0 1M", f"{d}/{name}.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{d}/base1.qcow2", "-F", "qcow2", f"{d}/top.qcow2")
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x33 {4 * MiB} 1M", f"{d}/top.qcow2")


def qcow2(d, name):
    return {"driver": "qcow2", "node-name": name, "file": {"driver": "file", "filename": f"{d}/{name}.qcow2"}}


class Session(Transcript):
    def __init__(self, q, d, nbd_sock):
        super().__init__(q, [])
        self.d, self.nbd_sock = d, nbd_sock

    def reopen(self, label, backing="absent", **extra):
        opts = qcow2(self.d, "top")
        if backing != "absent":
            opts["backing"] = backing
        opts.update({k.replace("_", "-"): v for k, v in extra.items()})
        out = self.step(label, "blockdev-reopen", options=[opts])
        self.look(label)
        return out

    def look(self, label):
        """The top's backing depth, and what a reader sees at 0 and at 4 MiB."""
        nodes = {n["node-name"]: n for n in self.q.ok("query-named-block-nodes")}
        seen = {"depth": nodes["top"]["backing_file_depth"], "ro": nodes["top"]["ro"]}
        for off in (0, 4 * MiB):
            r = subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", f"read -v {off} 16",
                                f"nbd+unix:///top?socket={self.nbd_sock}"], capture_output=True, text=True)
            seen[off] = r.stdout.split("\n")[0][10:58] if r.returncode == 0 else "error"
        self.log.append((label + ": seen", seen))


def slow_reads(nbd_sock):
    """Whether 20 reads through the throttled export take over 1 s."""
    t0 = time.monotonic()
    run("qemu-io", "-r", "-f", "raw", *(["-c", "read 0 512"] * 20), f"nbd+unix:///thr?socket={nbd_sock}")
    return time.monotonic() - t0 > 1


def throttle_group(s, nbd_sock):
    """A throttle node moved to another group by blockdev-reopen: the new
    limit applies, and the old group is no longer in use."""
    s.ok("slow group", "object-add", qom_type="throttle-group", id="g1", limits={"iops-total": 10})
    s.ok("fast group", "object-add", qom_type="throttle-group", id="g2", limits={"iops-total": 100000})
    thr = {"driver": "throttle", "node-name": "thr", "throttle-group": "g1",
           "file": {"driver": "null-co", "node-name": "nul"}}
    s.ok("add thr", "blockdev-add", **thr)
    s.ok("export thr", "block-export-add", type="nbd", id="et", node_name="thr")
    s.log.append(("g1: slow reads", slow_reads(nbd_sock)))
    s.step("g1 in use", "object-del", id="g1")
    s.step("reopen to g2", "blockdev-reopen", options=[dict(thr, **{"throttle-group": "g2", "file": "nul"})])
    s.log.append(("g2: slow reads", slow_reads(nbd_sock)))
    s.step("g1 free", "object-del", id="g1")
    s.step("reopen to a missing group", "blockdev-reopen",
           options=[dict(thr, **{"throttle-group": "g1", "file": "nul"})])
    s.ok("export thr del", "block-export-del", id="et")
    s.q.wait_event("BLOCK_EXPORT_DELETED")
    s.ok("del thr", "blockdev-del", node_name="thr")


def scenario(binary, d):
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    with Daemon(binary, ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
                         "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"], f"{d}/daemon.log") as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        s = Session(q, d, nbd_sock)
        s.ok("add base1", "blockdev-add", **qcow2(d, "base1"))
        s.ok("add base2", "blockdev-add", **qcow2(d, "base2"))
        s.ok("add top", "blockdev-add", **qcow2(d, "top"), backing="base1")
        s.ok("export", "block-export-add", type="nbd", id="e", node_name="top")
        s.look("start")
        s.reopen("same backing", backing="base1")
        s.reopen("backing base2", backing="base2")
        s.reopen("backing null", backing=None)
        s.reopen("null again", backing=None)
        s.reopen("backing base1 again", backing="base1")
        s.reopen("backing missing")
        s.reopen("no such node", backing="nosuch")
        s.reopen("wrong type", backing=7)
        s.reopen("backing options not its own", backing=qcow2(d, "base2"))
        s.step("cycle", "blockdev-reopen", options=[dict(qcow2(d, "base1"), backing="top")])
        s.reopen("read-only and base2", backing="base2", read_only=True)
        s.reopen("read-write and base1", backing="base1")
        s.step("base1 in use", "blockdev-del", node_name="base1")
        s.ok("export del", "block-export-del", id="e")
        q.wait_event("BLOCK_EXPORT_DELETED")
        s.ok("del top", "blockdev-del", node_name="top")
        throttle_group(s, nbd_sock)
        dmn.stop()
    run("qemu-img", "check", "-q", f"{d}/top.qcow2")
    info = run("qemu-img", "info", "--output=json", f"{d}/top.qcow2").stdout
    s.log.append(("header backing", "base1.qcow2" in info))
    return s.log


def main():
    daemon = sys.argv[1]
    top = tempfile.mkdtemp(prefix="block-reopen-")
    try:
        logs = []
        for name, binary in (("ioplane", daemon), ("qemu", shutil.which("qemu-storage-daemon"))):
            os.mkdir(f"{top}/{name}")
            make_images(f"{top}/{name}")
            logs.append(scenario(binary, f"{top}/{name}"))
        ours, theirs = logs
        for label, out in ours:
            print(f"  {label}: {out}")
        failures = compare_transcripts(ours, theirs)
        if failures:
            sys.exit(f"block_reopen: {failures} differences from qemu-storage-daemon")
        print(f"ok: {len(ours)} steps as qemu-storage-daemon 7.2's")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("block_reopen: ok")


if __name__ == "__main__":
    main()
