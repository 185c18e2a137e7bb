#!/usr/bin/python3
"""Block jobs over QMP on qcow2 chains made by qemu-img, checked with QEMU's
tools and NBD reads:
 - block-stream of a whole chain and down to a base, while a client writes
   through the NBD export of the top and the node moves between IOThreads:
   the events (JOB_STATUS_CHANGE, BLOCK_JOB_COMPLETED), the new backing file
   in the header and in query-named-block-nodes, `qemu-img check` clean, and
   every byte as the layers and the client's writes make it;
 - block-commit of a middle layer under a writer on the active layer;
 - blockdev-mirror (sync=full, to an image in another IOThread) and
   block-commit of the active layer, both under a writer on the export:
   ready, complete, and the export then serves the target, which holds
   every byte; a ready mirror's soft cancel (no switch) and a forced cancel;
   a ready job at quit (qsd-jobs' first case);
 - pause, resume, set-speed and cancel of a rate-limited stream: the job's
   status and BlockJobInfo follow, a cancelled stream leaves the chain as it
   was and the data intact;
 - QEMU's errors, word for word: the permission conflict of qsd-jobs (a
   writable export on a layer the stream drops), a malformed job id, busy
   nodes, unknown jobs (class DeviceNotActive), exclusive options.
Usage: block_jobs.py DAEMON. Needs Debian's python3-libnbd."""
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
SIZE = 64 * MiB
BLOCK = 4096
# The chain's layers: (name, [(offset, length, byte)]), bottom first.
LAYERS = [("base", [(0, 8 * MiB, 0x11), (40 * MiB, 4 * MiB, 0x12)]),
          ("mid", [(4 * MiB, 8 * MiB, 0x22), (48 * MiB, 2 * MiB, 0x23)]),
          ("top", [(10 * MiB, 4 * MiB, 0x33)])]


def run(*cmd, ok=(0,)):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode in ok, f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def info(path):
    return json.loads(run("qemu-img", "info", "-U", "--output=json", path).stdout)


def check_clean(path):
    r = json.loads(run("qemu-img", "check", "-U", "--output=json", path).stdout)
    assert not r.get("corruptions") and not r.get("leaks") and not r.get("check-errors"), f"{path}: {r}"


