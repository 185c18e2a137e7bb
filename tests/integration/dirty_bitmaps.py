#!/usr/bin/python3
"""Dirty bitmaps over QMP on a live daemon, compared with qemu-storage-daemon 7.2.

The same sequence runs against ioplane and (when installed) the real
qemu-storage-daemon, each on its own copies of the same images:
block-dirty-bitmap-add with default and explicit granularities (the default
follows the qcow2 cluster size), disabled and persistent bitmaps, and every
refusal QEMU gives (duplicate or empty or too long names, bad granularities,
persistence on a raw file or a qcow2 v2 image, unknown nodes); writes,
write-zeroes, discards and reads through NBD exports (one of them in an
IOThread), some unaligned, one in the partial last chunk of a node; enable,
disable, clear, merge (names and {node, name}, mixed granularities, the
size check, unknown sources), remove; and a node closed and reopened, which
loses its (transient) bitmaps. Every reply and every node's "dirty-bitmaps"
in query-named-block-nodes is recorded; ioplane's must equal QEMU's except
where KNOWN says why, and ioplane's counts are also checked against what the
writes should have marked. Then ioplane alone: a bitmap too large for memory
is refused, and the daemon exits cleanly.
Usage: dirty_bitmaps.py DAEMON [QSD]. Needs Debian's python3-libnbd and
qemu-img."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402
from qmp_transcript import Transcript, compare_transcripts  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
RAW_SIZE = 8 * MiB + 3 * 512  # not a multiple of any granularity: a partial last chunk
GROW_SIZE = MiB + 512
NODES = ["img", "small", "raw0", "grow"]
LONG = "n" * 1024

# Steps where ioplane's reply may differ from QEMU's, and why. Compared
# there: the error class only.
KNOWN = {
    "add-missing-name": "argument errors come from ioplane's shared option reader, whose wording differs "
                        "from QEMU's input visitor (\"missing 'name'\" for \"Parameter 'name' is missing\")",
    "add-unknown-argument": "the same (\"unexpected parameter 'colour'\" for \"Parameter 'colour' is "
                            "unexpected\")",
    "merge-bad-element": "QEMU names the element 'null' (its input visitor loses the name of a list "
                         "element that is an alternate); ioplane says 'bitmaps[0]'",
}


def run(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}: {r.stdout}{r.stderr}"


def make_images(d):
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", f"{d}/img.qcow2", "64M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", f"{d}/small.qcow2", "16M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", f"{d}/v2.qcow2", "16M")
    with open(f"{d}/raw0.img", "wb") as f:
        f.truncate(RAW_SIZE)
    with open(f"{d}/grow.img", "wb") as f:
        f.truncate(GROW_SIZE)


class Session(Transcript):
    """One daemon and the transcript of what it answered."""

    def __init__(self, q, d, nbd_sock):
        super().__init__(q, [])
        self.d, self.nbd_sock = d, nbd_sock

    def bitmaps(self, node):
        for n in self.q.ok("query-named-block-nodes"):
            if n["node-name"] == node:
                return n.get("dirty-bitmaps")
        return "no such node"

    def record_bitmaps(self, label):
        """Every node's dirty-bitmaps, into the transcript."""
        state = {n: self.bitmaps(n) for n in NODES}
        self.log.append((label, state))
        return state

    def counts(self, node):
        return {b.get("name"): b["count"] for b in self.bitmaps(node) or []}

    def client(self, name):
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///{name}?socket={self.nbd_sock}")
        return h


def export(s, export_id, node, iothread=None):
    args = {"type": "nbd", "id": export_id, "node-name": node, "writable": True}
    if iothread:
        args["iothread"] = iothread
    r = s.cmd("block-export-add", **args)
    assert "return" in r, r


