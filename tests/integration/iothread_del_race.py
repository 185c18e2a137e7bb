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
from daemon_run import Daemon  # noqa: E402
from qmp import Qmp  # noqa: E402

DAEMON, VUBLK = sys.argv[1], sys.argv[2]
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 15
CLIENT_TIMEOUT_S = 10  # a reply later than this means it is never coming


def race(what, client, one_round, seconds, daemon):
    """Runs `client(errors)` in a thread (it loops until `errors` is not
    empty or the race ends, appending what went wrong; returns a count of
    what it did) while `one_round()` runs again and again in this thread
    (returning an error or None). Fails on the first error, or if the client
    hangs; returns (rounds, what the client counted)."""
    stop, errors, done = threading.Event(), [], []
    t = threading.Thread(target=lambda: done.append(client(stop, errors)))
    t.start()
    deadline, rounds = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not errors:
        err = one_round()
        if err:
            errors.append(err)
        rounds += 1
    stop.set()
    t.join(CLIENT_TIMEOUT_S * 2 + 5)
    if t.is_alive():
        daemon.fail(f"{what}: the client hangs")
    if errors:
        daemon.fail(f"{what}, after {rounds} rounds: {errors[0]}")
    return rounds, done[0]


def both_return(qmp, two_commands):
    """Sends two commands in one write; an error text unless both succeed."""
    qmp.send_raw(two_commands)
    first, second = qmp.reply(), qmp.reply()
    return None if "return" in first and "return" in second else f"{first}, then {second}"


def race_nbd(qmp, sock, first_sector, daemon):
    """The node of an NBD export moves into a new IOThread and back, and the
    IOThread is deleted in the same write, while clients join the export."""
    def client(stop, errors):
        reads = 0
        while not stop.is_set():
            try:
                s = connect(sock)
                s.settimeout(CLIENT_TIMEOUT_S)
                go(s, b"disk")
                if read_ok(s, 0, 512) != first_sector:
                    errors.append("a READ returned other data")
                s.close()
                reads += 1
            except (OSError, AssertionError) as e:
                errors.append(f"client: {e!r} after {reads} reads")
        return reads

    def one_round():
        qmp.ok("object-add", qom_type="iothread", id="io1")
        qmp.ok("x-blockdev-set-iothread", node_name="disk", iothread="io1", force=True)
        return both_return(qmp, b'{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"disk",'
                                b'"iothread":null,"force":true}}{"execute":"object-del","arguments":{"id":"io1"}}')

    rounds, reads = race("NBD", client, one_round, SECONDS, daemon)
    print(f"ok: {rounds} IOThreads added, used and deleted under {reads} NBD client connections")


def race_9p(qmp, share, sock, daemon):
    """Rounds of: a 9P export in a new IOThread, clients, then export and
    IOThread deleted in one write. Clients may be refused or cut off (the
    export is going away), never left waiting."""
    def client(stop, errors):
        reads = 0
        while not stop.is_set():
            try:
                if p9.read_file(sock, "data", 5, timeout=CLIENT_TIMEOUT_S) != b"hello":
                    errors.append("a read returned other data")
                reads += 1
            except socket.timeout:
                errors.append(f"no reply in {CLIENT_TIMEOUT_S} s after {reads} reads")
            except (ConnectionError, p9.ConnectionClosed):
                pass  # the export went away under it
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EPIPE, errno.ECONNRESET):
                    errors.append(f"{e!r}")
        return reads

    def one_round():
        qmp.ok("object-add", qom_type="iothread", id="io2")
        qmp.ok("block-export-add", type="9p", id="s9", path=share, addr={"type": "unix", "path": sock},
               iothread="io2")
        time.sleep(0.02)  # let a client in
        return both_return(qmp, b'{"execute":"block-export-del","arguments":{"id":"s9","mode":"hard"}}'
                                b'{"execute":"object-del","arguments":{"id":"io2"}}')

    rounds, reads = race("9P", client, one_round, SECONDS / 2, daemon)
    print(f"ok: {rounds} 9P exports in their own IOThread added and deleted with it under {reads} client sessions")


