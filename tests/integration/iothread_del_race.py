#!/usr/bin/env python3
"""An IOThread deleted right after its node left it, while NBD clients join
the node's export: nothing may be stranded in the deleted thread.

One QMP connection loops: object-add io1; move the node to io1; then, in one
write, move it back to the main loop and object-del io1. Meanwhile a client
loops: connect, NBD_OPT_GO, one 512-byte READ checked against the image,
close. A connection settling into the node's context must follow the node
(or be closed), never wait in a context that is gone: every GO and READ must
be answered, the export must count no connection once the clients left,
block-export-del mode=hard must return, and SIGTERM must end the daemon.
The same for a 9P export in its own IOThread: block-export-add, clients that
connect, read a file and close, then block-export-del mode=hard and
object-del sent in one write; both must return and no client may hang.
And for a vhost-user-blk export whose queues follow its node: the node moves
to a new IOThread and back, and the IOThread is deleted, under a front end
(ioplane-vublk) that connects, writes and verifies, and disconnects; every
run must end without an error. Also: object-del of an IOThread that one
queue of a vhost-user-blk export runs in (iothread.1=q1) is refused.
Usage: iothread_del_race.py DAEMON VUBLK [SECONDS]
"""
import errno
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbd_wire import connect, go, read_ok  # noqa: E402
import p9  # noqa: E402
from qmp import Qmp  # noqa: E402

DAEMON, VUBLK = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 15
CLIENT_TIMEOUT_S = 10  # a reply later than this means it is never coming


def fail(msg, log=None):
    print(f"FAIL: {msg}")
    if log:
        with open(log, errors="replace") as f:
            print("--- daemon log (tail):\n" + "".join(f.readlines()[-30:]))
    sys.exit(1)


def race_9p(qmp, share, sock, seconds, log):
    """Rounds of: a 9P export in a new IOThread, clients, then export and
    IOThread deleted in one write. Clients may be refused or cut off (the
    export is going away), never left waiting."""
    stop = threading.Event()
    errors, reads = [], [0]

    def client():
        while not stop.is_set():
            try:
                with p9.Client.unix(sock, timeout=CLIENT_TIMEOUT_S) as c:
                    c.version()
                    root = c.new_fid()
                    c.attach(root, aname="")
                    fid = c.walk_new(root, ["data"])
                    c.lopen(fid, os.O_RDONLY)
                    if c.read(fid, 0, 5) != b"hello":
                        errors.append("9P: a read returned other data")
                    reads[0] += 1
            except socket.timeout:
                errors.append(f"9P client: no reply in {CLIENT_TIMEOUT_S} s after {reads[0]} reads")
                return
            except (ConnectionError, p9.ConnectionClosed):
                pass  # the export went away under it
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EPIPE, errno.ECONNRESET):
                    errors.append(f"9P client: {e!r}")
                    return

    t = threading.Thread(target=client)
    t.start()
    deadline, rounds = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not errors:
        qmp.ok("object-add", qom_type="iothread", id="io2")
        qmp.ok("block-export-add", type="9p", id="s9", path=share, addr={"type": "unix", "path": sock},
               iothread="io2")
        time.sleep(0.02)  # let a client in
        qmp.send_raw(b'{"execute":"block-export-del","arguments":{"id":"s9","mode":"hard"}}'
                     b'{"execute":"object-del","arguments":{"id":"io2"}}')
        deleted, gone = qmp.reply(), qmp.reply()
        if "return" not in deleted or "return" not in gone:
            errors.append(f"block-export-del {deleted}, object-del {gone}")
        rounds += 1
    stop.set()
    t.join(CLIENT_TIMEOUT_S + 5)
    if t.is_alive():
        fail("the 9P client hangs", log)
    if errors:
        fail(f"9P, after {rounds} rounds: {errors[0]}", log)
    print(f"ok: {rounds} 9P exports in their own IOThread added and deleted with it under {reads[0]} client sessions")


def race_vhost_user_blk(qmp, sock, seconds, log):
    """The node under a vhost-user-blk export (queues following it) moves to
    a new IOThread and back, which is then deleted, while ioplane-vublk runs
    short verified jobs against it."""
    stop = threading.Event()
    errors, runs = [], [0]

    def front_end():
        while not stop.is_set():
            try:
                r = subprocess.run([VUBLK, "--socket", sock, "--rw", "randrw", "--bs", "4k", "--iodepth", "4",
                                    "--runtime", "0.3", "--verify", "--quiet"],
                                   capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S * 2)
            except subprocess.TimeoutExpired:
                errors.append(f"vhost-user-blk front end hangs after {runs[0]} runs")
                return
            if r.returncode != 0:
                errors.append(f"vhost-user-blk front end: exit {r.returncode}: {r.stderr.strip()[-300:]}")
                return
            runs[0] += 1

    t = threading.Thread(target=front_end)
    t.start()
    deadline, rounds = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not errors:
        qmp.ok("object-add", qom_type="iothread", id="io3")
        qmp.ok("x-blockdev-set-iothread", node_name="vnode", iothread="io3", force=True)
        time.sleep(0.01)
        qmp.send_raw(b'{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"vnode",'
                     b'"iothread":null,"force":true}}{"execute":"object-del","arguments":{"id":"io3"}}')
        back, deleted = qmp.reply(), qmp.reply()
        if "return" not in back or "return" not in deleted:
            errors.append(f"move back {back}, object-del {deleted}")
        rounds += 1
    stop.set()
    t.join(CLIENT_TIMEOUT_S * 2 + 5)
    if t.is_alive():
        fail("the vhost-user-blk front end hangs", log)
    if errors:
        fail(f"vhost-user-blk, after {rounds} rounds: {errors[0]}", log)
    print(f"ok: {rounds} IOThreads used by a vhost-user-blk node and deleted under {runs[0]} verified front-end runs")


