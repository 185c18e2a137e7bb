#!/usr/bin/env python3
"""Writes a disk image a VM boots from through its firmware, holding the guest
that make-guest.sh built and a test script, so that the firmware's own disk
driver reads the boot loader and the loader reads the kernel and initrd.

  --firmware bios: a FAT file system from sector 0 with syslinux (its boot
      sector, ldlinux.sys) loading /vmlinuz and /initrd; SeaBIOS boots it.
      With --mbr instead an MBR (syslinux's boot code) whose active partition
      1 holds that file system: the MBR code runs at 0x7c00 and loads the
      partition's boot sector over itself, which QEMU's TCG does not see
      when a vhost-user back end wrote it (docs/VHOST-USER-BLK.md).
  --firmware uefi: a GPT, partition 1 an EFI system partition with systemd-boot
      as EFI/BOOT/BOOTX64.EFI and a loader entry for /vmlinuz and /initrd;
      OVMF boots it.

The data area (--data-mib, default 16) starts at 1 MiB + --boot-mib (49 MiB
by default) and is free for the test to write (partition 2 with --mbr and
uefi). Both loaders print to the serial port. The tools come from Debian:
sfdisk (fdisk), mkfs.fat (dosfstools), mcopy (mtools), syslinux and
syslinux-common, systemd-boot-efi.
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from guest_image import KERNEL_CMDLINE, initrd_with_script  # noqa: E402

MIB = 1 << 20
SECTOR = 512
SYSLINUX_MBR = "/usr/lib/syslinux/mbr/mbr.bin"
SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

SYSLINUX_CFG = f"""SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd
  APPEND {KERNEL_CMDLINE}
"""
LOADER_CONF = "default test.conf\ntimeout 0\n"
LOADER_ENTRY = f"title ioplane test guest\nlinux /vmlinuz\ninitrd /initrd\noptions {KERNEL_CMDLINE}\n"


def run(*cmd, stdin=None):
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    r = subprocess.run(cmd, input=stdin, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"make-boot-disk: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


def partition(disk, firmware, boot_sectors, data_sectors):
    start = MIB // SECTOR
    if firmware == "bios":
        table = (f"label: dos\nstart={start}, size={boot_sectors}, type=c, bootable\n"
                 f"start={start + boot_sectors}, size={data_sectors}, type=83\n")
    else:
        table = (f"label: gpt\nstart={start}, size={boot_sectors}, type=U, name=esp\n"
                 f"start={start + boot_sectors}, size={data_sectors}, type=L, name=data\n")
    run("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", disk, stdin=table)


def fat_file_system(path, size, hidden_sectors, files):
    """A FAT file system image of `size` bytes holding `files` ({name: bytes}, names
    with '/' create directories). `hidden_sectors`: where it starts on the disk,
    which a BIOS boot sector needs to find the rest of itself."""
    with open(path, "wb") as f:
        f.truncate(size)
    run("mkfs.fat", "-h", str(hidden_sectors), "-n", "IOPLANEBOOT", path)
    made = set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    run("mmd", "-i", path, "::/" + d)
                    made.add(d)
            src = os.path.join(tmp, parts[-1])
            with open(src, "wb") as f:
                f.write(data)
            run("mcopy", "-i", path, src, "::/" + name)
            os.unlink(src)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guest", required=True, help="directory make-guest.sh wrote")
    ap.add_argument("--script", required=True, help="shell script the guest runs as /test.sh")
    ap.add_argument("--file", action="append", default=[], help="host file to put in the guest's / (repeatable)")
    ap.add_argument("--firmware", choices=["bios", "uefi"], required=True)
    ap.add_argument("--mbr", action="store_true", help="bios: the file system in partition 1 of an MBR")
    ap.add_argument("--boot-mib", type=int, default=48, help="size of the boot partition")
    ap.add_argument("--data-mib", type=int, default=16, help="size of partition 2")
    ap.add_argument("output", help="disk image to write (replaced)")
    args = ap.parse_args()

    try:
        initrd = initrd_with_script(args.guest, args.script, args.file)
        with open(os.path.join(args.guest, "vmlinuz"), "rb") as f:
            kernel = f.read()
    except OSError as e:
        ap.error(f"{e} (build the guest with scripts/guest/make-guest.sh)")
    files = {"vmlinuz": kernel, "initrd": initrd}
    if args.firmware == "bios":
        files["syslinux.cfg"] = SYSLINUX_CFG.encode()
    else:
        with open(SYSTEMD_BOOT, "rb") as f:
            files["EFI/BOOT/BOOTX64.EFI"] = f.read()
        files["loader/loader.conf"] = LOADER_CONF.encode()
        files["loader/entries/test.conf"] = LOADER_ENTRY.encode()
    if len(kernel) + len(initrd) + MIB > args.boot_mib * MIB:
        ap.error(f"kernel and initrd need more than --boot-mib {args.boot_mib}")

    boot_bytes, data_bytes = args.boot_mib * MIB, args.data_mib * MIB
    # The data area at 1 MiB + boot_bytes; 1 MiB after it (room for the GPT's
    # backup copy).
    with open(args.output, "wb") as f:
        f.truncate(MIB + boot_bytes + data_bytes + MIB)
    partitioned = args.firmware == "uefi" or args.mbr
    if partitioned:
        partition(args.output, args.firmware, boot_bytes // SECTOR, data_bytes // SECTOR)
        fs_offset, fs_bytes = MIB, boot_bytes
    else:
        fs_offset, fs_bytes = 0, MIB + boot_bytes

    with tempfile.TemporaryDirectory(prefix="ioplane-bootdisk-") as tmp:
        fs = os.path.join(tmp, "boot.img")
        fat_file_system(fs, fs_bytes, fs_offset // SECTOR, files)
        if args.firmware == "bios":
            run("syslinux", "--install", fs)
        with open(fs, "rb") as src, open(args.output, "r+b") as dst:
            dst.seek(fs_offset)
            while chunk := src.read(4 * MIB):
                dst.write(chunk)
    if args.firmware == "bios" and partitioned:
        # The MBR's boot code (440 bytes, before the disk signature and the
        # partition table) loads the active partition's boot sector.
        with open(SYSLINUX_MBR, "rb") as src, open(args.output, "r+b") as dst:
            dst.write(src.read(440))
    return 0


if __name__ == "__main__":
    sys.exit(main())
