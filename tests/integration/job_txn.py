#!/usr/bin/python3
"""Backups started by one `transaction` with completion-mode=grouped (QEMU's
JobTxn), compared event for event with qemu-storage-daemon 7.2:

- both succeed: the job done first waits (status waiting) until the other
  is done too; then both go pending and are finalized together;
- one fails (its target fails a write): the other, still running, is
  cancelled at once (BLOCK_JOB_CANCELLED), the failed one ends with its
  error;
- the user cancels one: the other, already waiting, is cancelled too;
- auto-finalize off: both wait in pending (BLOCK_JOB_PENDING each), and
  job-finalize of one finalizes both; a cancel of a pending job aborts
  both;
- a transaction whose last action fails: neither job runs;
- completion-mode=individual: the job done first ends at once, whatever
  the other does;
- SIGTERM while one job of a group waits for the other: the daemon
  cancels both and exits 0.
Then ioplane alone (qemu-storage-daemon 7.2 hangs on it): two grouped
backups and a later action that fails.

Every event each daemon sends (its name, job, status, error) is recorded
from the transaction to the last job's end, with the transaction's and
the job commands' replies; ioplane's record must equal
qemu-storage-daemon's. The sources are null-co nodes and the targets
null-co or a blkdebug over null-co that fails a write once; the slow job
is rate-limited (speed) until the test lets it finish.
Usage: job_txn.py DAEMON. Needs qemu-system-common (qemu-storage-daemon)."""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_run import Daemon, assert_same_as_qsd  # noqa: E402
from qmp import Qmp  # noqa: E402
from qmp_transcript import qmp_send  # noqa: E402

MiB = 1 << 20
SIZE = 16 * MiB
SLOW = 64 * 1024  # bytes per second: the slow job would take minutes


def backup(job_id, device, target, **extra):
    data = {"job-id": job_id, "device": device, "target": target, "sync": "full"}
    data.update({k.replace("_", "-"): v for k, v in extra.items()})
    return {"type": "blockdev-backup", "data": data}


def event_record(e):
    d = e["data"]
    if e["event"] == "JOB_STATUS_CHANGE":
        return (d["id"], d["status"])
    out = [e["event"], d.get("device", d.get("id"))]
    if "error" in d:
        out.append(d["error"])
    return tuple(out)


class Run:
    """One scenario on one daemon: the replies in order, and every event in
    the order it came. record() gives the replies and each job's own
    events (the order of two jobs' events may differ with timing where
    nothing orders them; where something does, the scenario asserts it)."""

    def __init__(self, q):
        self.q, self.replies, self.events = q, [], []

    def cmd(self, label, command, **args):
        r = qmp_send(self.q, command, {k.replace("_", "-"): v for k, v in args.items()})
        if "error" in r:
            self.replies.append((label, {"error": r["error"]["desc"]}))
        elif command == "query-jobs":  # progress depends on timing
            self.replies.append((label, [(j["id"], j["status"], j.get("error")) for j in r["return"]]))
        else:
            self.replies.append((label, r["return"]))
        return r

    def until(self, what, pred, timeout=30):
        """Takes events until pred(event record) holds for one."""
        if any(pred(e) for e in self.events):
            return
        deadline = time.time() + timeout
        while True:
            while self.q.events:
                e = event_record(self.q.events.pop(0))
                self.events.append(e)
                if pred(e):
                    return
            self.q.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                msg = self.q.recv()
            except TimeoutError:
                raise AssertionError(f"{what}: not seen; events so far: {self.events}")
            if "event" in msg:
                self.q.events.append(msg)

    def gone(self, *jobs):
        """Takes events until every job in `jobs` reached status null."""
        for job in jobs:
            self.until(f"{job} null", lambda r, job=job: r == (job, "null"))

    def before(self, first, then):
        """Asserts that event `first` came before event `then`."""
        assert self.events.index(first) < self.events.index(then), f"{first} not before {then}: {self.events}"

    def record(self):
        """The replies, and each job's events. Left out: the pause a drained
        section makes (paused, then running again), which QEMU's jobs show
        and ioplane's do not: their work waits for the drain without a
        status change."""
        jobs = {}
        for i, e in enumerate(self.events):
            if e[1:] == ("paused",) or (e[1:] == ("running",) and (e[0], "paused") in self.events[:i]):
                continue
            job = e[1] if e[0].startswith("BLOCK_JOB") else e[0]
            jobs.setdefault(job, []).append(e)
        return {"replies": self.replies, "jobs": jobs}


def fresh_nodes(q, tag):
    for name in ("s1", "s2", "t1", "t2"):
        q.ok("blockdev-add", driver="null-co", node_name=f"{tag}{name}", size=SIZE)
    q.ok("blockdev-add", driver="raw", node_name=f"{tag}bad",
         file={"driver": "blkdebug", "image": {"driver": "null-co", "size": SIZE},
               "inject-error": [{"event": "write_aio", "sector": 2048, "once": True}]})


