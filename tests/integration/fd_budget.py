#!/usr/bin/env python3
"""9P clients that hoard fids cannot take the daemon's descriptors from
everyone else.

The daemon runs with an open-files limit of 1024. Two 9P connections clone
their root fid until the daemon refuses (each fid is a descriptor): each
must get Rlerror(EMFILE) before 1100 fids, and after at least 50. Then a
new NBD client, a new 9P client and a new QMP client must all connect and
work: the daemon keeps descriptors for them. Then 700 NBD connections that
never negotiate: those past the clients' descriptors are refused (closed at
once), QMP still answers, and once they are gone a new NBD client is served.
Usage: fd_budget.py DAEMON
"""
import errno
import os
import resource
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p9  # noqa: E402
from nbd_wire import connect, go, read_ok  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

DAEMON = sys.argv[1]
LIMIT = 1024
PATTERN = b"\xa5" * 65536


def hoard(sock, daemon):
    """Clones the root fid until refused; returns (the client, fids held)."""
    c = p9.Client.unix(sock)
    c.version()
    root = c.new_fid()
    c.attach(root, aname="")
    for n in range(1, 1100):
        try:
            c.walk(root, c.new_fid(), [])
        except p9.P9Error as e:
            if e.errno != errno.EMFILE:
                daemon.fail(f"fid {n + 1}: {e!r}, expected EMFILE")
            return c, n
    daemon.fail("1100 fids and no EMFILE")


def flood_connect(path):
    """A connection that never negotiates; waits while the backlog is full."""
    deadline = time.monotonic() + 10
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)


def nbd_reads_back(sock):
    s = connect(sock)
    s.settimeout(10)
    go(s, b"disk")
    ok = read_ok(s, 0, 4096) == PATTERN[:4096]
    s.close()
    return ok


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))  # this test's own 700 sockets
    tmp = tempfile.mkdtemp(prefix="ioplane-fds-")
    share, img = os.path.join(tmp, "share"), os.path.join(tmp, "disk.img")
    p9_sock, nbd_sock, qmp_sock, log = (os.path.join(tmp, n) for n in ("9p.sock", "nbd.sock", "qmp.sock", "daemon.log"))
    os.mkdir(share)
    with open(os.path.join(share, "data"), "wb") as f:
        f.write(b"hello")
    with open(img, "wb") as f:
        f.write(PATTERN)
    hoarders = []
    with Daemon(DAEMON, ["--export", f"type=9p,id=share,path={share},addr.type=unix,addr.path={p9_sock}",
                             "--blockdev", f"driver=file,node-name=disk,filename={img}",
                             "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}",
                             "--export", "type=nbd,id=e0,node-name=disk",
                             "--chardev", f"socket,id=c0,path={qmp_sock},server=on,wait=off", "--monitor", "chardev=c0"],
                    log, nofile=LIMIT, workdir=tmp) as daemon:
        daemon.wait_for(p9_sock, nbd_sock, qmp_sock)
        for _ in range(2):
            c, n = hoard(p9_sock, daemon)
            hoarders.append(c)
            if n < 50:
                daemon.fail(f"EMFILE after {n} fids: the share is too small")
            print(f"ok: a 9P connection got EMFILE after {n} fids")
        print(f"daemon holds {len(os.listdir(f'/proc/{daemon.pid}/fd'))} descriptors of {LIMIT}")

        if not nbd_reads_back(nbd_sock):
            daemon.fail("a new NBD client read other data")
        if p9.read_file(p9_sock, "data", 5) != b"hello":
            daemon.fail("a new 9P client read other data")
        qmp = Qmp(qmp_sock, timeout=10)
        qmp.ok("query-version")
        print("ok: new NBD, 9P and QMP clients are served beside the fid hoarders")

        flood = [flood_connect(nbd_sock) for _ in range(700)]
        qmp.ok("query-version")
        for f in flood:
            f.close()
        time.sleep(0.5)
        if not nbd_reads_back(nbd_sock):
            daemon.fail("an NBD client after the flood read other data")
        qmp.close()
        with open(log) as f:
            refusals = f.read().count("refusing client")
        if refusals == 0:
            daemon.fail("700 NBD connections and none refused")
        print(f"ok: {refusals} of 700 idle NBD connections refused; QMP answered meanwhile, and a new client is "
              "served once they left")
        for c in hoarders:
            c.close()
        daemon.stop()


if __name__ == "__main__":
    main()
