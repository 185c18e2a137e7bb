#!/usr/bin/python3
"""Persistent dirty bitmaps in qcow2 images, against QEMU 7.2's tools and
qemu-storage-daemon. Each scenario runs once with ioplane and once with
qemu-storage-daemon, each on its own copy of the same images, and records
what the daemon answers over QMP (every node's "dirty-bitmaps" and the
image's format-specific "bitmaps") and what QEMU's tools then find in the
image (`qemu-img info` bitmaps and flags, `qemu-img check`, and the bits
themselves: the image exported by qemu-storage-daemon with bitmaps=[NAME]
and read with `nbdinfo --map=qemu:dirty-bitmap:NAME`). The two records must
be equal. The scenarios:
 - made by qemu-img: `qemu-img bitmap --add/--merge/--clear/--enable/
   --disable/--remove` and writes by qemu-io; the daemon loads them
   (count, granularity, recording, persistent), marks them in use, records
   a write through its NBD export and stores them at exit;
 - made by the daemon: persistent bitmaps (enabled, disabled, two
   granularities) and a transient one, writes through NBD (qemu-io), exit:
   the image holds the persistent ones (flags auto or none), checks clean,
   and their bits are exactly the written extents; opened again, more
   writes and a resize, exit: the bits are the union;
 - SIGKILL with loaded bitmaps: qemu-img info shows them in use, check is
   clean; the next open shows them inconsistent: clear/enable/merge and a
   resize are refused, removal works and takes them out of the image;
 - a read-only open: the bitmaps are read-only, changes refused, the image
   not written;
 - block-dirty-bitmap-remove of a persistent bitmap: gone from the image at
   once; in a transaction that aborts, gone at once and stored again at exit;
 - blockdev-reopen read-only stores the bitmaps and makes them read-only,
   read-write marks them in use again.
Usage: qcow2_bitmaps.py DAEMON [QSD]. Needs qemu-img, qemu-io, nbdinfo."""
import hashlib
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
from qmp_transcript import Transcript, compare_transcripts  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB
LIVE = []  # daemons to kill if the test fails


def run(*cmd, ok=(0,)):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode in ok, f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def info_bitmaps(path):
    data = json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)["format-specific"]["data"]
    return data.get("bitmaps")


def check(path):
    """qemu-img check's findings (its JSON without the allocation figures,
    which depend on where each writer put its clusters)."""
    r = run("qemu-img", "check", "-U", "--output=json", path, ok=(0, 2, 3))
    out = json.loads(r.stdout)
    return {k: out.get(k, 0) for k in ("corruptions", "leaks", "check-errors")} | {"status": r.returncode}


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def qemu_io_nbd(sock, name, cmds):
    args = []
    for c in cmds:
        args += ["-c", c]
    run("qemu-io", "-f", "raw", *args, f"nbd+unix:///{name}?socket={sock}")