def scenarios(binary, d):
    qmp_sock = f"{d}/qmp.sock"
    out = []
    with Daemon(binary, ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"],
                f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        grouped = {"completion-mode": "grouped"}

        def pair(tag, fast, slow, properties=grouped):
            """Backups `fast` and `slow` (rate-limited) in one transaction."""
            r = Run(q)
            fresh_nodes(q, tag)
            r.cmd("txn", "transaction", actions=[backup(fast, f"{tag}s1", f"{tag}t1"),
                                                 backup(slow, f"{tag}s2", f"{tag}t2", speed=SLOW)],
                  properties=properties)
            return r

        # Both succeed: a waits for b.
        r = pair("a", "a", "b")
        r.until("a waiting", lambda e: e == ("a", "waiting"))
        time.sleep(0.3)  # a stays waiting while b runs
        r.cmd("jobs while b runs", "query-jobs")
        r.cmd("b unlimited", "block-job-set-speed", device="b", speed=0)
        r.gone("b", "a")
        r.before(("b", "waiting"), ("a", "pending"))
        out.append(r.record())

        # One fails: the other is cancelled while it runs.
        r = Run(q)
        fresh_nodes(q, "f")
        r.cmd("txn", "transaction", actions=[backup("c", "fs2", "ft2", speed=SLOW), backup("d", "fs1", "fbad")],
              properties=grouped)
        r.gone("d", "c")
        r.before(("d", "aborting"), ("c", "aborting"))
        out.append(r.record())

        # The user cancels the running one; the waiting one is cancelled too.
        r = pair("u", "e", "f")
        r.until("e waiting", lambda e: e == ("e", "waiting"))
        r.cmd("cancel f", "job-cancel", id="f")
        r.gone("f", "e")
        out.append(r.record())

        def both_pending(tag, first, second):
            """A grouped pair with auto-finalize off, both pending."""
            r = Run(q)
            fresh_nodes(q, tag)
            r.cmd("txn", "transaction", actions=[backup(first, f"{tag}s1", f"{tag}t1", auto_finalize=False),
                                                 backup(second, f"{tag}s2", f"{tag}t2", auto_finalize=False)],
                  properties=grouped)
            for job in (first, second):
                r.until(f"{job} pending", lambda e, job=job: e == ("BLOCK_JOB_PENDING", job))
            return r

        # auto-finalize off: both pending; finalizing one finalizes both.
        r = both_pending("p", "g", "h")
        r.cmd("jobs pending", "query-jobs")
        r.cmd("finalize h", "job-finalize", id="h")
        r.gone("h", "g")
        out.append(r.record())

        # auto-finalize off, and a cancel of a pending job: both abort.
        r = both_pending("k", "i", "j")
        r.cmd("cancel i", "job-cancel", id="i")
        r.gone("i", "j")
        out.append(r.record())

        # A later action fails: no job runs.
        r = Run(q)
        fresh_nodes(q, "x")
        r.cmd("txn", "transaction", actions=[backup("l", "xs1", "xt1", speed=SLOW), {"type": "abort", "data": {}}],
              properties=grouped)
        r.cmd("no jobs", "query-jobs")
        r.gone("l")
        out.append(r.record())

        # Individual: m ends at once while n runs.
        r = pair("n", "m", "n", properties={"completion-mode": "individual"})
        r.gone("m")
        r.until("n", lambda e: e == ("n", "running"))
        r.cmd("jobs after m", "query-jobs")
        r.cmd("cancel n", "job-cancel", id="n")
        r.gone("n")
        out.append(r.record())

        # SIGTERM while one job of a group waits for the other: both are
        # cancelled and the daemon exits 0.
        r = pair("z", "o", "p")
        r.until("o waiting", lambda e: e == ("o", "waiting"))
        dmn.stop()
    return out


def two_jobs_then_a_failure(binary, d):
    """Two grouped backups and a later action that fails: the transaction
    fails, neither job ran (created, aborting, concluded, null, and no
    BLOCK_JOB_* event). qemu-storage-daemon 7.2 never answers this one (its
    second job's abort waits for the first job, which never started, to
    complete)."""
    qmp_sock = f"{d}/qmp.sock"
    with Daemon(binary, ["--chardev", f"socket,id=m,path={qmp_sock},server=on,wait=off", "--monitor", "m"],
                f"{d}/daemon.log", workdir=d) as dmn:
        dmn.wait_for(qmp_sock)
        q = Qmp(qmp_sock)
        r = Run(q)
        fresh_nodes(q, "x")
        r.cmd("txn", "transaction", actions=[backup("l1", "xs1", "xt1"), backup("l2", "xs2", "xt2"),
                                             {"type": "abort", "data": {}}],
              properties={"completion-mode": "grouped"})
        r.cmd("no jobs", "query-jobs")
        r.gone("l1", "l2")
        got = r.record()
        assert got["replies"] == [("txn", {"error": "Transaction aborted using Abort action"}), ("no jobs", [])], got
        for job in ("l1", "l2"):
            assert got["jobs"][job] == [(job, s) for s in ("created", "aborting", "concluded", "null")], got
        dmn.stop()
    print("ok: two grouped jobs and a failing action: the transaction fails and neither job runs")


CASES = [(None, "grouped, both succeed"), (None, "grouped, one fails"), (None, "grouped, the user cancels one"),
         (None, "grouped, auto-finalize off, job-finalize"), (None, "grouped, auto-finalize off, cancel pending"),
         (None, "grouped, a later action fails"), (None, "individual")]


def main():
    daemon = sys.argv[1]
    d = tempfile.mkdtemp(prefix="job-txn-")
    try:
        assert_same_as_qsd(scenarios, daemon, d, CASES, "grouped and individual transactions")
        os.makedirs(f"{d}/alone")
        two_jobs_then_a_failure(daemon, f"{d}/alone")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("job_txn: ok")


if __name__ == "__main__":
    main()
