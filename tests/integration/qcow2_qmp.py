#!/usr/bin/python3
"""qcow2 image operations over QMP, checked with QEMU's tools:
 - blockdev-create (a job: JOB_STATUS_CHANGE created..concluded, query-jobs,
   job-dismiss) of files and qcow2 images with each option (v2/v3, cluster
   sizes, refcount widths, lazy refcounts, extended L2, zstd, a backing file,
   preallocation off/metadata/falloc/full): `qemu-img check` clean and
   `qemu-img info` showing what was asked; a bad option ends the job with
   an error;
 - blockdev-snapshot under I/O: a writer keeps writing through the NBD
   export while a new overlay is installed; afterwards the base holds only
   what was written before, the chain holds everything, both check clean;
 - blockdev-snapshot-sync: the overlay file made and installed under the
   export; its header names the old image as backing file;
 - block_resize of a qcow2 node: a new NBD client sees the new size, data
   kept, the image checks clean;
 - the errors QEMU gives (overlay with a backing image, overlay in use);
 - a copy-on-read filter over an exported overlay returns the base's data and
   copies it up;
 - blockdev-reopen read-write and back read-only keeps what was written.
Usage: qcow2_qmp.py DAEMON. Needs Debian's python3-libnbd."""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20


def run(*cmd, ok=(0,)):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode in ok, f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def info(path):
    return json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)


def export(q, export_id, node, name):
    """A writable NBD export (built by hand: "name" is also Qmp.ok's own)."""
    q.send_raw(json.dumps({"execute": "block-export-add",
                           "arguments": {"type": "nbd", "id": export_id, "node-name": node, "name": name,
                                         "writable": True}}).encode())
    r = q.reply()
    assert "return" in r, r


def check_clean(path):
    r = json.loads(run("qemu-img", "check", "-U", "--output=json", path).stdout)
    assert not r.get("corruptions") and not r.get("leaks") and not r.get("check-errors"), f"{path}: {r}"


def create(q, job, options):
    """blockdev-create as a job; returns its events' statuses and its final
    JobInfo (then dismissed)."""
    q.ok("blockdev-create", job_id=job, options=options)
    statuses = []
    while not statuses or statuses[-1] != "concluded":
        e = q.wait_event("JOB_STATUS_CHANGE")
        assert e["data"]["id"] == job, e
        statuses.append(e["data"]["status"])
    jobs = [j for j in q.ok("query-jobs") if j["id"] == job]
    assert len(jobs) == 1 and jobs[0]["status"] == "concluded" and jobs[0]["type"] == "create", jobs
    q.ok("job-dismiss", id=job)
    assert q.wait_event("JOB_STATUS_CHANGE")["data"]["status"] == "null"
    assert not [j for j in q.ok("query-jobs") if j["id"] == job]
    return statuses, jobs[0]


def make_qcow2(q, d, name, **opts):
    path = f"{d}/{name}.qcow2"
    statuses, job = create(q, f"f-{name}", {"driver": "file", "filename": path, "size": 0})
    assert statuses == ["created", "running", "waiting", "pending", "concluded"], statuses
    options = {"driver": "qcow2", "file": {"driver": "file", "filename": path}, "size": 64 * MiB}
    options.update(opts)
    statuses, job = create(q, f"q-{name}", options)
    assert "error" not in job, job
    return path


def test_create(q, d):
    cases = [
        ("default", {}, {"cluster-size": 65536, "compat": "1.1", "refcount-bits": 16}),
        ("v2", {"version": "v2"}, {"compat": "0.10"}),
        ("small", {"cluster-size": 512, "refcount-bits": 64}, {"cluster-size": 512, "refcount-bits": 64}),
        ("big", {"cluster-size": 2 * MiB, "refcount-bits": 1}, {"cluster-size": 2 * MiB, "refcount-bits": 1}),
        ("ext", {"extended-l2": True, "cluster-size": 128 * 1024}, {"extended-l2": True}),
        ("zstd", {"compression-type": "zstd", "lazy-refcounts": True},
         {"compression-type": "zstd", "lazy-refcounts": True}),
        ("meta", {"preallocation": "metadata"}, {}),
        ("falloc", {"preallocation": "falloc", "size": 8 * MiB}, {}),
        ("full", {"preallocation": "full", "size": 8 * MiB}, {}),
    ]
    for name, opts, want in cases:
        path = make_qcow2(q, d, name, **opts)
        check_clean(path)
        i = info(path)
        assert i["format"] == "qcow2" and i["virtual-size"] == opts.get("size", 64 * MiB), i
        got = dict(i["format-specific"]["data"], **{"cluster-size": i["cluster-size"]})
        for k, v in want.items():
            assert got.get(k) == v, f"{name}: {k}={got.get(k)}, wanted {v}: {i}"
        if opts.get("preallocation") in ("falloc", "full"):
            assert i["actual-size"] >= 8 * MiB, f"{name}: {i['actual-size']} bytes allocated"
        if opts.get("preallocation") == "metadata":
            m = json.loads(run("qemu-img", "map", "--output=json", path).stdout)
            assert all(e["data"] and "offset" in e for e in m), f"{name}: not preallocated: {m[:3]}"
        print(f"ok: blockdev-create qcow2 {name}")
    # A base and an overlay naming it.
    base = make_qcow2(q, d, "base")
    ov = make_qcow2(q, d, "ov", **{"backing-file": base, "backing-fmt": "qcow2"})
    i = info(ov)
    assert i["backing-filename"] == base and i["backing-filename-format"] == "qcow2", i
    print("ok: blockdev-create with a backing file")
    # Bad options end the job with QEMU's error.
    q.ok("blockdev-create", job_id="bad", options={"driver": "qcow2", "file": {"driver": "file", "filename": base},
                                                   "size": MiB, "cluster-size": 1000})
    while q.wait_event("JOB_STATUS_CHANGE")["data"]["status"] != "concluded":
        pass
    job = [j for j in q.ok("query-jobs") if j["id"] == "bad"][0]
    assert "power of two" in job.get("error", ""), job
    q.ok("job-dismiss", id="bad")
    q.wait_event("JOB_STATUS_CHANGE")
    assert q.error("job-dismiss", id="nope")["desc"] == "Job not found"
    check_clean(base)  # the failed job did not touch it
    print("ok: blockdev-create errors: " + job["error"])


