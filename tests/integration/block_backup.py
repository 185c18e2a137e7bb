#!/usr/bin/python3
"""blockdev-backup, the copy-before-write filter and snapshot-access, with a
client writing to the source through NBD the whole time:
 - a full backup (rate-limited, so that the writes land while it copies)
   holds the source exactly as it was when the job started (qemu-img
   compare against a copy taken then), its filter shows under its
   filter-node-name while it runs and is gone after, and `qemu-img check`
   finds the target clean;
 - the same full backup given a bitmap with bitmap-mode on-success leaves in
   the bitmap only what was written while it ran; an incremental backup
   with it into an overlay of the full one copies only the dirty clusters,
   and the chain equals the source when that backup started;
 - a cancelled bitmap backup gives the bitmap back with the writes made
   meanwhile added (nothing lost);
 - a full backup and a new bitmap in one transaction, then an increment with
   that bitmap: the chain equals the source; a transaction whose last
   action fails leaves no job and no filter;
 - image fleecing, both ways QEMU 7.2 has: a sync=none backup into a qcow2
   image whose backing file is the source, exported over NBD; and a
   sync=none backup into an image of its own with a snapshot-access node on
   its filter, exported over NBD: while the writer keeps writing, both
   exports read as the source did at the fleecing point (qemu-img convert
   of the export, compared), and `nbdinfo --map` answers on the
   snapshot-access export;
 - the pull backup flow as management tools run it (test_pull_backup):
   `nbdinfo --map=qemu:dirty-bitmap:` on the fleecing export lists exactly
   the changed extents, and the client that copies only those has the
   source as it was at the fleecing point while a writer kept writing;
 - a target that fails a write: on-target-error=stop pauses the job with
   BLOCK_JOB_ERROR and job-resume finishes it with the target equal to the
   source; report fails the job; both as qemu-storage-daemon 7.2 does;
 - QMP's refusals word for word as qemu-storage-daemon 7.2's (run beside).
Usage: block_backup.py DAEMON. Needs Debian's python3-libnbd, qemu-utils,
qemu-system-common (qemu-storage-daemon) and nbdinfo."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_jobs import Writer, check_clean, node, run, wait_job_end  # noqa: E402
from daemon_run import Daemon, assert_same_as_qsd  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20
SIZE = 64 * MiB


def make_source(d, name):
    path = f"{d}/{name}.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE))
    for i, off in enumerate(range(0, SIZE, 5 * MiB)):
        run("qemu-io", "-f", "qcow2", "-c", f"write -P {0x40 + i} {off} {2 * MiB}", path)
    return path


def make_image(path, backing=None):
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE)]
    if backing:
        cmd += ["-b", backing, "-F", "qcow2"]
    run(*cmd)


def add_qcow2(q, name, path, **extra):
    q.ok("blockdev-add", driver="qcow2", node_name=name, file={"driver": "file", "filename": path}, **extra)


def snapshot_of(q, uri, path):
    """A consistent copy of what the export serves now (the writer paused by
    the caller): qemu-img convert of the export."""
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", uri, path)


def start_writer(sock, name):
    w = Writer(f"nbd+unix:///{name}?socket={sock}")
    w.start()
    time.sleep(0.2)
    return w


def stop_writer(w):
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    return len(w.done)


def test_full_backup(q, d, sock):
    src = make_source(d, "full-src")
    make_image(f"{d}/full-dst.qcow2")
    add_qcow2(q, "fsrc", src)
    add_qcow2(q, "fdst", f"{d}/full-dst.qcow2")
    q.ok("block-export-add", type="nbd", id="ef", node_name="fsrc", writable=True)
    shutil.copy(src, f"{d}/full-model.qcow2")  # nothing written yet: the backup's point in time
    q.ok("blockdev-backup", job_id="fb", device="fsrc", target="fdst", sync="full", speed=16 * MiB,
         filter_node_name="fbfilter")
    w = start_writer(sock, "fsrc")
    filt = node(q, "fbfilter")
    assert filt and filt["drv"] == "copy-before-write", filt
    statuses, final = wait_job_end(q, "fb")
    writes = stop_writer(w)
    assert statuses == ["created", "running", "waiting", "pending", "concluded", "null"], statuses
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert final["data"]["offset"] == final["data"]["len"] == SIZE, final
    assert node(q, "fbfilter") is None, "the filter is gone"
    q.ok("block-export-del", id="ef")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="fdst")
    q.ok("blockdev-del", node_name="fsrc")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", f"{d}/full-model.qcow2", f"{d}/full-dst.qcow2")
    check_clean(f"{d}/full-dst.qcow2")
    check_clean(src)
    print(f"ok: full backup under {writes} writes holds the source as it was at the start")


def bitmap_count(q, node_name, name):
    for n in q.ok("query-named-block-nodes", flat=True):
        if n["node-name"] == node_name:
            for b in n.get("dirty-bitmaps", []):
                if b.get("name") == name:
                    return b
    raise AssertionError(f"no bitmap {name} on {node_name}")


def test_incremental(q, d, sock):
    src = make_source(d, "inc-src")
    make_image(f"{d}/inc-full.qcow2")
    add_qcow2(q, "isrc", src)
    add_qcow2(q, "ifull", f"{d}/inc-full.qcow2")
    q.ok("block-export-add", type="nbd", id="ei", node_name="isrc", writable=True)
    uri = f"nbd+unix:///isrc?socket={sock}"
    q.ok("block-dirty-bitmap-add", node="isrc", name="bm0", granularity=65536)
    # Full backup: on success the bitmap keeps only what was written meanwhile.
    q.ok("blockdev-backup", job_id="ib0", device="isrc", target="ifull", sync="full", bitmap="bm0",
         bitmap_mode="on-success", speed=32 * MiB)
    w = start_writer(sock, "isrc")
    b = bitmap_count(q, "isrc", "bm0")
    assert b["busy"] and b["recording"], b
    statuses, final = wait_job_end(q, "ib0")
    stop_writer(w)
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    b = bitmap_count(q, "isrc", "bm0")
    assert not b["busy"] and b["recording"] and 0 < b["count"] < SIZE, b
    # Writes after the full backup, known extents.
    for off in (3 * MiB, 17 * MiB + 4096, 50 * MiB):
        run("qemu-io", "-f", "raw", "-c", f"write -P 0xee {off} 65536", uri)
    count_before = bitmap_count(q, "isrc", "bm0")["count"]
    snapshot_of(q, uri, f"{d}/inc-model.qcow2")
    make_image(f"{d}/inc-1.qcow2", backing=f"{d}/inc-full.qcow2")
    add_qcow2(q, "inc1", f"{d}/inc-1.qcow2", backing=None)
    q.ok("blockdev-backup", job_id="ib1", device="isrc", target="inc1", sync="incremental", bitmap="bm0")
    w = start_writer(sock, "isrc")
    statuses, final = wait_job_end(q, "ib1")
    stop_writer(w)
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert final["data"]["len"] == count_before, (final, count_before)
    q.ok("block-export-del", id="ei")
    q.wait_event("BLOCK_EXPORT_DELETED")
    for n in ("inc1", "ifull", "isrc"):
        if n == "isrc":
            q.ok("block-dirty-bitmap-remove", node="isrc", name="bm0")
        q.ok("blockdev-del", node_name=n)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", f"{d}/inc-model.qcow2", f"{d}/inc-1.qcow2")
    allocated = sum(e["length"] for e in json.loads(run("qemu-img", "map", "--output=json", f"{d}/inc-1.qcow2").stdout)
                    if e["depth"] == 0 and e["data"])
    assert allocated == count_before, f"the incremental image holds {allocated} bytes, the bitmap had {count_before}"
    check_clean(f"{d}/inc-1.qcow2")
    print(f"ok: full + incremental backup: the increment holds exactly the {count_before} dirty bytes")


def test_cancel_gives_bitmap_back(q, d, sock):
    src = make_source(d, "can-src")
    make_image(f"{d}/can-dst.qcow2")
    add_qcow2(q, "csrc", src)
    add_qcow2(q, "cdst", f"{d}/can-dst.qcow2")
    q.ok("block-export-add", type="nbd", id="ec", node_name="csrc", writable=True)
    q.ok("block-dirty-bitmap-add", node="csrc", name="bm", granularity=65536)
    uri = f"nbd+unix:///csrc?socket={sock}"
    run("qemu-io", "-f", "raw", "-c", "write -P 1 0 1M", uri)
    assert bitmap_count(q, "csrc", "bm")["count"] == MiB
    q.ok("blockdev-backup", job_id="cb", device="csrc", target="cdst", sync="bitmap", bitmap="bm",
         bitmap_mode="on-success", speed=1)
    run("qemu-io", "-f", "raw", "-c", f"write -P 2 {8 * MiB} 1M", uri)
    q.ok("block-job-cancel", device="cb", force=True)
    statuses, final = wait_job_end(q, "cb")
    assert final["event"] == "BLOCK_JOB_CANCELLED", final
    b = bitmap_count(q, "csrc", "bm")
    assert b["count"] == 2 * MiB and not b["busy"] and b["recording"], b
    q.ok("block-export-del", id="ec")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("block-dirty-bitmap-remove", node="csrc", name="bm")
    q.ok("blockdev-del", node_name="cdst")
    q.ok("blockdev-del", node_name="csrc")
    print("ok: a cancelled bitmap backup gives the bitmap back with the writes made meanwhile")


def test_fleecing(q, d, sock, snapshot_access):
    tag = "fa" if snapshot_access else "fb"
    src = make_source(d, f"{tag}-src")
    add_qcow2(q, f"{tag}src", src)
    q.ok("block-export-add", type="nbd", id=f"{tag}e", node_name=f"{tag}src", writable=True)
    uri = f"nbd+unix:///{tag}src?socket={sock}"
    snapshot_of(q, uri, f"{d}/{tag}-model.qcow2")
    if snapshot_access:
        make_image(f"{d}/{tag}-tmp.qcow2")
        add_qcow2(q, f"{tag}tmp", f"{d}/{tag}-tmp.qcow2")
    else:
        make_image(f"{d}/{tag}-tmp.qcow2", backing=src)
        add_qcow2(q, f"{tag}tmp", f"{d}/{tag}-tmp.qcow2", backing=f"{tag}src")
    q.ok("blockdev-backup", job_id=f"{tag}j", device=f"{tag}src", target=f"{tag}tmp", sync="none",
         filter_node_name=f"{tag}cbw")
    fleece = f"{tag}tmp"
    if snapshot_access:
        q.ok("blockdev-add", driver="snapshot-access", node_name=f"{tag}acc", file=f"{tag}cbw")
        fleece = f"{tag}acc"
    q.ok("block-export-add", type="nbd", id=f"{tag}x", node_name=fleece, writable=False)
    w = start_writer(sock, f"{tag}src")
    time.sleep(0.5)
    fleece_uri = f"nbd+unix:///{fleece}?socket={sock}"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", fleece_uri, f"{d}/{tag}-pulled.qcow2")
    if snapshot_access:
        m = run("nbdinfo", "--map", fleece_uri).stdout
        assert "data" in m, m
    writes = stop_writer(w)
    assert writes > 0
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", f"{d}/{tag}-model.qcow2", f"{d}/{tag}-pulled.qcow2")
    q.ok("block-export-del", id=f"{tag}x")
    q.wait_event("BLOCK_EXPORT_DELETED")
    if snapshot_access:
        q.ok("blockdev-del", node_name=f"{tag}acc")
    q.ok("block-job-cancel", device=f"{tag}j")
    statuses, final = wait_job_end(q, f"{tag}j")
    assert final["event"] == "BLOCK_JOB_CANCELLED", final
    assert node(q, f"{tag}cbw") is None
    q.ok("block-export-del", id=f"{tag}e")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name=f"{tag}tmp")
    q.ok("blockdev-del", node_name=f"{tag}src")
    check_clean(src)
    how = "snapshot-access over the filter" if snapshot_access else "an overlay of the source"
    print(f"ok: fleecing through {how}: the export read as the fleecing point under {writes} writes")


def test_transaction(q, d, sock):
    """A full backup and a new bitmap in one transaction (the same point in
    time), then an increment with that bitmap into an overlay of the full
    backup: the chain equals the source; and a transaction whose last
    action fails leaves no job and no filter behind."""
    src = make_source(d, "txn-src")
    make_image(f"{d}/txn-full.qcow2")
    add_qcow2(q, "tsrc", src)
    add_qcow2(q, "tfull", f"{d}/txn-full.qcow2")
    q.ok("block-export-add", type="nbd", id="et", node_name="tsrc", writable=True)
    uri = f"nbd+unix:///tsrc?socket={sock}"
    w = start_writer(sock, "tsrc")

    def act(kind, **data):
        return {"type": kind, "data": {k.replace("_", "-"): v for k, v in data.items()}}
    e = q.error("transaction", actions=[act("blockdev-backup", job_id="tx0", device="tsrc", target="tfull",
                                            sync="full", filter_node_name="txf"),
                                        act("abort")])
    assert e["desc"] == "Transaction aborted using Abort action", e
    statuses = [ev["data"]["status"] for ev in q.events if ev["event"] == "JOB_STATUS_CHANGE"]
    assert statuses == ["created", "aborting", "concluded", "null"], statuses
    q.events.clear()
    assert q.ok("query-block-jobs") == [] and node(q, "txf") is None, "nothing left of the aborted backup"
    q.ok("transaction", actions=[act("block-dirty-bitmap-add", node="tsrc", name="since-full", granularity=65536),
                                 act("blockdev-backup", job_id="tx1", device="tsrc", target="tfull", sync="full",
                                     speed=32 * MiB)])
    statuses, final = wait_job_end(q, "tx1")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    writes = stop_writer(w)
    snapshot_of(q, uri, f"{d}/txn-model.qcow2")
    make_image(f"{d}/txn-inc.qcow2", backing=f"{d}/txn-full.qcow2")
    add_qcow2(q, "tinc", f"{d}/txn-inc.qcow2", backing=None)
    q.ok("blockdev-backup", job_id="tx2", device="tsrc", target="tinc", sync="incremental", bitmap="since-full")
    statuses, final = wait_job_end(q, "tx2")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    q.ok("block-export-del", id="et")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("block-dirty-bitmap-remove", node="tsrc", name="since-full")
    for n in ("tinc", "tfull", "tsrc"):
        q.ok("blockdev-del", node_name=n)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", f"{d}/txn-model.qcow2", f"{d}/txn-inc.qcow2")
    print(f"ok: transaction of a full backup and a bitmap under {writes} writes, then an increment: the chain "
          "equals the source; an aborted transaction leaves no job")


def nbd_map(uri, context):
    """nbdinfo --map's extents of `context` whose type is not 0, as
    (offset, length) with neighbours merged."""
    out = run("nbdinfo", "--json", f"--map={context}", uri).stdout
    extents = []
    for e in json.loads(out):
        if e["type"] != 0:
            if extents and extents[-1][0] + extents[-1][1] == e["offset"]:
                extents[-1] = (extents[-1][0], extents[-1][1] + e["length"])
            else:
                extents.append((e["offset"], e["length"]))
    return extents


def test_pull_backup(q, d, sock):
    """The pull backup flow of oVirt and KubeVirt: a full backup and a bitmap
    in one transaction; known writes; at the fleecing point, in one
    transaction, a bitmap for the next round, the first one disabled and a
    sync=none backup into an overlay of the source; the overlay exported
    read-only with the bitmap; while a writer keeps writing to the source,
    the client reads the bitmap's extents with nbdinfo --map, copies only
    those into its copy of the full backup, and has the source as it was at
    the fleecing point."""
    import nbd
    src = make_source(d, "pull-src")
    make_image(f"{d}/pull-full.qcow2")
    add_qcow2(q, "psrc", src)
    add_qcow2(q, "pfull", f"{d}/pull-full.qcow2")
    q.ok("block-export-add", type="nbd", id="ep", node_name="psrc", writable=True)
    uri = f"nbd+unix:///psrc?socket={sock}"

    def act(kind, **data):
        return {"type": kind, "data": {k.replace("_", "-"): v for k, v in data.items()}}
    q.ok("transaction", actions=[act("block-dirty-bitmap-add", node="psrc", name="b0", granularity=65536),
                                 act("blockdev-backup", job_id="pf", device="psrc", target="pfull", sync="full")])
    statuses, final = wait_job_end(q, "pf")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    # The changes since the full backup: known extents (the bitmap rounds
    # them out to 64 KiB).
    changes = [(1 * MiB, 4096), (9 * MiB + 65536 * 3 + 100, 70000), (40 * MiB, 2 * MiB), (SIZE - 512, 512)]
    for off, length in changes:
        run("qemu-io", "-f", "raw", "-c", f"write -P 0xc7 {off} {length}", uri)
    expected = []
    for off, length in changes:
        start, end = off // 65536 * 65536, min(SIZE, (off + length + 65535) // 65536 * 65536)
        if expected and expected[-1][0] + expected[-1][1] == start:
            expected[-1] = (expected[-1][0], end - expected[-1][0])
        else:
            expected.append((start, end - start))
    snapshot_of(q, uri, f"{d}/pull-model.qcow2")
    run("qemu-img", "convert", "-O", "raw", f"{d}/pull-model.qcow2", f"{d}/pull-model.raw")
    make_image(f"{d}/pull-tmp.qcow2", backing=src)
    add_qcow2(q, "ptmp", f"{d}/pull-tmp.qcow2", backing="psrc")
    q.ok("transaction", actions=[act("block-dirty-bitmap-add", node="psrc", name="b1", granularity=65536),
                                 act("block-dirty-bitmap-disable", node="psrc", name="b0"),
                                 act("blockdev-backup", job_id="pl", device="psrc", target="ptmp", sync="none")])
    q.ok("block-export-add", type="nbd", id="epl", node_name="ptmp", writable=False, bitmaps=["b0"])
    w = start_writer(sock, "psrc")
    fleece = f"nbd+unix:///ptmp?socket={sock}"
    dirty = nbd_map(fleece, "qemu:dirty-bitmap:b0")
    assert dirty == expected, f"the bitmap lists {dirty}, the writes were {expected}"
    run("qemu-img", "convert", "-O", "raw", f"{d}/pull-full.qcow2", f"{d}/pull-restored.raw")
    h = nbd.NBD()
    h.add_meta_context("qemu:dirty-bitmap:b0")
    h.connect_uri(fleece)
    copied = 0
    with open(f"{d}/pull-restored.raw", "r+b") as f:
        for off, length in dirty:
            f.seek(off)
            f.write(h.pread(length, off))
            copied += length
    h.shutdown()
    writes = stop_writer(w)
    with open(f"{d}/pull-restored.raw", "rb") as a, open(f"{d}/pull-model.raw", "rb") as b:
        ra, rb = a.read(), b.read()
        bad = [i for i in range(0, SIZE, 4096) if ra[i:i + 4096] != rb[i:i + 4096]]
        assert not bad, (f"the full backup plus the increment differs from the source at the fleecing point in "
                         f"{len(bad)} blocks, first at {bad[:5]}: {ra[bad[0]]:#x} != {rb[bad[0]]:#x}")
    b1 = bitmap_count(q, "psrc", "b1")
    assert b1["recording"] and b1["count"] > 0, b1  # the next round's bitmap saw the writer
    q.ok("block-export-del", id="epl")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("block-job-cancel", device="pl")
    statuses, final = wait_job_end(q, "pl")
    assert final["event"] == "BLOCK_JOB_CANCELLED", final
    q.ok("block-export-del", id="ep")
    q.wait_event("BLOCK_EXPORT_DELETED")
    for b in ("b0", "b1"):
        q.ok("block-dirty-bitmap-remove", node="psrc", name=b)
    for n in ("ptmp", "pfull", "psrc"):
        q.ok("blockdev-del", node_name=n)
    check_clean(src)
    print(f"ok: pull backup: nbdinfo --map listed exactly the {len(dirty)} changed extents, the client copied "
          f"{copied} bytes and has the fleecing point, under {writes} writes meanwhile")


# Refusals, run against both daemons: (arguments, what they are about).
REFUSALS = [
    (dict(job_id="r", device="rsrc", target="rsrc", sync="full"), "same node"),
    (dict(job_id="r", device="rsrc", target="rsmall", sync="full"), "sizes"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="bitmap"), "bitmap missing"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="incremental"), "incremental without bitmap"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="incremental", bitmap="b", bitmap_mode="never"), "mode"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", bitmap="nope", bitmap_mode="never"), "unknown"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", bitmap="b"), "no mode"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="none", bitmap="b", bitmap_mode="always"), "none"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", bitmap="b", bitmap_mode="never"), "never+full"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", bitmap_mode="never"), "mode alone"),
    (dict(job_id="r", device="nosuch", target="rdst", sync="full"), "no device"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="sideways"), "bad sync"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", x_perf={"max-workers": 0}), "max-workers"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", filter_node_name="1bad"), "filter name"),
    (dict(job_id="r", device="rsrc", target="rdst", sync="full", filter_node_name="rdst"), "filter name taken"),
]


def refusals(binary, d):
    qmp_sock = f"{d}/qmp.sock"
    args = ["--blockdev", f"driver=null-co,node-name=rsrc,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=rdst,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=rsmall,size={SIZE // 2}",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"]
    out = []
    with Daemon(binary, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        q.ok("block-dirty-bitmap-add", node="rsrc", name="b")
        for a, _ in REFUSALS:
            out.append(q.error("blockdev-backup", **a)["desc"])
        dmn.stop()
    return out



def target_errors(binary, d):
    """A backup whose target fails one write (blkdebug, once): with
    on-target-error=stop the job pauses with BLOCK_JOB_ERROR, and after
    job-resume completes with the target equal to the source; with report
    it fails. What each daemon says and does, per case."""
    qmp_sock = f"{d}/qmp.sock"
    src = make_source(d, "err-src")
    out = []
    with Daemon(binary, ["--object", "iothread,id=io0",
                         "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"],
                f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        add_qcow2(q, "esrc", src)
        # The job's steps run there; its error policy decides in the main thread.
        q.ok("x-blockdev-set-iothread", node_name="esrc", iothread="io0")
        for policy in ("stop", "report"):
            dst = f"{d}/err-dst-{policy}.raw"
            run("qemu-img", "create", "-q", "-f", "raw", dst, str(SIZE))
            # A write touching 1 MiB (inside the source's first 2 MiB of data) fails once.
            q.ok("blockdev-add", driver="raw", node_name=f"edst-{policy}",
                 file={"driver": "blkdebug", "image": {"driver": "file", "filename": dst},
                       "inject-error": [{"event": "write_aio", "sector": 2048, "once": True}]})
            q.ok("blockdev-backup", job_id=f"e{policy}", device="esrc", target=f"edst-{policy}", sync="full",
                 on_target_error=policy)
            seen = []
            if policy == "stop":
                e = q.wait_event("BLOCK_JOB_ERROR", timeout=30)
                seen.append(("error event", e["data"]["operation"], e["data"]["action"]))
                while True:  # the job pauses after the event
                    job = [j for j in q.ok("query-jobs") if j["id"] == "estop"][0]
                    if job["status"] != "running":
                        break
                    time.sleep(0.05)
                seen.append(("status", job["status"]))
                q.ok("job-resume", id="estop")
            statuses, final = wait_job_end(q, f"e{policy}")
            seen.append(("end", final["event"], final["data"].get("error")))
            q.ok("blockdev-del", node_name=f"edst-{policy}")
            same = subprocess.run(["qemu-img", "compare", "-q", "-U", "-f", "qcow2", "-F", "raw", src, dst]).returncode
            seen.append(("target equals source", same == 0))
            if policy == "stop":
                assert seen[0] == ("error event", "write", "stop") and seen[-2:] == [
                    ("end", "BLOCK_JOB_COMPLETED", None), ("target equals source", True)], seen
            else:
                assert seen[0][:2] == ("end", "BLOCK_JOB_COMPLETED") and seen[0][2], seen
            out.append(seen)
        dmn.stop()
    return out


TARGET_ERRORS = [(None, "on-target-error=stop, then job-resume"), (None, "on-target-error=report")]


def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="block-backup-")
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--object", "iothread,id=io0",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        test_full_backup(q, d, nbd_sock)
        test_incremental(q, d, nbd_sock)
        test_cancel_gives_bitmap_back(q, d, nbd_sock)
        test_transaction(q, d, nbd_sock)
        test_pull_backup(q, d, nbd_sock)
        test_fleecing(q, d, nbd_sock, snapshot_access=False)
        test_fleecing(q, d, nbd_sock, snapshot_access=True)
        dmn.stop()
    d2 = tempfile.mkdtemp(prefix="block-backup-refusals-")
    assert_same_as_qsd(refusals, daemon, d2, REFUSALS)
    shutil.rmtree(d2, ignore_errors=True)
    d3 = tempfile.mkdtemp(prefix="block-backup-errors-")
    assert_same_as_qsd(target_errors, daemon, d3, TARGET_ERRORS, "target error cases")
    shutil.rmtree(d3, ignore_errors=True)
    print("block_backup: ok")


if __name__ == "__main__":
    main()
