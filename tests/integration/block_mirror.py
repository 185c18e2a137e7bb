#!/usr/bin/python3
"""blockdev-mirror's mirror_top filter, copy-mode write-blocking and
replaces, with a client writing to the source through NBD:
 - write-blocking (QEMU's active mirror) of a qcow2 source into a raw file
   while the writer writes until the job is ready; then every write the
   export acknowledges is in the target file already — a pattern written
   through the export (qemu-io, and NBD writes and write-zeroes at
   unaligned offsets) is read back from the target file at once, without
   a sleep, and the whole source equals the target at once, the job still
   running. The filter shows under its filter-node-name with driver
   mirror_top while the job runs and is gone after; complete pivots (the
   export serves the target);
 - a target write of a write-blocking mirror that fails (blkdebug): the
   guest's write succeeds, BLOCK_JOB_ERROR tells, and with on-target-error
   ignore the range is copied again (the target gets it); with report the
   job fails and the filter goes;
 - replaces: a mirror of a blkdebug filter that replaces the node below it:
   after complete the filter sits on the target and the old node is free;
 - query-block-exports of an NBD and a vhost-user-blk export of the mirrored
   node: both on the target after complete, unmoved by a cancel when ready,
   as qemu-storage-daemon 7.2 reports them;
 - QMP's refusals word for word as qemu-storage-daemon 7.2's (run beside).
Usage: block_mirror.py DAEMON. Needs Debian's python3-libnbd, qemu-utils and
qemu-system-common (qemu-storage-daemon)."""
import os
import random
import shutil
import sys
import tempfile
import time

import nbd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_jobs import SIZE, Writer, node, run, wait_event_for, wait_job_end  # noqa: E402
from daemon_run import Daemon, assert_same_as_qsd  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20


def make_source(d, name):
    path = f"{d}/{name}.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE))
    for i, off in enumerate(range(0, SIZE - 3 * MiB, 7 * MiB)):
        run("qemu-io", "-f", "qcow2", "-c", f"write -P {0x40 + i} {off} {3 * MiB}", path)
    return path


def make_raw(path):
    with open(path, "wb") as f:
        f.truncate(SIZE)


def read_file(path, offset, length):
    with open(path, "rb") as f:
        return os.pread(f.fileno(), length, offset)


def read_export(h):
    return b"".join(h.pread(4 * MiB, off) for off in range(0, SIZE, 4 * MiB))


def first_difference(a, b):
    for i in range(0, len(a), 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            return i
    return None


def test_write_blocking(q, d, sock):
    src = make_source(d, "w-src")
    dst = f"{d}/w-dst.raw"
    make_raw(dst)
    q.ok("blockdev-add", driver="qcow2", node_name="wsrc", file={"driver": "file", "filename": src})
    q.ok("blockdev-add", driver="file", node_name="wdst", filename=dst)
    q.ok("block-export-add", type="nbd", id="ew", node_name="wsrc", writable=True)
    uri = f"nbd+unix:///wsrc?socket={sock}"
    w = Writer(uri)
    w.start()
    # Slow enough that writes land while it copies, before it is ready.
    q.ok("blockdev-mirror", job_id="wj", device="wsrc", target="wdst", sync="full", copy_mode="write-blocking",
         filter_node_name="wfilter", speed=64 * MiB)
    filt = node(q, "wfilter")
    assert filt and filt["drv"] == "mirror_top", filt
    wait_event_for(q, "BLOCK_JOB_READY", "wj")
    # The writer stops (it would overwrite the patterns below at times).
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    h = nbd.NBD()
    h.connect_uri(uri)
    rnd = random.Random(7)
    # An acknowledged write is in the target: qemu-io through the export...
    run("qemu-io", "-f", "raw", "-c", f"write -P 0xa5 {5 * MiB + 512} 7000", uri)
    assert read_file(dst, 5 * MiB + 512, 7000) == b"\xa5" * 7000, "qemu-io's write is not in the target"
    # ... and NBD writes and write-zeroes anywhere, unaligned too.
    for i in range(200):
        offset = rnd.randrange(0, SIZE - 70000)
        length = rnd.randrange(1, 70000)
        if i % 5 == 4:
            h.zero(length, offset)
            want = b"\0" * length
        else:
            want = bytes([i % 251 + 1]) * length
            h.pwrite(want, offset)
        got = read_file(dst, offset, length)
        assert got == want, f"write {i} at {offset}+{length} is not in the target"
    # Everything acknowledged: source and target equal now, the job running.
    source, target = read_export(h), read_file(dst, 0, SIZE)
    diff = first_difference(source, target)
    assert diff is None, f"the target lags at {diff}"
    job = q.ok("query-block-jobs")[0]
    assert job["status"] == "ready" and job["device"] == "wj", job
    q.ok("block-job-complete", device="wj")
    statuses, final = wait_job_end(q, "wj")
    assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert node(q, "wfilter") is None, "the filter is gone"
    # The export serves the target now: a write there reaches the file.
    h.pwrite(b"\x5a" * 4096, 8192)
    h.flush()
    assert read_file(dst, 8192, 4096) == b"\x5a" * 4096
    h.shutdown()
    q.ok("block-export-del", id="ew")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="wdst")
    q.ok("blockdev-del", node_name="wsrc")
    print(f"ok: write-blocking mirror under {len(w.done)} writes: every acknowledged write was in the target at "
          "once after ready; the filter mirror_top came and went; complete pivoted")


