#!/usr/bin/python3
"""Hostile qcow2 images (QEMU's qcow2 CVE classes) against a storage daemon
serving them over NBD with qemu-storage-daemon's command line (--blockdev
driver=qcow2 over a file node, a writable NBD export on a unix socket).
Every image starts valid (qemu-img create, qemu-io writes, qemu-img snapshot
or convert -c) and has bytes patched here (big-endian fields,
../shared/specs/qcow2.rst). For each case the daemon must either
 - refuse to start: exit status 1, the error on stderr naming the problem
   (a regex per case, accepting QEMU's wording too), the image unchanged; or
 - start and answer the bad request with an I/O error (qemu-io over NBD
   reports "Input/output error") while other requests still work, and exit 0
   on SIGTERM;
never "contract violated", a sanitizer report or a crash. Where a write is
attempted, the metadata the daemon must not touch is hashed before and after
(the header cluster with its incompatible-feature bits masked, the L1 table,
the refcount table, and whatever the hostile entry points to), the only
allowed header change is the corrupt bit, and the file may not grow by more
than GROWTH_BOUND (where the write allocates, only what the hostile entry
points to is hashed: the L1 table, the refcount table and refcounts may
legitimately change); after a write that an L1 or L2 entry aimed at
metadata, the image must be marked corrupt (`qemu-img info` shows
"corrupt": true).
Cases, by class:
 - header tables: l1_size huge or too small for the virtual size, L1 table
   offset unaligned or past the end of the file; refcount_table_clusters huge
   or 0, refcount table offset unaligned or past the end of the file;
 - snapshots: nb_snapshots > 65536, the table past the end of the file or
   unaligned, an entry with a huge l1_size, with extra_data_size > 1024, a
   table cut short by the end of the file;
 - header fields: backing_file_size > 1023, the backing file name outside
   the first cluster or running past it, header_length below 104 or above the
   cluster size, cluster_bits 8, 22 and 63, an unknown incompatible feature
   bit, crypt_method 1, refcount_order 7, versions 1 and 4, bad magic, files
   shorter than the header, an extension running past the first cluster, no
   end-of-extensions marker;
 - L1 entries pointing to an unaligned L2 table, past the end of the file,
   at the L1 table, the refcount table, a refcount block, or offset 0 (the
   header's cluster; the spec reads offset 0 as unallocated, so there the
   write may also succeed, into a new table, with the header untouched);
 - L2 entries pointing to the header's cluster (offset 0 with the copied
   flag: invalid without an external data file; EIO, or read as unallocated
   as QEMU does), the refcount table, the L1 table, their own L2 table, a
   refcount block, past the end of the file, an unaligned offset;
 - compressed L2 entries whose data is garbage or past the end of the file;
 - a refcount table entry pointing at the L1 table: an allocating write
   fails (or the open does), the L1 table is never overwritten;
 - the corrupt bit (read/write refused, read-only=on serves), the dirty bit
   (read/write refused);
 - extended L2: a subcluster both allocated and zero;
 - persistent dirty bitmaps: the extension's count against the directory,
   the directory past the end of the file or too large, entries cut short
   by their name or extra data, reserved flags, granularity, huge or
   unaligned tables, duplicate names, tables and data clusters past the end
   of the file or without a refcount, reserved bits in a table entry, a
   data cluster at the L1 table.
Usage: qcow2_bad_images.py DAEMON
Environment: QCOW2_BAD_ONLY=TEXT runs only the cases whose name contains
TEXT. All cases run; the failing ones are listed at the end (exit status 1)
with their files kept in /tmp. Against qemu-storage-daemon the cases in
QEMU_DIFFERS report QEMU's different behaviour as a note, not a failure.
"""
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CS = 64 * KiB  # the templates' cluster size
SIZE = 2 * GiB  # their virtual size: 4 L1 entries of 512 MiB each
COPIED, COMPRESSED = 1 << 63, 1 << 62
OFFSET_MASK = 0x00fffffffffffe00
INCOMPAT_DIRTY, INCOMPAT_CORRUPT = 1 << 0, 1 << 1
FAR = 4 * GiB  # "past the end of the file": the templates are < 1 MiB
GROWTH_BOUND = 8 * MiB
ONLY = os.environ.get("QCOW2_BAD_ONLY", "")
CRASH = re.compile(r"contract violat|Sanitizer|runtime error:|Assertion|assertion failed|terminate called|"
                   r"Aborted|core dumped|Segmentation fault|stack smashing|double free", re.I)
EIO = "Input/output error"

# What qemu-storage-daemon 7.2 (Debian's) does differently: (case, a regex
# for the problem it explains, or None for any, the explanation). Against it
# a case whose every problem is explained here is a note, not a failure;
# ioplane must pass every case.
QEMU_DIFFERS = [
    ("L1 table past the end of the file", None,
     "QEMU checks table offsets against 2^63 only, not the file's size: the L1 table reads as zeroes"),
    ("refcount table past the end of the file", None,
     "QEMU checks table offsets against 2^63 only: the refcount table reads as zeroes, and the first "
     "allocation writes a new table there, growing the file (sparsely) to 4 GiB"),
    ("snapshot table past the end of the file", None,
     "QEMU checks table offsets against 2^63 only: the snapshot table reads as zeroes"),
    ("snapshot table truncated by the end of the file", None,
     "QEMU reads past the end of the file as zeroes"),
    ("snapshot entry with l1_size", None,
     "QEMU checks a snapshot's L1 table only when the snapshot is used (qemu-img snapshot -a / -l)"),
    ("no end-of-extensions marker", None, "QEMU stops at the end of the cluster without an error"),
    ("dirty bit set", None, "QEMU repairs a dirty image (qemu-img check -r all) when it opens it read/write"),
    ("L1 entry past the end of the file", None,
     "QEMU reads an L2 table past the end of the file as zeroes, and writes one there, growing the file"),
    ("L2 entry past the end of the file", None,
     "QEMU writes a data cluster past the end of the file, growing the file"),
    ("L1 entry to offset 0", r"daemon died.*status -6",
     "QEMU 7.2 aborts (qcow2_cache_do_get: Assertion `offset != 0' failed): L1 entry 'copied, offset 0' is "
     "loaded as an L2 table at 0 (a QEMU bug)"),
    ("L1 entry to a refcount block", r"the write did not fail with EIO",
     "QEMU acknowledges the write and refuses the metadata write-back later (overlap with the active L2 "
     "table), marking the image corrupt"),
    ("bitmap directory past the end of the file", None, "QEMU reads past the end of the file as zeroes"),
    ("bitmap table past the end of the file", None, "QEMU reads past the end of the file as zeroes"),
    ("bitmap table entry past the end of the file", None, "QEMU reads past the end of the file as zeroes"),
    ("bitmap table entry to a cluster without a refcount", None,
     "QEMU does not look at the refcounts of a bitmap's clusters (qemu-img check reports them)"),
    ("bitmap data cluster at the L1 table", None,
     "QEMU loads the L1 table's bytes as bitmap data and frees the cluster when it stores the bitmap again"),
    ("bitmap directory entries with the same name", None, "QEMU reports it in its own words"),
    ("bitmap directory entry with extra data past the directory", None,
     "QEMU computes the entry's size in an int that wraps, passes its bounds check and refuses the extra data "
     "(\"Bitmap extra data is not supported\")"),
    (None, r"afterwards: .*\nread failed: Invalid argument",
     "once it marks an image corrupt QEMU makes the node unusable (bs->drv = NULL): every later request "
     "fails (EINVAL over NBD)"),
]


