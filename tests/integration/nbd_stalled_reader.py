#!/usr/bin/env python3
"""Clients that stop reading their replies while the export's node is
drained (a live move with x-blockdev-set-iothread).

A drained section waits for every reply to be sent. A client that never
reads must not hold it, and the QMP command behind it, forever: it is
disconnected once its replies have found no room for the daemon's limit
(5 s), the move completes, and the other clients keep their connections and
data. A client that reads slowly is not disconnected: the move waits for it.
Usage: nbd_stalled_reader.py NBD_SOCKET EXPORT_NAME QMP_SOCKET
"""
import os
import socket
import struct
import sys
import threading
import time

from nbd_wire import *  # noqa: F401,F403 (constants and helpers)
from qmp import Qmp

SOCK, NAME, QMP_SOCK = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
REQUEST_BYTES = 65536
STALL_LIMIT_S = 5  # NbdExport::kReplyStallNs


def send_reads(s, count):
    for i in range(count):
        request(s, NBD_CMD_READ, i * REQUEST_BYTES, REQUEST_BYTES, cookie=i)


def read_replies(s, count, pause_s=0.0, chunk=None):
    """Reads `count` simple read replies; with `pause_s`, sleeps between
    reads of at most `chunk` bytes. Returns the cookies in order."""
    cookies = []
    buf = b""
    need = 16 + REQUEST_BYTES
    while len(cookies) < count:
        while len(buf) < need:
            data = s.recv(chunk or 1 << 20)
            if not data:
                raise ConnectionError("closed after %d replies" % len(cookies))
            buf += data
            if pause_s:
                time.sleep(pause_s)
        magic, err, cookie = struct.unpack(">IIQ", buf[:16])
        assert magic == SIMPLE_MAGIC and err == 0, (magic, err)
        cookies.append(cookie)
        buf = buf[need:]
    return cookies


def move(qmp, iothread):
    start = time.monotonic()
    r = qmp.cmd("x-blockdev-set-iothread", node_name=NAME.decode(), iothread=iothread, force=True)
    return r, time.monotonic() - start


qmp = Qmp(QMP_SOCK)
good = connect(SOCK)
go(good, NAME)
pattern = os.urandom(REQUEST_BYTES)
request(good, NBD_CMD_WRITE, 0, len(pattern), payload=pattern)
check(simple_reply(good)[0] == 0, "good client writes")

# 1. A client that never reads: 16 MiB of replies against a socket buffer of
# a few hundred KiB.
stalled = connect(SOCK)
go(stalled, NAME)
stalled.setblocking(False)
sent = 0
try:
    for i in range(256):
        stalled.send(struct.pack(">IHHQQI", REQ_MAGIC, 0, NBD_CMD_READ, i, i * REQUEST_BYTES, REQUEST_BYTES))
        sent += 1
except BlockingIOError:
    pass
stalled.setblocking(True)
time.sleep(0.5)  # its replies fill the socket
r, took = move(qmp, None)
check(r == {"return": {}}, "move to the main loop with a client not reading: %s" % r)
check(took < STALL_LIMIT_S + 5, "the move waited %.1f s, bounded by the stall limit" % took)
stalled.settimeout(10)
got = 0
try:
    while True:
        data = stalled.recv(1 << 20)
        if not data:
            break
        got += len(data)
    closed = True
except (ConnectionError, OSError):
    closed = True
except socket.timeout:
    closed = False
check(closed and got < sent * (16 + REQUEST_BYTES), "the client that did not read was disconnected")
stalled.close()
check(read_ok(good, 0, REQUEST_BYTES) == pattern, "the good client kept its connection and its data")

# 2. Without a stalled client a move does not wait for the limit.
r, took = move(qmp, "io0")
check(r == {"return": {}} and took < STALL_LIMIT_S, "move back to io0 in %.2f s" % took)

# 3. A client that reads slowly, with pauses, throughout the move: the move
# waits for it and it gets every reply.
slow = connect(SOCK)
go(slow, NAME)
COUNT = 32  # 2 MiB of replies
send_reads(slow, COUNT)
time.sleep(0.5)
result = {}
reader = threading.Thread(target=lambda: result.update(cookies=read_replies(slow, COUNT, pause_s=0.25, chunk=65536)))
reader.start()
r, took = move(qmp, None)
reader.join(60)
check(r == {"return": {}}, "move with a slow reader: %s after %.1f s" % (r, took))
check(result.get("cookies") == list(range(COUNT)), "the slow reader got all %d replies in order" % COUNT)
check(read_ok(slow, 0, REQUEST_BYTES) == pattern, "the slow reader is still connected")
disconnect(slow, good)
sys.exit(finish("nbd_stalled_reader"))