def test_target_error(q, d, sock):
    src, dst = f"{d}/e-src.raw", f"{d}/e-dst.raw"
    make_raw(src)
    make_raw(dst)
    q.ok("blockdev-add", driver="file", node_name="esrc", filename=src)
    q.ok("block-export-add", type="nbd", id="ee", node_name="esrc", writable=True)
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///esrc?socket={sock}")
    for policy, once in (("ignore", True), ("report", False)):
        q.ok("blockdev-add", driver="blkdebug", node_name="edbg", image={"driver": "file", "filename": dst},
             inject_error=[{"event": "write_aio", "sector": 2048, "once": once}])
        q.ok("blockdev-mirror", job_id="ej", device="esrc", target="edbg", sync="none", copy_mode="write-blocking",
             on_target_error=policy, filter_node_name="efilter")
        wait_event_for(q, "BLOCK_JOB_READY", "ej")
        data = bytes([0x31 + once]) * 65536
        h.pwrite(data, 1 * MiB)  # the guest's write succeeds
        e = wait_event_for(q, "BLOCK_JOB_ERROR", "ej")
        assert e["data"]["operation"] == "write" and e["data"]["action"] == policy, e
        if policy == "ignore":
            deadline = time.time() + 10
            while read_file(dst, 1 * MiB, len(data)) != data:
                assert time.time() < deadline, "the failed range was not copied again"
                time.sleep(0.05)
            q.ok("block-job-cancel", device="ej")
            _, final = wait_job_end(q, "ej")
            assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
        else:
            _, final = wait_job_end(q, "ej")
            assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" in final["data"], final
        assert node(q, "efilter") is None, "the filter is gone"
        assert h.pread(len(data), 1 * MiB) == data
        q.ok("blockdev-del", node_name="edbg")
    h.shutdown()
    q.ok("block-export-del", id="ee")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="esrc")
    print("ok: a failed target write: on-target-error ignore copies the range again, report fails the job; the "
          "guest's writes succeed")


def test_source_error(q, d, sock):
    """A guest write that fails on the source while the write-blocking
    mirror writes it to the target beside it: the guest gets the error, the
    range is copied again, and after a cancel when ready the target equals
    the source (the source kept its old data there)."""
    src, dst = f"{d}/s-src.raw", f"{d}/s-dst.raw"
    make_raw(src)
    make_raw(dst)
    q.ok("blockdev-add", driver="blkdebug", node_name="sdbg", image={"driver": "file", "filename": src},
         inject_error=[{"event": "write_aio", "sector": 4096, "once": True}])
    q.ok("blockdev-add", driver="file", node_name="sdst", filename=dst)
    q.ok("block-export-add", type="nbd", id="se", node_name="sdbg", writable=True)
    h = nbd.NBD()
    h.connect_uri(f"nbd+unix:///sdbg?socket={sock}")
    q.ok("blockdev-mirror", job_id="sj", device="sdbg", target="sdst", sync="full", copy_mode="write-blocking")
    wait_event_for(q, "BLOCK_JOB_READY", "sj")
    old = read_file(src, 2 * MiB, 65536)
    try:
        h.pwrite(b"\x5e" * 65536, 2 * MiB)
        raise AssertionError("the write the source failed succeeded")
    except nbd.Error:
        pass
    q.ok("block-job-cancel", device="sj")
    _, final = wait_job_end(q, "sj")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    h.shutdown()
    q.ok("block-export-del", id="se")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="sdst")
    q.ok("blockdev-del", node_name="sdbg")
    assert read_file(src, 2 * MiB, 65536) == old, "the failed write changed the source"
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)
    print("ok: a write the source fails: the guest gets the error and the target equals the source after the "
          "mirror")


