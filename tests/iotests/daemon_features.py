#!/usr/bin/env python3
"""The two daemon features qemu-iotests rely on, checked the way the iotests
use them, against any qemu-storage-daemon-compatible binary (run.sh runs it
against QEMU's and ioplane's before the iotests themselves):

 - a client-mode QMP chardev: `--chardev socket,id=x,path=P` (no server=on)
   makes the daemon connect to P, where this script listens (as iotests'
   QemuStorageDaemon(qmp=True) does), and serve QMP there (`--monitor x` and
   `--monitor chardev=x`); when this end closes the connection the daemon
   keeps running and does not connect again (reconnect unset); a path nobody
   listens on is a startup error;
 - `--pidfile P`: P holds the daemon's pid and a newline once it serves, is
   locked (a second daemon given P fails and leaves it alone), and is removed
   at exit; with --daemonize it names the daemon, not the parent.

Usage: daemon_features.py DAEMON...   (prints 'N passed, N failed' per daemon)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def wait_for(pred, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise Failure(f"timed out waiting for {what}")


def read_pidfile(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Qmp:
    """One QMP connection the daemon made to us."""

    def __init__(self, conn):
        self.conn = conn
        self.conn.settimeout(10)
        self.buf = b""

    def recv(self):
        while b"\n" not in self.buf:
            data = self.conn.recv(65536)
            if not data:
                raise Failure("the daemon closed the QMP connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.conn.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.recv()
            if "event" not in reply:
                return reply


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise Failure("the daemon did not exit on SIGTERM")


def test_client_chardev(prog, d, monitor_arg):
    """QemuStorageDaemon(qmp=True)'s exact arguments."""
    sock = os.path.join(d, "qsd-a.sock")
    pidfile = os.path.join(d, "qsd-a-pid")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(1)
    listener.settimeout(10)
    proc = subprocess.Popen([prog, "--chardev", f"socket,id=qmp-sock,path={sock}",
                             "--monitor", monitor_arg, "--pidfile", pidfile],
                            stderr=subprocess.PIPE)
    try:
        conn, _ = listener.accept()
        qmp = Qmp(conn)
        greeting = qmp.recv()
        check("QMP" in greeting, f"no QMP greeting: {greeting}")
        check(qmp.cmd("qmp_capabilities") == {"return": {}}, "qmp_capabilities failed")
        version = qmp.cmd("query-version")
        check(version.get("return", {}).get("qemu", {}).get("major") == 7, f"query-version: {version}")
        wait_for(lambda: read_pidfile(pidfile) is not None, what="the pidfile")
        check(read_pidfile(pidfile) == f"{proc.pid}\n",
              f"pidfile holds {read_pidfile(pidfile)!r}, expected {proc.pid!r} and a newline")
        # The harness goes away: the daemon keeps running, and (reconnect
        # unset) does not connect again.
        conn.close()
        time.sleep(0.5)
        check(proc.poll() is None, "the daemon exited when its QMP peer closed the connection")
        listener.settimeout(0.5)
        try:
            listener.accept()
            raise Failure("the daemon connected again after the peer closed the connection")
        except socket.timeout:
            pass
        rc = stop(proc)
        check(rc == 0, f"exit status {rc} after SIGTERM")
        check(not os.path.exists(pidfile), "the pidfile is still there after exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        listener.close()
        os.unlink(sock)


def test_client_chardev_nobody_listens(prog, d):
    sock = os.path.join(d, "nobody.sock")
    r = subprocess.run([prog, "--chardev", f"socket,id=x,path={sock}", "--monitor", "x"],
                       capture_output=True, text=True, timeout=15)
    check(r.returncode == 1, f"exit status {r.returncode}, expected 1")
    check(f"Failed to connect to '{sock}'" in r.stderr, f"stderr: {r.stderr!r}")


def test_pidfile_lock(prog, d):
    pidfile = os.path.join(d, "locked-pid")
    first = subprocess.Popen([prog, "--pidfile", pidfile], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: read_pidfile(pidfile) == f"{first.pid}\n", what="the first daemon's pidfile")
        r = subprocess.run([prog, "--pidfile", pidfile], capture_output=True, text=True, timeout=15)
        check(r.returncode == 1, f"second daemon: exit status {r.returncode}, expected 1")
        check("Cannot lock pid file" in r.stderr, f"second daemon's stderr: {r.stderr!r}")
        check(read_pidfile(pidfile) == f"{first.pid}\n", "the second daemon changed the first one's pidfile")
        check(first.poll() is None, "the first daemon exited")
        check(stop(first) == 0, "the first daemon's exit status")
        check(not os.path.exists(pidfile), "the pidfile is still there after exit")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_pidfile_daemonize(prog, d):
    """What iotest 108 and 185 do: --daemonize, then kill $(cat pidfile) and
    wait for the file to go."""
    pidfile = os.path.join(d, "daemon-pid")
    r = subprocess.run([prog, "--pidfile", pidfile, "--daemonize"], capture_output=True, text=True, timeout=15)
    check(r.returncode == 0, f"--daemonize: exit status {r.returncode}: {r.stderr!r}")
    text = read_pidfile(pidfile)
    check(text is not None and text.endswith("\n") and text.strip().isdigit(), f"pidfile holds {text!r}")
    pid = int(text)
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            check(os.path.basename(f.read().split(b"\0")[0].decode()) == os.path.basename(prog),
                  "the pid is not the daemon's")
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(pidfile), what="the pidfile to go after SIGTERM")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run(prog):
    tests = [
        ("client chardev, --monitor ID", lambda d: test_client_chardev(prog, d, "qmp-sock")),
        ("client chardev, --monitor chardev=ID", lambda d: test_client_chardev(prog, d, "chardev=qmp-sock")),
        ("client chardev, nobody listens", lambda d: test_client_chardev_nobody_listens(prog, d)),
        ("pidfile lock", lambda d: test_pidfile_lock(prog, d)),
        ("pidfile with --daemonize", lambda d: test_pidfile_daemonize(prog, d)),
    ]
    passed = failed = 0
    print(f"# {prog}")
    for name, fn in tests:
        with tempfile.TemporaryDirectory(prefix="daemon-features-") as d:
            try:
                fn(d)
                print(f"ok   {name}")
                passed += 1
            except (Failure, OSError, subprocess.SubprocessError) as e:
                print(f"FAIL {name}: {e}")
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return failed == 0


def main():
    if len(sys.argv) < 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    results = [run(prog) for prog in sys.argv[1:]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
