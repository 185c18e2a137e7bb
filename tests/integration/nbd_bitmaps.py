#!/usr/bin/python3
"""Dirty bitmaps over NBD (qemu:dirty-bitmap:NAME), compared with qemu-storage-daemon 7.2.

The same sequence runs against ioplane and (when installed) the real
qemu-storage-daemon, each on its own copies of the same images (a qcow2
overlay on a qcow2 backing file): bitmaps made with block-dirty-bitmap-add
record known writes made through a writable NBD export with qemu-io; then
block-export-add with `bitmaps` (names looked up down the chain, and
{node, name}) and every refusal QEMU gives (unknown bitmaps, one on the
file node that the chain does not reach, an enabled bitmap with a
read-only export, busy ones, remove/enable/clear while exported); nbdinfo
--list and --map for each bitmap, allocation-depth and base:allocation;
qemu-img map with x-dirty-bitmap; LIST_META_CONTEXT with the prefix
queries; block status of several contexts at once, with and without
REQ_ONE, the export in an IOThread; a writable export whose enabled bitmap
sees its writes; the busy flags while exported and after block-export-del.
Every reply and tool output is recorded; ioplane's must equal QEMU's, and ioplane's maps must
list exactly the written extents rounded to the granularity. The command
line's --export with `bitmaps` is refused the same way by both daemons
(bitmaps do not exist at startup: neither loads persistent ones here).
Usage: nbd_bitmaps.py DAEMON [QSD]. Needs python3-libnbd, nbdinfo,
qemu-img and qemu-io."""
import json
import os
import re
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
SIZE = 64 * MiB
# (offset, length, qemu-io command) written through the writable export.
WRITES = [
    (100 * KiB, 10 * KiB, "write -P 1 100k 10k"),  # unaligned to either granularity
    (MiB, 64 * KiB, "write -P 2 1M 64k"),
    (10 * MiB, 3 * MiB, "write -P 3 10M 3M"),
    (20 * MiB, 64 * KiB, "write -z 20M 64k"),  # a whole cluster: qcow2 makes it a zero cluster
    (SIZE - 512, 512, f"write -P 4 {SIZE - 512} 512"),  # the last sector
]


def run(*cmd, check=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)
    assert not check or r.returncode == 0, f"{' '.join(map(str, cmd))}: {r.stdout}{r.stderr}"
    return r


def make_images(d):
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", f"{d}/base.qcow2", "64M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 9 40M 128k", f"{d}/base.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", f"{d}/base.qcow2", "-F",
        "qcow2", f"{d}/top.qcow2")


def blockdev(d):
    return (f"driver=qcow2,node-name=top,file.driver=file,file.node-name=file,file.filename={d}/top.qcow2,"
            f"backing.driver=qcow2,backing.node-name=base,backing.file.driver=file,"
            f"backing.file.filename={d}/base.qcow2")


def expected_dirty(granularity):
    """The written ranges rounded out to the granularity, merged."""
    runs = []
    for off, length, _ in WRITES:
        start, end = off // granularity * granularity, -(-(off + length) // granularity) * granularity
        if runs and start <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([start, end])
    return [(s, e - s) for s, e in runs]


def dirty_in_map(text):
    """(offset, length) of the dirty lines of nbdinfo --map."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == "1":
            out.append((int(f[0]), int(f[1])))
    return out


class Session(Transcript):
    """One daemon and the transcript of what it and the clients said."""

    def __init__(self, q, d):
        super().__init__(q, [])
        self.d = d
        self.sock = f"{d}/nbd.sock"

    def bitmaps(self, label):
        """Every node's dirty-bitmaps (busy flags, counts), into the transcript."""
        nodes = {n["node-name"]: n.get("dirty-bitmaps") for n in self.q.ok("query-named-block-nodes")}
        # Not the file node's: its bitmap also counts the qcow2 driver's
        # metadata writes, which differ between the two implementations.
        state = {n: nodes.get(n) for n in ("top", "base")}
        self.log.append((label, state))
        return state

    def uri(self, export):
        return f"nbd+unix:///{export}?socket={self.sock}"

    def tool(self, label, *cmd):
        r = run(*cmd, check=False)
        out = (r.stdout + r.stderr).replace(self.d, "DIR")
        out = re.sub(r"(?m)^.* ops; .* sec .*\n", "", out)  # qemu-io's timings
        self.log.append((label, {"status": r.returncode, "output": out}))
        assert r.returncode == 0, f"{label}: {out}"
        return out

    def export_del(self, label, export_id):
        # hard: a client that has just left may not have been seen to leave
        # yet, and safe mode would refuse ("still in use").
        self.ok(label, "block-export-del", id=export_id, mode="hard")
        self.q.wait_event("BLOCK_EXPORT_DELETED")

    def meta_list(self, label, export, queries):
        """NBD_OPT_LIST_META_CONTEXT with these queries (none: all)."""
        h = nbd.NBD()
        h.set_opt_mode(True)
        h.set_export_name(export)
        for q in queries:
            h.add_meta_context(q)
        h.connect_uri(self.uri(export))
        names = []
        h.opt_list_meta_context(lambda name: names.append(name))
        h.opt_abort()
        self.log.append((label, sorted(names)))
        return names

    def block_status(self, label, export, contexts, offset, length, req_one=False):
        """One NBD_CMD_BLOCK_STATUS with several contexts: every chunk."""
        h = nbd.NBD()
        for c in contexts:
            h.add_meta_context(c)
        h.connect_uri(self.uri(export))
        chunks = []

        def cb(context, off, entries, err):
            chunks.append([context, off, list(entries)])
            return 0

        h.block_status(length, offset, cb, nbd.CMD_FLAG_REQ_ONE if req_one else 0)
        h.shutdown()
        chunks.sort()  # the spec lets the contexts come in any order
        self.log.append((label, chunks))
        return chunks


