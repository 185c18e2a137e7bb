#!/usr/bin/env python3
"""9P security models (security-model=passthrough|mapped-xattr|none).

mapped-xattr, for a daemon running as root: what the client makes and
changes is kept in user.virtfs.* attributes of host objects the daemon owns
with modes 0600/0700, never setuid, never a device node or symlink on the
host; the client sees what it asked for and cannot see or set those
attributes. passthrough (as root): the client's owner and setuid bit reach
the host, which is why mapped-xattr exists. none: like passthrough.
Usage: fs9p_security.py DAEMON
"""
import errno
import os
import stat
import struct
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import p9  # noqa: E402
from daemon_run import Daemon  # noqa: E402
from p9 import SETATTR_GID, SETATTR_MODE, SETATTR_UID  # noqa: E402

DAEMON = sys.argv[1]
CLIENT_UID = 1234
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def session(sock, uid=CLIENT_UID):
    c = p9.Client.unix(sock)
    c.version()
    root = c.new_fid()
    c.attach(root, aname="", n_uname=uid)
    return c, root


def stored_mode(path):
    try:
        return struct.unpack("<I", os.getxattr(path, "user.virtfs.mode", follow_symlinks=False))[0]
    except OSError:
        return None


def expect_error(fn, code, what):
    try:
        fn()
        check(False, f"{what}: no error")
    except p9.P9Error as e:
        check(e.errno == code, f"{what}: {errno.errorcode.get(e.errno)}")


def mapped_cases(sock, share):
    c, root = session(sock)
    me = os.geteuid()
    # A setuid file asked for by uid 1234.
    f = c.walk_new(root, [])
    c.lcreate(f, "suid", os.O_RDWR, 0o4755, gid=CLIENT_UID)
    host = os.lstat(os.path.join(share, "suid"))
    check(host.st_uid == me and stat.S_IMODE(host.st_mode) == 0o600,
          f"mapped: the host file is the daemon's, mode 0600 (uid {host.st_uid}, mode {oct(host.st_mode)})")
    check(stored_mode(os.path.join(share, "suid")) == stat.S_IFREG | 0o4755, "mapped: the client's mode is stored")
    a = c.getattr(f)
    check(a.mode == stat.S_IFREG | 0o4755 and a.uid == CLIENT_UID and a.gid == CLIENT_UID,
          f"mapped: the client sees mode {oct(a.mode)}, uid {a.uid}, gid {a.gid}")
    c.setattr(f, SETATTR_MODE, mode=0o640)
    check(c.getattr(f).mode == stat.S_IFREG | 0o640 and
          stat.S_IMODE(os.lstat(os.path.join(share, "suid")).st_mode) == 0o600,
          "mapped: chmod changes what the client sees, not the host")
    c.clunk(f)

    # chown of the share's root changes nothing on the host.
    before = os.stat(share)
    c.setattr(root, SETATTR_UID | SETATTR_GID, uid=0, gid=0)
    after = os.stat(share)
    check((after.st_uid, after.st_gid, after.st_mode) == (before.st_uid, before.st_gid, before.st_mode),
          "mapped: chown and chmod of the root leave the host directory alone")
    check(c.getattr(root).uid == 0, "mapped: ...and the client sees its change")

    c.mkdir(root, "dir", 0o755, gid=CLIENT_UID)
    host = os.lstat(os.path.join(share, "dir"))
    d = c.walk_new(root, ["dir"])
    check(stat.S_ISDIR(host.st_mode) and stat.S_IMODE(host.st_mode) == 0o700 and
          c.getattr(d).mode == stat.S_IFDIR | 0o755, "mapped: a directory is 0700 on the host, 0755 to the client")

    c.symlink(root, "link", "/etc/shadow")
    host = os.lstat(os.path.join(share, "link"))
    with open(os.path.join(share, "link"), "rb") as fh:
        content = fh.read()
    check(stat.S_ISREG(host.st_mode) and content == b"/etc/shadow",
          "mapped: a symlink is a regular file holding its target on the host")
    ln = c.walk_new(root, ["link"])
    check(stat.S_ISLNK(c.getattr(ln).mode) and c.readlink(ln) == "/etc/shadow",
          "mapped: ...and a symlink to the client, with its target")

    c.mknod(root, "null", stat.S_IFCHR | 0o666, major=1, minor=3)
    host = os.lstat(os.path.join(share, "null"))
    n = c.walk_new(root, ["null"])
    a = c.getattr(n)
    check(stat.S_ISREG(host.st_mode) and stat.S_ISCHR(a.mode) and a.rdev == os.makedev(1, 3),
          "mapped: a device node is a plain file on the host, a character device 1,3 to the client")

    f = c.walk_new(root, ["suid"])
    names = c.xattr_get(f, "").split(b"\0")
    check(not any(x.startswith(b"user.virtfs.") for x in names), "mapped: the model's attributes are not listed")
    expect_error(lambda: c.xattr_get(f, "user.virtfs.mode"), errno.ENODATA, "mapped: reading user.virtfs.mode")
    expect_error(lambda: c.xattr_set(f, "user.virtfs.uid", b"\0\0\0\0"), errno.EPERM,
                 "mapped: setting user.virtfs.uid")
    c.xattr_set(f, "user.note", b"hi")
    check(c.xattr_get(f, "user.note") == b"hi", "mapped: other attributes work as usual")
    c.close()


def passthrough_cases(sock, share, model):
    c, root = session(sock, uid=0)
    f = c.walk_new(root, [])
    c.lcreate(f, "suid", os.O_RDWR, 0o755)
    c.setattr(f, SETATTR_MODE, mode=0o4755)
    host = os.lstat(os.path.join(share, "suid"))
    if os.geteuid() == 0:
        check(host.st_uid == 0 and host.st_mode & stat.S_ISUID,
              f"{model} as root: a client makes a setuid file owned by root on the host")
        c.setattr(f, SETATTR_UID, uid=CLIENT_UID + 1)
        check(os.lstat(os.path.join(share, "suid")).st_uid == CLIENT_UID + 1, f"{model} as root: chown reaches the host")
    check(stored_mode(os.path.join(share, "suid")) is None, f"{model}: no attributes stored")
    c.close()


def main():
    tmp = tempfile.mkdtemp(prefix="ioplane-9psec-")
    shares, args = {}, []
    for model in ("passthrough", "mapped-xattr", "none"):
        share, sock = os.path.join(tmp, model), os.path.join(tmp, model + ".sock")
        os.mkdir(share)
        shares[model] = (share, sock)
        args += ["--export", f"type=9p,id={model},path={share},addr.type=unix,addr.path={sock},security-model={model}"]
    with Daemon(DAEMON, args, os.path.join(tmp, "daemon.log"), workdir=tmp) as daemon:
        daemon.wait_for(*(sock for _, sock in shares.values()))
        mapped_cases(shares["mapped-xattr"][1], shares["mapped-xattr"][0])
        passthrough_cases(shares["passthrough"][1], shares["passthrough"][0], "passthrough")
        passthrough_cases(shares["none"][1], shares["none"][0], "none")
        if failures:
            daemon.fail(f"{len(failures)} failed: {failures}")
        daemon.stop()
    print("all passed")


if __name__ == "__main__":
    main()
