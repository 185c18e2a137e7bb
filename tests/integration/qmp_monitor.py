#!/usr/bin/env python3
"""QMP monitor of the real daemon, with real NBD clients: live management
(iothreads, nodes, server, exports added, moved and removed while clients
are connected), the refusals that protect data in use, events, per-export
counters, and bad input on the monitor. Usage: qmp_monitor.py DAEMON QMP_TOOL"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from qmp import Qmp  # noqa: E402

DAEMON, QMP_TOOL = sys.argv[1], sys.argv[2]
tmp = tempfile.mkdtemp(prefix="ioplane-qmp-")
img = f"{tmp}/disk.img"
with open(img, "wb") as f:
    f.truncate(32 << 20)
log = open(f"{tmp}/daemon.log", "w")
daemon = subprocess.Popen([DAEMON, "--chardev", f"socket,id=c0,path={tmp}/qmp0.sock,server=on,wait=off",
                           "--monitor", "chardev=c0",
                           "--chardev", f"socket,id=c1,path={tmp}/qmp1.sock,server=on,wait=off",
                           "--monitor", "c1,pretty=on"], stdout=log, stderr=log)


def fail(msg):
    print("FAIL:", msg)
    daemon.kill()
    print(open(f"{tmp}/daemon.log").read()[-3000:])
    sys.exit(1)


def step(msg):
    print("ok:", msg, flush=True)


def qemu_io(*cmds, export="disk"):
    args = ["qemu-io", "-f", "raw", f"nbd+unix:///{export}?socket={tmp}/nbd.sock"]
    for c in cmds:
        args += ["-c", c]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "error" in r.stdout.lower() or "fail" in r.stdout.lower():
        fail(f"qemu-io {cmds}: {r.stdout} {r.stderr}")


for _ in range(100):
    if os.path.exists(f"{tmp}/qmp1.sock"):
        break
    time.sleep(0.05)

try:
    q = Qmp(f"{tmp}/qmp0.sock")
    other = Qmp(f"{tmp}/qmp1.sock")  # a second monitor, pretty-printed, at the same time
    if q.greeting["QMP"]["version"]["qemu"]["major"] != 7:
        fail(f"greeting: {q.greeting}")
    names = {c["name"] for c in q.ok("query-commands")}
    for c in ["blockdev-add", "blockdev-del", "x-blockdev-set-iothread", "block-export-add", "block-export-del",
              "query-block-exports", "query-named-block-nodes", "nbd-server-start", "nbd-server-stop",
              "object-add", "object-del", "query-iothreads", "query-version", "quit", "x-query-export-stats"]:
        if c not in names:
            fail(f"query-commands lacks {c}")
    step("greeting, negotiation, query-commands; two monitors at once")

    # Build a setup live.
    q.ok("object-add", qom_type="iothread", id="io0")
    q.ok("object-add", qom_type="iothread", id="io1", poll_max_ns=0)
    threads = {t["id"]: t for t in q.ok("query-iothreads")}
    if set(threads) != {"io0", "io1"} or threads["io1"]["poll-max-ns"] != 0 or threads["io0"]["thread-id"] <= 0:
        fail(f"query-iothreads: {threads}")
    q.ok("blockdev-add", driver="file", node_name="file0", filename=img)
    q.ok("blockdev-add", driver="raw", node_name="disk", file="file0")
    nodes = {n["node-name"]: n for n in q.ok("query-named-block-nodes")}
    if nodes["disk"]["drv"] != "raw" or nodes["disk"]["file"] != img or nodes["disk"]["image"]["virtual-size"] != 32 << 20:
        fail(f"query-named-block-nodes: {nodes}")
    q.ok("nbd-server-start", addr={"type": "unix", "data": {"path": f"{tmp}/nbd.sock"}})
    q.ok("block-export-add", type="nbd", id="e0", node_name="disk", writable=True, iothread="io0")
    if q.ok("query-block-exports") != [{"id": "e0", "type": "nbd", "node-name": "disk", "shutting-down": False}]:
        fail("query-block-exports")
    qemu_io("write -P 0x5a 0 1M", "read -P 0x5a 0 1M")
    step("iothreads, nodes, NBD server and an export in io0 added live; qemu-io writes and reads through it")

    # Counters for the monitor.
    stats = q.ok("x-query-export-stats")[0]
    if stats["ops"]["write"]["requests"] < 1 or stats["ops"]["write"]["bytes"] < 1 << 20 or \
            stats["ops"]["read"]["bytes"] < 1 << 20 or sum(stats["ops"]["read"]["latency-histogram"]["bins"]) < 1:
        fail(f"x-query-export-stats: {json.dumps(stats)[:600]}")
    top = subprocess.run([QMP_TOOL, "-s", f"{tmp}/qmp0.sock", "top", "-i", "0.2", "-n", "1"],
                         capture_output=True, text=True, timeout=30)
    if top.returncode != 0 or "e0" not in top.stdout:
        fail(f"ioplane-qmp top: {top.stdout} {top.stderr}")
    step("x-query-export-stats counts the requests; ioplane-qmp top shows the export")

    # Moves: refused without force while exported, then back and forth with force.
    if "BlockBackend" not in q.error("x-blockdev-set-iothread", node_name="disk", iothread="io1")["desc"]:
        fail("move without force")
    for target in ["io1", None, "io0"]:
        q.ok("x-blockdev-set-iothread", node_name="disk", iothread=target, force=True)
        qemu_io("write -P 0x33 4M 64k", "read -P 0x33 4M 64k")
    q.error("x-blockdev-set-iothread", node_name="file0", iothread="io1", force=True)  # not a root
    q.error("x-blockdev-set-iothread", node_name="disk", iothread="nope", force=True)
    step("x-blockdev-set-iothread: refused without force, moves io0 -> io1 -> main -> io0 with I/O between")

    # Objects in use are refused.
    for cmd, args in [("blockdev-del", {"node_name": "disk"}), ("blockdev-del", {"node_name": "file0"}),
                      ("object-del", {"id": "io0"}), ("blockdev-add", {"driver": "null-co", "node_name": "disk"}),
                      ("block-export-add", {"type": "nbd", "id": "e0", "node_name": "disk"})]:
        e = q.error(cmd, **args)
        if e["class"] != "GenericError":
            fail(f"{cmd}: {e}")
    q.ok("object-del", id="io1")
    step("blockdev-del of a node in use, object-del of an iothread in use, duplicates: refused; unused io1 deleted")

    # block-export-del with a client connected: safe refuses, hard disconnects.
    client = subprocess.Popen(["qemu-io", "-f", "raw", f"nbd+unix:///disk?socket={tmp}/nbd.sock"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(200):
        if q.ok("x-query-export-stats")[0]["connections"] == 1:
            break
        time.sleep(0.05)
    else:
        fail("qemu-io did not connect")
    if "in use" not in q.error("block-export-del", id="e0")["desc"]:
        fail("safe block-export-del with a client")
    q.ok("block-export-del", id="e0", mode="hard")
    ev = q.wait_event("BLOCK_EXPORT_DELETED")
    if ev["data"] != {"id": "e0"}:
        fail(f"event: {ev}")
    other.wait_event("BLOCK_EXPORT_DELETED")
    client.stdin.write("read 0 4k\n")
    client.stdin.close()
    client.wait(timeout=30)
    if q.ok("query-block-exports") != []:
        fail("export still listed")
    q.ok("blockdev-del", node_name="disk")
    q.ok("blockdev-del", node_name="file0")
    q.ok("object-del", id="io0")
    step("block-export-del: safe refused with a client, hard disconnected it, BLOCK_EXPORT_DELETED on both monitors; "
         "node and iothread then deleted")

    # nbd-server-stop takes the remaining exports with it.
    q.ok("blockdev-add", driver="null-co", node_name="n0", size=1 << 20)
    q.ok("block-export-add", type="nbd", id="e1", node_name="n0")
    q.ok("nbd-server-stop")
    q.wait_event("BLOCK_EXPORT_DELETED")
    q.error("nbd-server-stop")
    step("nbd-server-stop removes its exports (with their events)")

    # Bad input: each gets an error; the monitor keeps serving.
    bad = [b'{"execute": }', b'[1, 2]', b'{"arguments": {}}', b'{"execute": "query-version", "arguments": []}',
           b'{"execute": 5}', b'{"execute": "query-version", "bogus": 1}',
           b'{"execute": "query-version", "id": tr\x85ue}']  # invalid UTF-8 (quoted in the error)
    for raw in bad:
        q.send_raw(raw)
        r = q.reply()
        if r.get("error", {}).get("class") != "GenericError":
            fail(f"{raw}: {r}")
    if q.cmd("no-such-command")["error"]["class"] != "CommandNotFound":
        fail("unknown command")
    for args in [{"node_name": 5}, {}, {"node_name": "n0", "extra": 1}]:
        if q.cmd("blockdev-del", **args).get("error", {}).get("class") != "GenericError":
            fail(f"blockdev-del {args}")
    q.send_raw(b'{"execute": "query-version", "arguments": {"x": "' + b"y" * (10 << 20) + b'"}}\n')
    if "longer than" not in q.reply()["error"]["desc"]:
        fail("10 MB request")
    mid = Qmp(f"{tmp}/qmp0.sock")
    mid.send_raw(b'{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-na')
    mid.close()  # gone mid-command
    q.ok("query-version")
    other.ok("query-version")
    step("malformed JSON, non-objects, missing/unexpected members, unknown command, wrong argument types, "
         "a 10 MB request and a client leaving mid-request: errors, and the monitors keep serving")

    # quit as qemu-storage-daemon: the exports still open are deleted, each
    # with its event, before quit's response; no SHUTDOWN event; a request
    # after quit gets no response.
    q.ok("nbd-server-start", addr={"type": "unix", "data": {"path": f"{tmp}/nbd.sock"}})
    q.ok("block-export-add", type="nbd", id="e2", node_name="n0")
    q.events.clear()
    other.events.clear()
    q.send_raw(b'{"execute": "quit"}{"execute": "query-version"}')
    if q.reply() != {"return": {}}:
        fail("quit")
    if [(e["event"], e.get("data")) for e in q.events] != [("BLOCK_EXPORT_DELETED", {"id": "e2"})]:
        fail(f"events before quit's response: {q.events}")
    rest = []
    for conn in (q, other):
        try:
            while True:
                rest.append(conn.recv())
        except EOFError:
            pass
    if [(e.get("event"), e.get("data")) for e in other.events + rest] != [("BLOCK_EXPORT_DELETED", {"id": "e2"})]:
        fail(f"after quit: {rest}, on the other monitor: {other.events}")
    if daemon.wait(timeout=30) != 0:
        fail("exit status after quit")
    step("quit: BLOCK_EXPORT_DELETED on both monitors, then the response; no SHUTDOWN, nothing for a later "
         "request; exit status 0")
except (AssertionError, EOFError, OSError, KeyError) as e:
    fail(repr(e))
