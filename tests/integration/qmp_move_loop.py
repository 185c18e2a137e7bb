#!/usr/bin/env python3
"""Moves node 'disk' between io0, io1 and the main loop N times over QMP,
while I/O runs (qmp_live_move.sh); waits until fio has I/O in flight first.
Usage: qmp_move_loop.py QMP_SOCKET N"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from qmp import Qmp  # noqa: E402

q = Qmp(sys.argv[1])
n = int(sys.argv[2])
deadline = time.time() + 60
while q.ok("x-query-export-stats")[0]["ops"]["write"]["requests"] == 0:
    if time.time() > deadline:
        sys.exit("fio never started writing")
    time.sleep(0.05)
targets = ["io1", None, "io0"]
start = time.time()
for i in range(n):
    r = q.cmd("x-blockdev-set-iothread", node_name="disk", iothread=targets[i % 3], force=True)
    if "return" not in r:
        sys.exit(f"move {i}: {r}")
    time.sleep(0.005)  # let I/O run in each home
writes = q.ok("x-query-export-stats")[0]["ops"]["write"]
print(f"{n} moves in {time.time() - start:.1f} s; {writes['requests']} writes, {writes['errors']} errors so far")
if writes["errors"]:
    sys.exit("writes failed during the moves")
