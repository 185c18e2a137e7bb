#!/usr/bin/python3
"""QMP `transaction` on a live daemon, compared with qemu-storage-daemon 7.2.

The same sequence runs against ioplane and (when installed) the real
qemu-storage-daemon, each on its own copies of the same images, with
writes made through an NBD export by qemu-io (so bitmaps have bits):

- the command's own argument errors (QEMU's input visitor's words);
- transactions of bitmap actions that succeed (add, clear, enable,
  disable, merge, remove mixed), and ones that fail in the middle (an
  abort action, a bitmap-add of a name in use, a second action on a bitmap
  a remove made busy): everything must be as before, counts included (a
  clear's and a merge's old bits restored, a disable undone, an added
  bitmap gone, a removed one still there);
- completion-mode=grouped, refused by every action kind but abort;
- blockdev-snapshot and blockdev-snapshot-sync aborted by a later action
  (the graph as before) and committed;
- blockdev-snapshot-internal-sync on a file node (QEMU's refusal);
- the atomic point: a snapshot and bitmaps added on both sides of it in
  one transaction while fio writes through the export: the bitmap on the
  old node must stay clean, the one on the overlay must count exactly the
  clusters the overlay got (qemu-img map), and both images must check
  clean.

Every reply and every node's "dirty-bitmaps" and backing depth is recorded;
ioplane's must equal QEMU's except where KNOWN says why. Then ioplane alone:
the kinds it has no command for are refused with a clear error.
Usage: qmp_transaction.py DAEMON [QSD]. Needs qemu-img, qemu-io and fio."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402
from qmp_transcript import Transcript, compare_transcripts, qmp_send  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
NODES = ["img", "raw0", "ov", "snap"]

# Steps where ioplane's reply may differ from QEMU's, and why. Compared
# there: the error class only.
KNOWN = {
    "add-missing-name": "an action's own arguments are read by ioplane's shared option reader, whose wording "
                        "differs from QEMU's input visitor (\"missing 'actions[0].data.name'\")",
    "add-unknown-argument": "the same (\"unexpected parameter 'actions[0].data.colour'\")",
    "merge-bad-element": "QEMU names the element 'null' (its input visitor loses the name of a list element "
                         "that is an alternate); ioplane says 'actions[0].data.bitmaps[0]'",
}


def run(*cmd, timeout=120):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}: {r.stdout}{r.stderr}"
    return r.stdout


def make_images(d):
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", f"{d}/img.qcow2", "64M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", f"{d}/img.qcow2",
        "-F", "qcow2", f"{d}/ov.qcow2")
    with open(f"{d}/raw0.img", "wb") as f:
        f.truncate(16 * MiB)


def act(kind, **data):
    return {"type": kind, "data": {k.replace("_", "-"): v for k, v in data.items()}}


class Session(Transcript):
    """One daemon and the transcript of what it answered."""

    def __init__(self, q, d, nbd_sock):
        super().__init__(q, [])
        self.d, self.nbd_sock = d, nbd_sock

    def txn(self, label, actions, properties=None):
        args = {"actions": actions}
        if properties is not None:
            args["properties"] = properties
        return self.log_reply(label, qmp_send(self.q, "transaction", args))

    def ok(self, label, actions, properties=None):
        out = self.txn(label, actions, properties)
        assert "return" in out, f"{label}: {out}"

    def refused(self, label, actions, properties=None):
        out = self.txn(label, actions, properties)
        assert "error" in out, f"{label}: {out}"
        return out["error"]["desc"]

    def state(self):
        """Every node's bitmaps and backing depth (what a transaction may
        change); the export's node."""
        nodes = {n["node-name"]: n for n in self.q.ok("query-named-block-nodes")}
        out = {name: (nodes[name].get("dirty-bitmaps"), nodes[name]["backing_file_depth"]) if name in nodes
               else "no such node" for name in NODES}
        out["export"] = [e["node-name"] for e in self.q.ok("query-block-exports")]
        return out

    def record(self, label):
        state = self.state()
        self.log.append((label, state))
        return state

    def counts(self, node):
        bitmaps = self.state()[node][0] or []
        return {b["name"]: b["count"] for b in bitmaps}

    def write(self, *ranges):
        """qemu-io writes through the NBD export, one per (offset, length)."""
        cmds = []
        for off, length in ranges:
            cmds += ["-c", f"write -P 0x5a {off} {length}"]
        run("qemu-io", "-f", "raw", *cmds, f"nbd+unix:///img?socket={self.nbd_sock}")