def make_chain(d, prefix, layers=LAYERS):
    """The chain's images, bottom first; returns their paths and the byte
    each 4 KiB block of the top reads as."""
    paths, model, below = [], [0] * (SIZE // BLOCK), None
    for name, writes in layers:
        path = f"{d}/{prefix}-{name}.qcow2"
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE)]
        if below:
            cmd += ["-b", below, "-F", "qcow2"]
        run(*cmd)
        for off, length, byte in writes:
            run("qemu-io", "-f", "qcow2", "-c", f"write -P {byte} {off} {length}", path)
            for b in range(off // BLOCK, (off + length) // BLOCK):
                model[b] = byte
        paths.append(path)
        below = path
    return paths, model


class Writer(threading.Thread):
    """Writes 4 KiB blocks of one byte value each (1..255, cycling) at
    spread offsets until stopped; `done` maps a block to its last value."""

    def __init__(self, uri):
        super().__init__()
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.stop = threading.Event()
        self.done = {}
        self.error = None

    def run(self):
        seq = 0
        try:
            while not self.stop.is_set():
                block = (seq * 7919) % (SIZE // BLOCK)
                value = seq % 255 + 1
                self.h.pwrite(bytes([value]) * BLOCK, block * BLOCK)
                self.done[block] = value
                seq += 1
                time.sleep(0.0005)
            self.h.flush()
            self.h.shutdown()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e


def verify_export(uri, model, label):
    h = nbd.NBD()
    h.connect_uri(uri)
    for chunk in range(0, SIZE, 4 * MiB):
        data = h.pread(4 * MiB, chunk)
        for i in range(0, 4 * MiB, BLOCK):
            want = model[(chunk + i) // BLOCK]
            if data[i:i + BLOCK] != bytes([want]) * BLOCK:
                raise AssertionError(f"{label}: block at {chunk + i}: {data[i]:#x}, wanted {want:#x}")
    h.shutdown()


def node(q, name):
    nodes = [n for n in q.ok("query-named-block-nodes") if n["node-name"] == name]
    return nodes[0] if nodes else None


def wait_job_end(q, job, timeout=60):
    """The job's JOB_STATUS_CHANGE statuses up to null, and its final
    BLOCK_JOB_* event."""
    statuses, final = [], None
    deadline = time.time() + timeout
    while not statuses or statuses[-1] != "null":
        e = q.wait_event("JOB_STATUS_CHANGE", timeout=max(1, deadline - time.time()))
        assert e["data"]["id"] == job, e
        statuses.append(e["data"]["status"])
    for name in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
        for e in list(q.events):
            if e["event"] == name and e["data"]["device"] == job:
                q.events.remove(e)
                final = e
    return statuses, final


def export(q, export_id, node_name, writable=True):
    q.ok("block-export-add", type="nbd", id=export_id, node_name=node_name, writable=writable)


def test_stream(q, d, sock):
    paths, model = make_chain(d, "s")
    q.ok("blockdev-add", driver="qcow2", node_name="stop", file={"driver": "file", "filename": paths[2]})
    top = node(q, "stop")
    assert top["backing_file_depth"] == 2, top
    export(q, "es", "stop")
    uri = f"nbd+unix:///stop?socket={sock}"
    w = Writer(uri)
    w.start()
    # 8 MiB/s: the 22 MiB the lower layers hold take about 3 s (only what
    # is copied counts).
    q.ok("block-stream", job_id="st", device="stop", speed=8 * MiB)
    jobs = q.ok("query-block-jobs")
    assert len(jobs) == 1 and jobs[0]["device"] == "st" and jobs[0]["type"] == "stream", jobs
    assert jobs[0]["speed"] == 8 * MiB and jobs[0]["io-status"] == "ok" and jobs[0]["len"] == SIZE, jobs
    for iothread in ("io1", "io0", None):
        time.sleep(0.3)
        q.ok("x-blockdev-set-iothread", node_name="stop", iothread=iothread, force=True)
    assert q.ok("query-block-jobs")[0]["status"] == "running", "still running after the moves"
    statuses, final = wait_job_end(q, "st")
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    assert statuses == ["created", "running", "waiting", "pending", "concluded", "null"], statuses
    assert final and final["event"] == "BLOCK_JOB_COMPLETED", final
    assert final["data"]["len"] == SIZE and final["data"]["offset"] == SIZE and "error" not in final["data"], final
    assert q.ok("query-block-jobs") == [], "the job is gone"
    top = node(q, "stop")
    assert top["backing_file_depth"] == 0 and "backing_file" not in top, top
    for block, value in w.done.items():
        model[block] = value
    verify_export(uri, model, "stream")
    q.ok("block-export-del", id="es")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="stop")
    i = info(paths[2])
    assert "backing-filename" not in i, i
    check_clean(paths[2])
    m = json.loads(run("qemu-img", "map", "--output=json", paths[2]).stdout)
    assert all(e["depth"] == 0 for e in m), "everything is in the top now"
    print(f"ok: block-stream of a 3-deep chain under {len(w.done)} writes and 3 IOThread moves")


def test_stream_to_base(q, d, sock):
    paths, model = make_chain(d, "b")
    q.ok("blockdev-add", driver="qcow2", node_name="bbase", file={"driver": "file", "filename": paths[0]},
         read_only=True)
    q.ok("blockdev-add", driver="qcow2", node_name="btop", file={"driver": "file", "filename": paths[2]})
    # The header names mid, whose header names base: opened by file name.
    q.ok("block-stream", job_id="sb", device="btop", base=paths[0])
    statuses, final = wait_job_end(q, "sb")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    top = node(q, "btop")
    assert top["backing_file_depth"] == 1 and top["backing_file"] == paths[0], top
    export(q, "eb", "btop")
    verify_export(f"nbd+unix:///btop?socket={sock}", model, "stream to a base")
    q.ok("block-export-del", id="eb")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="btop")
    q.ok("blockdev-del", node_name="bbase")
    i = info(paths[2])
    assert i["backing-filename"] == paths[0] and i["backing-filename-format"] == "qcow2", i
    check_clean(paths[2])
    m = json.loads(run("qemu-img", "map", "--output=json", paths[2]).stdout)
    assert all(e["depth"] in (0, 1) for e in m), m
    print("ok: block-stream down to a base: the top names the base, the middle layer is gone")


def test_commit(q, d, sock):
    paths, model = make_chain(d, "c")
    q.ok("blockdev-add", driver="qcow2", node_name="ctop", file={"driver": "file", "filename": paths[2]})
    chain = {n["node-name"]: n for n in q.ok("query-named-block-nodes", flat=True)}
    mid = [n for n, v in chain.items() if v.get("file") == paths[1]][0]
    base = [n for n, v in chain.items() if v.get("file") == paths[0]][0]
    export(q, "ec", "ctop")
    uri = f"nbd+unix:///ctop?socket={sock}"
    w = Writer(uri)
    w.start()
    time.sleep(0.2)
    q.ok("block-commit", job_id="cm", device="ctop", top_node=mid, base_node=base, speed=32 * MiB)
    e = q.error("block-stream", job_id="other", device="ctop", base_node=base)
    assert e["desc"] == f"Node '{mid}' is busy: block device is in use by block job: commit", e
    statuses, final = wait_job_end(q, "cm")
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    assert statuses == ["created", "running", "waiting", "pending", "concluded", "null"], statuses
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    top = node(q, "ctop")
    assert top["backing_file_depth"] == 1 and top["backing_file"] == paths[0], top
    assert node(q, mid) is None, "the committed layer is closed"
    for block, value in w.done.items():
        model[block] = value
    verify_export(uri, model, "commit")
    q.ok("block-export-del", id="ec")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="ctop")
    assert info(paths[2])["backing-filename"] == paths[0]
    for p in paths:
        check_clean(p)
    # base now reads as base+mid.
    _, base_model = make_chain(d, "cmodel", LAYERS[:2])
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", paths[0], f"{d}/cmodel-mid.qcow2")
    print(f"ok: block-commit of the middle layer under {len(w.done)} writes on the active layer")


