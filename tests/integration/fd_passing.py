#!/usr/bin/env python3
"""Listening sockets handed to the daemon by whoever starts it, as
qemu-storage-daemon's documentation shows: `--nbd-server
addr.type=fd,addr.str=N`, `--chardev socket,fd=N,server=on` for QMP and
`--export type=vhost-user-blk,addr.type=fd,addr.str=N`. The starter binds
and listens, passes the fds and closes its copies; clients then connect to
the paths: nbdinfo, a QMP client, and ioplane-vublk with verified I/O. The
daemon leaves the socket files to their owner. An fd that is not a
listening socket is refused at start-up with a clear error.
Usage: fd_passing.py DAEMON VUBLK
"""
import os
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

DAEMON, VUBLK = sys.argv[1], sys.argv[2]


def listening(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen()
    return s


def main():
    tmp = tempfile.mkdtemp(prefix="ioplane-fdpass-")
    img, img2 = os.path.join(tmp, "disk.img"), os.path.join(tmp, "disk2.img")
    for p in (img, img2):
        with open(p, "wb") as f:
            f.truncate(16 << 20)
    paths = {n: os.path.join(tmp, n + ".sock") for n in ("nbd", "qmp", "vub")}
    socks = {n: listening(p) for n, p in paths.items()}
    fds = {n: s.fileno() for n, s in socks.items()}
    with Daemon(DAEMON, [
        "--blockdev", f"driver=file,node-name=disk,filename={img}",
        "--blockdev", f"driver=file,node-name=vdisk,filename={img2}",
        "--nbd-server", f"addr.type=fd,addr.str={fds['nbd']}",
        "--export", "type=nbd,id=e0,node-name=disk",
        "--export", f"type=vhost-user-blk,id=v0,node-name=vdisk,writable=on,addr.type=fd,addr.str={fds['vub']}",
        "--chardev", f"socket,id=c0,fd={fds['qmp']},server=on,wait=off", "--monitor", "chardev=c0"],
        os.path.join(tmp, "daemon.log"), pass_fds=tuple(fds.values()), workdir=tmp) as daemon:
        for s in socks.values():
            s.close()  # the daemon holds them now
        size = subprocess.run(["nbdinfo", "--size", f"nbd+unix:///disk?socket={paths['nbd']}"],
                              capture_output=True, text=True, timeout=30)
        if size.stdout.strip() != str(16 << 20):
            daemon.fail(f"nbdinfo through the passed NBD socket: {size.stdout!r} {size.stderr!r}")
        print("ok: nbdinfo through the passed NBD server socket")
        q = Qmp(paths["qmp"], timeout=10)
        q.ok("query-version")
        q.close()
        print("ok: QMP through the passed chardev socket")
        r = subprocess.run([VUBLK, "--socket", paths["vub"], "--rw", "randrw", "--bs", "4k", "--iodepth", "4",
                            "--runtime", "1", "--verify", "--quiet"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            daemon.fail(f"ioplane-vublk through the passed vhost-user socket: {r.returncode} {r.stderr[-300:]}")
        print("ok: verified vhost-user-blk I/O through the passed socket")
        daemon.stop()
        if not all(os.path.exists(p) for p in paths.values()):
            daemon.fail("the daemon removed socket files it did not make")
        print("ok: the socket files stay with their owner")

        with open(os.path.join(tmp, "plain"), "w") as plain:
            r = subprocess.run([DAEMON, "--nbd-server", f"addr.type=fd,addr.str={plain.fileno()}"],
                               pass_fds=(plain.fileno(),), capture_output=True, text=True, timeout=30)
        if r.returncode != 1 or "is not an open socket" not in r.stderr:
            daemon.fail(f"an fd that is not a socket: exit {r.returncode}, {r.stderr.strip()!r}")
        print("ok: an fd that is not a listening socket is refused at start-up")


if __name__ == "__main__":
    main()
