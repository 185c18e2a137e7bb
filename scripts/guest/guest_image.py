"""What run-guest.py and make-boot-disk.py both need: the guest's initrd with
the test script appended, and the kernel command line.

Linux unpacks concatenated initramfs archives; the test's archive (/test.sh
and the extra files) follows make-guest.sh's busybox one.
"""
import os

# The kernel's crypto self-tests take ~0.8 s under TCG, and mitigations
# ~0.3 s; neither is under test in a throwaway guest.
KERNEL_CMDLINE = "console=ttyS0 quiet loglevel=3 panic=-1 cryptomgr.notests mitigations=off"


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


def initrd_with_script(guest_dir, script_path, files):
    """The guest's initramfs followed by /test.sh and `files`. Raises OSError
    when make-guest.sh has not built `guest_dir`."""
    with open(os.path.join(guest_dir, "initramfs.cpio.gz"), "rb") as f:
        base = f.read()
    with open(script_path, "rb") as f:
        script = f.read()
    # An uncompressed archive after the gzip one must start 4-byte aligned
    # (the kernel skips zero padding).
    return base + b"\0" * (-len(base) % 4) + script_cpio(script, files)
