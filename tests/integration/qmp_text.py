#!/usr/bin/env python3
"""QMP as text: ioplane-storage-daemon's bytes against qemu-storage-daemon 7.2's.

QEMU's iotests compare what a storage daemon prints with expected files
byte for byte, so for requests whose answers are the same in both daemons
the wire text must be the same too: member order (QEMU's QDict hash order),
spacing, escapes, number formats, the pretty=on form, and the order of the
events and the response at quit. Nothing here parses JSON: each daemon gets
the same bytes on raw sockets (one compact monitor, one pretty=on), and what
comes back is compared as bytes, with only the timestamps of events masked.
The greeting is compared with the package string, the micro version and the
capabilities list masked (ioplane's differ by design, docs/QMP.md).

Usage: qmp_text.py --ioplane PATH [--qemu PATH]
Exit status 0 when every text matches, 1 otherwise, 77 without QEMU's daemon.
"""
import argparse
import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# (label, request bytes, what follows the response: False for nothing, True
# for events (read for 0.5 s), "until-eof" for all until the daemon closes
# the connection). Each is answered identically by both daemons; the
# comments say what it pins.
COMPACT_STEPS = [
    ("qmp_capabilities", b'{"execute": "qmp_capabilities"}', False),
    # "id" before "error" (buckets 486, 489); CommandNotFound's text.
    ("unknown command", b'{"execute": "no-such-command", "id": 1}', False),
    # Escapes: named ones, \u00XX for other control characters, \uXXXX for
    # everything past 0x7E, surrogate pairs; "/" as is.
    ("string id", b'{"execute": "query-block-exports", "id": "\\u00e9\\u20ac\\ud83d\\ude00 \\" \\\\ \\/ '
                  b'\\b\\f\\n\\r\\t \\u0001 \\u001f \\u007f caf\xc3\xa9 \xe2\x82\xac"}', False),
    # Integers, unsigned 64-bit, doubles as %.17g, an integer too large for
    # 64 bits (a double in both), -0.0.
    ("number id", b'{"execute": "query-jobs", "id": [0, -5, -0, 0.1, 2.0, -0.0, 1e300, 1.5e-7, '
                  b'9223372036854775807, -9223372036854775808, 18446744073709551615, '
                  b'100000000000000000000, true, false, null]}', False),
    # Members in hash order, not as sent; empty containers.
    ("object id", b'{"execute": "query-jobs", "id": {"nested": {"b": [{}], "a": {}}, "list": [[], {}, 1], '
                  b'"name": "x", "z": [], "k1": {"k2": 1}}}', False),
    ("query-block-exports none", b'{"execute": "query-block-exports"}', False),
    ("blockdev-add null-co", b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0"}}',
     False),
    ("nbd-server-start", b'{"execute": "nbd-server-start", "arguments": {"addr": {"type": "unix", '
                         b'"data": {"path": "@DIR@/nbd.sock"}}}}', False),
    ("block-export-add e0", b'{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e0", '
                            b'"node-name": "n0"}, "id": "add"}', False),
    ("query-block-exports", b'{"execute": "query-block-exports", "id": 2}', False),
    ("block-export-del e0", b'{"execute": "block-export-del", "arguments": {"id": "e0"}}', True),
    ("block-export-add e1", b'{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e1", '
                            b'"node-name": "n0"}}', False),
    ("block-export-add e2", b'{"execute": "block-export-add", "arguments": {"type": "nbd", "id": "e2", '
                            b'"node-name": "n0", "name": "other"}}', False),
    ("blockdev-create", b'{"execute": "blockdev-create", "arguments": {"job-id": "j0", "options": '
                        b'{"driver": "file", "filename": "@DIR@/new.img", "size": 0}}}', True),
    ("query-jobs", b'{"execute": "query-jobs"}', False),
    ("job-dismiss", b'{"execute": "job-dismiss", "arguments": {"id": "j0"}}', True),
    # QSD's exit: the exports are deleted, each with its event, then quit's
    # response; no SHUTDOWN event; the request after quit gets nothing.
    ("quit", b'{"execute": "quit"}{"execute": "query-jobs"}', "until-eof"),
]

# On the pretty=on monitor, before and after the export exists.
PRETTY_STEPS_BEFORE = [
    ("pretty qmp_capabilities", b'{"execute": "qmp_capabilities"}', False),
    ("pretty unknown command", b'{"execute": "no-such-command", "id": {"a": [1, {}, []], "b": {}}}', False),
    ("pretty query-jobs", b'{"execute": "query-jobs"}', False),
]
PRETTY_STEPS_AFTER = [  # run after "block-export-add e0"
    ("pretty query-block-exports", b'{"execute": "query-block-exports"}', False),
]

TIMESTAMP = re.compile(rb'"seconds": \d+,(\s+)"microseconds": \d+')
PACKAGE = re.compile(rb'"package": "[^"]*"')
MICRO = re.compile(rb'"micro": \d+')  # Debian's 7.2.x against ioplane's 7.2.0
CAPABILITIES = re.compile(rb'"capabilities": \[[^\]]*\]')