def scenario(s):
    s.ok("add-b0", "block-dirty-bitmap-add", node="top", name="b0", granularity=64 * KiB)
    s.ok("add-b1", "block-dirty-bitmap-add", node="top", name="b1", granularity=4 * KiB)
    s.ok("add-bb", "block-dirty-bitmap-add", node="base", name="bb")
    s.ok("add-bf", "block-dirty-bitmap-add", node="file", name="bf")

    # Known writes through a writable export.
    s.ok("export-w", "block-export-add", type="nbd", id="w", node_name="top", writable=True)
    cmds = []
    for _, _, c in WRITES:
        cmds += ["-c", c]
    s.tool("qemu-io-writes", "qemu-io", "-f", "raw", *cmds, s.uri("top"))
    s.export_del("del-w", "w")

    # Refusals, each as QEMU words it.
    def refuse(label, **args):
        s.refused(label, "block-export-add", type="nbd", id="r", node_name="top", name="r", **args)

    refuse("unknown-name", bitmaps=["nope"])
    refuse("file-node-not-in-chain", bitmaps=["bf"])
    refuse("enabled-readonly", bitmaps=["b0"])
    refuse("unknown-pair-bitmap", bitmaps=[{"node": "top", "name": "zz"}])
    refuse("unknown-pair-node", bitmaps=[{"node": "nonode", "name": "b0"}])
    refuse("second-refused", bitmaps=["bb", "nope"])  # the first is not left busy
    s.bitmaps("after-refusals")

    s.ok("disable-b0", "block-dirty-bitmap-disable", node="top", name="b0")
    s.ok("disable-b1", "block-dirty-bitmap-disable", node="top", name="b1")
    # bb stays enabled: its node (a backing file) is read-only, which QEMU allows.
    # In an IOThread: the bits are read there while the monitor works in
    # the main thread (the TSan build runs this test).
    s.ok("export-r", "block-export-add", type="nbd", id="r", node_name="top", name="r", allocation_depth=True,
         bitmaps=["b0", {"node": "top", "name": "b1"}, "bb"], iothread="io0")
    s.bitmaps("busy-while-exported")
    s.refused("remove-busy", "block-dirty-bitmap-remove", node="top", name="b0")
    s.refused("enable-busy", "block-dirty-bitmap-enable", node="top", name="b1")
    s.refused("clear-busy", "block-dirty-bitmap-clear", node="base", name="bb")
    s.refused("export-busy", "block-export-add", type="nbd", id="r2", node_name="top", name="r2", bitmaps=["b0"])

    uri = s.uri("r")
    listed = s.tool("nbdinfo-list", "nbdinfo", "--list", f"nbd+unix://?socket={s.sock}")
    contexts = listed[listed.index("contexts:"):].split("\n")[1:5]
    assert [c.strip() for c in contexts] == ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0",
                                             "qemu:dirty-bitmap:b1"], listed
    s.tool("nbdinfo-uri", "nbdinfo", uri)
    maps = {}
    for ctx in ("qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:bb", "qemu:allocation-depth",
                "base:allocation"):
        maps[ctx] = s.tool(f"map {ctx}", "nbdinfo", f"--map={ctx}", uri)
    assert dirty_in_map(maps["qemu:dirty-bitmap:b0"]) == expected_dirty(64 * KiB), maps["qemu:dirty-bitmap:b0"]
    assert dirty_in_map(maps["qemu:dirty-bitmap:b1"]) == expected_dirty(4 * KiB), maps["qemu:dirty-bitmap:b1"]
    assert dirty_in_map(maps["qemu:dirty-bitmap:bb"]) == [], maps["qemu:dirty-bitmap:bb"]
    img_opts = f"driver=nbd,export=r,server.type=unix,server.path={s.sock},x-dirty-bitmap=qemu:dirty-bitmap:"
    for b, gran in (("b0", 64 * KiB), ("b1", 4 * KiB)):
        out = s.tool(f"qemu-img-map {b}", "qemu-img", "map", "--output=json", "--image-opts", img_opts + b)
        # x-dirty-bitmap reports dirty ranges as holes: "data": false.
        dirty = [(e["start"], e["length"]) for e in json.loads(out) if not e["data"]]
        assert dirty == expected_dirty(gran), out

    s.meta_list("list-all", "r", [])
    s.meta_list("list-qemu", "r", ["qemu:"])
    s.meta_list("list-dirty-bitmap-prefix", "r", ["qemu:dirty-bitmap:"])
    s.meta_list("list-names", "r", ["qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:zz", "base:", "x-other:y"])
    every = ["base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1",
             "qemu:dirty-bitmap:bb"]
    s.block_status("status-all", "r", every, 0, SIZE)
    s.block_status("status-all-req-one", "r", every, 0, SIZE, req_one=True)
    s.block_status("status-unaligned-req-one", "r", every[2:4], 100 * KiB + 5, 3 * MiB, req_one=True)
    s.block_status("status-in-run", "r", every[2:4], 10 * MiB + 1000, 20000)

    s.export_del("del-r", "r")
    s.bitmaps("released-after-del")
    s.ok("remove-after-del", "block-dirty-bitmap-remove", node="top", name="b0")

    # A writable export with an enabled bitmap sees its own writes.
    s.ok("add-b2", "block-dirty-bitmap-add", node="top", name="b2")
    s.ok("export-w2", "block-export-add", type="nbd", id="w2", node_name="top", name="w2", writable=True,
         bitmaps=["b2"])
    s.tool("qemu-io-w2", "qemu-io", "-f", "raw", "-c", "write -P 5 30M 70k", s.uri("w2"))
    out = s.tool("map b2", "nbdinfo", "--map=qemu:dirty-bitmap:b2", s.uri("w2"))
    assert dirty_in_map(out) == [(30 * MiB, 128 * KiB)], out
    s.bitmaps("w2-exported")
    # Left exported: shutting down releases it.


