#!/usr/bin/python3
"""qcow2 images shared between QEMU's tools and a storage daemon serving them
over NBD (qemu-storage-daemon's command line: --blockdev driver=qcow2 over a
file node, an NBD export on a unix socket, SIGTERM must end it with status 0):
 - read: images qemu-img and qemu-io made (clusters of 512 bytes to 2 MiB,
   compat 0.10 and 1.1, refcount widths 1/16/64, zlib and zstd compressed
   clusters partly overwritten, extended L2 with writes and zeroes inside
   subclusters, 3-deep backing chains over a qcow2 and over a shorter raw
   base, internal snapshots, a persistent dirty bitmap) are exported read-only
   and copied out with nbdcopy, with and without block status; each copy must
   equal `qemu-img convert -O raw`, and no image file may change;
 - write: a writable export (the node with discard=unmap, in an IOThread)
   takes qemu-io writes (inside a cluster, across clusters, unaligned, 4 MiB),
   write zeroes with and without unmap, discards of whole clusters,
   concurrent writes to disjoint parts of the same new cluster, and an
   nbdcopy of 8 MiB holding a hole; the same writes kept in an expected raw
   image in Python must read back through the daemon, and after SIGTERM
   `qemu-img check` finds no errors and no leaks, `qemu-img compare` finds the
   expected content, `qemu-img info` the virtual size, clean, and
   `qemu-img map` no data left in discarded clusters. Variants: an
   empty v3 image, compat 0.10, 512-byte clusters, extended L2, overlays
   whose partial writes copy the rest of the cluster from the backing file
   (which stays unchanged), an image with an internal snapshot (whose data
   stays as it was), refcount widths 1 and 64, a compressed image;
 - growth: 18 MiB of scattered writes into a 512-byte-cluster image outgrow
   its first refcount table cluster.
Usage: qcow2_interop.py DAEMON
Environment: QCOW2_INTEROP_IOTHREAD=write (the writing cases' export runs in
an IOThread), all, or none; the default is write, except none for
qemu-storage-daemon (its --version says so): Debian's 7.2 aborts on the first
client disconnect from an export in an IOThread (docs/BENCHMARKS.md).
QCOW2_INTEROP_ONLY=TEXT runs only the cases whose name contains TEXT. A
failing case's files stay in /tmp.
"""
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB  # every image's virtual size, unless a case says otherwise
IOTHREAD = os.environ.get("QCOW2_INTEROP_IOTHREAD", "")  # resolved in main()
ONLY = os.environ.get("QCOW2_INTEROP_ONLY", "")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def run(*cmd, ok=(0,), timeout=120):
    cmd = [str(c) for c in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode not in ok:
        raise Failure(f"{' '.join(cmd)[:400]}: exit status {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def qemu_io(target, cmds, fmt="qcow2"):
    args = ["qemu-io", "-f", fmt, target]
    for c in cmds:
        args += ["-c", c]
    r = run(*args)
    out = r.stdout + r.stderr
    check("failed" not in out and "error" not in out.lower(), f"qemu-io on {target}:\n{out[-2000:]}")


def create(path, size=SIZE, backing=None, backing_fmt="qcow2", **opts):
    """An empty qcow2 image; opts are qemu-img's -o options."""
    o = ",".join(f"{k}={v}" for k, v in opts.items())
    run("qemu-img", "create", "-f", "qcow2", *(["-o", o] if o else []),
        *(["-b", backing, "-F", backing_fmt] if backing else []), path, size)
    return path


def to_raw(img, out, *extra):
    run("qemu-img", "convert", "-f", "qcow2", *extra, "-O", "raw", img, out)
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def same_content(got, want, what):
    """Byte for byte, naming the first difference."""
    sizes = os.path.getsize(got), os.path.getsize(want)
    check(sizes[0] == sizes[1], f"{what}: {sizes[0]} bytes, expected {sizes[1]}")
    with open(got, "rb") as a, open(want, "rb") as b:
        off = 0
        while x := a.read(MiB):
            y = b.read(MiB)
            if x != y:
                i = next(i for i in range(len(x)) if x[i] != y[i])
                raise Failure(f"{what}: differs at offset {off + i}: {x[i:i + 16].hex()}, "
                              f"expected {y[i:i + 16].hex()}")
            off += len(x)


def qcow2_header(img):
    """(version, refcount_table_offset, refcount_table_clusters)"""
    with open(img, "rb") as f:
        h = f.read(60)
    magic, version = struct.unpack(">4sI", h[:8])
    check(magic == b"QFI\xfb", f"{img} is not a qcow2 image")
    return (version, *struct.unpack(">QI", h[48:60]))


# --- the daemon --------------------------------------------------------------

_serial = 0


@contextmanager
def served(img, writable=False, iothread=False):
    """The daemon exporting IMG (qcow2 over file) as "x"; yields the URI.
    Leaving the block sends SIGTERM and expects status 0."""
    global _serial
    _serial += 1
    d = os.path.dirname(img)
    sock, log = os.path.join(d, f"nbd{_serial}.sock"), os.path.join(d, f"daemon{_serial}.log")
    node = f"driver=qcow2,node-name=n,file.driver=file,file.filename={img}," + \
        ("discard=unmap" if writable else "read-only=on")
    export = "type=nbd,id=e,node-name=n,name=x" + (",writable=on" if writable else "")
    args = []
    if iothread:
        args += ["--object", "iothread,id=io0"]
        export += ",iothread=io0"
    args += ["--blockdev", node, "--nbd-server", f"addr.type=unix,addr.path={sock}", "--export", export]
    with Daemon(DAEMON, args, log) as daemon:
        daemon.wait_for(sock, timeout=30)
        try:
            yield f"nbd+unix:///x?socket={sock}"
        except Failure as e:
            daemon.fail(f"{e}\n(files kept in {d})")
        daemon.proc.terminate()
        try:
            status = daemon.proc.wait(30)
        except subprocess.TimeoutExpired:
            daemon.fail("SIGTERM did not end the daemon within 30 s")
        if status != 0:
            daemon.fail(f"daemon exit status {status} after SIGTERM")


# --- contents ----------------------------------------------------------------

def layer_cmds(cs, p, shift=0, size=SIZE):
    """qemu-io commands for an image of cluster size CS, patterns from P:
    whole clusters, part of an allocated and of a new cluster, across a
    boundary, unaligned, then zeroes and a discard over data, and the end of
    the disk. SHIFT moves everything (an overlay's writes straddle its
    backing file's)."""
    s = shift
    return [
        f"write -P {p:#x} {s} {max(2 * cs, 256 * KiB)}",
        f"write -P {p + 1:#x} {s + cs + cs // 4} {cs // 2}",
        f"write -P {p + 2:#x} {s + 4 * MiB + 4 * cs - 700} 1400",
        f"write -P {p + 3:#x} {s + 8 * MiB + 12345} {MiB + 777}",
        f"write -P {p + 6:#x} {s + 12 * MiB + cs // 4} {cs // 2}",
        f"write -P {p + 4:#x} {s + 16 * MiB} {4 * max(cs, 64 * KiB)}",
        f"write -z {s + 16 * MiB} {cs}",
        f"write -z {s + 16 * MiB + cs + cs // 8} {cs // 4}",
        f"discard {s + 16 * MiB + 2 * cs} {cs}",
        f"write -P {p + 5:#x} {size - cs - 100 - s} {cs + 100}",
    ]


def subcluster_cmds(cs, p, base=32 * MiB):
    """Extended L2 (32 subclusters a cluster): part of one subcluster, a
    whole one, zeroed subclusters in an allocated and in a new cluster,
    zeroes inside a subcluster, a write across subclusters and clusters."""
    sc, b = cs // 32, base
    return [
        f"write -P {p:#x} {b + 3 * sc + sc // 4} {sc // 2}",
        f"write -P {p + 1:#x} {b + cs + 5 * sc} {sc}",
        f"write -P {p + 2:#x} {b + 2 * cs} {cs}",
        f"write -z {b + 2 * cs + 7 * sc} {2 * sc}",
        f"write -z {b + 2 * cs + 20 * sc + sc // 3} {sc // 3}",
        f"write -z {b + 4 * cs + 9 * sc} {3 * sc}",
        f"write -P {p + 3:#x} {b + 5 * cs + 30 * sc - 100} {3 * sc + 200}",
    ]


def mixed_raw(path, seed, size=SIZE):
    """A sparse raw file: text and byte ramps (compressible), random data
    (not), clusters partly random and partly zero, data across MiB lines."""
    rnd = random.Random(seed)
    text = b"qcow2 interop: a line that compresses well. "
    regions = [
        (0, (text * (2 * MiB // len(text) + 1))[:2 * MiB]),
        (2 * MiB, rnd.randbytes(2 * MiB)),
        (10 * MiB + 333, bytes(range(256)) * (3 * MiB // 256)),
        (20 * MiB - 4000, rnd.randbytes(4 * MiB)),
        (33 * MiB, rnd.randbytes(3 * MiB)),
        (50 * MiB + 5, rnd.randbytes(MiB)),
        (size - 100000, rnd.randbytes(100000)),
    ] + [(4 * MiB + i * 64 * KiB, rnd.randbytes(1000 * (i + 1))) for i in range(64)]
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in regions:
            f.seek(off)
            f.write(data)
    return path


class Expected:
    """What the disk should read as: a bytearray that takes the same qemu-io
    commands (written patterns; zeroes and whole-cluster discards read as 0)."""

    def __init__(self, init=None, size=SIZE):
        self.data = bytearray(size)
        if init:
            with open(init, "rb") as f:
                self.put(0, f.read())

    def put(self, off, data):
        self.data[off:off + len(data)] = data

    def apply(self, cmds):
        for c in cmds:
            w = c.split()
            if w[0] == "aio_flush":
                continue
            off, length = int(w[-2]), int(w[-1])
            if w[0] in ("write", "aio_write") and w[1] == "-P":
                self.put(off, bytes([int(w[2], 0)]) * length)
            elif (w[0] == "write" and w[1] == "-z") or w[0] == "discard":
                self.put(off, bytes(length))
            else:
                raise ValueError(f"no model for {c!r}")

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.data)
        return path


# --- reading -----------------------------------------------------------------

def read_through_daemon(img, files):
    """nbdcopy of the read-only export (with and without block status) must
    equal qemu-img convert's; FILES (the chain) must stay as they were."""
    d = os.path.dirname(img)
    ref = to_raw(img, os.path.join(d, "ref.raw"))
    sums = {f: sha256(f) for f in files}
    with served(img, iothread=IOTHREAD == "all") as uri:
        for opts, what in (([], "data and block status"), (["--no-extents"], "data")):
            out = os.path.join(d, "out.raw")
            if os.path.exists(out):
                os.unlink(out)
            run("nbdcopy", *opts, uri, out)
            same_content(out, ref, f"nbdcopy {' '.join(opts + [uri])} ({what}) vs qemu-img convert")
    for f in files:
        check(sha256(f) == sums[f], f"{f} changed while exported read-only")


def read_plain(d, **opts):
    cs = opts.get("cluster_size", 64 * KiB)
    img = create(f"{d}/disk.qcow2", **opts)
    qemu_io(img, layer_cmds(cs, 0x10))
    if opts.get("extended_l2") == "on":
        qemu_io(img, subcluster_cmds(cs, 0x20))
    read_through_daemon(img, [img])


def read_compressed(d, compression_type, cluster_size=64 * KiB):
    cs = cluster_size
    img = f"{d}/disk.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2",
        "-o", f"compression_type={compression_type},cluster_size={cs}", mixed_raw(f"{d}/src.raw", 1), img)
    info = json.loads(run("qemu-img", "check", "--output=json", img).stdout)
    check(info.get("compressed-clusters", 0) > 0, f"qemu-img convert -c made no compressed clusters: {info}")
    qemu_io(img, [f"write -P 0x77 {cs + 100} 300",  # into a compressed cluster
                  f"write -z {2 * cs} {cs}",
                  f"discard {4 * cs} {2 * cs}",
                  f"write -P 0x78 {6 * cs - 50} 100",
                  f"write -P 0x79 {2 * MiB + cs // 2} {cs}"])
    read_through_daemon(img, [img])


def read_chain(d, mixed=False):
    """base <- mid <- top, qcow2 throughout; MIXED: cluster sizes 64k, 4k
    and 256k, a compat=0.10 middle, an extended-L2 top."""
    cs_base, cs_mid, cs_top = (64 * KiB, 4 * KiB, 256 * KiB) if mixed else (64 * KiB,) * 3
    base = create(f"{d}/base.qcow2", cluster_size=cs_base)
    qemu_io(base, layer_cmds(cs_base, 0x10) + [f"write -P 0x1f {32 * MiB} {8 * MiB}"])
    mid = create(f"{d}/mid.qcow2", backing="base.qcow2", cluster_size=cs_mid,
                 **({"compat": "0.10"} if mixed else {}))
    qemu_io(mid, layer_cmds(cs_mid, 0x30, shift=MiB + 96 * KiB + 512))
    top = create(f"{d}/top.qcow2", backing=mid, cluster_size=cs_top,  # absolute, the other relative
                 **({"extended_l2": "on"} if mixed else {}))
    qemu_io(top, layer_cmds(cs_top, 0x50, shift=2 * MiB + 8 * KiB + 1) +
            (subcluster_cmds(cs_top, 0x60) if mixed else []))
    read_through_daemon(top, [base, mid, top])


def read_chain_raw_base(d):
    """raw (48 MiB) <- qcow2 <- qcow2 (64 MiB): past the base's end reads zeroes."""
    base = f"{d}/base.raw"
    with open(base, "wb") as f:
        f.truncate(48 * MiB)
    qemu_io(base, layer_cmds(64 * KiB, 0x10, size=48 * MiB), fmt="raw")
    mid = create(f"{d}/mid.qcow2", backing="base.raw", backing_fmt="raw")
    qemu_io(mid, layer_cmds(64 * KiB, 0x30, shift=MiB + 96 * KiB + 512))
    top = create(f"{d}/top.qcow2", backing="mid.qcow2")
    qemu_io(top, layer_cmds(64 * KiB, 0x50, shift=2 * MiB + 8 * KiB + 1))
    read_through_daemon(top, [base, mid, top])


def read_ext_l2_overlay(d):
    """Unallocated subclusters of an allocated cluster read from the backing file."""
    base = create(f"{d}/base.qcow2")
    qemu_io(base, layer_cmds(64 * KiB, 0x10) + [f"write -P 0x1f {32 * MiB} {8 * MiB}"])
    top = create(f"{d}/top.qcow2", backing="base.qcow2", extended_l2="on")
    qemu_io(top, subcluster_cmds(64 * KiB, 0x60) + layer_cmds(64 * KiB, 0x50, shift=MiB + 2048 + 1))
    read_through_daemon(top, [base, top])


def read_snapshots(d):
    """The active layer after internal snapshots and writes over their clusters."""
    img = create(f"{d}/disk.qcow2")
    qemu_io(img, layer_cmds(64 * KiB, 0x10))
    run("qemu-img", "snapshot", "-c", "s1", img)
    qemu_io(img, layer_cmds(64 * KiB, 0x40, shift=512 * KiB + 1000))
    run("qemu-img", "snapshot", "-c", "s2", img)
    qemu_io(img, [f"discard 0 {MiB}", f"write -P 0x70 {16 * MiB + 100} {MiB}"])
    read_through_daemon(img, [img])


def read_bitmap(d):
    img = create(f"{d}/disk.qcow2")
    run("qemu-img", "bitmap", "--add", img, "b0")
    qemu_io(img, layer_cmds(64 * KiB, 0x10))
    info = json.loads(run("qemu-img", "info", "--output=json", img).stdout)
    check(info["format-specific"]["data"].get("bitmaps"), f"no bitmap in qemu-img info: {info}")
    read_through_daemon(img, [img])


# --- writing -----------------------------------------------------------------

def random_with_hole(path, seed):
    """8 MiB: 3 random, a 2 MiB hole (nbdcopy writes it as zeroes), 3 random."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.write(rnd.randbytes(3 * MiB))
        f.seek(5 * MiB)
        f.write(rnd.randbytes(3 * MiB))
    return path


def shared_cluster_aio(base, cs, count, p=0x70):
    """Pairs of concurrent writes to disjoint parts of one new cluster (each
    allocation must keep the other's bytes), then a flush."""
    cmds = []
    for k in range(count):
        o = base + k * 4 * cs
        cmds += [f"aio_write -P {p + k % 8:#x} {o + cs // 4} {cs - cs // 4 + cs // 3}",
                 f"aio_write -P {p + 8 + k % 8:#x} {o + cs + cs // 3} {cs // 3}"]
    return cmds + ["aio_flush"]


def write_cmds(cs):
    """After nbdcopy's 8 MiB at 0: new and allocated clusters in part, across
    a boundary, many clusters with unaligned ends, 4 MiB, zeroes in part and
    whole, with unmap, whole-cluster discards (written again after), where
    nothing was written, and the end of the disk. cs <= 256k."""
    return [
        f"write -P 0x61 {8 * MiB + cs // 4} {cs // 2}",
        f"write -P 0x62 {MiB + cs // 4 + 3} {cs // 3}",
        f"write -P 0x63 {12 * MiB - 1000} 2000",
        f"write -P 0x64 {20 * MiB + 12345} {3 * MiB + 4321}",
        f"write -P 0x65 {32 * MiB} {4 * MiB}",
        f"write -z {32 * MiB + cs // 2 + 5} {cs}",
        f"write -z {33 * MiB} {256 * KiB}",
        f"write -z -u {34 * MiB} {512 * KiB}",
        f"discard {35 * MiB} {MiB}",
        f"write -P 0x66 {35 * MiB + 256 * KiB + 7} 3000",
        f"discard {2 * MiB} {MiB}",
        f"discard {50 * MiB} {MiB}",
        f"write -z {52 * MiB} {64 * KiB}",
        f"write -P 0x67 {SIZE - 5000} 5000",
    ]


def write_through_daemon(img, exp, steps, freed=None):
    """Runs STEPS (qemu-io command lists, or a raw file to nbdcopy to offset
    0) against a writable export, updating EXP; the export must read back
    EXP, and after SIGTERM qemu's tools must find a clean image holding it,
    with no data allocated in FREED (offset, length), a discarded range."""
    d = os.path.dirname(img)
    with served(img, writable=True, iothread=IOTHREAD != "none") as uri:
        for step in steps:
            if isinstance(step, str):
                run("nbdcopy", step, uri)
                with open(step, "rb") as f:
                    exp.put(0, f.read())
            else:
                qemu_io(uri, step, fmt="raw")
                exp.apply(step)
        expected = exp.save(os.path.join(d, "expected.raw"))
        back = os.path.join(d, "back.raw")
        run("nbdcopy", uri, back)
        same_content(back, expected, "the export read back after the writes")
    check_image(img, expected, freed)
    if freed:
        check_freed(img, *freed)


def check_image(img, expected, freed=None):
    r = run("qemu-img", "check", img, ok=(0, 1, 2, 3))
    check(r.returncode == 0 and "No errors were found on the image." in r.stdout and "leak" not in r.stdout,
          f"qemu-img check {img}: exit status {r.returncode}\n{r.stdout}{r.stderr}")
    # The file ends at its last cluster after a clean close, as QEMU's do
    # (the file grows in steps ahead of the clusters it allocates).
    # Clusters freed by a discard stay in the file (as in QEMU).
    end = json.loads(run("qemu-img", "check", "--output=json", img).stdout)["image-end-offset"]
    slack = freed[1] if freed else 0
    check(end <= os.path.getsize(img) <= end + slack,
          f"{img}: {os.path.getsize(img)} bytes, its last cluster ends at {end}")
    r = run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, expected, ok=(0, 1))
    check(r.returncode == 0, f"qemu-img compare {img} with the expected content:\n{r.stdout}{r.stderr}")
    info = json.loads(run("qemu-img", "info", "--output=json", img).stdout)
    check(info["virtual-size"] == SIZE, f"qemu-img info: virtual size {info['virtual-size']}, expected {SIZE}")
    check(not info.get("dirty-flag") and not info["format-specific"]["data"].get("corrupt"),
          f"qemu-img info: image left dirty or corrupt: {info}")


def check_freed(img, off, length):
    """discard=unmap: qemu-img map finds no data in the range."""
    extents = json.loads(run("qemu-img", "map", "--output=json", img).stdout)
    data = [e for e in extents if e["data"] and e["start"] < off + length and e["start"] + e["length"] > off]
    check(not data, f"clusters discarded through the export (discard=unmap) still hold data: {data}")


def standard_steps(d, cs, extra=()):
    return [[f"write -P 0x55 0 {4 * MiB}", f"write -P 0x56 {4 * MiB} {4 * MiB}"],
            random_with_hole(f"{d}/copy.raw", 2),
            write_cmds(cs) + list(extra),
            shared_cluster_aio(40 * MiB, cs, 16)]


def write_plain(d, **opts):
    cs = opts.get("cluster_size", 64 * KiB)
    img = create(f"{d}/disk.qcow2", **opts)
    extra = subcluster_cmds(cs, 0xa0, base=44 * MiB) if opts.get("extended_l2") == "on" else ()
    write_through_daemon(img, Expected(), standard_steps(d, cs, extra), freed=(2 * MiB, MiB))


def write_overlay(d, **opts):
    """Partial writes copy the rest of each cluster from the backing file."""
    cs = opts.get("cluster_size", 64 * KiB)
    src = mixed_raw(f"{d}/base.raw", 3)
    base = f"{d}/base.qcow2"
    run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, base)
    shutil.copy(base, f"{d}/base.orig.qcow2")
    top = create(f"{d}/top.qcow2", backing="base.qcow2", **opts)
    extra = subcluster_cmds(cs, 0xa0, base=44 * MiB) if opts.get("extended_l2") == "on" else ()
    write_through_daemon(top, Expected(src), standard_steps(d, cs, extra), freed=(2 * MiB, MiB))
    run("qemu-img", "compare", base, f"{d}/base.orig.qcow2")
    check(sha256(base) == sha256(f"{d}/base.orig.qcow2"), "the backing file changed")


def write_snapshot(d):
    """Writes over clusters an internal snapshot shares; the snapshot keeps its data."""
    img = create(f"{d}/disk.qcow2")
    qemu_io(img, layer_cmds(64 * KiB, 0x10))
    run("qemu-img", "snapshot", "-c", "s1", img)
    at_snapshot = to_raw(img, f"{d}/s1.raw")
    write_through_daemon(img, Expected(at_snapshot), standard_steps(d, 64 * KiB), freed=(2 * MiB, MiB))
    after = to_raw(img, f"{d}/s1.after.raw", "-l", "snapshot.name=s1")
    same_content(after, at_snapshot, "snapshot s1 after writes to the active layer")
    check("s1" in run("qemu-img", "snapshot", "-l", img).stdout, "snapshot s1 is gone")


def write_compressed(d):
    """Writes into compressed clusters (and discards of them)."""
    src = mixed_raw(f"{d}/src.raw", 4)
    img = f"{d}/disk.qcow2"
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd", src, img)
    write_through_daemon(img, Expected(src), standard_steps(d, 64 * KiB), freed=(2 * MiB, MiB))


def growth(d):
    """Scattered writes (two concurrent ones sharing a cluster at each place,
    in random order) into 512-byte clusters: the refcount table must grow."""
    img = create(f"{d}/disk.qcow2", cluster_size=512)
    _, _, table_before = qcow2_header(img)
    places = list(range(SIZE // (16 * KiB)))
    random.Random(5).shuffle(places)
    cmds = []
    for n, i in enumerate(places):
        o = i * 16 * KiB
        cmds += [f"aio_write -P {1 + i % 255:#x} {o + 300} 4096",
                 f"aio_write -P {1 + (i * 7) % 255:#x} {o + 4396} 200"]
        if n % 64 == 63:
            cmds.append("aio_flush")
    write_through_daemon(img, Expected(), [cmds + ["aio_flush"]])
    _, _, table_after = qcow2_header(img)
    check(table_after > table_before,
          f"the refcount table did not grow ({table_before} -> {table_after} clusters): the case tests nothing")


CASES = [
    ("read: v3, 512-byte clusters", read_plain, dict(cluster_size=512)),
    ("read: v3, 4k clusters", read_plain, dict(cluster_size=4 * KiB)),
    ("read: v3, 64k clusters, refcount_bits=16", read_plain, dict(cluster_size=64 * KiB)),
    ("read: v3, 2M clusters", read_plain, dict(cluster_size=2 * MiB)),
    ("read: compat=0.10, 64k clusters", read_plain, dict(compat="0.10")),
    ("read: compat=0.10, 4k clusters", read_plain, dict(compat="0.10", cluster_size=4 * KiB)),
    ("read: refcount_bits=1", read_plain, dict(refcount_bits=1)),
    ("read: refcount_bits=64", read_plain, dict(refcount_bits=64)),
    ("read: compressed zlib, 64k clusters", read_compressed, dict(compression_type="zlib")),
    ("read: compressed zstd, 64k clusters", read_compressed, dict(compression_type="zstd")),
    ("read: compressed zstd, 4k clusters", read_compressed, dict(compression_type="zstd", cluster_size=4 * KiB)),
    ("read: compressed zlib, 2M clusters", read_compressed, dict(compression_type="zlib", cluster_size=2 * MiB)),
    ("read: extended_l2, 16k clusters", read_plain, dict(extended_l2="on", cluster_size=16 * KiB)),
    ("read: extended_l2, 64k clusters", read_plain, dict(extended_l2="on", cluster_size=64 * KiB)),
    ("read: extended_l2, 2M clusters", read_plain, dict(extended_l2="on", cluster_size=2 * MiB)),
    ("read: extended_l2 overlay over qcow2", read_ext_l2_overlay, {}),
    ("read: chain base <- mid <- top", read_chain, {}),
    ("read: chain, 64k <- 4k compat=0.10 <- 256k extended_l2", read_chain, dict(mixed=True)),
    ("read: chain over a shorter raw base", read_chain_raw_base, {}),
    ("read: internal snapshots", read_snapshots, {}),
    ("read: persistent dirty bitmap", read_bitmap, {}),
    ("write: v3, 64k clusters", write_plain, {}),
    ("write: compat=0.10", write_plain, dict(compat="0.10")),
    ("write: 512-byte clusters", write_plain, dict(cluster_size=512)),
    ("write: extended_l2, 32k clusters", write_plain, dict(extended_l2="on", cluster_size=32 * KiB)),
    ("write: refcount_bits=1", write_plain, dict(refcount_bits=1)),
    ("write: refcount_bits=64", write_plain, dict(refcount_bits=64)),
    ("write: overlay over qcow2", write_overlay, {}),
    ("write: extended_l2 16k overlay over qcow2", write_overlay, dict(extended_l2="on", cluster_size=16 * KiB)),
    ("write: internal snapshot", write_snapshot, {}),
    ("write: compressed zstd", write_compressed, {}),
    ("growth: 512-byte clusters past the first refcount table cluster", growth, {}),
]


def iothread_mode():
    if IOTHREAD:
        return IOTHREAD
    version = run(DAEMON, "--version").stdout
    if version.startswith("qemu-storage-daemon"):
        print("note: no IOThread for qemu-storage-daemon (Debian's 7.2 aborts when a client of an export "
              "in an IOThread disconnects); QCOW2_INTEROP_IOTHREAD=write forces one")
        return "none"
    return "write"


def main():
    global IOTHREAD
    IOTHREAD = iothread_mode()
    root = tempfile.mkdtemp(prefix="qcow2-interop-")
    start, passed = time.monotonic(), 0
    for i, (name, case, kwargs) in enumerate(CASES):
        if ONLY not in name:
            continue
        d = os.path.join(root, f"case{i}")
        os.mkdir(d)
        print(f"case: {name}", flush=True)
        t = time.monotonic()
        try:
            case(d, **kwargs)
        except Exception as e:  # noqa: BLE001 (any error fails the case, files kept)
            print(f"FAIL: {name}: {e}\n(files kept in {d})")
            sys.exit(1)
        shutil.rmtree(d)
        passed += 1
        print(f"ok: {name} ({time.monotonic() - t:.1f} s)", flush=True)
    shutil.rmtree(root)
    if not passed:
        print(f"FAIL: no case matches QCOW2_INTEROP_ONLY={ONLY!r}")
        sys.exit(1)
    print(f"qcow2_interop: {passed} cases passed ({time.monotonic() - start:.0f} s, IOThread: {IOTHREAD})")


if __name__ == "__main__":
    if len(sys.argv) != 2 or IOTHREAD not in ("", "write", "all", "none"):
        sys.exit("usage: qcow2_interop.py DAEMON" if len(sys.argv) != 2 else
                 f"QCOW2_INTEROP_IOTHREAD={IOTHREAD!r}: write, all or none")
    DAEMON = sys.argv[1]
    main()
