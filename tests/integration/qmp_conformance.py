#!/usr/bin/env python3
"""QMP conformance: ioplane-storage-daemon against qemu-storage-daemon 7.2.

ioplane's monitor claims to speak qemu-storage-daemon's QMP dialect, so tools
written for qemu (libvirt, scripts, ioplane-qmp) must be able to drive it. This
test sends the same command sequence to both daemons, each freshly started in
its own temp dir with only a QMP socket monitor, and compares the SHAPES of
what comes back (values differ legitimately: versions, paths, sizes):
  - return values: JSON types recursively (objects: key sets and each key's
    shape; lists: the union of their elements' shapes; scalars: str, int,
    float, bool, null);
  - errors: the error class only, not the description;
  - events: per step, the names and data keys of the events received up to
    the step's reply (plus a 0.3 s grace wait where an event is expected);
  - the greeting's shape; for query-commands only that ioplane lists no
    command qemu lacks; for quit, that the daemon exits 0 within 5 s.
Differences listed in KNOWN (deliberate ones) print as "known: ..."; any
other difference fails the test (exit 1). Exit 77 when qemu is not installed.
Usage: qmp_conformance.py --ioplane PATH [--qemu PATH]
"""
import argparse
import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

# (step label, path) -> why the difference is acceptable.
KNOWN = {
    ("greeting", "QMP.capabilities[]"):
        "no out-of-band execution, so no 'oob' capability (docs/QMP.md)",
    ("query-commands", "return[].name=query-iothreads"):
        "ioplane's extension: qemu-system's query-iothreads (IOThreadInfo), "
        "absent from qemu-storage-daemon 7.2",
    ("query-commands", "return[].name=x-query-export-stats"):
        "ioplane's own per-export counters; the x- prefix marks it as outside QEMU's schema",
    ("query-iothreads", "error"): "qemu-storage-daemon 7.2 has no query-iothreads (see query-commands)",
    ("query-iothreads", "return"): "ioplane answers with qemu-system 7.2's IOThreadInfo list",
}


# A value compared literally (error classes, exit status), not by its type.
Lit = collections.namedtuple("Lit", "text")


def shape(v):
    """A shape is a dict kind -> detail: 'object' -> {key: shape},
    'list' -> merged element shape, a scalar type name or 'literal' -> None."""
    if isinstance(v, Lit):
        return {repr(v.text): None}
    if isinstance(v, dict):
        return {"object": {k: shape(x) for k, x in v.items()}}
    if isinstance(v, list):
        elem = {}
        for x in v:
            elem = merge(elem, shape(x))
        return {"list": elem}
    names = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}
    return {names[type(v)]: None}


def merge(a, b):
    out = dict(a)
    for kind, detail in b.items():
        if kind not in out:
            out[kind] = detail
        elif kind == "list":
            out[kind] = merge(out[kind], detail)
        elif kind == "object":
            keys = dict(out[kind])
            for k, s in detail.items():
                keys[k] = merge(keys[k], s) if k in keys else s
            out[kind] = keys
    return out


def describe(s):
    parts = []
    for kind in sorted(s):
        if kind == "list":
            parts.append("list[%s]" % describe(s[kind]) if s[kind] else "list[] (empty)")
        elif kind == "object":
            parts.append("object{%s}" % ",".join(sorted(s[kind])))
        else:
            parts.append(kind)
    return "|".join(parts) or "no elements"


def diff(q, i, path, out):
    """Appends (path, qemu description, ioplane description) per difference."""
    if set(q) != set(i):
        out.append((path or "reply", describe(q), describe(i)))
    if "object" in q and "object" in i:
        qo, io = q["object"], i["object"]
        for k in sorted(set(qo) | set(io)):
            p = path + "." + k if path else k
            if k not in io:
                out.append((p, describe(qo[k]), "absent"))
            elif k not in qo:
                out.append((p, "absent", describe(io[k])))
            else:
                diff(qo[k], io[k], p, out)
    if "list" in q and "list" in i:
        if q["list"] and i["list"]:
            diff(q["list"], i["list"], path + "[]", out)
        elif q["list"] or i["list"]:  # one side's list is empty
            out.append((path + "[]", describe(q["list"]), describe(i["list"])))