def qemu_explains(name, problem):
    return next((note for case, pattern, note in QEMU_DIFFERS
                 if (case is None or name.startswith(case)) and (pattern is None or re.search(pattern, problem))),
                None)


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


# The current case's problems that do not stop it (so that one case reports
# everything it found: a wrong reply, then the metadata it damaged) and its
# daemons (their logs are printed when it fails).
PROBLEMS, SESSIONS = [], []


def soft(cond, msg):
    if not cond:
        PROBLEMS.append(msg)
    return bool(cond)


def run(*cmd, ok=(0,), timeout=60):
    cmd = [str(c) for c in cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode not in ok:
        raise Failure(f"{' '.join(cmd)[:400]}: exit status {r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# --- the image file ------------------------------------------------------------

FIELDS = {
    "magic": (0, ">I"), "version": (4, ">I"), "backing_file_offset": (8, ">Q"), "backing_file_size": (16, ">I"),
    "cluster_bits": (20, ">I"), "size": (24, ">Q"), "crypt_method": (32, ">I"), "l1_size": (36, ">I"),
    "l1_table_offset": (40, ">Q"), "refcount_table_offset": (48, ">Q"), "refcount_table_clusters": (56, ">I"),
    "nb_snapshots": (60, ">I"), "snapshots_offset": (64, ">Q"), "incompatible_features": (72, ">Q"),
    "compatible_features": (80, ">Q"), "autoclear_features": (88, ">Q"), "refcount_order": (96, ">I"),
    "header_length": (100, ">I"),
}


def get(img, off, fmt):
    with open(img, "rb") as f:
        f.seek(off)
        data = f.read(struct.calcsize(fmt))
    return struct.unpack(fmt, data.ljust(struct.calcsize(fmt), b"\0"))[0]


def put(img, off, fmt, value):
    with open(img, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(fmt, value))


def put_bytes(img, off, data):
    with open(img, "r+b") as f:
        f.seek(off)
        f.write(data)


def field(img, name):
    return get(img, *FIELDS[name])


def set_field(img, name, value):
    off, fmt = FIELDS[name]
    put(img, off, fmt, value)


class Layout:
    """Where a (still valid) image keeps its tables."""

    def __init__(self, img):
        self.cluster_bits = field(img, "cluster_bits")
        self.cs = 1 << self.cluster_bits
        self.version = field(img, "version")
        self.extended = self.version >= 3 and field(img, "incompatible_features") & (1 << 4)
        self.entry = 16 if self.extended else 8
        self.l2_entries = self.cs // self.entry
        self.l1 = field(img, "l1_table_offset")
        self.l1_size = field(img, "l1_size")
        self.reftable = field(img, "refcount_table_offset")
        self.reftable_bytes = field(img, "refcount_table_clusters") * self.cs
        self.refblock0 = get(img, self.reftable, ">Q") & ~511
        self.img = img

    def l1_pos(self, guest):
        return self.l1 + 8 * (guest // (self.cs * self.l2_entries))

    def l2_table(self, guest):
        return get(self.img, self.l1_pos(guest), ">Q") & OFFSET_MASK

    def l2_pos(self, guest):
        """File offset of the L2 entry of guest offset GUEST."""
        table = self.l2_table(guest)
        check(table, f"guest offset {guest} has no L2 table in the template")
        return table + self.entry * ((guest // self.cs) % self.l2_entries)

    def host(self, guest):
        return get(self.img, self.l2_pos(guest), ">Q") & OFFSET_MASK


# --- the daemon ----------------------------------------------------------------

class Refused:
    def __init__(self, status, out, err):
        self.status, self.out, self.err = status, out, err

    def message(self):
        """The error (qemu-storage-daemon's without the option it quotes)."""
        lines = [ln for ln in self.err.splitlines() if ln.strip() and " info [" not in ln]
        first = next((ln for ln in lines if "-storage-daemon: " in ln), lines[-1] if lines else "(nothing on stderr)")
        return re.sub(r"--blockdev \S+: ", "--blockdev ...: ", first)


class Session:
    """The daemon serving IMG as export "x" (writable unless READ_ONLY)."""
    serial = 0

    def __init__(self, img, read_only=False):
        Session.serial += 1
        d = os.path.dirname(img)
        n = Session.serial
        self.sock = os.path.join(d, f"nbd{n}.sock")
        self.out_path, self.err_path = os.path.join(d, f"daemon{n}.out"), os.path.join(d, f"daemon{n}.err")
        node = f"driver=qcow2,node-name=n,file.driver=file,file.filename={img}"
        export = "type=nbd,id=e,node-name=n,name=x"
        node += ",read-only=on" if read_only else ""
        export += "" if read_only else ",writable=on"
        self.args = [DAEMON, "--blockdev", node, "--nbd-server", f"addr.type=unix,addr.path={self.sock}",
                     "--export", export]
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=err)
        self.uri = f"nbd+unix:///x?socket={self.sock}"
        SESSIONS.append(self)

    def logs(self):
        with open(self.out_path, errors="replace") as o, open(self.err_path, errors="replace") as e:
            return o.read(), e.read()

    def tail(self):
        """Its output but the info lines."""
        out, err = self.logs()
        lines = [ln for ln in (out + err).splitlines() if " info [" not in ln]
        state = f"exit status {self.proc.returncode}" if self.proc.poll() is not None else "running"
        return f"--- daemon {' '.join(self.args[1:])}\n    ({state}), its output but info lines:\n" + \
            "\n".join(lines)[-3000:]

    def started(self, timeout=20):
        """True once it listens; a Refused if it exits first."""
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                out, err = self.logs()
                return Refused(self.proc.returncode, out, err)
            if time.monotonic() > deadline:
                self.kill()
                raise Failure(f"the daemon neither listened nor exited within {timeout} s")
            time.sleep(0.01)
        return True

    def alive(self, what):
        if self.proc.poll() is not None:
            raise Failure(f"the daemon died ({what}): status {self.proc.returncode}")

    def io(self, *cmds):
        args = ["qemu-io", "-f", "raw", self.uri]
        for c in cmds:
            args += ["-c", c]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return r.stdout + r.stderr

    def expect_eio(self, cmd, what):
        """CMD (a read or write, then a flush) must fail with EIO."""
        out = self.io(cmd, "flush")
        self.alive(f"after {cmd!r}")
        verb = cmd.split()[0]
        soft(f"{verb} failed: {EIO}" in out,
             f"{what}: `qemu-io -c '{cmd}' -c flush` through NBD: the {verb} did not fail with EIO:\n{out.strip()}")
        return out

    def expect_ok(self, cmd, what):
        out = self.io(cmd)
        self.alive(f"after {cmd!r}")
        soft("failed" not in out and "error" not in out.lower() and "verification" not in out,
             f"{what}: `qemu-io -c '{cmd}'` through NBD failed:\n{out.strip()}")
        return out

    def stop(self):
        """SIGTERM: status 0, no crash report."""
        self.alive("before SIGTERM")
        self.proc.terminate()
        try:
            status = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure("SIGTERM did not end the daemon within 30 s") from None
        soft(status == 0, f"daemon exit status {status} after SIGTERM (expected 0)")
        out, err = self.logs()
        m = CRASH.search(out + err)
        soft(not m, f"the daemon's output reports {m.group(0) if m else ''!r}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class serve:
    """with serve(img) as s: the daemon must start and end cleanly."""

    def __init__(self, img, read_only=False):
        self.s = Session(img, read_only)

    def __enter__(self):
        r = self.s.started()
        if r is not True:
            raise Failure(f"the daemon refused the image: status {r.status}: {r.message()}")
        return self.s

    def __exit__(self, kind, exc, tb):
        if kind is None:
            self.s.stop()
        else:
            self.s.kill()


def expect_refusal(img, pattern, read_only=False):
    """The daemon must exit 1 at startup, its stderr matching PATTERN, the image unchanged."""
    before = sha256(img)
    s = Session(img, read_only)
    r = s.started()
    if r is True:
        read = s.io("read -v 0 32").strip()  # what it serves, for the record
        s.kill()
        raise Failure(f"the daemon served the image instead of refusing it (expected an error matching "
                      f"/{pattern}/); `qemu-io -c 'read -v 0 32'` through NBD:\n{read}")
    m = CRASH.search(r.out + r.err)
    check(not m, f"the daemon's output at startup reports {m.group(0) if m else ''!r}")
    check(r.status == 1, f"exit status {r.status} at startup (expected 1)")
    check(re.search(pattern, r.err, re.I), f"the error on stderr does not match /{pattern}/:\n{r.err.strip()}")
    check(sha256(img) == before, "the refused image changed")
    return f"refused: {r.message()}"


def refusal_or(img, pattern, served):
    """Refused (stderr matching PATTERN), or served with SERVED(session)
    (the bad request fails) and a clean stop."""
    before = sha256(img)
    s = Session(img)
    r = s.started()
    if r is not True:
        m = CRASH.search(r.out + r.err)
        check(not m, f"the daemon's output at startup reports {m.group(0) if m else ''!r}")
        check(r.status == 1, f"exit status {r.status} at startup (expected 1)")
        check(re.search(pattern, r.err, re.I), f"the error on stderr does not match /{pattern}/:\n{r.err.strip()}")
        check(sha256(img) == before, "the refused image changed")
        return f"refused: {r.message()}"
    try:
        what = served(s)
    except BaseException:
        s.kill()
        raise
    s.stop()
    return f"served: {what}"


# --- metadata the daemon must not touch ------------------------------------------

class Guard:
    """Hashes of REGIONS {name: (offset, bytes)} of IMG, the header's cluster
    with the incompatible features masked; verify() compares them (and the
    header's other fields) after the daemon ended, and bounds the file's
    growth."""

    def __init__(self, img, regions):
        self.img = img
        self.regions = dict(regions)
        self.sums = {n: self._hash(o, b, n) for n, (o, b) in self.regions.items()}
        self.incompat = field(img, "incompatible_features")
        self.size = os.path.getsize(img)

    def _hash(self, off, n, name):
        with open(self.img, "rb") as f:
            f.seek(off)
            data = bytearray(f.read(n))
        if name == "header":
            data[72:80] = bytes(8)
        return hashlib.sha256(data).hexdigest()

    def verify(self, changed_ok=()):
        for name, (off, n) in self.regions.items():
            if name in changed_ok:
                continue
            soft(self._hash(off, n, name) == self.sums[name],
                  f"the {name} ({n} bytes at {off:#x}) changed: a write landed outside the data clusters")
        extra = field(self.img, "incompatible_features") & ~self.incompat
        soft(extra & ~INCOMPAT_CORRUPT == 0,
              f"incompatible features went from {self.incompat:#x} to {self.incompat | extra:#x}")
        grown = os.path.getsize(self.img) - self.size
        soft(grown <= GROWTH_BOUND, f"the image file grew by {grown} bytes (bound {GROWTH_BOUND})")


def standard_regions(img, **extra):
    lay = Layout(img)
    r = {"header": (0, lay.cs), "L1 table": (lay.l1, lay.l1_size * 8),
         "refcount table": (lay.reftable, lay.reftable_bytes)}
    r.update({k.replace("_", " "): v for k, v in extra.items()})
    return r


def corrupt_flag(img):
    """What `qemu-img info` says of the corrupt bit (the header bit itself if
    qemu-img cannot open the image)."""
    r = subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", img], capture_output=True, text=True)
    if r.returncode == 0:
        return bool(json.loads(r.stdout)["format-specific"]["data"].get("corrupt"))
    return bool(field(img, "incompatible_features") & INCOMPAT_CORRUPT)


def expect_corrupt(img):
    soft(corrupt_flag(img), "the image is not marked corrupt after the hostile write (qemu-img info: corrupt false)")


def fresh_copy(img, tag):
    """A copy of the hostile image as it was before any daemon ran."""
    copy = f"{img}.{tag}"
    shutil.copy(img, copy)
    return copy


# --- templates ---------------------------------------------------------------------

T = {}  # name -> path of a valid image


def qemu_io_img(img, *cmds):
    args = ["qemu-io", "-f", "qcow2", img]
    for c in cmds:
        args += ["-c", c]
    out = run(*args).stdout
    check("failed" not in out and "error" not in out.lower(), f"qemu-io {img}: {out}")


PLAIN_WRITES = ("write -P 0x11 0 64k", "write -P 0x12 64k 64k", "write -P 0x22 1G 64k")
GOOD_0 = "read -P 0x11 0 64k"
GOOD_1G = "read -P 0x22 1G 64k"


def make_templates(root):
    def create(name, *opts, size=SIZE):
        path = os.path.join(root, name)
        run("qemu-img", "create", "-f", "qcow2", *opts, path, size)
        return path

    T["plain"] = create("plain.qcow2")
    qemu_io_img(T["plain"], *PLAIN_WRITES)
    T["ext_l2"] = create("ext_l2.qcow2", "-o", "extended_l2=on")
    qemu_io_img(T["ext_l2"], *PLAIN_WRITES)
    # Two persistent bitmaps: b0 with data clusters (the writes after it),
    # b1 empty (its table's entries all zero).
    T["bitmaps"] = create("bitmaps.qcow2")
    run("qemu-img", "bitmap", "--add", T["bitmaps"], "b0")
    qemu_io_img(T["bitmaps"], *PLAIN_WRITES)
    run("qemu-img", "bitmap", "--add", T["bitmaps"], "b1")
    T["snap"] = create("snap.qcow2")
    qemu_io_img(T["snap"], *PLAIN_WRITES)
    run("qemu-img", "snapshot", "-c", "s1", T["snap"])
    qemu_io_img(T["snap"], "write -P 0x13 0 4k")
    base = create("base.qcow2")
    qemu_io_img(base, "write -P 0x11 0 64k")
    T["backing"] = create("backing.qcow2", "-b", base, "-F", "qcow2")
    qemu_io_img(T["backing"], "write -P 0x12 64k 64k")
    # Compressed clusters of one byte value each (0x31..0x34), so that reads
    # can check them with -P.
    raw = os.path.join(root, "src.raw")
    with open(raw, "wb") as f:
        for i in range(4):
            f.write(bytes([0x31 + i]) * CS)
        f.truncate(MiB)
    T["compressed"] = os.path.join(root, "compressed.qcow2")
    run("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, T["compressed"])


def template(d, name):
    path = os.path.join(d, "disk.qcow2")
    shutil.copy(T[name], path)
    return path


# --- cases: the header ---------------------------------------------------------------

def header_case(tmpl, pattern, patch):
    def case(d):
        img = template(d, tmpl)
        patch(img)
        return expect_refusal(img, pattern)
    return case


def fields(**values):
    def patch(img):
        for k, v in values.items():
            set_field(img, k, v(img) if callable(v) else v)
    return patch


REFTABLE_RE = r"(refcount|reference count) table"
# QEMU 7.2 says "Snapshot table too large" for both.
TOO_MANY_SNAPSHOTS = r"too many snapshots|snapshot table too large"


def l1_past_eof(d):
    img = template(d, "plain")
    set_field(img, "l1_table_offset", FAR)

    def served(s):
        s.expect_eio(GOOD_0.replace("-P 0x11 ", ""), "a read through an L1 table past the end of the file")
        return "the read through it failed with EIO"
    return refusal_or(img, r"L1 table.*(past|end|outside|beyond|offset)", served)


def reftable_past_eof(d):
    img = template(d, "plain")
    set_field(img, "refcount_table_offset", FAR)
    guard = Guard(img, standard_regions(img))

    def served(s):
        s.expect_eio("write -P 0x44 512M 64k", "an allocating write with the refcount table past the end of the file")
        return "an allocating write failed with EIO"
    r = refusal_or(img, r"(refcount|reference count) table.*(past|end|outside|beyond|offset)", served)
    guard.verify()
    return r


def snapshot_table(img):
    return field(img, "snapshots_offset")


def snapshot_entry(img, rel, fmt, value):
    put(img, snapshot_table(img) + rel, fmt, value)


def snapshots_truncated(d):
    """The table moved to a cluster at the end of the file, the file cut 20
    bytes into the entry (the fixed part is 40)."""
    img = template(d, "snap")
    off = snapshot_table(img)
    with open(img, "rb") as f:
        f.seek(off)
        entry = f.read(CS)
    end = (os.path.getsize(img) + CS - 1) // CS * CS
    with open(img, "r+b") as f:
        f.seek(end)
        f.write(entry[:20])
        f.truncate(end + 20)
    set_field(img, "snapshots_offset", end)
    return expect_refusal(img, r"snapshot table.*(truncated|short|end|past)|snapshot")


def no_end_marker(d):
    """Unknown (ignorable) extensions of no data fill the first cluster from
    the header's end: no type-0 entry anywhere."""
    img = template(d, "plain")
    hl = field(img, "header_length")
    put_bytes(img, hl, struct.pack(">II", 0x12345678, 0) * ((CS - hl) // 8))
    return expect_refusal(img, r"(end|terminat).*(marker|extension)|extension.*(end|terminat)")


def extension_past_cluster(d):
    img = template(d, "plain")
    hl = field(img, "header_length")
    check(get(img, hl, ">I") != 0, "the template has no header extension")
    put(img, hl + 4, ">I", CS)  # the first extension's length
    return expect_refusal(img, r"header extension|extension.*(too large|past|end)")


def truncated_file(n):
    def case(d):
        img = template(d, "plain")
        with open(img, "r+b") as f:
            f.truncate(n)
        return expect_refusal(img, r"too (small|short)|header")
    return case


# --- cases: L1 and L2 entries ----------------------------------------------------------

def hostile_l1(target, corrupt_required=True):
    """L1 entry 0 (guest 0 - 512 MiB) points to TARGET(layout): (offset,
    region name or None). A write to guest 0 must fail with EIO, guest 1 GiB
    still read, the header, L1 table, refcount table and the target
    unchanged, the image marked corrupt."""
    def case(d):
        img = template(d, "plain")
        lay = Layout(img)
        off, name, size = target(lay)
        extra = {name: (off, size)} if name else {}
        extra["L2 table of L1 entry 0"] = (lay.l2_table(0), CS)
        put(img, lay.l1, ">Q", off | COPIED)
        read_img = fresh_copy(img, "read")
        guard = Guard(img, standard_regions(img, **extra))
        with serve(img) as s:
            s.expect_eio("write -P 0x55 0 4k", "a write through the hostile L1 entry")
            s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
        guard.verify()
        if corrupt_required:
            expect_corrupt(img)
        # A read first, on an image no daemon touched yet.
        with serve(read_img) as s:
            read = s.io("read 0 4k")
            s.alive("after a read through the hostile L1 entry")
            s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
        rd = "EIO" if f"read failed: {EIO}" in read else "succeeded"
        return f"write EIO, metadata unchanged, marked corrupt; a read there {rd}"
    return case


def l1_unaligned(d):
    img = template(d, "plain")
    lay = Layout(img)
    l2 = lay.l2_table(0)
    put(img, lay.l1, ">Q", (l2 + 512) | COPIED)
    read_img = fresh_copy(img, "read")
    guard = Guard(img, standard_regions(img, L2_table=(l2, CS)))

    def served(s):
        s.expect_eio("write -P 0x55 0 4k", "a write through an L1 entry to an unaligned L2 table")
        s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
        return "write EIO"
    r = refusal_or(img, r"L2 table.*(align|offset)|L1 entry", served)
    if r.startswith("served"):
        guard.verify()
        expect_corrupt(img)

        def served_read(s):
            s.expect_eio("read 0 4k", "a read through an L1 entry to an unaligned L2 table")
            s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
            return "read EIO"
        r += ", metadata unchanged, marked corrupt; " + refusal_or(read_img, r"L2 table", served_read)
    return r


def l1_past_end(d):
    img = template(d, "plain")
    lay = Layout(img)
    put(img, lay.l1, ">Q", FAR | COPIED)
    read_img = fresh_copy(img, "read")
    guard = Guard(img, standard_regions(img))

    def served(s):
        s.expect_eio("write -P 0x55 0 4k", "a write through an L1 entry past the end of the file")
        s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
        return "write EIO"
    pattern = r"L2 table.*(outside|past|end|beyond)"
    r = refusal_or(img, pattern, served)
    guard.verify()
    if r.startswith("served"):
        expect_corrupt(img)

        def served_read(s):
            s.expect_eio("read 0 4k", "a read through an L1 entry past the end of the file")
            return "read EIO"
        r += "; " + refusal_or(read_img, pattern, served_read)
    return r


def l1_offset_zero(d):
    """L1 entry 0 = copied flag, offset 0 (the header's cluster; the spec:
    offset 0 means unallocated). The write may fail (EIO, image marked
    corrupt) or allocate a new L2 table; the header never changes."""
    img = template(d, "plain")
    lay = Layout(img)
    put(img, lay.l1, ">Q", COPIED)
    guard = Guard(img, standard_regions(img))
    with serve(img) as s:
        out = s.io("write -P 0x55 0 4k", "flush")
        s.alive("after the write")
        failed = EIO in out
        check(failed or "failed" not in out, f"the write failed otherwise than with EIO:\n{out}")
        if not failed:
            s.expect_ok("read -P 0x55 0 4k", "the written data read back")
            s.expect_ok("read -P 0 4k 60k", "the rest of the (now unallocated) range reads as zeroes")
        s.expect_ok(GOOD_1G, "a read through a good L1 entry afterwards")
    if failed:
        guard.verify()
        expect_corrupt(img)
        return "write EIO, metadata unchanged, marked corrupt"
    guard.verify(changed_ok=("L1 table", "refcount table"))
    check(not corrupt_flag(img), "the image is marked corrupt although the write succeeded")
    check(field(img, "incompatible_features") == guard.incompat, "the header's features changed")
    h = Layout(img)
    check(h.l2_table(0) not in (0, lay.l1, lay.reftable, lay.refblock0), f"L1 entry 0 -> {h.l2_table(0):#x}")
    return "offset 0 read as unallocated: the write went to a new L2 table, the header unchanged"


def hostile_l2(target, offset_zero=False):
    """The L2 entry of guest cluster 1 (64k) points to TARGET(layout):
    (host offset, region name or None, bytes). A write there must fail with
    EIO, the rest still read, the metadata unchanged, the image corrupt."""
    def case(d):
        img = template(d, "plain")
        lay = Layout(img)
        off, name, size = target(lay)
        extra = {name: (off, size)} if name else {}
        extra["L2 table"] = (lay.l2_table(0), CS)
        put(img, lay.l2_pos(64 * KiB), ">Q", off | COPIED)
        guard = Guard(img, standard_regions(img, **extra))
        with serve(img) as s:
            s.expect_eio("write -P 0x55 64k 4k", "a write into the cluster the hostile L2 entry maps")
            s.expect_ok(GOOD_0, "a read of a good cluster of the same L2 table afterwards")
            s.expect_ok(GOOD_1G, "a read through another L2 table afterwards")
        guard.verify()
        expect_corrupt(img)
        return "write EIO, metadata unchanged, marked corrupt"
    return case


def l2_offset_zero(d):
    """Offset 0 with the copied flag in a standard L2 entry: invalid without
    an external data file (the spec); QEMU reads it as unallocated. Either
    EIO (and corrupt) or a write into a new cluster; never into the header."""
    img = template(d, "plain")
    lay = Layout(img)
    put(img, lay.l2_pos(64 * KiB), ">Q", COPIED)
    guard = Guard(img, standard_regions(img))
    with serve(img) as s:
        out = s.io("write -P 0x55 64k 4k", "flush")
        s.alive("after the write")
        failed = EIO in out
        check(failed or "failed" not in out, f"the write failed otherwise than with EIO:\n{out}")
        if not failed:
            s.expect_ok("read -P 0x55 64k 4k", "the written data read back")
            s.expect_ok("read -P 0 68k 60k", "the rest of the cluster reads as zeroes (unallocated before)")
        s.expect_ok(GOOD_0, "a read of a good cluster of the same L2 table afterwards")
    if failed:
        guard.verify()
        expect_corrupt(img)
        return "write EIO, metadata unchanged, marked corrupt"
    guard.verify(changed_ok=("refcount table",))
    check(not corrupt_flag(img), "the image is marked corrupt although the write succeeded")
    check(field(img, "incompatible_features") == guard.incompat, "the header's features changed")
    check(Layout(img).host(64 * KiB) not in (0, lay.l1, lay.reftable, lay.refblock0), "the new cluster")
    return "offset 0 read as unallocated: the write went to a new cluster, the header unchanged"


def l2_past_end(d):
    img = template(d, "plain")
    lay = Layout(img)
    put(img, lay.l2_pos(64 * KiB), ">Q", FAR | COPIED)
    read_img = fresh_copy(img, "read")
    guard = Guard(img, standard_regions(img, L2_table=(lay.l2_table(0), CS)))
    with serve(img) as s:
        s.expect_eio("write -P 0x55 64k 4k", "a write into a data cluster past the end of the file")
        s.expect_ok(GOOD_0, "a read of a good cluster of the same L2 table afterwards")
    guard.verify()
    expect_corrupt(img)
    with serve(read_img) as s:
        read = s.io("read 64k 4k")
        s.alive("after a read of a data cluster past the end of the file")
        s.expect_ok(GOOD_0, "a read of a good cluster afterwards")
    rd = "EIO" if f"read failed: {EIO}" in read else "zeroes" if "failed" not in read else read.strip()
    return f"write EIO, metadata unchanged, file not grown, marked corrupt; a read there: {rd}"


def l2_unaligned(d):
    img = template(d, "plain")
    lay = Layout(img)
    host = lay.host(64 * KiB)
    put(img, lay.l2_pos(64 * KiB), ">Q", (host + 512) | COPIED)
    read_img = fresh_copy(img, "read")
    guard = Guard(img, standard_regions(img, L2_table=(lay.l2_table(0), CS)))
    with serve(img) as s:
        s.expect_eio("write -P 0x55 64k 4k", "a write into a cluster at an unaligned offset")
        s.expect_ok(GOOD_0, "a read of a good cluster of the same L2 table afterwards")
    guard.verify()
    expect_corrupt(img)
    with serve(read_img) as s:
        s.expect_eio("read 64k 4k", "a read of a cluster at an unaligned offset")
        s.expect_ok(GOOD_1G, "a read through another L2 table afterwards")
    return "write EIO, metadata unchanged, marked corrupt; read EIO"


# --- cases: compressed clusters -----------------------------------------------------------

def compressed_entry(img, guest):
    lay = Layout(img)
    e = get(img, lay.l2_pos(guest), ">Q")
    check(e & COMPRESSED, f"guest {guest} is not compressed in the template")
    x = 62 - (lay.cluster_bits - 8)
    return lay, e, e & ((1 << x) - 1), x


def compressed_garbage(d):
    img = template(d, "compressed")
    lay, e, host, _ = compressed_entry(img, 0)
    # The first 64 bytes of cluster 0's stream (the next cluster's stream
    # may share its last sector).
    put_bytes(img, host, bytes((i * 167 + 13) & 0xff for i in range(64)))
    guard = Guard(img, standard_regions(img, L2_table=(lay.l2_table(0), CS)))
    with serve(img) as s:
        s.expect_eio("read 0 4k", "a read of a compressed cluster holding garbage")
        s.expect_ok(f"read -P 0x33 {2 * CS} {CS}", "a read of a good compressed cluster afterwards")
        s.expect_ok(f"read -P 0 {4 * CS} {CS}", "a read of an unallocated cluster afterwards")
    guard.verify()
    return "read EIO, other clusters read"


def compressed_past_end(d):
    img = template(d, "compressed")
    lay, e, host, x = compressed_entry(img, CS)
    put(img, lay.l2_pos(CS), ">Q", (e & ~((1 << x) - 1)) | (FAR + 100))
    guard = Guard(img, standard_regions(img, L2_table=(lay.l2_table(0), CS)))
    with serve(img) as s:
        s.expect_eio(f"read {CS} 4k", "a read of a compressed cluster past the end of the file")
        s.expect_ok(f"read -P 0x33 {2 * CS} {CS}", "a read of a good compressed cluster afterwards")
    guard.verify()
    return "read EIO, other clusters read"


# --- cases: refcounts, feature bits, subclusters --------------------------------------------

def reftable_to_l1(d):
    """Refcount table entry 0 names the L1 table as refcount block 0. An
    allocating write (guest 512 MiB: new L2 table and data) must fail (or the
    open); the L1 table must not be overwritten."""
    img = template(d, "plain")
    lay = Layout(img)
    put(img, lay.reftable, ">Q", lay.l1)
    # The write allocates: the refcount table may change (QEMU's does); the
    # L1 table, the target of the hostile entry, may not.
    guard = Guard(img, {"header": (0, CS), "L1 table": (lay.l1, CS)})
    reftable = Guard(img, {"refcount table": (lay.reftable, lay.reftable_bytes)})

    def served(s):
        s.expect_eio("write -P 0x55 512M 64k", "an allocating write with refcount block 0 at the L1 table")
        s.expect_ok(GOOD_0, "a read of allocated data afterwards")
        s.expect_ok(GOOD_1G, "a read through another L1 entry afterwards")
        return "the allocating write failed with EIO"
    r = refusal_or(img, r"refcount block|(refcount|reference count)", served)
    guard.verify()
    if r.startswith("refused"):
        return r
    moved = reftable.sums["refcount table"] != reftable._hash(lay.reftable, lay.reftable_bytes, "refcount table")
    return r + f"; L1 table unchanged, refcount table {'changed' if moved else 'unchanged'}" + \
        (", marked corrupt" if corrupt_flag(img) else ", not marked corrupt")


# --- cases: persistent dirty bitmaps --------------------------------------------------

EXT_BITMAPS = 0x23852875


class Bitmaps:
    """Where a (still valid) image keeps its bitmaps: the extension's fields
    and each directory entry's offset in the file."""

    def __init__(self, img):
        pos = field(img, "header_length")
        while True:
            kind, length = get(img, pos, ">I"), get(img, pos + 4, ">I")
            check(kind != 0, "the template has no bitmaps extension")
            if kind == EXT_BITMAPS:
                break
            pos += 8 + (length + 7) // 8 * 8
        self.ext = pos + 8  # nb_bitmaps, reserved, directory size, directory offset
        self.count, self.dir_size, self.dir = get(img, pos + 8, ">I"), get(img, pos + 16, ">Q"), get(img, pos + 24, ">Q")
        self.entries = []
        off = self.dir
        for _ in range(self.count):
            self.entries.append(off)
            off += (24 + get(img, off + 18, ">H") + 7) // 8 * 8

    def table(self, img, i):
        return get(img, self.entries[i], ">Q")


def bitmap_case(pattern, patch):
    def case(d):
        img = template(d, "bitmaps")
        patch(img, Bitmaps(img), Layout(img))
        return expect_refusal(img, pattern)
    return case


def bitmap_to_free_cluster(img, bm, lay):
    """b0's first data cluster: a cluster inside the file (grown by four)
    that no refcount covers."""
    end = (os.path.getsize(img) + CS - 1) // CS * CS
    os.truncate(img, end + 4 * CS)
    put(img, bm.table(img, 0), ">Q", end + 2 * CS)


def bitmap_data_at_l1(d):
    """Bitmap b0's first data cluster is the L1 table (which has a refcount):
    the image is refused, or served with the bitmaps' clusters seen as
    overlapping metadata, the image marked corrupt and never written but
    for that bit."""
    img = template(d, "bitmaps")
    bm, lay = Bitmaps(img), Layout(img)
    put(img, bm.table(img, 0), ">Q", lay.l1)
    guard = Guard(img, standard_regions(img))

    def served(s):
        s.expect_ok(GOOD_0, "a read")
        # EIO (corrupt) or EPERM (its bitmaps are read-only): refused.
        out = s.io("write -P 0x55 0 4k")
        s.alive("after a write")
        soft("write failed" in out, f"a write to an image found corrupt at open succeeded:\n{out.strip()}")
        return "writes refused"
    r = refusal_or(img, r"bitmap|overlap", served)
    guard.verify()
    if r.startswith("served"):
        expect_corrupt(img)
    return r


def corrupt_bit(d):
    img = template(d, "plain")
    set_field(img, "incompatible_features", field(img, "incompatible_features") | INCOMPAT_CORRUPT)
    msg = expect_refusal(img, r"corrupt")
    before = sha256(img)
    with serve(img, read_only=True) as s:
        s.expect_ok(GOOD_0, "a read of the read-only export of an image marked corrupt")
        s.expect_ok(GOOD_1G, "a read of the read-only export of an image marked corrupt")
    check(sha256(img) == before, "the image changed while served read-only")
    return f"read/write {msg}; read-only=on serves and reads"


def dirty_bit(d):
    img = template(d, "plain")
    set_field(img, "incompatible_features", field(img, "incompatible_features") | INCOMPAT_DIRTY)
    msg = expect_refusal(img, r"dirty|not closed cleanly")
    before = sha256(img)
    with serve(img, read_only=True) as s:
        s.expect_ok(GOOD_0, "a read of the read-only export of a dirty image")
    check(sha256(img) == before, "the image changed while served read-only")
    return f"read/write {msg}; read-only=on serves and reads"


def subcluster_alloc_and_zero(d):
    img = template(d, "ext_l2")
    lay = Layout(img)
    pos = lay.l2_pos(0)
    bitmap = get(img, pos + 8, ">Q")
    check(bitmap & 0xffffffff == 0xffffffff, f"template: cluster 0's bitmap is {bitmap:#x}")
    put(img, pos + 8, ">Q", bitmap | (1 << (32 + 3)))  # subcluster 3: allocated and zero
    sc = CS // 32
    guard = Guard(img, standard_regions(img, L2_table=(lay.l2_table(0), CS)))
    with serve(img) as s:
        s.expect_eio(f"read {3 * sc} {sc}", "a read of a subcluster both allocated and zero")
        s.expect_ok(f"read -P 0x12 {CS} {CS}", "a read of another cluster afterwards")
        s.expect_ok(GOOD_1G, "a read through another L2 table afterwards")
    guard.verify()
    return f"read EIO, other clusters read{', marked corrupt' if corrupt_flag(img) else ''}"


# --- the list ------------------------------------------------------------------------------

def region(kind):
    return {
        "L1": lambda lay: (lay.l1, "L1 table", lay.l1_size * 8),
        "reftable": lambda lay: (lay.reftable, "refcount table", lay.reftable_bytes),
        "refblock": lambda lay: (lay.refblock0, "refcount block", lay.cs),
        "own L2": lambda lay: (lay.l2_table(0), None, lay.cs),
    }[kind]


CASES = [
    # The header's tables.
    ("l1_size huge (0x10000000)", header_case("plain", r"L1 table.*too (large|big)", fields(l1_size=0x10000000))),
    ("l1_size too small for the virtual size", header_case("plain", r"L1 table.*too small", fields(l1_size=1))),
    ("L1 table offset unaligned",
     header_case("plain", r"L1 table.*(offset|align)", fields(l1_table_offset=lambda i: Layout(i).l1 + 512))),
    ("L1 table past the end of the file", l1_past_eof),
    ("refcount_table_clusters huge (0xffffff)",
     header_case("plain", REFTABLE_RE + r".*too (large|big)", fields(refcount_table_clusters=0xffffff))),
    ("refcount table offset unaligned",
     header_case("plain", REFTABLE_RE + r".*(offset|align)",
                 fields(refcount_table_offset=lambda i: Layout(i).reftable + 512))),
    ("refcount table past the end of the file", reftable_past_eof),
    ("refcount_table_clusters 0",
     header_case("plain", r"(no|not contain a|zero|empty) (refcount|reference count) table|"
                 + REFTABLE_RE + r".*(empty|zero|0 clusters)", fields(refcount_table_clusters=0))),
    # Snapshots.
    ("nb_snapshots 65537", header_case("snap", TOO_MANY_SNAPSHOTS, fields(nb_snapshots=65537))),
    ("nb_snapshots 0xffffffff", header_case("snap", TOO_MANY_SNAPSHOTS, fields(nb_snapshots=0xffffffff))),
    ("snapshot table past the end of the file",
     header_case("snap", r"snapshot table.*(past|end|outside|beyond|offset)", fields(snapshots_offset=FAR))),
    ("snapshot table offset unaligned",
     header_case("snap", r"snapshot table.*(offset|align)",
                 fields(snapshots_offset=lambda i: field(i, "snapshots_offset") + 512))),
    ("snapshot entry with l1_size 0x10000000",
     header_case("snap", r"snapshot.*L1 table.*too (large|big)|snapshot L1",
                 lambda i: snapshot_entry(i, 8, ">I", 0x10000000))),
    ("snapshot entry with extra_data_size 1025",
     header_case("snap", r"extra (data|metadata)", lambda i: snapshot_entry(i, 36, ">I", 1025))),
    ("snapshot table truncated by the end of the file", snapshots_truncated),
    # Header fields.
    ("backing_file_size 1024",
     header_case("backing", r"backing file name.*too long", fields(backing_file_size=1024))),
    ("backing file name offset past the first cluster",
     header_case("backing", r"backing file (offset|name)", fields(backing_file_offset=CS + 8))),
    ("backing file name running past the first cluster",
     header_case("backing", r"backing file (offset|name)",
                 fields(backing_file_offset=CS - 8, backing_file_size=100))),
    ("header_length 72 (< 104)", header_case("plain", r"header.*(too short|length)", fields(header_length=72))),
    ("header_length larger than the cluster",
     header_case("plain", r"header.*(exceeds cluster|length)", fields(header_length=CS + 8))),
    ("cluster_bits 8", header_case("plain", r"cluster size.*2\^8\b", fields(cluster_bits=8))),
    ("cluster_bits 22", header_case("plain", r"cluster size.*2\^22\b", fields(cluster_bits=22))),
    ("cluster_bits 63", header_case("plain", r"cluster size.*2\^63\b", fields(cluster_bits=63))),
    ("unknown incompatible feature bit 5",
     header_case("plain", r"unsupported.*feature.*\b(0x)?20\b", fields(incompatible_features=1 << 5))),
    ("unknown incompatible feature bit 63",
     header_case("plain", r"unsupported.*feature.*\b(0x)?8000000000000000\b", fields(incompatible_features=1 << 63))),
    ("crypt_method 1 (AES)", header_case("plain", r"encrypt|AES", fields(crypt_method=1))),
    ("refcount_order 7",
     header_case("plain", r"(refcount|reference count).*(width|order|too large|bits)", fields(refcount_order=7))),
    ("version 1", header_case("plain", r"unsupported (qcow2 )?version 1\b", fields(version=1))),
    ("version 4", header_case("plain", r"unsupported (qcow2 )?version 4\b", fields(version=4))),
    ("bad magic", header_case("plain", r"magic|not (in )?(a )?qcow2", fields(magic=0x514649fa))),
    ("file of 50 bytes (shorter than a header)", truncated_file(50)),
    ("file of 90 bytes (shorter than a version 3 header)", truncated_file(90)),
    ("header extension running past the first cluster", extension_past_cluster),
    ("no end-of-extensions marker", no_end_marker),
    # L1 entries.
    ("L1 entry to an unaligned L2 table", l1_unaligned),
    ("L1 entry past the end of the file", l1_past_end),
    ("L1 entry to the L1 table", hostile_l1(region("L1"))),
    ("L1 entry to the refcount table", hostile_l1(region("reftable"))),
    ("L1 entry to a refcount block", hostile_l1(region("refblock"))),
    ("L1 entry to offset 0 (the header's cluster)", l1_offset_zero),
    # L2 entries.
    ("L2 entry to offset 0 (the header's cluster)", l2_offset_zero),
    ("L2 entry to the refcount table", hostile_l2(region("reftable"))),
    ("L2 entry to the L1 table", hostile_l2(region("L1"))),
    ("L2 entry to its own L2 table", hostile_l2(region("own L2"))),
    ("L2 entry to a refcount block", hostile_l2(region("refblock"))),
    ("L2 entry past the end of the file", l2_past_end),
    ("L2 entry to an unaligned offset", l2_unaligned),
    ("compressed L2 entry to garbage", compressed_garbage),
    ("compressed L2 entry past the end of the file", compressed_past_end),
    # Refcounts, feature bits, subclusters.
    ("refcount table entry to the L1 table", reftable_to_l1),
    ("corrupt bit set", corrupt_bit),
    ("dirty bit set", dirty_bit),
    ("extended L2: subcluster both allocated and zero", subcluster_alloc_and_zero),
    # Persistent dirty bitmaps (the extension, the directory, the tables).
    ("bitmaps extension with zero bitmaps",
     bitmap_case(r"zero bitmaps", lambda img, bm, lay: put(img, bm.ext, ">I", 0))),
    ("bitmaps extension counting more bitmaps than the directory holds",
     bitmap_case(r"Less bitmaps found", lambda img, bm, lay: put(img, bm.ext, ">I", 3))),
    ("bitmaps extension counting fewer bitmaps than the directory holds",
     bitmap_case(r"More bitmaps found", lambda img, bm, lay: put(img, bm.ext, ">I", 1))),
    ("bitmap directory past the end of the file",
     bitmap_case(r"bitmap directory", lambda img, bm, lay: put(img, bm.ext + 16, ">Q", FAR))),
    ("bitmap directory size past the maximum",
     bitmap_case(r"bitmap directory size", lambda img, bm, lay: put(img, bm.ext + 8, ">Q", 1 << 40))),
    ("bitmap directory entry with a name past the directory",
     bitmap_case(r"Broken bitmap directory", lambda img, bm, lay: put(img, bm.entries[1] + 18, ">H", 0xffff))),
    ("bitmap directory entry with extra data past the directory",
     bitmap_case(r"Broken bitmap directory", lambda img, bm, lay: put(img, bm.entries[1] + 20, ">I", 0xfffffff8))),
    ("bitmap directory entry with a reserved flag",
     bitmap_case(r"doesn't satisfy the constraints", lambda img, bm, lay: put(img, bm.entries[0] + 12, ">I", 1 << 7))),
    ("bitmap directory entry with granularity_bits 63",
     bitmap_case(r"doesn't satisfy the constraints", lambda img, bm, lay: put(img, bm.entries[0] + 17, ">B", 63))),
    ("bitmap directory entry with table_size 0x7fffffff",
     bitmap_case(r"doesn't satisfy the constraints",
                 lambda img, bm, lay: put(img, bm.entries[0] + 8, ">I", 0x7fffffff))),
    ("bitmap directory entry with an unaligned table",
     bitmap_case(r"doesn't satisfy the constraints",
                 lambda img, bm, lay: put(img, bm.entries[0], ">Q", bm.table(img, 0) + 512))),
    ("bitmap directory entries with the same name",
     bitmap_case(r"already exists", lambda img, bm, lay: put(img, bm.entries[1] + 24 + 1, ">B", ord("0")))),
    ("bitmap table past the end of the file",
     bitmap_case(r"bitmap", lambda img, bm, lay: put(img, bm.entries[0], ">Q", FAR))),
    ("bitmap table entry with reserved bits",
     bitmap_case(r"bitmap_table", lambda img, bm, lay: put(img, bm.table(img, 0), ">Q", 1 << 60))),
    ("bitmap table entry past the end of the file",
     bitmap_case(r"bitmap 'b0'", lambda img, bm, lay: put(img, bm.table(img, 0), ">Q", FAR))),
    ("bitmap table entry to a cluster without a refcount", bitmap_case(r"no refcount", bitmap_to_free_cluster)),
    ("bitmap data cluster at the L1 table", bitmap_data_at_l1),
]


def main():
    version = run(DAEMON, "--version").stdout
    is_qemu = version.startswith("qemu-storage-daemon")
    root = tempfile.mkdtemp(prefix="qcow2-bad-")
    start = time.monotonic()
    make_templates(root)
    passed, failed, differs = 0, [], []
    for i, (name, case) in enumerate(CASES):
        if ONLY not in name:
            continue
        d = os.path.join(root, f"case{i}")
        os.mkdir(d)
        t = time.monotonic()
        PROBLEMS.clear()
        SESSIONS.clear()
        try:
            result = case(d)
        except Failure as e:
            PROBLEMS.append(str(e))
        finally:
            for s in SESSIONS:
                s.kill()
        if PROBLEMS:
            text = "\n".join(f"- {p.strip()}" for p in PROBLEMS)
            logs = "\n".join(s.tail() for s in SESSIONS)
            notes = [qemu_explains(name, p) for p in PROBLEMS] if is_qemu else [None]
            if all(notes):
                print(f"note: {name}: qemu-storage-daemon differs: " + "; ".join(dict.fromkeys(notes)) +
                      f"\n{text}", flush=True)
                differs.append(name)
                continue
            print(f"FAIL: {name}:\n{text}\n{logs}\n(files kept in {d})", flush=True)
            failed.append(name)
            continue
        shutil.rmtree(d)
        passed += 1
        print(f"ok: {name}: {result} ({time.monotonic() - t:.1f} s)", flush=True)
    if not passed and not failed and not differs:
        print(f"FAIL: no case matches QCOW2_BAD_ONLY={ONLY!r}")
        sys.exit(1)
    took = time.monotonic() - start
    if failed:
        print(f"FAIL: qcow2_bad_images: {len(failed)} of {passed + len(failed) + len(differs)} cases failed "
              f"({took:.0f} s): " + "; ".join(failed))
        sys.exit(1)
    shutil.rmtree(root)
    note = f", {len(differs)} known differences of qemu-storage-daemon noted" if differs else ""
    print(f"qcow2_bad_images: {passed} cases passed ({took:.0f} s{note})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: qcow2_bad_images.py DAEMON")
    DAEMON = sys.argv[1]
    main()
