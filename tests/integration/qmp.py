"""A minimal QMP client for the integration tests: raw bytes on a unix
socket, cut into JSON values as they complete (a pretty=on monitor spreads
one over several lines), events kept aside while waiting for a reply."""
import json
import socket
import time


class Qmp:
    def __init__(self, path, negotiate=True, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.greeting = self.recv()
        if negotiate:
            assert self.cmd("qmp_capabilities") == {"return": {}}

    def recv(self):
        decoder = json.JSONDecoder()
        while True:
            text = self.buf.decode().lstrip()
            if text.endswith("\n"):  # a value ends each message
                try:
                    msg, end = decoder.raw_decode(text)
                    self.buf = text[end:].encode()
                    return msg
                except json.JSONDecodeError:
                    pass
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("monitor closed the connection")
            self.buf += data

    def send_raw(self, data):
        self.sock.sendall(data)

    def reply(self):
        while True:
            msg = self.recv()
            if "event" in msg:
                self.events.append(msg)
            else:
                return msg

    # The command is positional-only, so that "name" can be an argument.
    def cmd(self, name, /, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = {k.replace("_", "-"): v for k, v in args.items()}
        self.send_raw(json.dumps(msg).encode())
        return self.reply()

    def ok(self, name, /, **args):
        r = self.cmd(name, **args)
        assert "return" in r, f"{name} {args}: {r}"
        return r["return"]

    def error(self, name, /, **args):
        r = self.cmd(name, **args)
        assert "error" in r, f"{name} {args} should fail: {r}"
        return r["error"]

    def wait_event(self, name, timeout=10):
        deadline = time.time() + timeout
        while True:
            for e in self.events:
                if e["event"] == name:
                    self.events.remove(e)
                    return e
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                msg = self.recv()
            except socket.timeout:
                raise AssertionError(f"no {name} event")
            self.events.append(msg)

    def close(self):
        self.sock.close()