def scenario(s):
    """The sequence both daemons run. Asserts what ioplane and QEMU must both
    give; the transcript carries the rest to the comparison."""
    d = s.d
    q = s.q
    q.ok("object-add", **{"qom-type": "iothread", "id": "io0"})
    for node, fmt, path in [("img", "qcow2", "img.qcow2"), ("small", "qcow2", "small.qcow2"),
                            ("v2", "qcow2", "v2.qcow2")]:
        q.ok("blockdev-add", driver=fmt, node_name=node, discard="unmap",
             file={"driver": "file", "filename": f"{d}/{path}"})
    q.ok("blockdev-add", driver="file", node_name="raw0", filename=f"{d}/raw0.img", discard="unmap")
    q.ok("blockdev-add", driver="file", node_name="grow", filename=f"{d}/grow.img")
    s.record_bitmaps("none yet")

    # --- add --------------------------------------------------------------
    s.ok("add-default", "block-dirty-bitmap-add", node="img", name="b0")
    s.ok("add-default-small-clusters", "block-dirty-bitmap-add", node="small", name="s0")
    s.ok("add-512", "block-dirty-bitmap-add", node="raw0", name="r0", granularity=512)
    s.ok("add-disabled", "block-dirty-bitmap-add", node="img", name="b1", granularity=128 * KiB, disabled=True)
    s.ok("add-persistent-qcow2", "block-dirty-bitmap-add", node="img", name="p0", persistent=True)
    s.ok("add-2g", "block-dirty-bitmap-add", node="raw0", name="huge", granularity=1 << 31)
    s.ok("add-long-name-max", "block-dirty-bitmap-add", node="small", name=LONG[:1023])
    s.ok("add-default-file", "block-dirty-bitmap-add", node="raw0", name="rd")
    s.ok("add-grow", "block-dirty-bitmap-add", node="grow", name="g0")
    s.ok("add-grow-512", "block-dirty-bitmap-add", node="grow", name="g1", granularity=512)
    for label, args in [
        ("add-persistent-raw", dict(node="raw0", name="p1", persistent=True)),
        ("add-persistent-v2", dict(node="v2", name="p2", persistent=True)),
        ("add-duplicate", dict(node="img", name="b0")),
        ("add-duplicate-persistent", dict(node="img", name="p0", persistent=True)),
        ("add-empty-name", dict(node="img", name="")),
        ("add-no-node", dict(node="nowhere", name="x")),
        ("add-granularity-1000", dict(node="img", name="g", granularity=1000)),
        ("add-granularity-256", dict(node="img", name="g", granularity=256)),
        ("add-granularity-0", dict(node="img", name="g", granularity=0)),
        ("add-granularity-4g", dict(node="img", name="g", granularity=1 << 32)),
        ("add-granularity-negative", dict(node="img", name="g", granularity=-512)),
        ("add-granularity-string", dict(node="img", name="g", granularity="512")),
        ("add-long-name", dict(node="img", name=LONG)),
        ("add-long-name-persistent", dict(node="img", name=LONG, persistent=True)),
        ("add-missing-name", dict(node="img")),
        ("add-unknown-argument", dict(node="img", name="g", colour="red")),
    ]:
        out = s.step(label, "block-dirty-bitmap-add", **args)
        assert "error" in out, f"{label}: {out}"
    state = s.record_bitmaps("after add")
    img = {b["name"]: b for b in state["img"]}
    assert list(img) == ["p0", "b1", "b0"], f"newest first: {list(img)}"
    assert img["b0"] == {"name": "b0", "count": 0, "granularity": 65536, "recording": True, "busy": False,
                         "persistent": False}, img["b0"]
    assert img["b1"]["recording"] is False and img["b1"]["granularity"] == 128 * KiB
    assert img["p0"]["persistent"] is True
    assert {b["name"]: b["granularity"] for b in state["small"]} == {LONG[:1023]: 4096, "s0": 4096}, state["small"]

    # --- writes through NBD (raw0's export in an IOThread) ----------------
    export(s, "e-img", "img")
    export(s, "e-raw", "raw0", iothread="io0")
    h = s.client("img")
    h.pwrite(b"a" * 4096, 0)                 # chunk 0
    h.pwrite(b"b", MiB + 5)                  # chunk 16
    h.zero(64 * KiB, 2 * MiB)                # chunk 32
    h.trim(128 * KiB, 4 * MiB)               # chunks 64, 65
    h.pread(MiB, 6 * MiB)                    # a read: nothing
    h.flush()
    r = s.client("raw0")
    r.pwrite(b"c" * 100, 8 * MiB + 1000)     # 512-byte chunks 16385 and 16386 (the partial last one)
    r.pwrite(b"d" * 512, 512)                # chunk 1
    r.flush()
    state = s.record_bitmaps("after writes")
    assert s.counts("img") == {"p0": 5 * 64 * KiB, "b1": 0, "b0": 5 * 64 * KiB}, s.counts("img")
    assert s.counts("raw0") == {"rd": 2 * 64 * KiB, "huge": 1 << 31, "r0": 3 * 512}, s.counts("raw0")
    assert s.counts("small") == {LONG[:1023]: 0, "s0": 0}
    # The raw0 client stays connected until the daemon goes: QEMU 7.2's
    # daemon dies of an assertion (nbd_blockdev_client_closed, not in the
    # main thread) when a client of an export in an IOThread disconnects.

    # --- a node that grows: its bitmaps grow with it, the new bytes clean --
    # (QEMU's NBD export does not share resize: the export goes first.)
    export(s, "e-grow", "grow")
    g = s.client("grow")
    g.pwrite(b"g" * 512, GROW_SIZE - 512)   # the partial last 64 KiB chunk (16)
    g.shutdown()
    q.ok("block-export-del", id="e-grow")
    s.q.wait_event("BLOCK_EXPORT_DELETED")
    s.ok("resize-grow", "block_resize", node_name="grow", size=2 * MiB)
    s.record_bitmaps("after resize")
    export(s, "e-grow", "grow")
    g = s.client("grow")  # a client learns the size when it connects
    g.pwrite(b"h" * 4096, GROW_SIZE + 4096)  # chunk 16 again (whole now), and 512-byte chunks 2057..2064
    g.pwrite(b"i", 2 * MiB - 1)              # chunk 31; 512-byte chunk 4095
    g.shutdown()
    s.record_bitmaps("after writes past the old end")
    assert s.counts("grow") == {"g1": 10 * 512, "g0": 2 * 64 * KiB}, s.counts("grow")

    # --- disable, enable, clear -------------------------------------------
    s.ok("disable-b0", "block-dirty-bitmap-disable", node="img", name="b0")
    s.ok("enable-b1", "block-dirty-bitmap-enable", node="img", name="b1")
    s.ok("enable-b1-again", "block-dirty-bitmap-enable", node="img", name="b1")
    h.pwrite(b"e" * 4096, 7 * MiB)           # b1's 128 KiB chunk 56; not b0
    h.flush()
    s.record_bitmaps("after enable/disable")
    assert s.counts("img") == {"p0": 6 * 64 * KiB, "b1": 128 * KiB, "b0": 5 * 64 * KiB}, s.counts("img")
    s.ok("clear-p0", "block-dirty-bitmap-clear", node="img", name="p0")
    s.record_bitmaps("after clear")
    assert s.counts("img")["p0"] == 0
    for label, cmd, args in [
        ("clear-no-bitmap", "block-dirty-bitmap-clear", dict(node="img", name="nope")),
        ("clear-no-node", "block-dirty-bitmap-clear", dict(node="nowhere", name="b0")),
        ("enable-no-bitmap", "block-dirty-bitmap-enable", dict(node="img", name="nope")),
        ("disable-no-node", "block-dirty-bitmap-disable", dict(node="nowhere", name="b0")),
        ("remove-no-bitmap", "block-dirty-bitmap-remove", dict(node="img", name="nope")),
        ("remove-anonymous", "block-dirty-bitmap-remove", dict(node="img", name="")),
    ]:
        out = s.step(label, cmd, **args)
        assert "error" in out, f"{label}: {out}"

    # --- merge ------------------------------------------------------------
    # b1 (one 128 KiB chunk, at 7 MiB) into p0 (64 KiB chunks): two of them.
    s.ok("merge-mixed-granularities", "block-dirty-bitmap-merge", node="img", target="p0", bitmaps=["b1"])
    s.record_bitmaps("after merge")
    assert s.counts("img")["p0"] == 2 * 64 * KiB, s.counts("img")
    s.ok("merge-external-and-local", "block-dirty-bitmap-merge", node="img", target="p0",
         bitmaps=[{"node": "img", "name": "b0"}, "b1"])
    assert s.counts("img")["p0"] == 7 * 64 * KiB, s.counts("img")
    s.ok("merge-itself", "block-dirty-bitmap-merge", node="img", target="b0", bitmaps=["b0"])
    for label, args in [
        ("merge-different-sizes", dict(node="img", target="p0", bitmaps=[{"node": "raw0", "name": "r0"}])),
        ("merge-no-target", dict(node="img", target="nope", bitmaps=["b0"])),
        ("merge-no-source", dict(node="img", target="p0", bitmaps=["b0", "nope"])),
        ("merge-no-source-node", dict(node="img", target="p0", bitmaps=[{"node": "nowhere", "name": "b0"}])),
        ("merge-source-elsewhere", dict(node="img", target="p0", bitmaps=["r0"])),
        ("merge-bad-element", dict(node="img", target="p0", bitmaps=[7])),
    ]:
        out = s.step(label, "block-dirty-bitmap-merge", **args)
        assert "error" in out, f"{label}: {out}"
    s.record_bitmaps("after merges")

    # --- remove, and a node that closes -----------------------------------
    s.ok("remove-b1", "block-dirty-bitmap-remove", node="img", name="b1")
    out = s.step("remove-b1-again", "block-dirty-bitmap-remove", node="img", name="b1")
    assert "error" in out
    # (p0 leaves the image too: qcow2_bitmaps.py checks the image after such removals.)
    s.ok("remove-p0", "block-dirty-bitmap-remove", node="img", name="p0")
    s.record_bitmaps("after remove")
    h.shutdown()
    q.ok("block-export-del", id="e-img")
    s.q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="img")
    s.record_bitmaps("img closed")
    q.ok("blockdev-add", driver="qcow2", node_name="img", file={"driver": "file", "filename": f"{d}/img.qcow2"})
    state = s.record_bitmaps("img reopened")
    assert state["img"] is None, state