def test_pause_resume_cancel(q, d):
    paths, _ = make_chain(d, "p")
    q.ok("blockdev-add", driver="qcow2", node_name="ptop", file={"driver": "file", "filename": paths[2]})
    q.ok("block-stream", job_id="ps", device="ptop", speed=1 * MiB, auto_dismiss=False)
    q.ok("block-job-pause", device="ps")
    e = q.error("block-job-pause", device="ps")
    assert e["desc"] == "Job is already paused", e
    # The pause takes effect at the job's next pause point: within a sleep.
    for _ in range(100):
        jobs = q.ok("query-block-jobs")
        if jobs[0]["status"] == "paused":
            break
        time.sleep(0.05)
    assert jobs[0]["status"] == "paused" and jobs[0]["paused"] and not jobs[0]["busy"], jobs
    e = q.cmd("block-job-cancel", device="ps")["error"]
    assert e["desc"] == "The block job for device 'ps' is currently paused", e
    q.ok("block-job-resume", device="ps")
    e = q.error("block-job-resume", device="ps")
    assert e["desc"] == "Can't resume a job that was not paused", e
    q.ok("block-job-set-speed", device="ps", speed=2 * MiB)
    assert q.ok("query-block-jobs")[0]["speed"] == 2 * MiB
    e = q.error("block-job-set-speed", device="ps", speed=-1)
    assert e["desc"] == "Invalid parameter 'speed'", e
    e = q.error("block-job-complete", device="ps")
    assert e["desc"] == "Job 'ps' in state 'running' cannot accept command verb 'complete'", e
    q.ok("block-job-cancel", device="ps")
    statuses = []
    while not statuses or statuses[-1] != "concluded":
        statuses.append(q.wait_event("JOB_STATUS_CHANGE")["data"]["status"])
    assert statuses[-2:] == ["aborting", "concluded"], statuses
    cancelled = q.wait_event("BLOCK_JOB_CANCELLED")["data"]
    assert cancelled["device"] == "ps" and cancelled["type"] == "stream" and cancelled["offset"] < SIZE, cancelled
    job = q.ok("query-block-jobs")[0]
    assert job["status"] == "concluded" and job["error"] == "Operation canceled", job
    q.ok("block-job-dismiss", id="ps")
    assert q.wait_event("JOB_STATUS_CHANGE")["data"]["status"] == "null"
    top = node(q, "ptop")
    assert top["backing_file_depth"] == 2, "a cancelled stream keeps the chain"
    q.ok("blockdev-del", node_name="ptop")
    assert info(paths[2])["backing-filename"] == paths[1]
    check_clean(paths[2])
    print("ok: block-job-pause/resume/set-speed/cancel/dismiss of a stream")