def race_vhost_user_blk(qmp, sock, daemon):
    """The node under a vhost-user-blk export (queues following it) moves to
    a new IOThread and back, which is then deleted, while ioplane-vublk runs
    short verified jobs against it."""
    def client(stop, errors):
        runs, refused_since = 0, None
        while not stop.is_set():
            try:
                r = subprocess.run([VUBLK, "--socket", sock, "--rw", "randrw", "--bs", "4k", "--iodepth", "4",
                                    "--runtime", "0.3", "--verify", "--quiet"],
                                   capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S * 2)
            except subprocess.TimeoutExpired:
                errors.append(f"the front end hangs after {runs} runs")
                break
            # One front end at a time: the next one is refused until the daemon
            # has ended the last one's session, which waits for a move under
            # way. Refused for long is an error.
            if r.returncode != 0 and "negotiation" in r.stderr:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since < CLIENT_TIMEOUT_S:
                    time.sleep(0.05)
                    continue
            refused_since = None
            if r.returncode != 0:
                errors.append(f"front end: exit {r.returncode}: {r.stderr.strip()[-300:]}")
            runs += 1
        return runs

    def one_round():
        qmp.ok("object-add", qom_type="iothread", id="io3")
        qmp.ok("x-blockdev-set-iothread", node_name="vnode", iothread="io3", force=True)
        time.sleep(0.01)
        return both_return(qmp, b'{"execute":"x-blockdev-set-iothread","arguments":{"node-name":"vnode",'
                                b'"iothread":null,"force":true}}{"execute":"object-del","arguments":{"id":"io3"}}')

    rounds, runs = race("vhost-user-blk", client, one_round, SECONDS / 2, daemon)
    print(f"ok: {rounds} IOThreads used by a vhost-user-blk node and deleted under {runs} verified front-end runs")


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
    with Daemon(DAEMON, ["--blockdev", f"driver=file,node-name=disk,filename={img}",
         "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}",
         "--export", "type=nbd,id=e0,node-name=disk",
         "--object", "iothread,id=q0", "--object", "iothread,id=q1",
         "--blockdev", "driver=null-co,node-name=vdisk,size=1048576",
         "--export", f"type=vhost-user-blk,id=v0,node-name=vdisk,addr.type=unix,addr.path={vub_sock},"
                     "num-queues=2,iothread.0=q0,iothread.1=q1",
         "--blockdev", f"driver=file,node-name=vnode,filename={img2}",
         "--export", f"type=vhost-user-blk,id=v1,node-name=vnode,writable=on,addr.type=unix,addr.path={vub2_sock}",
         "--chardev", f"socket,id=c0,path={qmp_sock},server=on,wait=off", "--monitor", "chardev=c0"],
                log, workdir=tmp) as daemon:
        daemon.wait_for(qmp_sock, nbd_sock)
        qmp = Qmp(qmp_sock)
        refused = qmp.error("object-del", id="q1")
        if "in use by export 'v0'" not in refused.get("desc", ""):
            daemon.fail(f"object-del of a vhost-user-blk queue's IOThread: {refused}")
        print("ok: object-del of the IOThread of a vhost-user-blk queue is refused")
        race_nbd(qmp, nbd_sock, first_sector, daemon)
        race_9p(qmp, share, p9_sock, daemon)
        race_vhost_user_blk(qmp, vub2_sock, daemon)

        # Every connection ended: none is left counted, in a deleted thread.
        for _ in range(100):
            stats = qmp.ok("x-query-export-stats")
            if all(e.get("connections", 0) == 0 for e in stats):
                break
            time.sleep(0.05)
        else:
            daemon.fail(f"connections still counted after the clients left: {stats}")
        qmp.sock.settimeout(10)
        try:
            qmp.ok("block-export-del", id="e0", mode="hard")
            qmp.ok("nbd-server-stop")
        except socket.timeout:
            daemon.fail("block-export-del / nbd-server-stop did not return")
        print("ok: no connection left; block-export-del and nbd-server-stop return")
        daemon.stop()
        with open(log) as f:
            if "destroyed with" in f.read():
                daemon.fail("a context was destroyed with work left in it")


if __name__ == "__main__":
    main()
