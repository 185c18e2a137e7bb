#!/usr/bin/env python3
"""Clients that ask for large reads and never read the replies stay within
the daemon's memory budget (--max-buffer-memory), and other clients are
still served.

Two 9P connections (msize 4 MiB) send 256 Treads of a whole iounit each on a
sparse file, and three NBD connections send 64 reads of 32 MiB each; none
reads a reply. Each of those replies is a buffer the daemon fills and keeps
until the client reads it: without a budget that is 1 GiB per 9P connection
and 256 MiB per NBD connection. With --max-buffer-memory 128M the daemon's
RSS may grow by the budget plus one request per connection at most; a 9P
and an NBD client that read their replies get their data meanwhile, and
SIGTERM ends the daemon.
Usage: buffer_budget.py DAEMON
"""
import os
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p9  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from nbd_wire import NBD_CMD_READ, REQ_MAGIC, connect, go, read_ok  # noqa: E402

DAEMON = sys.argv[1]
MIB = 1 << 20
BUDGET = 128 * MIB
NBD_READ = 32 * MIB  # the largest NBD request


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def hostile_9p(sock_path):
    c = p9.Client.unix(sock_path)
    c.version(msize=4 * MIB)
    root = c.new_fid()
    c.attach(root, aname="")
    fid = c.walk_new(root, ["sparse"])
    _, iounit = c.lopen(fid, os.O_RDONLY)
    count = iounit or c.msize - 24
    # One write: the daemon stops reading this socket once the connection is
    # over its share, and 256 small writes would fill the socket's buffer.
    c.send(b"".join(p9.message(p9.Tread, c.new_tag(), p9.enc_read(fid, i * count, count)) for i in range(256)))
    return c


def hostile_nbd(sock_path):
    s = connect(sock_path)
    go(s, b"disk")
    s.sendall(b"".join(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i, (i % 16) * NBD_READ, NBD_READ)
                       for i in range(64)))
    return s


def main():
    tmp = tempfile.mkdtemp(prefix="ioplane-budget-")
    share, img = os.path.join(tmp, "share"), os.path.join(tmp, "disk.img")
    p9_sock, nbd_sock, log = (os.path.join(tmp, n) for n in ("9p.sock", "nbd.sock", "daemon.log"))
    os.mkdir(share)
    with open(os.path.join(share, "sparse"), "wb") as f:
        f.truncate(2 << 30)
    data = os.urandom(256 * 1024)
    with open(os.path.join(share, "data"), "wb") as f:
        f.write(data)
    with open(img, "wb") as f:
        f.truncate(512 * MIB)
        f.write(data)
    hostile = []
    with Daemon(DAEMON, ["--max-buffer-memory", str(BUDGET),
                             "--export", f"type=9p,id=share,path={share},addr.type=unix,addr.path={p9_sock}",
                             "--blockdev", f"driver=file,node-name=disk,filename={img}",
                             "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}",
                             "--export", "type=nbd,id=e0,node-name=disk"], log, workdir=tmp) as daemon:
        daemon.wait_for(p9_sock, nbd_sock)
        time.sleep(0.2)
        before = rss(daemon.pid)
        hostile += [hostile_9p(p9_sock) for _ in range(2)]
        hostile += [hostile_nbd(nbd_sock) for _ in range(3)]
        # Let the daemon take in all it will: the growth levels off.
        grown, last = 0, -1
        for _ in range(40):
            time.sleep(0.25)
            grown = rss(daemon.pid) - before
            if grown == last:
                break
            last = grown
        slack = 2 * 4 * MIB + 3 * NBD_READ + 32 * MIB  # one request per connection, allocator overhead
        print(f"RSS grew by {grown // MIB} MiB (budget {BUDGET // MIB} MiB, allowed {(BUDGET + slack) // MIB} MiB)")
        if grown > BUDGET + slack:
            daemon.fail(f"the daemon's RSS grew by {grown // MIB} MiB: more than the budget allows")
        print("ok: 2 9P and 3 NBD connections that never read their replies stay within the budget")

        # Clients that read their replies are still served, correctly.
        with p9.Client.unix(p9_sock) as c:
            c.version(msize=MIB)
            root = c.new_fid()
            c.attach(root, aname="")
            fid = c.walk_new(root, ["data"])
            c.lopen(fid, os.O_RDONLY)
            got = b"".join(c.read(fid, off, 65536) for off in range(0, len(data), 65536))
            if got != data:
                daemon.fail("a 9P client read other data")
        s = connect(nbd_sock)
        go(s, b"disk")
        if read_ok(s, 0, len(data)) != data:
            daemon.fail("an NBD client read other data")
        s.close()
        print("ok: a 9P and an NBD client that read their replies get their data meanwhile")
        for h in hostile:
            (h if isinstance(h, socket.socket) else h.sock).close()
        daemon.stop()


if __name__ == "__main__":
    main()