def wait_event_for(q, name, job, timeout=60):
    e = q.wait_event(name, timeout=timeout)
    assert e["data"].get("device", e["data"].get("id")) == job, e
    return e


def test_mirror(q, d, sock):
    """blockdev-mirror sync=full of an exported chain under a writer, to a
    fresh image in another IOThread; ready, more writes, complete: the
    export serves the target, which holds every byte."""
    paths, model = make_chain(d, "m")
    target = f"{d}/m-target.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", target, str(SIZE))
    q.ok("blockdev-add", driver="qcow2", node_name="msrc", file={"driver": "file", "filename": paths[2]})
    q.ok("blockdev-add", driver="qcow2", node_name="mdst", file={"driver": "file", "filename": target},
         backing=None)
    q.ok("x-blockdev-set-iothread", node_name="mdst", iothread="io1")
    export(q, "em", "msrc")
    uri = f"nbd+unix:///msrc?socket={sock}"
    w = Writer(uri)
    w.start()
    time.sleep(0.2)
    e = q.error("blockdev-mirror", job_id="mj", device="msrc", target="mdst", sync="full", granularity=1000)
    assert e["desc"] == "Parameter 'granularity' expects a power of 2", e
    q.ok("blockdev-mirror", job_id="mj", device="msrc", target="mdst", sync="full", speed=64 * MiB)
    ready = wait_event_for(q, "BLOCK_JOB_READY", "mj")
    assert ready["data"]["type"] == "mirror", ready
    job = q.ok("query-block-jobs")[0]
    assert job["ready"] and job["status"] == "ready", job
    time.sleep(0.3)  # writes while ready are mirrored too
    q.ok("block-job-complete", device="mj")
    statuses, final = wait_job_end(q, "mj")
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert statuses == ["created", "running", "ready", "waiting", "pending", "concluded", "null"], statuses
    for block, value in w.done.items():
        model[block] = value
    verify_export(uri, model, "mirror (the export now reads the target)")
    q.ok("block-export-del", id="em")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="mdst")
    q.ok("blockdev-del", node_name="msrc")
    check_clean(target)
    with open(f"{d}/m-model.raw", "wb") as f:
        f.write(b"".join(bytes([v]) * BLOCK for v in model))
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", target, f"{d}/m-model.raw")
    print(f"ok: blockdev-mirror sync=full under {len(w.done)} writes, ready, complete: the target took over")


def test_active_commit(q, d, sock):
    """block-commit of the exported active layer under a writer: a mirror
    into the base, ready, complete: the base is the active layer."""
    paths, model = make_chain(d, "a")
    q.ok("blockdev-add", driver="qcow2", node_name="atop", file={"driver": "file", "filename": paths[2]})
    export(q, "ea", "atop")
    uri = f"nbd+unix:///atop?socket={sock}"
    w = Writer(uri)
    w.start()
    time.sleep(0.2)
    q.ok("block-commit", job_id="ac", device="atop")
    ready = wait_event_for(q, "BLOCK_JOB_READY", "ac")
    assert ready["data"]["type"] == "commit", ready
    time.sleep(0.3)
    q.ok("block-job-complete", device="ac")
    statuses, final = wait_job_end(q, "ac")
    w.stop.set()
    w.join()
    assert w.error is None, w.error
    assert final and final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    for block, value in w.done.items():
        model[block] = value
    verify_export(uri, model, "active commit (the export now reads the base)")
    q.ok("block-export-del", id="ea")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.ok("blockdev-del", node_name="atop")
    for p in paths:
        check_clean(p)
    with open(f"{d}/a-model.raw", "wb") as f:
        f.write(b"".join(bytes([v]) * BLOCK for v in model))
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", paths[0], f"{d}/a-model.raw")
    print(f"ok: block-commit of the active layer under {len(w.done)} writes: the base holds everything")