def test_replaces(q, d, sock):
    src = make_source(d, "r-src")
    dst = f"{d}/r-dst.raw"
    make_raw(dst)
    q.ok("blockdev-add", driver="qcow2", node_name="rsrc", file={"driver": "file", "filename": src})
    q.ok("blockdev-add", driver="blkdebug", node_name="rflt", image="rsrc")
    q.ok("blockdev-add", driver="raw", node_name="rdst", file={"driver": "file", "filename": dst})
    q.ok("block-export-add", type="nbd", id="er", node_name="rflt", writable=True)
    uri = f"nbd+unix:///rflt?socket={sock}"
    w = Writer(uri)
    w.start()
    q.ok("blockdev-mirror", job_id="rj", device="rflt", target="rdst", sync="full", replaces="rsrc",
         copy_mode="write-blocking")
    wait_event_for(q, "BLOCK_JOB_READY", "rj")
    q.ok("block-job-complete", device="rj")
    statuses, final = wait_job_end(q, "rj")
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert node(q, "rflt")["file"] == dst, node(q, "rflt")
    q.ok("blockdev-del", node_name="rsrc")  # nothing holds it any more
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(b"\x77" * 4096, 4096)
    h.flush()
    exported = read_export(h)
    h.shutdown()
    assert exported == read_file(dst, 0, SIZE), "the filter does not read the target"
    assert exported[4096:8192] == b"\x77" * 4096
    q.ok("block-export-del", id="er")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="rflt")
    q.ok("blockdev-del", node_name="rdst")
    print("ok: replaces: the blkdebug filter took the target below it; the replaced node is free")


def mirror_until_ready_then(q, job, source, target, verb):
    """A sync=full mirror, ready, then `verb` (block-job-complete, or
    block-job-cancel: a soft cancel when ready); the job must end
    completed without error."""
    q.ok("blockdev-mirror", job_id=job, device=source, target=target, sync="full")
    wait_event_for(q, "BLOCK_JOB_READY", job)
    q.ok(verb, device=job)
    _, final = wait_job_end(q, job)
    assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final