def argument_errors(s):
    for label, args in [
        ("no-arguments", None),
        ("no-actions", {}),
        ("actions-not-a-list", {"actions": {}}),
        ("action-not-an-object", {"actions": [7]}),
        ("action-no-type", {"actions": [{}]}),
        ("action-bad-type", {"actions": [{"type": "nope", "data": {}}]}),
        ("action-type-not-a-string", {"actions": [{"type": 3, "data": {}}]}),
        ("action-no-data", {"actions": [{"type": "abort"}]}),
        ("action-data-not-an-object", {"actions": [{"type": "abort", "data": []}]}),
        ("action-extra-member", {"actions": [{"type": "abort", "data": {}, "extra": 1}]}),
        ("abort-with-data", {"actions": [{"type": "abort", "data": {"x": 1}}]}),
        ("add-missing-name", {"actions": [act("block-dirty-bitmap-add", node="img")]}),
        ("add-unknown-argument", {"actions": [act("block-dirty-bitmap-add", node="img", name="x", colour=1)]}),
        ("add-bad-granularity", {"actions": [act("block-dirty-bitmap-add", node="img", name="x", granularity="7")]}),
        ("merge-bad-element", {"actions": [act("block-dirty-bitmap-merge", node="img", target="b0", bitmaps=[7])]}),
        ("bad-later-action", {"actions": [act("abort"), {"type": "nope", "data": {}}]}),
        ("properties-not-an-object", {"actions": [act("abort")], "properties": 1}),
        ("properties-bad-mode", {"actions": [act("abort")], "properties": {"completion-mode": "bad"}}),
        ("properties-extra", {"actions": [act("abort")], "properties": {"x": 1}}),
        ("extra-argument", {"actions": [], "colour": "red"}),
    ]:
        out = s.log_reply(label, qmp_send(s.q, "transaction", args))
        assert "error" in out, f"{label}: {out}"
    s.ok("empty", [])
    assert s.refused("abort", [act("abort")]) == "Transaction aborted using Abort action"
    assert s.refused("abort-grouped", [act("abort")], {"completion-mode": "grouped"}) == \
        "Transaction aborted using Abort action"


