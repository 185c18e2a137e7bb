#!/usr/bin/env python3
"""Hostile and broken NBD clients against a running daemon.

Each case gets the protocol's error or a disconnect of that client only; the
daemon keeps serving everyone else, and data written by others stays intact.
Usage: nbd_bad_input.py SOCKET EXPORT_NAME EXPORT_SIZE
"""
import os
import socket
import struct
import sys
import time

from nbd_wire import *  # noqa: F401,F403 (constants and helpers)

SOCK, NAME, SIZE = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])


# A well-behaved client that stays connected through all the abuse.
good = connect(SOCK)
go(good, NAME)
pattern = os.urandom(65536)
request(good, NBD_CMD_WRITE, 0, len(pattern), payload=pattern)
check(simple_reply(good)[0] == 0, "good client writes")

s = connect(SOCK)
recv_exact(s, 18)
s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 10)
check(closed_by_server(s), "garbage instead of a handshake: disconnected")

s = connect(SOCK)
handshake(s)
s.sendall(struct.pack(">QII", 0x1122334455667788, NBD_OPT_GO, 0))
check(closed_by_server(s), "wrong option magic: disconnected")

s = connect(SOCK)
handshake(s)
option(s, 999, b"abc")
check(option_reply(s)[0] == NBD_REP_ERR_UNSUP, "unknown option: NBD_REP_ERR_UNSUP")
option(s, NBD_OPT_GO, struct.pack(">I", 9) + b"no-such-e" + struct.pack(">H", 0))
check(option_reply(s)[0] == 2**31 + 6, "GO for a missing export: NBD_REP_ERR_UNKNOWN")
s.close()

s = connect(SOCK)
handshake(s)
s.sendall(struct.pack(">QII", IHAVEOPT, NBD_OPT_GO, 0xFFFFFFF0))
check(closed_by_server(s) or True, "huge option length: no crash")
s.close()

s = connect(SOCK)
go(s, NAME)
request(s, 77, 0, 512)
check(simple_reply(s)[0] == EINVAL, "unknown command: EINVAL")
request(s, NBD_CMD_READ, SIZE - 512, 1024)
check(simple_reply(s)[0] == EINVAL, "read past the end: EINVAL")
request(s, NBD_CMD_WRITE, SIZE, 512, payload=b"x" * 512)
check(simple_reply(s)[0] == ENOSPC, "write past the end: ENOSPC")
request(s, NBD_CMD_READ, 2**64 - 512, 1024)
check(simple_reply(s)[0] == EINVAL, "offset + length overflow: EINVAL")
check(read_ok(s, 0, 512) == pattern[:512], "connection usable after errors")
s.close()

s = connect(SOCK)
go(s, NAME)
request(s, NBD_CMD_WRITE, 0, 0x7FFFFFFF)  # payload over the maximum, never sent
check(closed_by_server(s), "write length over the maximum: disconnected")

s = connect(SOCK)
go(s, NAME)
s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, NBD_CMD_READ, 1, 0, 512))
check(closed_by_server(s), "wrong request magic: disconnected")

s = connect(SOCK)
go(s, NAME)
request(s, NBD_CMD_WRITE, 65536, 65536, payload=b"y" * 1000)  # payload never completes
time.sleep(0.2)
s.close()
check(True, "write whose payload never arrives, then the client goes away")

for i in range(5):  # killed in the middle of requests with replies pending
    s = connect(SOCK)
    go(s, NAME, structured=(i % 2 == 0))
    for j in range(32):
        request(s, NBD_CMD_READ, j * 4096, 4096, cookie=j)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
check(True, "clients killed mid-request")

conns = []
for i in range(100):
    c = connect(SOCK)
    conns.append(c)
for c in conns:
    go(c, NAME)
for i, c in enumerate(conns):
    request(c, NBD_CMD_READ, 0, 512, cookie=i)
ok = all(simple_reply(c) == (0, i) and recv_exact(c, 512) == pattern[:512] for i, c in enumerate(conns))
check(ok, "100 connections at once, each served")
disconnect(*conns)

check(read_ok(good, 0, 65536) == pattern, "good client still served, its data intact")
disconnect(good)
sys.exit(finish("nbd_bad_input"))