def main():
    tmp = tempfile.mkdtemp(prefix="ioplane-iothread-del-")
    img, nbd_sock, qmp_sock, vub_sock, vub2_sock, p9_sock, log = (
        os.path.join(tmp, n) for n in ("disk.img", "nbd.sock", "qmp.sock", "vub.sock", "vub2.sock", "9p.sock",
                                       "daemon.log"))
    img2 = os.path.join(tmp, "disk2.img")
    with open(img2, "wb") as f:
        f.truncate(64 << 20)
    share = os.path.join(tmp, "share")
    os.mkdir(share)
    with open(os.path.join(share, "data"), "wb") as f:
        f.write(b"hello")
    with open(img, "wb") as f:
        f.write(bytes(range(256)) * 4096)  # 1 MiB with a pattern
    with open(img, "rb") as f:
        first_sector = f.read(512)
    daemon = subprocess.Popen(
        [DAEMON, "--blockdev", f"driver=file,node-name=disk,filename={img}",
         "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}",
         "--export", "type=nbd,id=e0,node-name=disk",
         "--object", "iothread,id=q0", "--object", "iothread,id=q1",
         "--blockdev", "driver=null-co,node-name=vdisk,size=1048576",
         "--export", f"type=vhost-user-blk,id=v0,node-name=vdisk,addr.type=unix,addr.path={vub_sock},"
                     "num-queues=2,iothread.0=q0,iothread.1=q1",
         "--blockdev", f"driver=file,node-name=vnode,filename={img2}",
         "--export", f"type=vhost-user-blk,id=v1,node-name=vnode,writable=on,addr.type=unix,addr.path={vub2_sock}",
         "--chardev", f"socket,id=c0,path={qmp_sock},server=on,wait=off", "--monitor", "chardev=c0"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            if os.path.exists(qmp_sock) and os.path.exists(nbd_sock):
                break
            time.sleep(0.05)
        qmp = Qmp(qmp_sock)
        refused = qmp.error("object-del", id="q1")
        if "in use by export 'v0'" not in refused.get("desc", ""):
            fail(f"object-del of a vhost-user-blk queue's IOThread: {refused}", log)
        print("ok: object-del of the IOThread of a vhost-user-blk queue is refused")
        stop = threading.Event()
        errors, reads = [], [0]

        def client():
            while not stop.is_set():
                try:
                    s = connect(nbd_sock)
                    s.settimeout(CLIENT_TIMEOUT_S)
                    go(s, b"disk")
                    data = read_ok(s, 0, 512)
                    if data != first_sector:
                        errors.append("a READ returned other data")
                    s.close()
                    reads[0] += 1
                except (OSError, AssertionError) as e:
                    errors.append(f"client: {e!r} after {reads[0]} reads")
                    return

        t = threading.Thread(target=client)
        t.start()
        deadline, rounds = time.monotonic() + SECONDS, 0
        while time.monotonic() < deadline and not errors:
            qmp.ok("object-add", qom_type="iothread", id="io1")
            qmp.ok("x-blockdev-set-iothread", node_name="disk", iothread="io1", force=True)
            qmp.send_raw(b'{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"disk",'
                         b'"iothread":null,"force":true}}{"execute":"object-del","arguments":{"id":"io1"}}')
            back, deleted = qmp.reply(), qmp.reply()
            if "return" not in back or "return" not in deleted:
                errors.append(f"move back {back}, object-del {deleted}")
            rounds += 1
        stop.set()
        t.join(CLIENT_TIMEOUT_S + 5)
        if t.is_alive():
            fail("the client hangs", log)
        if errors:
            fail(f"after {rounds} rounds: {errors[0]}", log)
        print(f"ok: {rounds} IOThreads added, used and deleted under {reads[0]} client connections")
        race_9p(qmp, share, p9_sock, SECONDS / 2, log)
        race_vhost_user_blk(qmp, vub2_sock, SECONDS / 2, log)

        # Every connection ended: none is left counted, in a deleted thread.
        for _ in range(100):
            stats = qmp.ok("x-query-export-stats")
            if all(e.get("connections", 0) == 0 for e in stats):
                break
            time.sleep(0.05)
        else:
            fail(f"connections still counted after the clients left: {stats}", log)
        qmp.sock.settimeout(10)
        try:
            qmp.ok("block-export-del", id="e0", mode="hard")
            qmp.ok("nbd-server-stop")
        except socket.timeout:
            fail("block-export-del / nbd-server-stop did not return", log)
        print("ok: no connection left; block-export-del and nbd-server-stop return")
        daemon.terminate()
        try:
            status = daemon.wait(10)
        except subprocess.TimeoutExpired:
            fail("SIGTERM did not end the daemon", log)
        if status != 0:
            fail(f"daemon exit status {status} after SIGTERM", log)
        print("ok: SIGTERM ends the daemon")
        with open(log) as f:
            if "destroyed with" in f.read():
                fail("a context was destroyed with work left in it", log)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