def connect(path):
    """The socket file exists from bind() on; connections are refused until
    listen() a moment later."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return Qmp(path)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_daemon(binary, d, is_qemu):
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "chardev=m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"]
    with Daemon(binary, args, f"{d}/daemon.log") as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        s = Session(connect(qmp_sock), d, nbd_sock)
        scenario(s)
        if not is_qemu:
            ioplane_only(s)
            dmn.stop()
        s.q.close()
        return s.log


def ioplane_only(s):
    """What only ioplane does: a merge of no bitmaps is a no-op (QEMU 7.2's
    storage daemon dies of it: block_dirty_bitmap_merge frees a backup it
    never made); bitmaps larger than memory should hold are refused."""
    s.ok("ioplane-only: merge-none", "block-dirty-bitmap-merge", node="raw0", target="r0", bitmaps=[])
    print("ok: a merge of no bitmaps changes nothing")
    s.q.ok("blockdev-add", driver="null-co", node_name="vast", size=1 << 44)  # 16 TiB
    err = s.cmd("block-dirty-bitmap-add", node="vast", name="b", granularity=512)["error"]
    assert err["desc"].startswith("A dirty bitmap of node 'vast' with granularity 512 would take"), err
    s.ok("ioplane-only: vast-64k", "block-dirty-bitmap-add", node="vast", name="b")  # 2^28 bits: 32 MiB
    s.ok("ioplane-only: vast-remove", "block-dirty-bitmap-remove", node="vast", name="b")
    print("ok: a bitmap too large for memory is refused")


def main():
    daemon = sys.argv[1]
    qsd = sys.argv[2] if len(sys.argv) > 2 else shutil.which("qemu-storage-daemon")
    top = tempfile.mkdtemp(prefix="dirty-bitmaps-")
    try:
        os.mkdir(f"{top}/ioplane")
        make_images(f"{top}/ioplane")
        ours = run_daemon(daemon, f"{top}/ioplane", False)
        print(f"ok: ioplane: {len(ours)} steps")
        if not qsd:
            print("skip: no qemu-storage-daemon to compare with")
        else:
            os.mkdir(f"{top}/qemu")
            make_images(f"{top}/qemu")
            theirs = run_daemon(qsd, f"{top}/qemu", True)
            failures = compare_transcripts(ours, theirs, KNOWN, "ioplane-only:")
            if failures:
                print(f"dirty_bitmaps: {failures} differences from qemu-storage-daemon")
                sys.exit(1)
            compared = sum(1 for label, _ in ours if not label.startswith("ioplane-only:"))
            print(f"ok: {compared} replies and bitmap lists compared with qemu-storage-daemon's")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("dirty_bitmaps: ok")


if __name__ == "__main__":
    main()