def connect(path):
    deadline = time.monotonic() + 10
    while True:
        try:
            return Qmp(path)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_daemon(binary, d, is_qemu):
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "chardev=m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}", "--blockdev", blockdev(d),
            "--object", "iothread,id=io0"]
    with Daemon(binary, args, f"{d}/daemon.log") as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        s = Session(connect(qmp_sock), d)
        scenario(s)
        if not is_qemu:
            dmn.stop()  # exits 0 with an export holding a bitmap
        s.q.close()
        return s.log


def command_line(binary, d):
    """--export with `bitmaps` at startup: refused, the message QEMU's."""
    out = []
    for form in ("type=nbd,id=e0,node-name=top,bitmaps.0=nope",
                 "type=nbd,id=e0,node-name=top,bitmaps.0.node=top,bitmaps.0.name=nope",
                 '{"type":"nbd","id":"e0","node-name":"top","bitmaps":[{"node":"base","name":"x"}]}'):
        r = subprocess.run([binary, "--nbd-server", f"addr.type=unix,addr.path={d}/cl.sock", "--blockdev",
                            blockdev(d), "--export", form], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0, f"{binary} {form}: should fail"
        # The prefix differs (QEMU repeats the option: "qemu-storage-daemon:
        # --export ...: "; ioplane's "ioplane-storage-daemon: " does not); the
        # reason must not.
        line = [x for x in r.stderr.splitlines() if re.match(r"\S*storage-daemon: ", x)][-1]
        out.append(re.sub(r"^\S*storage-daemon: (--export .*?: (?=[A-Z]))?", "", line))
    return out


def main():
    daemon = sys.argv[1]
    qsd = sys.argv[2] if len(sys.argv) > 2 else shutil.which("qemu-storage-daemon")
    top = tempfile.mkdtemp(prefix="nbd-bitmaps-")
    try:
        os.mkdir(f"{top}/ioplane")
        make_images(f"{top}/ioplane")
        ours_cl = command_line(daemon, f"{top}/ioplane")
        print(f"ok: ioplane refuses --export with unknown bitmaps: {ours_cl}")
        ours = run_daemon(daemon, f"{top}/ioplane", False)
        print(f"ok: ioplane: {len(ours)} steps; the maps list exactly the written extents")
        if not qsd:
            print("skip: no qemu-storage-daemon to compare with")
        else:
            os.mkdir(f"{top}/qemu")
            make_images(f"{top}/qemu")
            theirs_cl = command_line(qsd, f"{top}/qemu")
            failures = 0
            if ours_cl != theirs_cl:
                print(f"FAIL: command line:\n  ioplane: {ours_cl}\n  qemu:    {theirs_cl}")
                failures += 1
            theirs = run_daemon(qsd, f"{top}/qemu", True)
            failures += compare_transcripts(ours, theirs)
            if failures:
                print(f"nbd_bitmaps: {failures} differences from qemu-storage-daemon")
                sys.exit(1)
            print(f"ok: {len(ours)} replies and outputs, and the command line's errors, equal qemu-storage-daemon's")
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print("nbd_bitmaps: ok")


if __name__ == "__main__":
    main()