def test_mirror_cancel(q, d, sock):
    """A soft cancel of a ready mirror completes it without the switch (the
    target is a copy as of then); a forced cancel while copying is a
    cancel."""
    paths, model = make_chain(d, "x")
    target = f"{d}/x-target.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", target, str(SIZE))
    q.ok("blockdev-add", driver="qcow2", node_name="xsrc", file={"driver": "file", "filename": paths[2]})
    q.ok("blockdev-add", driver="qcow2", node_name="xdst", file={"driver": "file", "filename": target},
         backing=None)
    q.ok("blockdev-mirror", job_id="xj", device="xsrc", target="xdst", sync="full")
    wait_event_for(q, "BLOCK_JOB_READY", "xj")
    q.ok("block-job-cancel", device="xj")
    statuses, final = wait_job_end(q, "xj")
    assert final["event"] == "BLOCK_JOB_COMPLETED" and "error" not in final["data"], final
    assert node(q, "xsrc") and not [n for n in q.ok("query-named-block-nodes")
                                    if n["node-name"] == "xsrc" and n["backing_file_depth"] != 2]
    q.ok("blockdev-del", node_name="xdst")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", target, paths[2])
    # Forced cancel while it copies slowly.
    q.ok("blockdev-add", driver="qcow2", node_name="xdst2", file={"driver": "file", "filename": target},
         backing=None)
    q.ok("blockdev-mirror", job_id="xk", device="xsrc", target="xdst2", sync="full", speed=1 * MiB)
    time.sleep(0.3)
    q.ok("block-job-cancel", device="xk", force=True)
    statuses, final = wait_job_end(q, "xk")
    assert final["event"] == "BLOCK_JOB_CANCELLED", final
    assert "ready" not in statuses, statuses
    q.ok("blockdev-del", node_name="xdst2")
    q.ok("blockdev-del", node_name="xsrc")
    check_clean(target)
    check_clean(paths[2])
    print("ok: a ready mirror's soft cancel completes without the switch; a forced cancel cancels")


