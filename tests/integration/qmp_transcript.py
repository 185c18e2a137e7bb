"""QMP steps recorded under labels, for the tests that run one scenario
against ioplane and against qemu-storage-daemon 7.2 and compare what each
answered (dirty_bitmaps.py, qmp_transaction.py, nbd_bitmaps.py,
qcow2_bitmaps.py)."""
import json


def qmp_send(q, command, arguments=None):
    """Like Qmp.cmd, but with the arguments as sent (so that one may be
    called "name"): the raw reply."""
    msg = {"execute": command}
    if arguments is not None:
        msg["arguments"] = arguments
    q.send_raw(json.dumps(msg).encode())
    return q.reply()


def error_class_and_desc(error):
    return {k: error[k] for k in ("class", "desc")}


class Transcript:
    """One daemon's answers: `log` gets (label, outcome) for every step,
    the outcome being {"return": ...} or {"error": error_form(error)}."""

    def __init__(self, q, log, error_form=error_class_and_desc):
        self.q, self.log, self.error_form = q, log, error_form

    def cmd(self, command, **args):
        """The raw reply; keyword arguments with - for _."""
        return qmp_send(self.q, command, {k.replace("_", "-"): v for k, v in args.items()} if args else None)

    def outcome(self, reply):
        return {"return": reply["return"]} if "return" in reply else {"error": self.error_form(reply["error"])}

    def log_reply(self, label, reply):
        out = self.outcome(reply)
        self.log.append((label, out))
        return out

    def step(self, label, command, **args):
        return self.log_reply(label, self.cmd(command, **args))

    def ok(self, label, command, **args):
        out = self.step(label, command, **args)
        assert "return" in out, f"{label}: {out}"
        return out["return"]

    def refused(self, label, command, **args):
        out = self.step(label, command, **args)
        assert "error" in out, f"{label}: should fail: {out}"
        return out["error"]


def compare_transcripts(ours, theirs, known=None, skip_prefix=None):
    """Prints every step whose outcomes differ (or that QEMU's run lacks)
    and returns how many. A label in `known` (label -> why) passes when both
    failed with the same error class; labels starting with `skip_prefix`
    are ioplane's only."""
    known = known or {}
    failures = 0
    theirs_by_label = dict(theirs)
    for label, out in ours:
        if skip_prefix and label.startswith(skip_prefix):
            continue
        if label not in theirs_by_label:
            print(f"FAIL: {label}: not run against QEMU")
            failures += 1
            continue
        want = theirs_by_label[label]
        if label in known and "error" in out and "error" in want and out["error"]["class"] == want["error"]["class"]:
            print(f"known: {label}: {known[label]}")
            continue
        if out != want:
            print(f"FAIL: {label}:\n  ioplane: {json.dumps(out)[:1500]}\n  qemu:    {json.dumps(want)[:1500]}")
            failures += 1
    return failures
