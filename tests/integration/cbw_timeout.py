#!/usr/bin/python3
"""copy-before-write with cbw-timeout, compared with qemu-storage-daemon 7.2.

A fleecing set-up made by hand: a copy-before-write node over the source
whose target is throttled to 1 MiB/s (a throttle node), a snapshot-access
node over it, both exported over NBD. qemu-io writes 4 MiB through the
filter with cbw-timeout=1: the copy would take 4 s, so after 1 s
- on-cbw-error=break-snapshot: the write succeeds, and every snapshot read
  fails from then on;
- on-cbw-error=break-guest-write: the write fails, and the snapshot still
  reads as the source did (the source was not written).
For each case: whether the write succeeded, whether it returned within 3 s
(the copy alone takes 4), and the snapshot reads (with qemu-io's message);
ioplane's must equal qemu-storage-daemon's. The filter is then removed
while its copy may still run in the background (drained first), and the
source image must check clean.
Usage: cbw_timeout.py DAEMON. Needs qemu-img, qemu-io and qemu-storage-daemon."""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from block_jobs import run  # noqa: E402
from daemon_run import Daemon, assert_same_as_qsd  # noqa: E402
from qmp import Qmp  # noqa: E402

MiB = 1 << 20


def qemu_io(uri, command):
    """(succeeded, qemu-io's first line of error or None, seconds)."""
    t0 = time.monotonic()
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", command, uri], capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    failed = [line for line in out.splitlines() if "failed" in line]
    return (not failed, failed[0] if failed else None, took)


def cases(binary, d):
    qmp_sock, nbd_sock = f"{d}/qmp.sock", f"{d}/nbd.sock"
    out = []
    with Daemon(binary, ["--object", "throttle-group,id=slow,limits.bps-write=1048576",
                         "--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m",
                         "--nbd-server", f"addr.type=unix,addr.path={nbd_sock}"], f"{d}/daemon.log",
                workdir=d) as dmn:
        dmn.wait_for(qmp_sock, nbd_sock)
        q = Qmp(qmp_sock)
        for policy in ("break-snapshot", "break-guest-write"):
            src, tgt = f"{d}/src-{policy}.qcow2", f"{d}/tgt-{policy}.qcow2"
            run("qemu-img", "create", "-q", "-f", "qcow2", src, "64M")
            run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", src)
            run("qemu-img", "create", "-q", "-f", "qcow2", tgt, "64M")
            q.ok("blockdev-add", driver="qcow2", node_name="src", file={"driver": "file", "filename": src})
            q.ok("blockdev-add", driver="qcow2", node_name="tgt", file={"driver": "file", "filename": tgt})
            q.ok("blockdev-add", driver="throttle", node_name="ttgt", throttle_group="slow", file="tgt")
            q.ok("blockdev-add", driver="copy-before-write", node_name="cbw", file="src", target="ttgt",
                 cbw_timeout=1, on_cbw_error=policy)
            q.ok("blockdev-add", driver="snapshot-access", node_name="acc", file="cbw")
            q.ok("block-export-add", type="nbd", id="ecbw", node_name="cbw", writable=True)
            q.ok("block-export-add", type="nbd", id="eacc", node_name="acc")
            ok, message, took = qemu_io(f"nbd+unix:///cbw?socket={nbd_sock}", "write -P 0x22 0 4M")
            # The NBD error differs by design: QEMU maps ETIMEDOUT to EINVAL,
            # ioplane to EIO (errno_to_nbd: an errno NBD has no name for).
            seen = [policy, ("write", ok, took < 3)]
            for off in (0, 16 * MiB):
                r_ok, r_message, _ = qemu_io(f"nbd+unix:///acc?socket={nbd_sock}", f"read -P 0x{0x11 if off == 0 else 0:02x} {off} 64k")
                seen.append((f"snapshot read at {off}", r_ok, r_message))
            for e in ("ecbw", "eacc"):
                q.ok("block-export-del", id=e)
                q.wait_event("BLOCK_EXPORT_DELETED")
            for n in ("acc", "cbw", "ttgt", "tgt", "src"):
                q.ok("blockdev-del", node_name=n)
            run("qemu-img", "check", "-q", src)
            out.append(seen)
        dmn.stop()
    return out


CASES = [(None, "on-cbw-error=break-snapshot"), (None, "on-cbw-error=break-guest-write")]


def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="cbw-timeout-")
    assert_same_as_qsd(cases, daemon, d, CASES, "cbw-timeout cases")
    print("cbw_timeout: ok")


if __name__ == "__main__":
    main()
