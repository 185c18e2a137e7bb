"""The daemon under a Python integration test: started with its output in a
log file (and, if asked, an open-files limit and inherited fds), waited for
until its sockets exist, stopped with SIGTERM (it must exit 0), and on a
failure the log's tail printed and the daemon killed. Used as a context
manager, an exception in the block is such a failure, and the test's work
directory goes with the daemon."""
import os
import resource
import shutil
import subprocess
import sys
import time


class Daemon:
    def __init__(self, binary, args, log, nofile=None, pass_fds=(), workdir=None):
        self.log = log
        self.workdir = workdir  # removed when the `with` block ends
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        with open(log, "w") as out:
            self.proc = subprocess.Popen([binary] + args, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit,
                                         pass_fds=pass_fds)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        """Any error in the block fails the test with the daemon's log; the
        daemon is killed if still running, and the work directory removed."""
        try:
            if kind is not None and issubclass(kind, Exception):
                self.fail(f"{exc!r}")
        finally:
            self.kill()
            if self.workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self):
        return self.proc.pid

    def wait_for(self, *paths, timeout=10):
        """Until every path exists (the daemon listens on it)."""
        deadline = time.monotonic() + timeout
        while not all(os.path.exists(p) for p in paths):
            if self.proc.poll() is not None:
                self.fail(f"the daemon exited with status {self.proc.returncode} at startup")
            if time.monotonic() > deadline:
                self.fail(f"the daemon did not listen on {', '.join(paths)}")
            time.sleep(0.05)

    def fail(self, msg):
        print(f"FAIL: {msg}")
        with open(self.log, errors="replace") as f:
            print("--- daemon log (tail):\n" + "".join(f.readlines()[-int(os.environ.get("IOPLANE_LOG_TAIL", "25")):]))
        self.kill()
        sys.exit(1)

    def stop(self, timeout=30):
        """SIGTERM; fails unless the daemon exits 0 in time."""
        self.proc.terminate()
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail("SIGTERM did not end the daemon")
        if status != 0:
            self.fail(f"daemon exit status {status} after SIGTERM")
        print("ok: SIGTERM ends the daemon")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def assert_same_as_qsd(collect, daemon, d, cases, what_they_are="refusals"):
    """Runs collect(binary, workdir) -> one answer per case against `daemon`
    and against qemu-storage-daemon 7.2 (in d/ours and d/qsd), and asserts
    the answers equal, case by case; `cases` are (arguments, what) pairs."""
    os.makedirs(f"{d}/ours", exist_ok=True)
    os.makedirs(f"{d}/qsd", exist_ok=True)
    ours = collect(daemon, f"{d}/ours")
    theirs = collect(shutil.which("qemu-storage-daemon"), f"{d}/qsd")
    for (_, what), o, t in zip(cases, ours, theirs):
        assert o == t, f"{what}: ioplane said {o!r}, qemu-storage-daemon {t!r}"
    print(f"ok: {len(cases)} {what_they_are} word for word as qemu-storage-daemon's")