class Qmp:
    """QMP over a unix socket, read as bytes and cut into messages at b"\\n"."""
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.buf, self.closed = b"", False
        try:
            self.sock.connect(path)
        except OSError as e:  # every step then records "no reply"
            print("cannot connect to %s: %s" % (path, e))
            self.closed = True

    def read(self, timeout):
        """The next message, or None on timeout or end of stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)  # the b"\r" goes with strip()
        if not line.strip():
            return self.read(max(0.0, deadline - time.monotonic()))
        return json.loads(line)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True


def event_key(ev):
    return "%s{%s}" % (ev.get("event"), ",".join(sorted(ev.get("data", {}))))


def steps(d):
    """(label, request: dict or raw bytes[, True if it should bring an event])."""
    def ex(cmd, **args):  # keyword_args -> "keyword-args"
        req = {"execute": cmd}
        if args:
            req["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        return req
    nbd_addr = {"type": "unix", "data": {"path": d + "/nbd.sock"}}
    return [
        ("qmp_capabilities", ex("qmp_capabilities")),
        ("query-version", ex("query-version")),
        ("query-commands", ex("query-commands")),
        ("object-add io0", ex("object-add", qom_type="iothread", id="io0")),
        ("object-add io1 poll-max-ns", ex("object-add", qom_type="iothread", id="io1", poll_max_ns=0)),
        ("query-iothreads", ex("query-iothreads")),
        ("blockdev-add n0 null-co", ex("blockdev-add", driver="null-co", node_name="n0",
                                       size=64 << 20, read_zeroes=True)),
        ("blockdev-add f0 file", ex("blockdev-add", driver="file", node_name="f0", filename=d + "/disk.img")),
        ("blockdev-add r0 raw", ex("blockdev-add", driver="raw", node_name="r0", file="f0")),
        ("query-named-block-nodes", ex("query-named-block-nodes")),
        ("query-named-block-nodes flat", ex("query-named-block-nodes", flat=True)),
        ("nbd-server-start", ex("nbd-server-start", addr=nbd_addr)),
        ("block-export-add e0", ex("block-export-add", type="nbd", id="e0", node_name="r0", writable=True)),
        ("block-export-add e1 io0", ex("block-export-add", type="nbd", id="e1", node_name="n0", iothread="io0")),
        ("query-block-exports", ex("query-block-exports")),
        ("set-iothread r0 io1", ex("x-blockdev-set-iothread", node_name="r0", iothread="io1")),
        ("set-iothread r0 io1 force", ex("x-blockdev-set-iothread", node_name="r0", iothread="io1", force=True)),
        ("set-iothread r0 null force", ex("x-blockdev-set-iothread", node_name="r0", iothread=None, force=True)),
        ("err unknown command", ex("no-such-command")),
        ("err duplicate node-name", ex("blockdev-add", driver="null-co", node_name="n0")),
        ("err blockdev-del exported r0", ex("blockdev-del", node_name="r0")),
        ("err blockdev-del nope", ex("blockdev-del", node_name="nope")),
        ("err object-del nope", ex("object-del", id="nope")),
        ("err block-export-del nope", ex("block-export-del", id="nope")),
        ("err block-export-add no node-name", ex("block-export-add", type="nbd", id="e9")),
        ("err size wrong type", ex("blockdev-add", driver="null-co", node_name="n9", size="big")),
        ("err arguments is a list", {"execute": "query-version", "arguments": []}),
        ("err no execute", {"arguments": {}}),
        ("err malformed JSON", b'{"execute": }\r\n'),
        ("query-version after malformed JSON", ex("query-version")),
        ("err unexpected top-level key", {"execute": "query-version", "bogus": 1}),
        ("block-export-del e0", ex("block-export-del", id="e0"), True),
        ("block-export-del e1 hard", ex("block-export-del", id="e1", mode="hard"), True),
        ("nbd-server-stop", ex("nbd-server-stop")),
        ("blockdev-create file", ex("blockdev-create", job_id="c0",
                                    options={"driver": "file", "filename": d + "/new.qcow2", "size": 0}), True),
        ("query-jobs", ex("query-jobs")),
        ("job-dismiss c0", ex("job-dismiss", id="c0"), True),
        ("err job-dismiss nope", ex("job-dismiss", id="nope")),
        ("blockdev-add nf", ex("blockdev-add", driver="file", node_name="nf", filename=d + "/new.qcow2")),
        ("blockdev-create qcow2", ex("blockdev-create", job_id="c1",
                                     options={"driver": "qcow2", "file": "nf", "size": 64 << 20}), True),
        ("err blockdev-create duplicate job", ex("blockdev-create", job_id="c1",
                                                 options={"driver": "qcow2", "file": "nf", "size": 1 << 20})),
        ("err job-cancel concluded", ex("job-cancel", id="c1")),
        ("job-dismiss c1", ex("job-dismiss", id="c1"), True),
        ("err blockdev-create bad cluster size", ex("blockdev-create", job_id="c2",
                                                    options={"driver": "qcow2", "file": "nf", "size": 1 << 20,
                                                             "cluster-size": 1000}), True),
        ("job-dismiss c2", ex("job-dismiss", id="c2"), True),
        ("blockdev-add q0", ex("blockdev-add", driver="qcow2", node_name="q0", file="nf")),
        ("block_resize q0", ex("block_resize", node_name="q0", size=128 << 20)),
        ("query-named-block-nodes qcow2", ex("query-named-block-nodes")),
        ("blockdev-del q0", ex("blockdev-del", node_name="q0")),
        ("blockdev-del nf", ex("blockdev-del", node_name="nf")),
        ("blockdev-del r0", ex("blockdev-del", node_name="r0")),
        ("blockdev-del f0", ex("blockdev-del", node_name="f0")),
        ("object-del io1", ex("object-del", id="io1")),
        # An export still open at quit is deleted, with its event.
        ("nbd-server-start again", ex("nbd-server-start", addr=nbd_addr)),
        ("block-export-add e2", ex("block-export-add", type="nbd", id="e2", node_name="n0")),
        ("quit", ex("quit"), True),
    ]


def view(reply):
    """The reply with the error description dropped and the class literal."""
    if reply is None:
        return Lit("no reply")
    v = dict(reply)
    if isinstance(v.get("error"), dict):
        v["error"] = {"class": Lit(v["error"].get("class"))}
    return v


def run(binary):
    """Runs the sequence; returns {label: (view, [event keys], raw reply)}."""
    d = tempfile.mkdtemp(prefix="qmp-conf-")
    with open(d + "/disk.img", "wb") as f:
        f.truncate(64 << 20)
    sock = d + "/qmp.sock"
    log = open(d + "/daemon.log", "wb")
    proc = subprocess.Popen([binary, "--chardev", "socket,id=c0,path=%s,server=on,wait=off" % sock,
                             "--monitor", "chardev=c0"], stdout=log, stderr=subprocess.STDOUT)
    results = {}
    try:
        for _ in range(200):
            if os.path.exists(sock) or proc.poll() is not None:
                break
            time.sleep(0.05)
        qmp = Qmp(sock)
        greeting = qmp.read(10)
        results["greeting"] = (greeting if greeting is not None else Lit("none"), [], greeting)
        for n, (label, req, *expect_event) in enumerate(steps(d)):
            qmp.send(json.dumps(dict(req, id=n)).encode() + b"\r\n" if isinstance(req, dict) else req)
            events, reply = [], None
            while reply is None:
                msg = qmp.read(10)
                if msg is None:
                    break
                if "event" in msg:
                    events.append(event_key(msg))
                else:
                    reply = msg
            # After quit: whatever comes before the socket closes, 5 s at most.
            end = time.monotonic() + (5.0 if label == "quit" else 0.3 if expect_event else 0)
            while time.monotonic() < end:
                msg = qmp.read(max(0.0, end - time.monotonic()))
                if msg is None:  # timed out or the stream ended
                    break
                events.append(event_key(msg) if "event" in msg else "non-event " + json.dumps(msg))
            v = view(reply)
            if label == "quit":
                try:
                    status = "exit status %d" % proc.wait(max(0.1, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    status = "still running 5 s after quit"
                v = {"reply": v, "exit": Lit(status)}
            results[label] = (v, events, reply)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.wait() != 0:  # the daemon's own words help explain a failure
            log.close()
            with open(d + "/daemon.log", "rb") as f:
                print("[%s output]\n%s" % (binary, f.read()[-2000:].decode(errors="replace")))
        log.close()
        shutil.rmtree(d, ignore_errors=True)
    return results


def compare_commands(q, i, diffs):
    """query-commands: only commands ioplane has and qemu lacks are differences."""
    qn, io = ({c["name"] for c in r["return"]} for r in (q, i))
    diffs += [("return[].name=" + n, "absent", "present") for n in sorted(io - qn)]
    return ["info: ioplane lacks %d commands: %s" % (len(qn - io), " ".join(sorted(qn - io)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ioplane", required=True)
    ap.add_argument("--qemu", default="/usr/bin/qemu-storage-daemon")
    args = ap.parse_args()
    if not shutil.which(args.qemu):
        print("SKIP: %s not found" % args.qemu)
        return 77
    if not shutil.which(args.ioplane):
        ap.error("no executable %s" % args.ioplane)
    qemu, iopl = run(args.qemu), run(args.ioplane)
    failures, seen = 0, set()
    for label in ["greeting"] + [s[0] for s in steps("")]:
        (qv, qev, qraw), (iv, iev, iraw) = qemu[label], iopl[label]
        diffs, info = [], []
        if label == "query-commands" and all("return" in (r or {}) for r in (qraw, iraw)):
            info = compare_commands(qraw, iraw, diffs)
        else:
            diff(shape(qv), shape(iv), "", diffs)
        if qev != iev:
            diffs.append(("events", " ".join(qev) or "none", " ".join(iev) or "none"))
        print(("== " if diffs or info else "ok  ") + label)
        for line in info:
            print("  " + line)
        for path, qs, is_ in diffs:
            reason = KNOWN.get((label, path))
            if reason:
                seen.add((label, path))
                print("  known: %s: qemu %s, ioplane %s (%s)" % (path, qs, is_, reason))
            else:
                failures += 1
                print("  DIFF %s: qemu %s, ioplane %s" % (path, qs, is_))
        for who, raw in (("qemu", qraw), ("ioplane", iraw)):
            if diffs and isinstance(raw, dict) and "error" in raw:
                print("    %s error: %s" % (who, json.dumps(raw["error"])))
    for stale in sorted(set(KNOWN) - seen):
        print("info: known difference no longer seen: %s %s" % stale)
    print("\n%d unexpected difference(s), %d known difference(s)" % (failures, len(seen)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
