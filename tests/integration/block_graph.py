#!/usr/bin/env python3
"""The block graph's middle through real clients (issue: block layer core):
 - a child's node-name from the command line (file.node-name=f0) is
   exportable; data written through the raw node above reads back through it;
 - a permission conflict (a blkdebug node that shares no write on its image)
   refuses a writable export of the image, naming both users;
 - blkdebug fails exactly the chosen request: qemu-io over NBD gets EIO for
   the write at the rule's sector and nothing else, the failed write leaves
   the old data, the retry succeeds; a read rule fails qemu-img convert;
   blockdev-reopen replaces the rules from QMP and the reads succeed again;
 - blkdebug align=4096: qemu-io's unaligned writes go through the request
   path's read-modify-write and read back exactly, neighbours untouched;
 - a throttle group limits fio's IOPS through an NBD export to within 10%,
   qom-set changes the limit live, object-del is refused while in use;
 - two exports in one throttle group take turns: fio with 1 request in
   flight beside fio with 16 gets at least 40% of the group's rate;
 - blockdev-reopen makes a read-only node writable for a new writable
   export, and refuses to change an option it cannot.
Usage: block_graph.py DAEMON
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

DAEMON = sys.argv[1]


def run(cmd, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def qemu_io(uri, *commands, read_only=False):
    args = ["qemu-io", "-f", "raw"] + (["-r"] if read_only else []) + [uri]
    for c in commands:
        args += ["-c", c]
    return run(args)


def fio_cmd(uri_socket, export, runtime, iodepth=8):
    return ["fio", "--name=t", "--ioengine=nbd", f"--uri=nbd+unix:///{export}?socket={uri_socket}",
            "--rw=randread", "--bs=4k", f"--iodepth={iodepth}", "--time_based", f"--runtime={runtime}",
            "--ramp_time=1", "--output-format=json"]


def fio_result(returncode, stdout, stderr):
    if returncode != 0:
        raise RuntimeError(f"fio failed: {stderr[-400:]}")
    # fio may print notes before its JSON.
    out = stdout[stdout.find("{"):]
    if not out:
        raise RuntimeError(f"fio printed no JSON: {stdout[-400:]} {stderr[-400:]}")
    return json.loads(out)["jobs"][0]["read"]["iops"]


def fio_iops(uri_socket, export, runtime=3):
    r = run(fio_cmd(uri_socket, export, runtime), timeout=runtime + 30)
    return fio_result(r.returncode, r.stdout, r.stderr)


def shared_group_iops(binary, runtime=4):
    """Two throttle nodes in one group (iops-total=400), each exported; fio
    with 16 reads in flight on one and 1 on the other at the same time:
    (busy IOPS, calm IOPS)."""
    tmp = tempfile.mkdtemp(prefix="ioplane-graph-share-")
    nbd, qmp = os.path.join(tmp, "share-nbd.sock"), os.path.join(tmp, "share-qmp.sock")
    with Daemon(binary, [
        "--object", "throttle-group,id=g1,limits.iops-total=400",
        "--blockdev", "driver=throttle,node-name=busy,throttle-group=g1,file.driver=null-co,file.size=1073741824",
        "--blockdev", "driver=throttle,node-name=calm,throttle-group=g1,file.driver=null-co,file.size=1073741824",
        "--nbd-server", f"addr.type=unix,addr.path={nbd}",
        "--export", "type=nbd,id=ebusy,node-name=busy", "--export", "type=nbd,id=ecalm,node-name=calm",
        "--chardev", f"socket,id=c0,path={qmp},server=on,wait=off", "--monitor", "chardev=c0"],
            os.path.join(tmp, "share.log"), workdir=tmp) as daemon:
        daemon.wait_for(nbd, qmp)
        procs = [subprocess.Popen(fio_cmd(nbd, name, runtime, depth), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for name, depth in (("busy", 16), ("calm", 1))]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=runtime + 30)
            results.append(fio_result(p.returncode, out, err))
        daemon.stop()
    return tuple(results)


def main():
    tmp = tempfile.mkdtemp(prefix="ioplane-graph-")
    img, img2, img3 = (os.path.join(tmp, n) for n in ("disk.img", "dbg.img", "ro.img"))
    for p in (img, img2, img3):
        with open(p, "wb") as f:
            f.truncate(8 << 20)
    nbd, qmp = os.path.join(tmp, "nbd.sock"), os.path.join(tmp, "qmp.sock")
    uri = lambda name: f"nbd+unix:///{name}?socket={nbd}"  # noqa: E731
    with Daemon(DAEMON, [
        "--object", "throttle-group,id=g0,limits.iops-total=300",
        "--blockdev", f"driver=raw,node-name=r0,file.driver=file,file.filename={img},file.node-name=f0",
        "--blockdev", f"driver=blkdebug,node-name=dbg,image.driver=file,image.filename={img2},"
                      "image.node-name=dbgimg,unshare-child-perms.0=write,align=4096,"
                      "inject-error.0.event=write_aio,inject-error.0.sector=2048,inject-error.0.once=on,"
                      "inject-error.1.event=read_aio,inject-error.1.iotype=read,inject-error.1.sector=4096",
        "--blockdev", "driver=throttle,node-name=thr,throttle-group=g0,file.driver=null-co,file.size=1G",
        "--blockdev", f"driver=file,node-name=ro,filename={img3},read-only=on",
        "--nbd-server", f"addr.type=unix,addr.path={nbd}",
        "--export", "type=nbd,id=er0,node-name=r0,writable=on",
        "--export", "type=nbd,id=ef0,node-name=f0",
        "--export", "type=nbd,id=edbg,node-name=dbg,writable=on",
        "--export", "type=nbd,id=ethr,node-name=thr",
        "--chardev", f"socket,id=c0,path={qmp},server=on,wait=off", "--monitor", "chardev=c0"],
        os.path.join(tmp, "daemon.log"), workdir=tmp) as daemon:
        daemon.wait_for(nbd, qmp)
        q = Qmp(qmp, timeout=10)

        # A child exported by the node-name it got on the command line.
        w = qemu_io(uri("r0"), "write -P 0x5c 64k 64k")
        r = qemu_io(uri("f0"), "read -P 0x5c 64k 64k", read_only=True)
        if w.returncode or r.returncode or "Pattern verification failed" in r.stdout:
            daemon.fail(f"write via r0 / read via f0: {w.stdout} {w.stderr} {r.stdout} {r.stderr}")
        names = {n["node-name"] for n in q.ok("query-named-block-nodes")}
        if not {"r0", "f0", "dbg", "dbgimg", "thr"} <= names:
            daemon.fail(f"query-named-block-nodes lacks children: {sorted(names)}")
        print("ok: file.node-name=f0 is listed and exported; data written through r0 reads back through f0")

        # qemu:allocation-depth, offered when asked for (every byte of a node
        # without a backing chain is the top layer's: depth 1, "local").
        q.ok("blockdev-add", driver="null-co", node_name="z0", size=8 << 20)
        q.ok("block-export-add", type="nbd", id="ez0", node_name="z0", allocation_depth=True)
        m = run(["nbdinfo", "--map=qemu:allocation-depth", uri("z0")])
        rows = [line.split() for line in m.stdout.splitlines() if line.strip()]
        if m.returncode or not rows or any(r[2] != "1" for r in rows) or sum(int(r[1]) for r in rows) != 8 << 20:
            daemon.fail(f"nbdinfo --map=qemu:allocation-depth: {m.stdout} {m.stderr}")
        both = run(["nbdinfo", "--map", uri("z0")])
        none = run(["nbdinfo", "--map=qemu:allocation-depth", uri("r0")])
        if both.returncode or none.returncode == 0:
            daemon.fail(f"base:allocation beside it / no depth without the option: {both.stderr} {none.stdout}")
        print("ok: qemu:allocation-depth with allocation-depth=on (depth 1 throughout), not offered without it")

        # A permission conflict names both users, as QEMU words it (an
        # export's user is "an unnamed block device" there).
        err = q.error("block-export-add", type="nbd", id="eimg", node_name="dbgimg", writable=True)
        desc = err["desc"]
        if desc != ("Permission conflict on node 'dbgimg': permissions 'write' are both required by an unnamed "
                    "block device (uses node 'dbgimg' as 'root' child) and unshared by node 'dbg' (uses node "
                    "'dbgimg' as 'file' child)."):
            daemon.fail(f"conflict message: {desc!r}")
        q.ok("block-export-add", type="nbd", id="eimg", node_name="dbgimg", writable=False)
        print(f"ok: a writable export of a node whose parent shares no write is refused: {desc}")

        # blkdebug: exactly the chosen write fails, once.
        res = qemu_io(uri("dbg"), "write -P 0x11 0 1M", "write -P 0x22 1M 4k",
                      "read -P 0x11 0 1M", "read -P 0 1M 4k", "write -P 0x22 1M 4k", "read -P 0x22 1M 4k")
        out = res.stdout + res.stderr
        if out.count("Input/output error") != 1 or "write failed" not in out or "Pattern verification failed" in out:
            daemon.fail(f"blkdebug write rule through qemu-io:\n{out}")
        print("ok: blkdebug fails the one write at sector 2048 with EIO; the data around and the retry are intact")
        # Data at the rule's sector (a hole would not be read: convert asks
        # block status first).
        w = qemu_io(uri("dbg"), "write -P 0x33 2M 64k")
        if w.returncode or "error" in w.stdout + w.stderr:
            daemon.fail(f"write at 2M: {w.stdout} {w.stderr}")
        conv = run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri("dbg"), os.path.join(tmp, "copy.img")])
        if conv.returncode == 0 or "Input/output error" not in conv.stderr:
            daemon.fail(f"qemu-img convert over a read rule: {conv.returncode} {conv.stderr}")
        ok_read = qemu_io(uri("dbg"), "read 0 2M")
        if ok_read.returncode or "error" in ok_read.stdout + ok_read.stderr:
            daemon.fail(f"reads away from the rule: {ok_read.stdout} {ok_read.stderr}")
        print("ok: a read rule fails qemu-img convert with EIO; reads elsewhere succeed")

        # Unaligned requests through align=4096: the server pads them
        # (read-modify-write for writes). qemu-io would align them itself
        # (the export advertises 4096 as its minimum block), so libnbd sends
        # them as they are, without its alignment check.
        script = (
            "import nbd\nh = nbd.NBD()\n"
            "h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)\n"
            f"h.connect_uri({uri('dbg')!r})\n"
            "h.pwrite(b'\\xab' * 5000, 3000)\n"
            "h.pwrite(b'\\xcd' * 100, 7950)\n"
            "got = h.pread(8192, 0)\n"
            "want = b'\\x11' * 3000 + b'\\xab' * 4950 + b'\\xcd' * 100 + b'\\x11' * 142\n"
            "assert got == want, [i for i in range(8192) if got[i] != want[i]][:5]\n"
            "assert h.pread(1000, 3500) == b'\\xab' * 1000\n"
            "print('unaligned ok')\n")
        # Debian's python3 has the nbd module (python3-libnbd), whatever
        # python3 comes first in PATH.
        res = run(["/usr/bin/python3", "-c", script])
        if res.returncode or "unaligned ok" not in res.stdout:
            daemon.fail(f"unaligned writes through align=4096 (libnbd): {res.stdout} {res.stderr}")
        print("ok: unaligned writes through blkdebug align=4096 (libnbd) read back exactly, neighbours untouched")

        # blockdev-reopen replaces the rules: the reads succeed.
        q.ok("blockdev-reopen", options=[{
            "driver": "blkdebug", "node-name": "dbg", "align": 4096,
            "image": "dbgimg", "unshare-child-perms": ["write"]}])
        conv = run(["qemu-img", "convert", "-f", "raw", "-O", "raw", uri("dbg"), os.path.join(tmp, "copy.img")])
        if conv.returncode != 0:
            daemon.fail(f"qemu-img convert after blockdev-reopen removed the rules: {conv.stderr}")
        err = q.error("blockdev-reopen", options=[{"driver": "blkdebug", "node-name": "dbg", "align": 512,
                                                   "image": "dbgimg", "unshare-child-perms": ["write"]}])
        if "Cannot change the option 'align'" not in err["desc"]:
            daemon.fail(f"reopen with a changed align: {err}")
        print("ok: blockdev-reopen replaces blkdebug's rules from QMP; other options cannot change")

        # Throttling: fio measures the group's limit, changed live.
        for limit in (300, 600):
            if limit != 300:
                q.ok("qom-set", path="/objects/g0", property="limits", value={"iops-total": limit})
            got = q.ok("qom-get", path="g0", property="limits")["iops-total"]
            iops = fio_iops(nbd, "thr")
            if got != limit or abs(iops - limit) > 0.1 * limit:
                daemon.fail(f"throttle: limit {limit} (qom-get {got}), fio measured {iops:.0f} IOPS")
            print(f"ok: iops-total={limit}: fio measures {iops:.0f} IOPS through the throttled export")
        err = q.error("object-del", id="g0")
        if "in use" not in err["desc"]:
            daemon.fail(f"object-del of a group in use: {err}")
        print("ok: object-del refuses a throttle group in use")

        # Reopen read-write for a writable export.
        err = q.error("block-export-add", type="nbd", id="ero", node_name="ro", writable=True)
        if "read-only" not in err["desc"]:
            daemon.fail(f"writable export of a read-only node: {err}")
        err = q.error("blockdev-reopen", options=[{"driver": "file", "node-name": "ro", "filename": img}])
        if "Cannot change the option 'filename'" not in err["desc"]:
            daemon.fail(f"reopen with another file: {err}")
        q.ok("blockdev-reopen", options=[{"driver": "file", "node-name": "ro", "filename": img3}])
        q.ok("block-export-add", type="nbd", id="ero", node_name="ro", writable=True)
        w = qemu_io(uri("ro"), "write -P 0x77 0 4k", "read -P 0x77 0 4k")
        if w.returncode or "error" in (w.stdout + w.stderr).lower():
            daemon.fail(f"write after reopen read-write: {w.stdout} {w.stderr}")
        print("ok: blockdev-reopen read-only=off lets a writable export write; a changed filename is refused")
        q.close()
        daemon.stop()

    # Members of a group take turns: a client with one request in flight
    # gets about half the group's rate beside one with 16 (in arrival order
    # it would get about 1/17), as in qemu-storage-daemon.
    busy, calm = shared_group_iops(DAEMON)
    share = calm / (busy + calm)
    if abs(busy + calm - 400) > 40 or share < 0.4:
        sys.exit(f"FAIL: shared throttle group: busy {busy:.0f} IOPS, calm {calm:.0f} IOPS (share {share:.2f})")
    print(f"ok: a shared throttle group of 400 IOPS: QD 16 gets {busy:.0f}, QD 1 gets {calm:.0f}")
    qsd = shutil.which("qemu-storage-daemon")
    if qsd:
        qbusy, qcalm = shared_group_iops(qsd)
        print(f"(qemu-storage-daemon 7.2, the same: QD 16 gets {qbusy:.0f}, QD 1 gets {qcalm:.0f})")


if __name__ == "__main__":
    main()
