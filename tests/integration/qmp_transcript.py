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