def dirty_ranges(granularity, extents):
    """The chunks of `granularity` that writes of (offset, length) dirty,
    merged into ranges."""
    chunks = sorted({c for off, n in extents for c in range(off // granularity, (off + n - 1) // granularity + 1)})
    ranges = []
    for c in chunks:
        if ranges and ranges[-1][1] == c * granularity:
            ranges[-1][1] += granularity
        else:
            ranges.append([c * granularity, (c + 1) * granularity])
    return [(a, min(b, SIZE)) for a, b in ranges]


class Session(Transcript):
    """One daemon on a work directory: QMP, an NBD server, and a record
    (errors by their text)."""

    def __init__(self, binary, d, blockdevs, record):
        self.binary, self.d, self.record = binary, d, record
        self.qmp_sock, self.nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
        for p in (self.qmp_sock, self.nbd_sock):
            if os.path.exists(p):
                os.unlink(p)
        args = ["--chardev", f"socket,id=m,path={self.qmp_sock},server=on,wait=off", "--monitor", "chardev=m",
                "--nbd-server", f"addr.type=unix,addr.path={self.nbd_sock}"]
        for b in blockdevs:
            args += ["--blockdev", json.dumps(b)]
        self.daemon = Daemon(binary, args, f"{d}/daemon-{len(record)}.log")
        LIVE.append(self.daemon)
        self.daemon.wait_for(self.qmp_sock, self.nbd_sock)
        super().__init__(Qmp(self.qmp_sock), record, error_form=lambda e: e["desc"])

    def node(self, name):
        for n in self.q.ok("query-named-block-nodes"):
            if n["node-name"] == name:
                return n
        raise AssertionError(f"no node {name}")

    def query(self, label, node="disk"):
        """The node's dirty-bitmaps and its image's bitmap directory."""
        n = self.node(node)
        state = {"dirty-bitmaps": n.get("dirty-bitmaps"),
                 "image-bitmaps": n["image"]["format-specific"]["data"].get("bitmaps")}
        self.record.append((label, state))
        return state

    def export(self, node="disk", name="e", writable=True):
        r = self.cmd("block-export-add", type="nbd", id=name, node_name=node, name=name, writable=writable)
        assert "return" in r, r

    def unexport(self, name="e"):
        """block-export-del once the last client's disconnect has reached
        the daemon (qemu-io has exited; the server may not have seen it)."""
        deadline = time.time() + 10
        while True:
            r = self.cmd("block-export-del", id=name)
            if "return" in r or "still in use" not in r["error"]["desc"] or time.time() > deadline:
                break
            time.sleep(0.05)
        assert "return" in r, r
        self.q.wait_event("BLOCK_EXPORT_DELETED")

    def write(self, extents, name="e"):
        qemu_io_nbd(self.nbd_sock, name, [f"write -P 0x5a {off} {n}" for off, n in extents])

    def stop(self):
        self.q.close()
        self.daemon.stop()

    def kill(self):
        self.q.close()
        self.daemon.kill()


def disk(path, read_only=False):
    b = {"driver": "qcow2", "node-name": "disk", "file": {"driver": "file", "filename": path}}
    if read_only:
        b["read-only"] = True
    return b


def bitmap_map(qsd, d, path, names):
    """The bits of `names` in the image, as qemu-storage-daemon exports them:
    the dirty ranges of each."""
    sub = tempfile.mkdtemp(prefix="map-", dir=d)
    sock = f"{sub}/nbd.sock"
    args = ["--nbd-server", f"addr.type=unix,addr.path={sock}", "--blockdev", json.dumps(disk(path)),
            "--export", "type=nbd,id=e,node-name=disk,name=e,writable=on," +
            ",".join(f"bitmaps.{i}={n}" for i, n in enumerate(names))]
    out = {}
    with Daemon(qsd, args, f"{sub}/qsd.log") as dmn:
        dmn.wait_for(sock)
        for n in names:
            r = run("nbdinfo", f"--map=qemu:dirty-bitmap:{n}", f"nbd+unix:///e?socket={sock}")
            ranges = []
            for line in r.stdout.splitlines():
                off, length, flag = (int(x) for x in line.split()[:3])
                if flag & 1:
                    ranges.append((off, off + length))
            out[n] = ranges
        dmn.proc.terminate()
        dmn.proc.wait(30)
    shutil.rmtree(sub, ignore_errors=True)
    return out


def image_state(label, record, path, qsd, d, names=()):
    state = {"info": info_bitmaps(path), "check": check(path)}
    if names and qsd:
        state["bits"] = bitmap_map(qsd, d, path, list(names))
    record.append((label, state))
    return state


# --- scenarios ----------------------------------------------------------------

def made_by_qemu_img(binary, d, qsd, record):
    img = f"{d}/qi.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, SIZE)
    for args in (["--add", img, "b1"], ["--add", "-g", "128K", img, "b2"], ["--add", "--disable", img, "b3"]):
        run("qemu-img", "bitmap", *args)
    run("qemu-io", "-c", "write 0 64k", "-c", f"write {MiB} 300k", img)
    run("qemu-img", "bitmap", "--add", img, "b4")
    run("qemu-img", "bitmap", "--merge", "b1", img, "b4")
    run("qemu-img", "bitmap", "--add", "-g", "4K", img, "b5")
    run("qemu-img", "bitmap", "--add", img, "gone")
    run("qemu-io", "-c", f"write {8 * MiB} 4k", img)
    run("qemu-img", "bitmap", "--clear", img, "b1")
    run("qemu-img", "bitmap", "--disable", img, "b2")
    run("qemu-img", "bitmap", "--enable", img, "b3")
    run("qemu-img", "bitmap", "--remove", img, "gone")
    s = Session(binary, d, [disk(img)], record)
    s.query("qemu-img: loaded")
    s.export()
    s.write([(16 * MiB, 100), (20 * MiB, 200 * KiB)])
    s.query("qemu-img: after writes")
    s.stop()
    image_state("qemu-img: stored", record, img, qsd, d, ["b1", "b3", "b4", "b5"])


def made_by_daemon(binary, d, qsd, record):
    img = f"{d}/pd.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", img, SIZE)
    s = Session(binary, d, [disk(img)], record)
    s.ok("add p (persistent)", "block-dirty-bitmap-add", node="disk", name="p", persistent=True)
    s.ok("add q (persistent, disabled, 512)", "block-dirty-bitmap-add", node="disk", name="q", persistent=True,
         disabled=True, granularity=512)
    s.ok("add f (persistent, 1 MiB)", "block-dirty-bitmap-add", node="disk", name="f", persistent=True,
         granularity=MiB)
    s.ok("add t (transient)", "block-dirty-bitmap-add", node="disk", name="t")
    s.query("daemon: added")
    first = [(0, 4 * KiB), (100 * KiB, 1), (MiB + 512, 70 * KiB), (SIZE - 512, 512)]
    s.export()
    s.write(first)
    s.query("daemon: written")
    s.stop()
    state = image_state("daemon: stored", record, img, qsd, d, ["p", "q", "f"])
    if "bits" in state:
        assert state["bits"]["p"] == dirty_ranges(4 * KiB, first), state["bits"]["p"]
        assert state["bits"]["f"] == dirty_ranges(MiB, first), state["bits"]["f"]
        assert state["bits"]["q"] == [], state["bits"]["q"]
    # Loaded again: the bits are the ones stored, and new writes add to them.
    s = Session(binary, d, [disk(img)], record)
    s.query("daemon: reloaded")
    second = [(32 * MiB, 1 * MiB), (64 * KiB, 8 * KiB)]
    s.export()
    s.write(second)
    s.ok("enable q", "block-dirty-bitmap-enable", node="disk", name="q")
    s.write([(48 * MiB + 1000, 3000)])
    s.query("daemon: written again")
    s.unexport()  # (QEMU's export does not share resize)
    s.ok("resize with loaded bitmaps", "block_resize", node_name="disk", size=SIZE + MiB)
    s.stop()
    state = image_state("daemon: stored again", record, img, qsd, d, ["p", "q", "f"])
    if "bits" in state:
        assert state["bits"]["p"] == dirty_ranges(4 * KiB, first + second + [(48 * MiB + 1000, 3000)])
        assert state["bits"]["q"] == dirty_ranges(512, [(48 * MiB + 1000, 3000)])
    return img


def killed(binary, d, qsd, record, img):
    s = Session(binary, d, [disk(img)], record)
    s.export()
    s.write([(40 * MiB, 64 * KiB)])
    s.query("kill: before")
    s.kill()
    image_state("kill: image after SIGKILL", record, img, qsd, d)
    s = Session(binary, d, [disk(img)], record)
    s.query("kill: reopened")
    s.refused("kill: clear inconsistent", "block-dirty-bitmap-clear", node="disk", name="p")
    s.refused("kill: enable inconsistent", "block-dirty-bitmap-enable", node="disk", name="p")
    s.ok("kill: add target", "block-dirty-bitmap-add", node="disk", name="target")
    s.refused("kill: merge inconsistent", "block-dirty-bitmap-merge", node="disk", target="target", bitmaps=["p"])
    s.refused("kill: resize with an inconsistent bitmap", "block_resize", node_name="disk", size=2 * SIZE)
    s.ok("kill: remove inconsistent", "block-dirty-bitmap-remove", node="disk", name="p")
    s.query("kill: after removal")
    record.append(("kill: image after removal", info_bitmaps(img)))
    s.stop()
    image_state("kill: stored", record, img, qsd, d)


def read_only(binary, d, qsd, record):
    img = f"{d}/ro.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, SIZE)
    run("qemu-img", "bitmap", "--add", img, "r1")
    run("qemu-img", "bitmap", "--add", "--disable", img, "r2")
    run("qemu-io", "-c", "write 0 128k", img)
    before = md5(img)
    s = Session(binary, d, [disk(img, read_only=True)], record)
    s.query("read-only: loaded")
    s.refused("read-only: clear", "block-dirty-bitmap-clear", node="disk", name="r1")
    s.refused("read-only: remove", "block-dirty-bitmap-remove", node="disk", name="r1")
    s.ok("read-only: disable", "block-dirty-bitmap-disable", node="disk", name="r1")
    s.ok("read-only: add transient", "block-dirty-bitmap-add", node="disk", name="t")
    s.ok("read-only: merge into transient", "block-dirty-bitmap-merge", node="disk", target="t", bitmaps=["r1"])
    s.query("read-only: after commands")
    s.stop()
    assert md5(img) == before, "a read-only open changed the image"
    image_state("read-only: image", record, img, qsd, d)


def removal(binary, d, qsd, record):
    img = f"{d}/rm.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, SIZE)
    for name in ("a", "b", "c"):
        run("qemu-img", "bitmap", "--add", img, name)
    run("qemu-io", "-c", "write 0 1M", img)
    s = Session(binary, d, [disk(img)], record)
    s.ok("remove: a", "block-dirty-bitmap-remove", node="disk", name="a")
    record.append(("remove: image after a", info_bitmaps(img)))
    s.ok("remove: add persistent n", "block-dirty-bitmap-add", node="disk", name="n", persistent=True)
    s.ok("remove: n (never stored)", "block-dirty-bitmap-remove", node="disk", name="n")
    s.ok("remove: c", "block-dirty-bitmap-remove", node="disk", name="c")
    s.query("remove: left")
    record.append(("remove: image after c", info_bitmaps(img)))
    # In a transaction the image loses the bitmap at prepare; an abort keeps
    # it in memory, and it is stored again at exit.
    s.refused("remove: aborted transaction", "transaction", actions=[
        {"type": "block-dirty-bitmap-remove", "data": {"node": "disk", "name": "b"}},
        {"type": "block-dirty-bitmap-add", "data": {"node": "disk", "name": "b"}}])
    s.query("remove: after the aborted transaction")
    record.append(("remove: image after the aborted transaction", info_bitmaps(img)))
    s.stop()
    image_state("remove: image", record, img, qsd, d)


def reopen(binary, d, qsd, record):
    img = f"{d}/re.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", img, SIZE)
    s = Session(binary, d, [disk(img)], record)
    s.ok("reopen: add", "block-dirty-bitmap-add", node="disk", name="p", persistent=True)
    s.export()
    s.write([(5 * MiB, 64 * KiB)])
    s.unexport()
    opts = disk(img)
    s.ok("reopen: read-only", "blockdev-reopen", options=[dict(opts, **{"read-only": True})])
    s.query("reopen: bitmaps while read-only")
    record.append(("reopen: image while read-only", info_bitmaps(img)))
    s.refused("reopen: clear read-only", "block-dirty-bitmap-clear", node="disk", name="p")
    s.ok("reopen: read-write", "blockdev-reopen", options=[opts])
    s.query("reopen: bitmaps while read-write")
    record.append(("reopen: image while read-write", info_bitmaps(img)))
    s.ok("reopen: clear", "block-dirty-bitmap-clear", node="disk", name="p")
    s.stop()
    image_state("reopen: image", record, img, qsd, d)


def scenarios(binary, d, qsd):
    record = []
    made_by_qemu_img(binary, d, qsd, record)
    img = made_by_daemon(binary, d, qsd, record)
    killed(binary, d, qsd, record, img)
    read_only(binary, d, qsd, record)
    removal(binary, d, qsd, record)
    reopen(binary, d, qsd, record)
    return record


def main():
    binary = sys.argv[1]
    qsd = sys.argv[2] if len(sys.argv) > 2 else shutil.which("qemu-storage-daemon")
    top = tempfile.mkdtemp(prefix="qcow2-bitmaps-")
    try:
        os.mkdir(f"{top}/ioplane")
        ours = scenarios(binary, f"{top}/ioplane", qsd)
        print(f"ok: ioplane: {len(ours)} records")
        if not qsd:
            print("skip: no qemu-storage-daemon to compare with")
        else:
            os.mkdir(f"{top}/qemu")
            theirs = scenarios(qsd, f"{top}/qemu", qsd)
            failures = compare_transcripts(ours, theirs)
            if failures:
                print(f"qcow2_bitmaps: {failures} differences from qemu-storage-daemon")
                sys.exit(1)
            print(f"ok: {len(ours)} records equal to qemu-storage-daemon's")
    finally:
        for dmn in LIVE:
            dmn.kill()
        shutil.rmtree(top, ignore_errors=True)
    print("qcow2_bitmaps: ok")


if __name__ == "__main__":
    main()
