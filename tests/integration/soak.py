#!/usr/bin/env python3
"""Soak: hostile NBD, 9P and QMP clients beside clients that verify their
data, with live moves, for a few minutes.

The daemon (open-files limit 2048, --max-buffer-memory 128M) serves a
writable NBD export in an IOThread and a 9P export in another. Meanwhile:
  hostile  NBD clients that ask for 64 reads of 32 MiB and never read the
           replies; 9P clients (msize 4 MiB) that send 256 whole-iounit
           reads and never read; 9P clients that clone fids until EMFILE;
           QMP clients that send garbage, unknown commands and oversized
           input; a QMP client that runs the object-del race (an IOThread
           added, the NBD node moved into it, moved back and the IOThread
           deleted in one write);
  normal   an NBD client that writes patterns at random offsets and reads
           them back, a 9P client that creates, writes, reads back and
           removes files; both check every byte.
At the end: every normal operation checked out and there were many; the
daemon's open descriptors are back near where they started and within the
limit; with --check-rss, its RSS grew by at most the budget plus one
request per connection; SIGTERM ends it with status 0.
Usage: soak.py DAEMON [SECONDS] [--check-rss]
"""
import errno
import os
import random
import resource
import socket
import struct
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p9  # noqa: E402
from nbd_wire import NBD_CMD_READ, NBD_CMD_WRITE, REQ_MAGIC, connect, go, read_ok, request, simple_reply  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
DAEMON = args[0]
SECONDS = float(args[1]) if len(args) > 1 else 120
CHECK_RSS = "--check-rss" in sys.argv
MIB = 1 << 20
BUDGET = 128 * MIB
FD_LIMIT = 2048
IMAGE_SIZE = 64 * MIB


