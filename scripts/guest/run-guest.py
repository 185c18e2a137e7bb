#!/usr/bin/env python3
"""Boots the guest built by make-guest.sh under QEMU (TCG) and runs one script in it.

Exits with the script's exit status, 124 if the timeout killed QEMU, or 125 if
the guest never reported a status (QEMU failed to start, kernel panic, ...).
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

MARKER = re.compile(rb"GUEST-EXIT-STATUS=(\d+)\s*$")


def newc_entry(name, data, mode):
    fields = [0, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
    entry = b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0"
    entry += b"\0" * (-len(entry) % 4) + data
    return entry + b"\0" * (-len(entry) % 4)


def script_cpio(script, files):
    """/test.sh, and each host file in `files` as /BASENAME (executable)."""
    out = newc_entry("test.sh", script, 0o100755)
    for path in files:
        with open(path, "rb") as f:
            out += newc_entry(os.path.basename(path), f.read(), 0o100755)
    return out + newc_entry("TRAILER!!!", b"", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--guest", required=True, help="directory make-guest.sh wrote")
    ap.add_argument("--script", required=True, help="shell script to run in the guest as /test.sh")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--memory", type=int, default=512, help="guest RAM in MB")
    ap.add_argument("--memfd", action="store_true", help="shared memfd guest RAM (for vhost-user devices)")
    ap.add_argument("--net", action="store_true", help="virtio-net on QEMU user networking; the host is 10.0.2.2")
    ap.add_argument("--log", help="also write the guest console here")
    ap.add_argument("--file", action="append", default=[], help="host file to put in the guest's / (repeatable)")
    ap.add_argument("--allow-reboot", action="store_true",
                    help="a reboot in the guest restarts it (and runs the script again) instead of ending QEMU")
    ap.add_argument("qemu_args", nargs=argparse.REMAINDER, help="-- then extra QEMU arguments")
    args = ap.parse_args()
    extra = args.qemu_args[1:] if args.qemu_args[:1] == ["--"] else args.qemu_args

    try:
        with open(os.path.join(args.guest, "initramfs.cpio.gz"), "rb") as f:
            base = f.read()
    except OSError as e:
        ap.error(f"{e} (build the guest with scripts/guest/make-guest.sh)")
    with open(args.script, "rb") as f:
        script = f.read()
    # Linux unpacks concatenated archives, but an uncompressed one must start
    # 4-byte aligned (zero padding is skipped).
    initrd_data = base + b"\0" * (-len(base) % 4) + script_cpio(script, args.file)

    with tempfile.TemporaryDirectory(prefix="ioplane-guest-") as tmp:
        initrd = os.path.join(tmp, "initrd")
        with open(initrd, "wb") as f:
            f.write(initrd_data)
        # vmlinux (PVH entry) boots about twice as fast as vmlinuz under TCG.
        kernel = os.path.join(args.guest, "vmlinux")
        if not os.path.exists(kernel):
            kernel = os.path.join(args.guest, "vmlinuz")
        # The kernel's crypto self-tests take ~0.8 s under TCG, and
        # mitigations ~0.3 s; neither is under test in a throwaway guest.
        # -display none -serial stdio rather than -nographic: no QEMU monitor on
        # stdio, and SeaBIOS's serial console (which -nographic turns on) does
        # not send its terminal-reset escapes.
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-serial", "stdio",
               "-nic", "none",
               "-m", str(args.memory), "-kernel", kernel, "-initrd", initrd,
               "-append", "console=ttyS0 quiet loglevel=3 panic=-1 cryptomgr.notests mitigations=off"]
        if not args.allow_reboot:
            cmd += ["-no-reboot"]
        if args.memfd:
            cmd += ["-object", f"memory-backend-memfd,id=mem,size={args.memory}M,share=on",
                    "-numa", "node,memdev=mem"]
        if args.net:
            # romfile= : no PXE option ROM, a direct -kernel boot never uses it.
            # (-nic none above only drops QEMU's default e1000.)
            cmd += ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]
        cmd += extra
        return run(cmd, args.timeout, args.log)


def run(cmd, timeout, log_path):
    log = open(log_path, "wb") if log_path else None
    # stdin from /dev/null: QEMU would otherwise put a terminal into raw mode,
    # and leave it so if killed.
    qemu = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    status = []
    sinks = [sys.stdout.buffer] + ([log] if log else [])

    def pump():
        for line in qemu.stdout:
            line = line.replace(b"\r\n", b"\n")
            m = MARKER.search(line)
            if m:
                status.append(int(m.group(1)))
            for out in list(sinks):
                try:
                    out.write(line)
                    out.flush()
                except OSError:  # e.g. stdout piped into head: keep reading QEMU
                    sinks.remove(out)

    reader = threading.Thread(target=pump)
    reader.start()
    timed_out = False
    # SIGTERM (a test runner's timeout) must not leave QEMU running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        qemu.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    reader.join()
    if log:
        log.close()
    if status:
        return status[-1]
    if timed_out:
        print(f"run-guest: timeout after {timeout:g}s, QEMU killed", file=sys.stderr)
        return 124
    print(f"run-guest: the guest reported no exit status (QEMU exit status {qemu.returncode})", file=sys.stderr)
    return 125


if __name__ == "__main__":
    sys.exit(main())
