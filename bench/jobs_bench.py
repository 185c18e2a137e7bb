#!/usr/bin/python3
"""Block jobs benchmark: ioplane-storage-daemon against qemu-storage-daemon
7.2 in one run, the same qcow2 images on tmpfs, the servers taking turns.

Rows:
  mirror     blockdev-mirror sync=full of a SIZE image, half allocated (1 MiB
             of data every 2 MiB), into an empty qcow2 image: from the
             command to BLOCK_JOB_READY (the target holds it all, flushed)
  backup     blockdev-backup sync=full of the same into an empty image: from
             the command to BLOCK_JOB_COMPLETED
  commit     block-commit of a middle layer (the same half-allocated data)
             into an empty base below it: command to BLOCK_JOB_COMPLETED
  writer-backup, writer-mirror
             fio 4k randwrite QD16 through the NBD export of the source
             (nbd engine, unix socket) for RUNTIME seconds: once alone, once
             while a sync=none backup runs (every first write of a chunk is
             copied first) or while a write-blocking mirror that is ready
             runs (every write also goes to the target before it completes);
             the slowdown is 1 - IOPS(with job) / IOPS(alone)
  floor      bench/copy_reference: the same data extents copied between raw
             files with pread/pwrite, one thread, nothing else (the least a
             copy through user space costs here; its own time and CPU)
For each row and server: wall time, throughput (image size / time), and the
server's CPU time (utime + stime of /proc/PID/stat, all threads) over the
job; nodes and exports in the main loop for both (qemu-storage-daemon 7.2
aborts in nbd_blockdev_client_closed when fio leaves an export that runs in
an IOThread); medians over REPS repetitions. Targets (issue 20): throughput at least
the peer's at no more than 0.75x its CPU time (where the floor cannot reach
one: 0.9x the floor's throughput ratio, the floor's CPU ratio / 0.9); at most
half the peer's slowdown of the writer.

  bench/jobs_bench.py [--daemon PATH] [--floor PATH] [--reps N] [--size-gib N]
                      [--runtime S] [--rows LIST] [--quick]
The daemon defaults to build/release/daemon/ioplane-storage-daemon."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from qmp import Qmp  # noqa: E402

MiB = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def run(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))}: exit {r.returncode}\n{r.stdout}{r.stderr}")
    return r.stdout


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def make_image(path, size, backing=None, half=False):
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", path, str(size)]
    if backing:
        cmd += ["-b", backing, "-F", "qcow2"]
    run(*cmd)
    if half:
        script = [f"write -P {0x20 + (off // (2 * MiB)) % 200} {off} {MiB}" for off in range(0, size, 2 * MiB)]
        args = []
        for c in script:
            args += ["-c", c]
        run("qemu-io", "-f", "qcow2", *args, path)


class Server:
    def __init__(self, name, binary, work):
        self.name, self.binary, self.work = name, binary, work
        self.qmp_sock, self.nbd_sock = f"{work}/qmp.sock", f"{work}/nbd.sock"

    def __enter__(self):
        for p in (self.qmp_sock, self.nbd_sock):
            if os.path.exists(p):
                os.unlink(p)
        args = [self.binary, "--chardev", f"socket,id=m,path={self.qmp_sock},server=on,wait=off", "--monitor", "m",
                "--nbd-server", f"addr.type=unix,addr.path={self.nbd_sock}"]
        self.log = open(f"{self.work}/{self.name}.log", "a")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while not (os.path.exists(self.qmp_sock) and os.path.exists(self.nbd_sock)):
            if time.time() > deadline or self.proc.poll() is not None:
                sys.exit(f"{self.name} did not start (see {self.work}/{self.name}.log)")
            time.sleep(0.05)
        self.q = Qmp(self.qmp_sock)
        return self

    def __exit__(self, *exc):
        self.q.cmd("quit")
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def add(self, node, path, **extra):
        self.q.ok("blockdev-add", driver="qcow2", node_name=node, file={"driver": "file", "filename": path},
                  **extra)

    def timed_job(self, command, until, **args):
        """Runs the job command; returns (seconds, CPU seconds) until the
        event `until` (READY or COMPLETED), and cancels a ready job."""
        self.q.events.clear()
        cpu0, t0 = cpu_seconds(self.proc.pid), time.monotonic()
        self.q.ok(command, **args)
        e = self.q.wait_event(until, timeout=600)
        t1, cpu1 = time.monotonic(), cpu_seconds(self.proc.pid)
        assert "error" not in e.get("data", {}), e
        if until == "BLOCK_JOB_READY":
            self.q.ok("block-job-cancel", device=args["job_id"])
            self.q.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
        return t1 - t0, cpu1 - cpu0

    def fio(self, export, runtime):
        out = run("fio", "--name=w", "--ioengine=nbd", f"--uri=nbd+unix:///{export}?socket={self.nbd_sock}",
                  "--rw=randwrite", "--bs=4k", "--iodepth=16", "--time_based", f"--runtime={runtime}",
                  "--ramp_time=1", "--output-format=json")
        return json.loads(out[out.index("{"):])["jobs"][0]["write"]["iops"]  # after fio's notes


def row_copy(server, d, kind, size):
    """mirror, backup or commit of the half-allocated image; fresh images."""
    src, dst = f"{d}/src.qcow2", f"{d}/dst.qcow2"
    if kind == "commit":
        make_image(dst, size)  # the base receives the data
        make_image(src, size, backing=dst, half=True)
        make_image(f"{d}/top.qcow2", size, backing=src)
        server.add("top", f"{d}/top.qcow2")
        nodes = {n.get("file"): n["node-name"] for n in server.q.ok("query-named-block-nodes", flat=True)
                 if n["drv"] == "qcow2"}
        r = server.timed_job("block-commit", "BLOCK_JOB_COMPLETED", job_id="j", device="top",
                             top_node=nodes[src], base_node=nodes[dst])
        server.q.ok("blockdev-del", node_name="top")
        return r
    make_image(src, size, half=True)
    make_image(dst, size)
    server.add("src", src)
    server.add("dst", dst)
    if kind == "mirror":
        r = server.timed_job("blockdev-mirror", "BLOCK_JOB_READY", job_id="j", device="src", target="dst",
                             sync="full")
    else:
        r = server.timed_job("blockdev-backup", "BLOCK_JOB_COMPLETED", job_id="j", device="src", target="dst",
                             sync="full")
    server.q.ok("blockdev-del", node_name="dst")
    server.q.ok("blockdev-del", node_name="src")
    return r


def row_writer(server, d, kind, size, runtime):
    """fio IOPS alone and beside the job: (alone, with)."""
    src, dst = f"{d}/src.qcow2", f"{d}/dst.qcow2"
    make_image(src, size, half=True)
    make_image(dst, size)
    server.add("src", src)
    server.add("dst", dst)
    server.q.ok("block-export-add", type="nbd", id="e", node_name="src", writable=True)
    alone = server.fio("src", runtime)
    server.q.events.clear()
    if kind == "writer-backup":
        server.q.ok("blockdev-backup", job_id="j", device="src", target="dst", sync="none")
    else:
        r = server.q.cmd("blockdev-mirror", job_id="j", device="src", target="dst", sync="full",
                         copy_mode="write-blocking")
        if "error" in r:
            print(f"  {server.name}: {r['error']['desc']}")
            server.q.ok("block-export-del", id="e")
            server.q.wait_event("BLOCK_EXPORT_DELETED")
            server.q.ok("blockdev-del", node_name="dst")
            server.q.ok("blockdev-del", node_name="src")
            return alone, None
        server.q.wait_event("BLOCK_JOB_READY", timeout=600)
    with_job = server.fio("src", runtime)
    server.q.ok("block-job-cancel", device="j")
    server.q.wait_event("BLOCK_JOB_CANCELLED" if kind == "writer-backup" else "BLOCK_JOB_COMPLETED", timeout=60)
    server.q.ok("block-export-del", id="e")
    server.q.wait_event("BLOCK_EXPORT_DELETED")
    server.q.ok("blockdev-del", node_name="dst")
    server.q.ok("blockdev-del", node_name="src")
    return alone, with_job


def floor_copy(d, size, binary):
    """The floor: copy_reference over a raw file with the same data extents
    as the half-allocated image; (seconds, CPU seconds)."""
    src, raw, dst = f"{d}/src.qcow2", f"{d}/src.raw", f"{d}/dst.raw"
    make_image(src, size, half=True)
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", src, raw)
    with open(dst, "wb") as f:
        f.truncate(size)
    secs, cpu, copied = run(binary, raw, dst).split()
    assert int(copied) == size // 2, f"the floor copied {copied} bytes"
    return float(secs), float(cpu)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", default=os.path.join(ROOT, "build/release/daemon/ioplane-storage-daemon"))
    ap.add_argument("--qsd", default=shutil.which("qemu-storage-daemon"))
    ap.add_argument("--floor", default=os.path.join(ROOT, "build/release/bench/copy_reference"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size-gib", type=float, default=1)
    ap.add_argument("--runtime", type=int, default=10)
    ap.add_argument("--rows", default="mirror,backup,commit,writer-backup,writer-mirror")
    ap.add_argument("--quick", action="store_true", help="64 MiB images, 2 s fio runs, 1 repetition")
    a = ap.parse_args()
    if a.quick:
        a.size_gib, a.runtime, a.reps = 1 / 16, 2, 1
    size = int(a.size_gib * 1024) * MiB
    work = tempfile.mkdtemp(prefix="jobs-bench-", dir="/dev/shm")
    servers = [("ioplane", a.daemon), ("qsd", a.qsd)]
    results = {}
    try:
        if any(not row.startswith("writer-") for row in a.rows.split(",")):
            for rep in range(a.reps):
                d = tempfile.mkdtemp(dir=work)
                r = floor_copy(d, size, a.floor)
                shutil.rmtree(d)
                results.setdefault(("floor", "floor"), []).append(r)
                print(f"floor rep {rep}: {r}", flush=True)
        for row in a.rows.split(","):
            for rep in range(a.reps):
                for name, binary in servers if rep % 2 == 0 else reversed(servers):
                    d = tempfile.mkdtemp(dir=work)
                    with Server(name, binary, d) as s:
                        if row.startswith("writer-"):
                            r = row_writer(s, d, row, size, a.runtime)
                        else:
                            r = row_copy(s, d, row, size)
                    shutil.rmtree(d)
                    results.setdefault((row, name), []).append(r)
                    print(f"{row} {name} rep {rep}: {r}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, a, size)


def median(xs):
    return statistics.median(xs) if xs else None


def report(results, a, size):
    # Targets: at least qsd's throughput at no more than 0.75x its CPU;
    # where the floor cannot reach one, 90% of the floor's own ratio
    # (throughput: 0.9x the floor's; CPU: the floor's / 0.9).
    floor = results.get(("floor", "floor"), [])
    print(f"\n| row | server | time (s) | MiB/s | CPU (s) | vs qsd: throughput | vs qsd: CPU | target |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in a.rows.split(","):
        if row.startswith("writer-"):
            continue
        med = {}
        for name in ("ioplane", "qsd"):
            rs = results.get((row, name), [])
            med[name] = (median([r[0] for r in rs]), median([r[1] for r in rs]))
        if floor:
            med["floor"] = (median([r[0] for r in floor]), median([r[1] for r in floor]))
        tq, cq = med["qsd"]
        for name in ("ioplane", "floor", "qsd"):
            if name not in med:
                continue
            t, c = med[name]
            mibs = size / MiB / t
            rel, target = "| | ", ""
            if name != "qsd":
                rel = f"| {tq / t:.2f}x | {c / cq:.2f}x"
            if name == "ioplane":
                tp_target, cpu_target = 1.0, 0.75
                if "floor" in med:
                    tp_target = min(tp_target, 0.9 * tq / med["floor"][0])
                    cpu_target = max(cpu_target, med["floor"][1] / cq / 0.9)
                met = tq / t >= tp_target and c / cq <= cpu_target
                target = f"≥ {tp_target:.2f}x, ≤ {cpu_target:.2f}x: {'met' if met else 'not met'}"
            print(f"| {row} | {name} | {t:.2f} | {mibs:.0f} | {c:.2f} {rel} | {target} |")
    print("\n| row | server | IOPS alone | IOPS with job | slowdown | target |")
    print("|---|---|---:|---:|---:|---|")
    for row in a.rows.split(","):
        if not row.startswith("writer-"):
            continue
        slowdown = {}
        for name in ("qsd", "ioplane"):
            rs = [r for r in results.get((row, name), []) if r[1] is not None]
            if rs:
                alone, with_job = median([r[0] for r in rs]), median([r[1] for r in rs])
                slowdown[name] = (alone, with_job, 1 - with_job / alone)
        for name in ("ioplane", "qsd"):
            if name not in slowdown:
                print(f"| {row} | {name} | | refused | | |")
                continue
            alone, with_job, slow = slowdown[name]
            target = ""
            if name == "ioplane" and "qsd" in slowdown:
                limit = slowdown["qsd"][2] / 2
                target = f"≤ {100 * limit:.1f}%: {'met' if slow <= limit else 'not met'}"
            print(f"| {row} | {name} | {alone:.0f} | {with_job:.0f} | {100 * slow:.1f}% | {target} |")

if __name__ == "__main__":
    main()