class Soak:
    def __init__(self, tmp):
        self.tmp = tmp
        self.share = os.path.join(tmp, "share")
        self.img = os.path.join(tmp, "disk.img")
        self.nbd_sock, self.p9_sock, self.qmp_sock, self.log = (
            os.path.join(tmp, n) for n in ("nbd.sock", "9p.sock", "qmp.sock", "daemon.log"))
        self.stop = threading.Event()
        self.errors = []
        self.counts = {}
        self.lock = threading.Lock()

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def error(self, what):
        with self.lock:
            self.errors.append(what)
        self.stop.set()

    def loop(self, name, body, expected=()):
        """Runs body() until the soak ends. Exceptions in `expected` (what a
        hostile client may get: refusals, disconnects) are counted, others
        fail the soak."""
        def run():
            while not self.stop.is_set():
                try:
                    body()
                except expected as e:
                    self.count(f"{name}: {type(e).__name__}")
                    time.sleep(0.05)
                except Exception as e:  # noqa: BLE001 (any other failure is the soak's)
                    self.error(f"{name}: {e!r}")
        t = threading.Thread(target=run, name=name)
        t.start()
        return t

    def hold(self, seconds):
        self.stop.wait(seconds)

    # ---- hostile clients ----
    def nbd_non_reader(self):
        s = connect(self.nbd_sock)
        go(s, b"disk")
        s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i, (i % 2) * 32 * MIB, 32 * MIB)
                           for i in range(64)))
        self.hold(4)
        s.close()
        self.count("nbd non-reader")

    def p9_non_reader(self):
        c = p9.Client.unix(self.p9_sock)
        c.version(msize=4 * MIB)
        root = c.new_fid()
        c.attach(root, aname="")
        fid = c.walk_new(root, ["sparse"])
        _, iounit = c.lopen(fid, os.O_RDONLY)
        c.send(b"".join(p9.message(p9.Tread, c.new_tag(), p9.enc_read(fid, i * iounit, iounit)) for i in range(256)))
        self.hold(4)
        c.close()
        self.count("9p non-reader")

    def p9_fid_hoarder(self):
        with p9.Client.unix(self.p9_sock) as c:
            c.version()
            root = c.new_fid()
            c.attach(root, aname="")
            for _ in range(5000):
                try:
                    c.walk(root, c.new_fid(), [])
                except p9.P9Error as e:
                    if e.errno != errno.EMFILE:
                        raise
                    self.count("9p fid hoarder: EMFILE")
                    break
            else:
                self.error("9p fid hoarder: 5000 fids and no EMFILE")
            self.hold(3)

    def qmp_garbage(self):
        q = Qmp(self.qmp_sock, timeout=10)
        q.send_raw(b'{"execute": "no-such-command"}')
        assert "error" in q.reply()
        q.send_raw(b'{"execute": 42}')
        assert "error" in q.reply()
        q.send_raw(b'{"execute": "query-version", "arguments": {"x": ' + b'[' * 2000 + b']' * 2000 + b'}}')
        q.reply()  # an error, or the connection closed: either is fine, a hang is not
        q.send_raw(b'}}}{{{ not json\n')
        q.close()
        self.count("qmp garbage")
        self.hold(0.01)  # hostile, not a CPU hog: the others need the 2 cores too

    def qmp_object_del_race(self, q):
        q.ok("object-add", qom_type="iothread", id="race")
        q.ok("x-blockdev-set-iothread", node_name="disk", iothread="race", force=True)
        q.send_raw(b'{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"disk","iothread":"io0",'
                   b'"force":true}}{"execute":"object-del","arguments":{"id":"race"}}')
        back, deleted = q.reply(), q.reply()
        if "return" not in back or "return" not in deleted:
            self.error(f"object-del race: move back {back}, object-del {deleted}")
        self.count("qmp object-del race")
        self.hold(0.2)

    # ---- normal clients ----
    def nbd_verifier(self):
        """Writes patterns at random offsets of its own 32 MiB, reads each back."""
        s = connect(self.nbd_sock)
        s.settimeout(60)  # live moves and hostile load slow it, never stop it
        go(s, b"disk")
        rng = random.Random()
        for _ in range(20):
            length = rng.choice([4096, 65536, 262144])
            offset = 32 * MIB + rng.randrange(0, 32 * MIB - length, 4096)
            data = rng.randbytes(length)
            request(s, NBD_CMD_WRITE, offset, length, payload=data)
            err, _ = simple_reply(s)
            if err:
                self.error(f"nbd verifier: write error {err}")
                return
            if read_ok(s, offset, length) != data:
                self.error(f"nbd verifier: {length} bytes at {offset} read back differently")
                return
            self.count("nbd verified")
        s.close()

    def p9_verifier(self):
        with p9.Client.unix(self.p9_sock, timeout=60) as c:
            c.version(msize=256 * 1024)
            root = c.new_fid()
            c.attach(root, aname="")
            rng = random.Random()
            for i in range(10):
                name = f"v{threading.get_ident()}-{i}"
                dfid = c.walk_new(root, [])
                c.lcreate(dfid, name, os.O_RDWR | os.O_CREAT, 0o644)
                data = rng.randbytes(rng.choice([100, 65536, 300000]))
                c.write_all(dfid, 0, data)
                got = b""
                while len(got) < len(data):
                    chunk = c.read(dfid, len(got), 65536)
                    if not chunk:
                        break
                    got += chunk
                if got != data:
                    self.error(f"9p verifier: {name} read back differently")
                    return
                c.clunk(dfid)
                c.unlinkat(root, name)
                self.count("9p verified")


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    tmp = tempfile.mkdtemp(prefix="ioplane-soak-")
    soak = Soak(tmp)
    os.mkdir(soak.share)
    with open(os.path.join(soak.share, "sparse"), "wb") as f:
        f.truncate(2 << 30)
    with open(soak.img, "wb") as f:
        f.truncate(IMAGE_SIZE)
    with Daemon(DAEMON, [
         "--max-buffer-memory", str(BUDGET),
         "--object", "iothread,id=io0", "--object", "iothread,id=io1",
         "--blockdev", f"driver=file,node-name=disk,filename={soak.img}",
         "--nbd-server", f"addr.type=unix,addr.path={soak.nbd_sock}",
         "--export", "type=nbd,id=e0,node-name=disk,writable=on,iothread=io0",
         "--export", f"type=9p,id=share,path={soak.share},addr.type=unix,addr.path={soak.p9_sock},iothread=io1",
         "--chardev", f"socket,id=c0,path={soak.qmp_sock},server=on,wait=off", "--monitor", "chardev=c0"],
        soak.log, nofile=FD_LIMIT, workdir=tmp) as daemon:
        run(soak, daemon)