def mask(text):
    return TIMESTAMP.sub(rb'"seconds": S,\1"microseconds": U', text)


def mask_greeting(text):
    text = MICRO.sub(b'"micro": N', PACKAGE.sub(b'"package": "..."', text))
    return CAPABILITIES.sub(b'"capabilities": [...]', text)


class Conn:
    """Raw bytes on a unix socket, cut into messages: a compact message is one
    line, a pretty one ends with a line that is just "}"."""

    def __init__(self, path, pretty):
        self.sock = socket.socket(socket.AF_UNIX)
        deadline = time.monotonic() + 10
        while True:  # the socket file exists a moment before it listens
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.pretty, self.buf, self.eof = pretty, b"", False

    def message(self, timeout):
        """The next whole message (its bytes, line ends included), or None."""
        deadline = time.monotonic() + timeout
        while True:
            end = self._message_end()
            if end is not None:
                msg, self.buf = self.buf[:end], self.buf[end:]
                return msg
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
            self.buf += chunk

    def _message_end(self):
        if not self.pretty:
            i = self.buf.find(b"\n")
            return None if i < 0 else i + 1
        i = self.buf.find(b"\n}\r\n")  # nested brackets are indented
        return None if i < 0 else i + 4

    def rest(self, timeout):
        """Everything until the daemon closes the connection."""
        out = b""
        while True:
            msg = self.message(timeout)
            if msg is None:
                return out + self.buf + (b"" if self.eof else b"<still open>")
            out += msg


def is_event(msg):
    return msg.startswith(b'{"timestamp"') or msg.startswith(b'{\r\n    "timestamp"')


def step(conn, request, events_after):
    """Sends the request; returns every byte received up to its response, and
    (events_after) what follows within 0.5 s, or until the end of stream."""
    conn.sock.sendall(request)
    if events_after == "until-eof":
        return conn.rest(10)
    out = b""
    while True:
        msg = conn.message(10)
        if msg is None:
            return out + b"<no response>"
        out += msg
        if not is_event(msg):
            break
    if events_after:
        end = time.monotonic() + 0.5
        while (msg := conn.message(max(0.0, end - time.monotonic()))) is not None:
            out += msg
    return out


def run(binary):
    """The transcript of one daemon: [(label, masked bytes)]."""
    d = tempfile.mkdtemp(prefix="qmp-text-")
    args = [binary, "--chardev", f"socket,id=c0,path={d}/c0.sock,server=on,wait=off", "--monitor", "chardev=c0",
            "--chardev", f"socket,id=c1,path={d}/c1.sock,server=on,wait=off", "--monitor", "chardev=c1,pretty=on"]
    log = open(f"{d}/log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, IOPLANE_LOG="warn"))
    out = []
    try:
        for _ in range(200):
            if os.path.exists(f"{d}/c1.sock") or proc.poll() is not None:
                break
            time.sleep(0.05)
        compact, pretty = Conn(f"{d}/c0.sock", False), Conn(f"{d}/c1.sock", True)
        out.append(("greeting", mask_greeting(compact.message(10) or b"<none>")))
        out.append(("pretty greeting", mask_greeting(pretty.message(10) or b"<none>")))
        for label, req, ev in PRETTY_STEPS_BEFORE:
            out.append((label, mask(step(pretty, req, ev))))
        for label, req, ev in COMPACT_STEPS:
            req = req.replace(b"@DIR@", d.encode())  # the daemon's own directory
            out.append((label, mask(step(compact, req, ev)).replace(d.encode(), b"@DIR@")))
            if label == "block-export-add e0":
                for plabel, preq, pev in PRETTY_STEPS_AFTER:
                    out.append((plabel, mask(step(pretty, preq, pev))))
        # The pretty monitor got the events of the compact one's steps.
        out.append(("pretty events until quit", mask(pretty.rest(10))))
        try:
            status = proc.wait(10)
        except subprocess.TimeoutExpired:
            status = "still running"
        out.append(("exit status", str(status).encode()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(d, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ioplane", required=True)
    ap.add_argument("--qemu", default="/usr/bin/qemu-storage-daemon")
    args = ap.parse_args()
    if not shutil.which(args.qemu):
        print("SKIP: %s not found" % args.qemu)
        return 77
    qemu, iopl = run(args.qemu), run(args.ioplane)
    failures = 0
    for (label, q), (_, i) in zip(qemu, iopl):
        if q == i:
            print("ok   %s" % label)
            continue
        failures += 1
        print("DIFF %s" % label)
        def lines(text):  # "\r" shown: a missing one is a difference too
            return [repr(line)[2:-1] for line in text.split(b"\n")]
        for line in difflib.unified_diff(lines(q), lines(i), "qemu-storage-daemon", "ioplane", lineterm="", n=2):
            print("     " + line)
    print("\n%d of %d texts differ" % (failures, len(qemu)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