class Writer(threading.Thread):
    """Writes 4 KiB blocks, each with its sequence number, in a loop over
    the first 16 MiB until told to stop; records when each completed."""

    def __init__(self, uri):
        super().__init__()
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.stop = threading.Event()
        self.done = []  # (seq, offset)
        self.error = None

    def run(self):
        seq = 0
        try:
            while not self.stop.is_set():
                off = (seq * 37 % 4096) * 4096
                self.h.pwrite(seq.to_bytes(8, "little") * 512, off)
                self.done.append((seq, off))
                seq += 1
            self.h.flush()
            self.h.shutdown()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e


def expected(done):
    """offset -> the last seq written there."""
    out = {}
    for seq, off in done:
        out[off] = seq
    return out


def read_blocks(path, fmt="qcow2"):
    raw = path + ".raw"
    run("qemu-img", "convert", "-U", "-f", fmt, "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        data = f.read()
    os.unlink(raw)
    return data


def verify(data, want, label):
    for off, seq in want.items():
        got = int.from_bytes(data[off:off + 8], "little")
        assert data[off:off + 4096] == seq.to_bytes(8, "little") * 512, f"{label}: block {off}: {got}, wanted {seq}"


def test_snapshot_under_io(q, d, sock):
    base = make_qcow2(q, d, "live")
    ov = make_qcow2(q, d, "live-ov", **{"backing-file": base, "backing-fmt": "qcow2"})
    q.ok("blockdev-add", driver="qcow2", node_name="live", file={"driver": "file", "filename": base})
    export(q, "elive", "live", "live")
    q.ok("blockdev-add", driver="qcow2", node_name="liveov", file={"driver": "file", "filename": ov}, backing=None)
    w = Writer(f"nbd+unix:///live?socket={sock}")
    w.start()
    time.sleep(0.5)
    # What completed before the command was sent; a write that completes
    # after the command's reply but before the count is taken went to the
    # overlay (counting after the reply flagged such a write as lost from
    # the base, 1 run in about 20 under TSan).
    n_at_snapshot = len(w.done)
    q.ok("blockdev-snapshot", node="live", overlay="liveov")
    time.sleep(0.5)
    # Errors: the overlay has a backing image now, and is in use.
    e = q.error("blockdev-snapshot", node="live", overlay="liveov")
    assert "in use" in e["desc"] or "backing" in e["desc"], e
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    nodes = {n["node-name"]: n for n in q.ok("query-named-block-nodes")}
    assert nodes["liveov"]["backing_file_depth"] == 1, nodes["liveov"]
    q.ok("block-export-del", id="elive", mode="hard")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="liveov")
    q.ok("blockdev-del", node_name="live")
    check_clean(base)
    check_clean(ov)
    # Writes that completed before the command was sent are in the base
    # (they were acknowledged on it); the chain has every write.
    verify(read_blocks(ov), expected(w.done), "overlay chain")
    base_data = read_blocks(base)
    before = expected(w.done[:n_at_snapshot])
    after_offsets = {off for _, off in w.done[n_at_snapshot:]}
    for off, seq in before.items():
        if off not in after_offsets:
            verify(base_data, {off: seq}, "base")
    print(f"ok: blockdev-snapshot under I/O ({len(w.done)} writes, {n_at_snapshot} before the snapshot)")


def test_snapshot_sync(q, d, sock):
    base = make_qcow2(q, d, "sync")
    q.ok("blockdev-add", driver="qcow2", node_name="sync", file={"driver": "file", "filename": base})
    export(q, "esync", "sync", "sync")
    w = Writer(f"nbd+unix:///sync?socket={sock}")
    w.start()
    time.sleep(0.3)
    snap = f"{d}/sync-snap.qcow2"
    q.ok("blockdev-snapshot-sync", node_name="sync", snapshot_file=snap, snapshot_node_name="syncsnap")
    time.sleep(0.3)
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    q.ok("block-export-del", id="esync", mode="hard")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="syncsnap")
    q.ok("blockdev-del", node_name="sync")
    i = info(snap)
    assert i["backing-filename"] == base, i
    check_clean(snap)
    check_clean(base)
    verify(read_blocks(snap), expected(w.done), "snapshot-sync chain")
    print(f"ok: blockdev-snapshot-sync under I/O ({len(w.done)} writes)")


