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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest_image import KERNEL_CMDLINE, initrd_with_script  # noqa: E402

MARKER = re.compile(rb"GUEST-EXIT-STATUS=(\d+)\s*$")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--guest", required=True, help="directory make-guest.sh wrote")
    ap.add_argument("--script", help="shell script to run in the guest as /test.sh (with --boot disk, the "
                                     "disk holds it)")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--memory", type=int, default=512, help="guest RAM in MB")
    ap.add_argument("--memfd", action="store_true", help="shared memfd guest RAM (for vhost-user devices)")
    ap.add_argument("--net", action="store_true", help="virtio-net on QEMU user networking; the host is 10.0.2.2")
    ap.add_argument("--log", help="also write the guest console here")
    ap.add_argument("--file", action="append", default=[], help="host file to put in the guest's / (repeatable)")
    ap.add_argument("--allow-reboot", action="store_true",
                    help="a reboot in the guest restarts it (and runs the script again) instead of ending QEMU")
    ap.add_argument("--boot", choices=["pvh", "bzimage", "disk"], default="pvh",
                    help="pvh: -kernel vmlinux, straight to Linux (fastest); bzimage: -kernel vmlinuz, "
                         "whose real-mode setup first asks the BIOS about its disks (EDD); disk: no "
                         "-kernel, the firmware boots a disk in the QEMU arguments (make-boot-disk.py)")
    ap.add_argument("--firmware", choices=["seabios", "ovmf"], default="seabios",
                    help="ovmf: UEFI (Debian's OVMF.fd)")
    ap.add_argument("--firmware-log", help="write the firmware's debug port (0x402) here")
    ap.add_argument("qemu_args", nargs=argparse.REMAINDER, help="-- then extra QEMU arguments")
    args = ap.parse_args()
    extra = args.qemu_args[1:] if args.qemu_args[:1] == ["--"] else args.qemu_args

    if args.boot != "disk" and not args.script:
        ap.error("--script is needed unless the firmware boots a disk (--boot disk)")

    with tempfile.TemporaryDirectory(prefix="ioplane-guest-") as tmp:
        # -display none -serial stdio rather than -nographic: no QEMU monitor on
        # stdio, and SeaBIOS's serial console (which -nographic turns on) does
        # not send its terminal-reset escapes.
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-display", "none", "-serial", "stdio",
               "-nic", "none", "-m", str(args.memory)]
        if args.boot != "disk":
            initrd = os.path.join(tmp, "initrd")
            try:
                initrd_data = initrd_with_script(args.guest, args.script, args.file)
            except OSError as e:
                ap.error(f"{e} (build the guest with scripts/guest/make-guest.sh)")
            with open(initrd, "wb") as f:
                f.write(initrd_data)
            # vmlinux (PVH entry) boots about twice as fast as vmlinuz under TCG.
            kernel = os.path.join(args.guest, "vmlinux" if args.boot == "pvh" else "vmlinuz")
            if not os.path.exists(kernel):
                kernel = os.path.join(args.guest, "vmlinuz")
            cmd += ["-kernel", kernel, "-initrd", initrd, "-append", KERNEL_CMDLINE]
        if args.firmware == "ovmf":
            cmd += ["-bios", "/usr/share/ovmf/OVMF.fd"]
        if args.firmware_log:
            cmd += ["-chardev", f"file,id=fwlog,path={args.firmware_log}",
                    "-device", "isa-debugcon,iobase=0x402,chardev=fwlog"]
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