def bitmap_transactions(s):
    s.ok("setup", [act("block-dirty-bitmap-add", node="img", name="b0"),
                   act("block-dirty-bitmap-add", node="img", name="b1", disabled=True),
                   act("block-dirty-bitmap-add", node="raw0", name="r0", granularity=512)])
    s.write((0, 4 * KiB), (MiB, 128 * KiB))  # b0: chunks 0, 16, 17
    s.record("after setup")
    assert s.counts("img") == {"b1": 0, "b0": 3 * 64 * KiB}, s.counts("img")

    # Mixed actions that all succeed.
    s.ok("mixed", [act("block-dirty-bitmap-add", node="img", name="b2", granularity=128 * KiB),
                   act("block-dirty-bitmap-merge", node="img", target="b2", bitmaps=["b0"]),
                   act("block-dirty-bitmap-enable", node="img", name="b1"),
                   act("block-dirty-bitmap-clear", node="img", name="b0"),
                   act("block-dirty-bitmap-disable", node="img", name="b0"),
                   act("block-dirty-bitmap-add", node="img", name="gone"),
                   act("block-dirty-bitmap-remove", node="img", name="gone")])
    s.write((4 * MiB, 4 * KiB))  # b1 and b2 (one 128 KiB chunk each), not b0
    s.record("after mixed")
    assert s.counts("img") == {"b2": 3 * 128 * KiB, "b1": 64 * KiB, "b0": 0}, s.counts("img")

    # Failures in the middle: everything as before, bits included.
    s.write((8 * MiB, 64 * KiB))  # b1, b2: one chunk more; b0 stays disabled
    before = s.state()
    changes = [act("block-dirty-bitmap-add", node="img", name="b3"),
               act("block-dirty-bitmap-clear", node="img", name="b1"),
               act("block-dirty-bitmap-merge", node="img", target="b0", bitmaps=["b2", {"node": "img", "name": "b1"}]),
               act("block-dirty-bitmap-enable", node="img", name="b0"),
               act("block-dirty-bitmap-disable", node="img", name="b2"),
               act("block-dirty-bitmap-remove", node="img", name="b1"),
               act("block-dirty-bitmap-clear", node="raw0", name="r0")]
    for label, last in [("fail-abort", act("abort")),
                        ("fail-add-existing", act("block-dirty-bitmap-add", node="img", name="b2")),
                        ("fail-busy", act("block-dirty-bitmap-clear", node="img", name="b1")),
                        # (Not -enable: qemu-storage-daemon 7.2 dies of that, below.)
                        ("fail-no-node", act("block-dirty-bitmap-disable", node="nowhere", name="b1")),
                        ("fail-merge-sizes", act("block-dirty-bitmap-merge", node="img", target="b2",
                                                 bitmaps=[{"node": "raw0", "name": "r0"}]))]:
        s.refused(label, changes + [last])
        after = s.record(label + ": after")
        assert after == before, f"{label}: changed\n  before: {before}\n  after:  {after}"
    assert s.refused("fail-first", [act("block-dirty-bitmap-remove", node="img", name="b0"),
                                    act("block-dirty-bitmap-remove", node="img", name="b0")]).endswith(
        "is currently in use by another operation and cannot be used")
    assert s.state() == before

    # completion-mode=grouped: refused by every action kind but abort (and
    # -enable, below: qemu-storage-daemon 7.2 dies of it).
    for kind, data in [("block-dirty-bitmap-add", dict(node="img", name="g")),
                       ("block-dirty-bitmap-remove", dict(node="img", name="b0")),
                       ("block-dirty-bitmap-clear", dict(node="img", name="b0")),
                       ("block-dirty-bitmap-disable", dict(node="img", name="b0")),
                       ("block-dirty-bitmap-merge", dict(node="img", target="b0", bitmaps=["b1"])),
                       ("blockdev-snapshot", dict(node="img", overlay="ov")),
                       ("blockdev-snapshot-sync", dict(node_name="img", snapshot_file=f"{s.d}/g.qcow2",
                                                       snapshot_node_name="g")),
                       ("blockdev-snapshot-internal-sync", dict(device="raw0", name="s"))]:
        desc = s.refused("grouped-" + kind, [act(kind, **data)], {"completion-mode": "grouped"})
        assert desc == f"Action '{kind}' does not support Transaction property completion-mode = grouped", desc
    s.refused("grouped-after-others", [act("block-dirty-bitmap-add", node="img", name="g"),
                                       act("block-dirty-bitmap-clear", node="img", name="b1")],
              {"completion-mode": "grouped"})
    s.ok("individual", [act("block-dirty-bitmap-clear", node="img", name="b1")], {"completion-mode": "individual"})
    s.refused("internal-snapshot-file", [act("blockdev-snapshot-internal-sync", device="raw0", name="s")])
    s.refused("internal-snapshot-no-node", [act("blockdev-snapshot-internal-sync", device="nowhere", name="s")])
    s.record("after bitmaps")