def test_resize(q, d, sock):
    path = make_qcow2(q, d, "grow", **{"size": 1 * MiB, "cluster-size": 4096})
    q.ok("blockdev-add", driver="qcow2", node_name="grow", file={"driver": "file", "filename": path})
    export(q, "egrow", "grow", "grow")
    uri = f"nbd+unix:///grow?socket={sock}"
    run("qemu-io", "-f", "raw", uri, "-c", "write -P 0x33 0 1M")
    # Grows past what the first L1 table covers (4k clusters: 2 MiB per entry).
    q.ok("block_resize", node_name="grow", size=300 * MiB)
    assert int(run("nbdinfo", "--size", uri).stdout) == 300 * MiB
    run("qemu-io", "-f", "raw", uri, "-c", "write -P 0x44 299M 1M", "-c", "read -P 0x33 0 1M")
    e = q.error("block_resize", node_name="grow", size=MiB)
    assert "shrink" in e["desc"], e
    q.ok("block-export-del", id="egrow", mode="hard")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="grow")
    check_clean(path)
    assert info(path)["virtual-size"] == 300 * MiB
    run("qemu-io", "-f", "qcow2", path, "-c", "read -P 0x33 0 1M", "-c", "read -P 0x44 299M 1M",
        "-c", "read -P 0 1M 298M")
    print("ok: block_resize 1 MiB -> 300 MiB (new L1 table), shrinking refused")


def test_copy_on_read(q, d, sock):
    """A copy-on-read filter over an overlay, exported: reads return the
    base's data (a filter over an unallocated range is not a hole) and copy
    it into the overlay."""
    base = f"{d}/cor-base.raw"
    with open(base, "wb") as f:
        f.write(b"\x61" * (4 * MiB))
    top = make_qcow2(q, d, "cor-top", **{"size": 4 * MiB, "backing-file": base, "backing-fmt": "raw"})
    q.ok("blockdev-add", driver="qcow2", node_name="cortop", file={"driver": "file", "filename": top})
    q.ok("blockdev-add", driver="copy-on-read", node_name="cor", file="cortop")
    export(q, "ecor", "cor", "cor")
    out = f"{d}/cor.out"
    run("nbdcopy", f"nbd+unix:///cor?socket={sock}", out)
    with open(out, "rb") as f:
        assert f.read() == b"\x61" * (4 * MiB), "the filter did not return the base's data"
    q.ok("block-export-del", id="ecor", mode="hard")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="cor")
    q.ok("blockdev-del", node_name="cortop")
    check_clean(top)
    m = json.loads(run("qemu-img", "map", "--output=json", top).stdout)
    assert all(e["depth"] == 0 and e["data"] for e in m), f"not copied into the overlay: {m}"
    print("ok: copy-on-read over a qcow2 overlay: the base's data read and copied up")


def test_reopen(q, d, sock):
    """A qcow2 node opened read-only, made writable with blockdev-reopen,
    written through an export and made read-only again: what was written is
    in the image (its metadata written back at the second reopen), which
    checks clean; the same after a last write and blockdev-del."""
    path = f"{d}/reopen.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(16 * MiB))
    file = {"driver": "file", "filename": path, "node-name": "rof"}
    q.ok("blockdev-add", driver="qcow2", node_name="ro", read_only=True, file=file)
    for step, (read_only, byte) in enumerate(((False, 0x5a), (True, None), (False, 0x6b))):
        q.ok("blockdev-reopen", options=[{"driver": "qcow2", "node-name": "ro", "read-only": read_only,
                                          "file": "rof"}])
        if byte is None:
            check_clean(path)
            run("qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -P 0x5a {MiB} {MiB}", path)
            continue
        export(q, f"ero{step}", "ro", "ro")
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///ro?socket={sock}")
        h.pwrite(bytes([byte]) * MiB, (1 + 2 * step) * MiB)
        h.flush()
        h.shutdown()
        q.ok("block-export-del", id=f"ero{step}")
        q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="ro")
    check_clean(path)
    run("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0x5a {MiB} {MiB}", "-c", f"read -P 0x6b {5 * MiB} {MiB}", path)
    print("ok: blockdev-reopen of a qcow2 node read-write and back keeps what was written")


def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="qcow2-qmp-")
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        test_create(q, d)
        test_snapshot_under_io(q, d, nbd_sock)
        test_snapshot_sync(q, d, nbd_sock)
        test_resize(q, d, nbd_sock)
        test_copy_on_read(q, d, nbd_sock)
        test_reopen(q, d, nbd_sock)
        dmn.stop()
    print("qcow2_qmp: ok")


if __name__ == "__main__":
    main()