def test_errors(q, d, sock):
    paths, _ = make_chain(d, "e", LAYERS[:2])
    # qsd-jobs: a writable export on the layer a stream would drop.
    q.ok("blockdev-add", driver="file", node_name="file_base", filename=paths[0])
    q.ok("blockdev-add", driver="qcow2", node_name="fmt_base", file="file_base")
    q.ok("blockdev-add", driver="file", node_name="file_overlay", filename=paths[1])
    q.ok("blockdev-add", driver="qcow2", node_name="fmt_overlay", file="file_overlay", backing="fmt_base")
    export(q, "export1", "fmt_base")
    e = q.error("block-stream", job_id="job0", device="fmt_overlay")
    assert e["desc"] == ("Permission conflict on node 'fmt_base': permissions 'write' are both required by an "
                         "unnamed block device (uses node 'fmt_base' as 'root' child) and unshared by stream job "
                         "'job0' (uses node 'fmt_base' as 'intermediate node' child)."), e
    assert [q.wait_event("JOB_STATUS_CHANGE")["data"]["status"] for _ in range(2)] == ["created", "null"]
    assert q.ok("query-jobs") == []
    print("ok: qsd-jobs' permission conflict: " + e["desc"])
    # A read-only top the job made writable is read-only again when the
    # job fails to start.
    q.ok("blockdev-add", driver="qcow2", node_name="ro_overlay", read_only=True,
         file={"driver": "file", "filename": paths[1]}, backing="fmt_base")
    e = q.error("block-stream", job_id="job1", device="ro_overlay")
    assert e["desc"].startswith("Permission conflict on node 'fmt_base'"), e
    [q.wait_event("JOB_STATUS_CHANGE") for _ in range(2)]
    assert node(q, "ro_overlay")["ro"], node(q, "ro_overlay")
    q.ok("blockdev-del", node_name="ro_overlay")
    e = q.error("block-stream", device="fmt_overlay")
    assert e["desc"] == "Invalid job ID ''", e
    e = q.error("block-stream", job_id="j", device="fmt_overlay", base="x", base_node="y")
    assert e["desc"] == "'base' and 'base-node' cannot be specified at the same time", e
    e = q.error("block-stream", job_id="j", device="fmt_overlay", base_node="fmt_overlay")
    assert e["desc"] == "Node 'fmt_overlay' is not a backing image of 'fmt_overlay'", e
    e = q.error("block-stream", job_id="j", device="nope")
    assert e["desc"] == "Cannot find device='nope' nor node-name='nope'", e
    e = q.cmd("block-commit", job_id="j", device="nope")["error"]
    assert e["class"] == "DeviceNotFound" and e["desc"] == "Device 'nope' not found", e
    e = q.error("block-commit", job_id="j", device="fmt_overlay", top_node="fmt_overlay", base_node="fmt_overlay")
    assert e["desc"] == "'fmt_overlay' is not in this backing file chain", e
    for cmd, key in (("block-job-cancel", "device"), ("block-job-pause", "device"), ("block-job-resume", "device"),
                     ("block-job-complete", "device"), ("block-job-dismiss", "id"), ("block-job-finalize", "id")):
        e = q.cmd(cmd, **{key: "nojob"})["error"]
        assert e == {"class": "DeviceNotActive", "desc": "Block job 'nojob' not found"}, (cmd, e)
    q.ok("block-export-del", id="export1")
    q.wait_event("BLOCK_EXPORT_DELETED")
    for n in ("fmt_overlay", "fmt_base", "file_overlay", "file_base"):
        q.ok("blockdev-del", node_name=n)
    print("ok: block job errors as QEMU words them")


def test_job_at_quit(daemon, d):
    """qsd-jobs' first case: an active commit of an empty overlay is ready
    at once; quit cancels it (BLOCK_JOB_CANCELLED, nothing copied) before
    quit's reply, and the daemon exits cleanly."""
    paths, _ = make_chain(d, "q", [LAYERS[0], ("top", [])])
    qmp_sock = f"{d}/quit.sock"
    args = ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--blockdev", f"node-name=file0,driver=file,filename={paths[1]}",
            "--blockdev", "node-name=fmt0,driver=qcow2,file=file0"]
    with Daemon(daemon, args, f"{d}/quit.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        q.ok("block-commit", device="fmt0", job_id="job0")
        wait_event_for(q, "BLOCK_JOB_READY", "job0")
        r = q.cmd("quit")
        assert r == {"return": {}}, r
        cancelled = [e for e in q.events if e["event"] == "BLOCK_JOB_CANCELLED"]
        assert len(cancelled) == 1 and cancelled[0]["data"] == {"device": "job0", "len": 0, "offset": 0, "speed": 0,
                                                                "type": "commit"}, q.events
        dmn.stop()
        check_clean(paths[0])
        check_clean(paths[1])
    print("ok: a ready active commit at quit: BLOCK_JOB_CANCELLED before quit's reply, images clean")


def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="block-jobs-")
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    args = ["--object", "iothread,id=io0", "--object", "iothread,id=io1",
            "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
            "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"]
    with Daemon(daemon, args, f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        test_errors(q, d, nbd_sock)
        test_stream(q, d, nbd_sock)
        test_stream_to_base(q, d, nbd_sock)
        test_commit(q, d, nbd_sock)
        test_pause_resume_cancel(q, d)
        test_mirror(q, d, nbd_sock)
        test_active_commit(q, d, nbd_sock)
        test_mirror_cancel(q, d, nbd_sock)
        dmn.stop()
    test_job_at_quit(daemon, tempfile.mkdtemp(prefix="block-jobs-quit-"))
    print("block_jobs: ok")


if __name__ == "__main__":
    main()