def snapshots(s):
    d = s.d
    before = s.record("before snapshots")
    s.refused("snapshot-aborted", [act("block-dirty-bitmap-add", node="ov", name="top"),
                                   act("blockdev-snapshot", node="img", overlay="ov"),
                                   act("block-dirty-bitmap-clear", node="img", name="b2"),
                                   act("abort")])
    assert s.record("after snapshot-aborted") == before
    s.refused("snapshot-sync-aborted", [act("blockdev-snapshot-sync", node_name="img", snapshot_file=f"{d}/snap.qcow2",
                                            snapshot_node_name="snap"),
                                        act("block-dirty-bitmap-add", node="snap", name="x"),
                                        act("block-dirty-bitmap-add", node="snap", name="x")])
    assert s.record("after snapshot-sync-aborted") == before
    s.refused("snapshot-sync-no-snapshot-node-name",
              [act("blockdev-snapshot-sync", node_name="img", snapshot_file=f"{d}/snap.qcow2")])
    s.refused("snapshot-sync-node-name-in-use",
              [act("blockdev-snapshot-sync", node_name="img", snapshot_file=f"{d}/snap.qcow2",
                   snapshot_node_name="raw0")])
    s.refused("snapshot-twice", [act("blockdev-snapshot", node="img", overlay="ov"),
                                 act("blockdev-snapshot", node="img", overlay="ov")])
    assert s.state() == before

    # The atomic point, with fio writing through the export meanwhile.
    fio = subprocess.Popen(["fio", "--name=txn", "--ioengine=nbd", f"--uri=nbd+unix:///img?socket={s.nbd_sock}",
                            "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64M", "--time_based",
                            "--runtime=3", "--rate_iops=400", "--randrepeat=0", f"--output={d}/fio.txt"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(1)
    s.ok("snapshot-atomic", [act("block-dirty-bitmap-add", node="img", name="old"),
                             act("blockdev-snapshot", node="img", overlay="ov"),
                             act("block-dirty-bitmap-add", node="ov", name="new")])
    assert fio.wait(30) == 0, open(f"{d}/fio.txt").read()
    state = s.state()
    old = {b["name"]: b["count"] for b in state["img"][0]}
    new = {b["name"]: b["count"] for b in state["ov"][0]}
    assert old["old"] == 0, f"a write reached the old node after the snapshot point: {old}"
    assert new["new"] > 0, new
    assert state["ov"][1] == 1 and state["export"] == ["ov"], state
    s.log.append(("after snapshot-atomic", {"old": old["old"], "new>0": new["new"] > 0, "depth": state["ov"][1],
                                            "export": state["export"]}))
    return new["new"]


def check_images(d, new_count):
    """After the daemon is gone: both images clean, and the overlay holds
    exactly the clusters its bitmap counted."""
    for image in ("img.qcow2", "ov.qcow2"):
        run("qemu-img", "check", "-q", f"{d}/{image}")
    allocated = sum(e["length"] for e in json.loads(run("qemu-img", "map", "--output=json", f"{d}/ov.qcow2"))
                    if e["depth"] == 0 and e["data"])
    assert allocated == new_count, f"overlay: {allocated} bytes allocated, bitmap 'new' counts {new_count}"
    print(f"ok: images clean; the overlay's {allocated >> 10} KiB allocated = its bitmap's count")


def ioplane_only(s):
    """What only ioplane does: a block-dirty-bitmap-enable whose bitmap is
    not found, or that refuses completion-mode=grouped, fails cleanly
    (qemu-storage-daemon 7.2 dies of both: its abort, which runs for the
    failed action too, disables the bitmap it did not find); the kinds
    ioplane has no command for are refused (blockdev-backup in a transaction:
    block_backup.py)."""
    desc = qmp_send(s.q, "transaction", {"actions": [act("block-dirty-bitmap-enable", node="nowhere", name="b1")]})
    assert desc["error"]["desc"] == "Node 'nowhere' not found", desc
    desc = qmp_send(s.q, "transaction", {"actions": [act("block-dirty-bitmap-enable", node="img", name="b1")],
                                        "properties": {"completion-mode": "grouped"}})
    assert desc["error"]["desc"] == ("Action 'block-dirty-bitmap-enable' does not support Transaction property "
                                     "completion-mode = grouped"), desc
    desc = qmp_send(s.q, "transaction", {"actions": [act("drive-backup", device="img", target="raw0", sync="full")]})
    desc = desc["error"]["desc"]
    assert desc == "Action 'drive-backup' is not supported: ioplane has no drive-backup command", desc
    desc = qmp_send(s.q, "transaction", {"actions": [act("blockdev-snapshot-internal-sync", device="ov", name="s")]})
    assert desc["error"]["desc"] == ("Block format 'qcow2' used by device 'ov' does not support internal "
                                     "snapshots"), desc
    print("ok: the kinds ioplane has no command for are refused")


def connect(path):
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
        q = connect(qmp_sock)
        s = Session(q, d, nbd_sock)
        q.ok("blockdev-add", driver="qcow2", node_name="img", file={"driver": "file", "filename": f"{d}/img.qcow2"})
        q.ok("blockdev-add", driver="file", node_name="raw0", filename=f"{d}/raw0.img")
        q.ok("blockdev-add", driver="qcow2", node_name="ov", file={"driver": "file", "filename": f"{d}/ov.qcow2"},
             backing=None)
        q.ok("block-export-add", type="nbd", id="e0", node_name="img", writable=True)
        argument_errors(s)
        bitmap_transactions(s)
        new_count = snapshots(s)
        if not is_qemu:
            ioplane_only(s)
        q.ok("block-export-del", id="e0")
        q.wait_event("BLOCK_EXPORT_DELETED")
        q.cmd("quit")
        status = dmn.proc.wait(30)
        assert is_qemu or status == 0, f"exit status {status}"
        q.close()
    check_images(d, new_count)
    return s.log


def main():
    daemon = sys.argv[1]
    qsd = sys.argv[2] if len(sys.argv) > 2 else shutil.which("qemu-storage-daemon")
    top = tempfile.mkdtemp(prefix="qmp-transaction-")
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
            failures = compare_transcripts(ours, theirs, KNOWN)
            if failures:
                print(f"qmp_transaction: {failures} differences from qemu-storage-daemon")
                sys.exit(1)
            print(f"ok: {len(ours)} replies and states compared with qemu-storage-daemon's")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("qmp_transaction: ok")


if __name__ == "__main__":
    main()