def export_nodes(binary, d):
    """query-block-exports of an NBD and a vhost-user-blk export of one node
    before a mirror, and after its complete (both on the target) and after
    the second mirror's soft cancel when ready (still there), with null-co
    nodes and no client, against both daemons."""
    qmp_sock = f"{d}/qmp.sock"
    args = ["--blockdev", f"driver=null-co,node-name=esrc,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=edst,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=edst2,size={SIZE}",
            "--nbd-server", f"addr.type=unix,addr.path={d}/nbd.sock",
            "--export", "type=nbd,id=en,node-name=esrc,writable=on",
            "--export", f"type=vhost-user-blk,id=ev,node-name=esrc,writable=on,addr.type=unix,addr.path={d}/vub.sock",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"]
    out = []

    def exports(q):
        return sorted((e["id"], e["type"], e["node-name"]) for e in q.ok("query-block-exports"))

    with Daemon(binary, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, f"{d}/vub.sock")
        q = Qmp(qmp_sock)
        out.append(exports(q))
        mirror_until_ready_then(q, "j", "esrc", "edst", "block-job-complete")
        out.append(exports(q))
        assert [e[2] for e in out[-1]] == ["edst", "edst"], f"after complete the exports are not on the target: {out}"
        mirror_until_ready_then(q, "k", "edst", "edst2", "block-job-cancel")
        out.append(exports(q))
        assert [e[2] for e in out[-1]] == ["edst", "edst"], f"after the cancel the exports moved: {out}"
        dmn.stop()
    return out


def test_fixed_iothread_follows_pivot(daemon, d):
    """An export with fixed-iothread=on keeps its node in its IOThread after
    a mirror's complete put it on the target: moving the target is refused,
    moving the old source (no longer exported) is not. ioplane only: QEMU
    7.2 refuses through the BlockBackend with another message."""
    qmp_sock = f"{d}/qmp.sock"
    args = ["--object", "iothread,id=io0",
            "--blockdev", f"driver=null-co,node-name=fsrc,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=fdst,size={SIZE}",
            "--nbd-server", f"addr.type=unix,addr.path={d}/nbd.sock",
            "--export", "type=nbd,id=fe,node-name=fsrc,writable=on,iothread=io0,fixed-iothread=on",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        mirror_until_ready_then(q, "j", "fsrc", "fdst", "block-job-complete")
        err = q.error("x-blockdev-set-iothread", node_name="fdst", iothread=None, force=True)
        assert "fixed-iothread=on" in err["desc"], err
        q.ok("x-blockdev-set-iothread", node_name="fsrc", iothread=None, force=True)
        dmn.stop()
    print("ok: fixed-iothread=on follows the export onto the mirror's target")


EXPORT_NODES = [(None, "before the mirror"), (None, "after complete"), (None, "after a cancel when ready")]


# Refusals, run against both daemons: (arguments, what they are about).
MIRROR = dict(job_id="r", device="qsrc", target="qdst", sync="full")
REFUSALS = [
    (dict(MIRROR, replaces="nosuch"), "replaces unknown"),
    (dict(MIRROR, replaces="qother"), "replaces unrelated"),
    (dict(MIRROR, device="qflt", replaces="qother"), "replaces beside a filter"),
    (dict(MIRROR, device="qbelow"), "not a root"),
    (dict(MIRROR, filter_node_name="1bad"), "filter name malformed"),
    (dict(MIRROR, filter_node_name="qdst"), "filter name taken"),
    (dict(MIRROR, filter_node_name="f" * 40), "filter name long"),
    (dict(MIRROR, filter_node_name="f" * 40 + "!"), "filter name long and malformed"),
    (dict(MIRROR, job_id="1x", filter_node_name="1bad"), "filter name before job id"),
    (dict(MIRROR, job_id="1x", filter_node_name="fine"), "job id"),
    (dict(MIRROR, target="qsrc"), "into itself"),
    (dict(MIRROR, device="qflt", target="qbelow"), "into itself below a filter"),
    (dict(MIRROR, sync="bitmap", replaces="nosuch"), "replaces before sync mode"),
    (dict(MIRROR, sync="incremental"), "sync mode"),
    (dict(MIRROR, copy_mode="sideways"), "copy mode"),
    (dict(MIRROR, buf_size=-1, filter_node_name="1bad"), "buf-size"),
    (dict(MIRROR, target="qsmall"), "sizes"),
]


def refusals(binary, d):
    qmp_sock = f"{d}/qmp.sock"
    args = ["--blockdev", f"driver=null-co,node-name=qsrc,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=qdst,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=qother,size={SIZE}",
            "--blockdev", f"driver=null-co,node-name=qsmall,size={SIZE // 2}",
            "--blockdev", f"driver=null-co,node-name=qbelow,size={SIZE}",
            "--blockdev", "driver=blkdebug,node-name=qflt,image=qbelow",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"]
    out = []
    with Daemon(binary, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        for a, what in REFUSALS:
            q.events.clear()
            r = q.cmd("blockdev-mirror", **a)
            if "error" in r:
                out.append(r["error"]["desc"])
                continue
            # Started (a size mismatch fails in the job): its end says why.
            _, final = wait_job_end(q, "r")
            out.append(final["data"].get("error"))
        assert not [n for n in q.ok("query-named-block-nodes") if n["drv"] == "mirror_top"], "a filter stayed"
        dmn.stop()
    return out



def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="block-mirror-")
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        test_write_blocking(q, d, nbd_sock)
        test_target_error(q, d, nbd_sock)
        test_source_error(q, d, nbd_sock)
        test_replaces(q, d, nbd_sock)
        dmn.stop()
    shutil.rmtree(d, ignore_errors=True)
    d2 = tempfile.mkdtemp(prefix="block-mirror-refusals-")
    assert_same_as_qsd(refusals, daemon, d2, REFUSALS)
    shutil.rmtree(d2, ignore_errors=True)
    d3 = tempfile.mkdtemp(prefix="block-mirror-exports-")
    assert_same_as_qsd(export_nodes, daemon, d3, EXPORT_NODES, "query-block-exports answers")
    shutil.rmtree(d3, ignore_errors=True)
    test_fixed_iothread_follows_pivot(daemon, tempfile.mkdtemp(prefix="block-mirror-fixed-"))
    print("block_mirror: ok")


if __name__ == "__main__":
    main()