def run(soak, daemon):
    fail = daemon.fail
    daemon.wait_for(soak.nbd_sock, soak.p9_sock, soak.qmp_sock)
    time.sleep(0.3)
    fds_before, rss_before = len(os.listdir(f"/proc/{daemon.pid}/fd")), rss(daemon.pid)
    mover = Qmp(soak.qmp_sock, timeout=60)
    gone = (ConnectionError, EOFError, socket.timeout, p9.ConnectionClosed)
    refused = gone + (FileNotFoundError, BlockingIOError)
    threads = [
        soak.loop("nbd non-reader", soak.nbd_non_reader, refused),
        soak.loop("nbd non-reader 2", soak.nbd_non_reader, refused),
        soak.loop("9p non-reader", soak.p9_non_reader, refused),
        soak.loop("9p fid hoarder", soak.p9_fid_hoarder, refused),
        soak.loop("9p fid hoarder 2", soak.p9_fid_hoarder, refused),
        soak.loop("qmp garbage", soak.qmp_garbage, gone),
        soak.loop("qmp object-del race", lambda: soak.qmp_object_del_race(mover)),
        soak.loop("nbd verifier", soak.nbd_verifier),
        soak.loop("9p verifier", soak.p9_verifier),
    ]
    peak_rss, peak_fds = 0, 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and not soak.stop.is_set():
        time.sleep(0.5)
        if daemon.proc.poll() is not None:
            soak.error(f"the daemon exited with status {daemon.proc.returncode}")
            break
        peak_rss = max(peak_rss, rss(daemon.pid))
        peak_fds = max(peak_fds, len(os.listdir(f"/proc/{daemon.pid}/fd")))
    soak.stop.set()
    for t in threads:
        t.join(90)
        if t.is_alive():
            fail(f"{t.name} hangs")
    if soak.errors:
        fail(soak.errors[0])
    summary = ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items()))
    # A move waits for its drained section, which a client that does not
    # read holds for up to 5 s before it is disconnected: few moves.
    for what, least in (("nbd verified", 20), ("9p verified", 20), ("qmp object-del race", 3)):
        if soak.counts.get(what, 0) < least:
            fail(f"too little done: {what} {soak.counts.get(what, 0)} times ({summary})")
    print(f"ok: {SECONDS:g} s: {summary}")

    # The hostile clients are gone: their descriptors come back.
    for _ in range(100):
        fds_after = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        if fds_after <= fds_before + 16:
            break
        time.sleep(0.1)
    else:
        fail(f"{fds_after} descriptors open after the soak, {fds_before} before")
    print(f"ok: descriptors: {fds_before} before, at most {peak_fds} of {FD_LIMIT} during, {fds_after} after")
    grown = peak_rss - rss_before
    if CHECK_RSS:
        # The budget, one request per connection (4 NBD non-readers at 32 MiB,
        # 9P ones at 4 MiB), the allocator's slack.
        allowed = BUDGET + 2 * 32 * MIB + 4 * MIB + 64 * MIB
        if grown > allowed:
            fail(f"RSS grew by {grown // MIB} MiB, more than {allowed // MIB} MiB")
    print(f"ok: RSS grew by at most {grown // MIB} MiB (budget {BUDGET // MIB} MiB)"
          + ("" if CHECK_RSS else "; not checked under a sanitizer"))
    mover.close()
    daemon.stop()


if __name__ == "__main__":
    main()
