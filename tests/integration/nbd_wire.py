"""NBD wire helpers for the integration tests' hand-made clients (fixed
newstyle handshake, GO, requests and simple replies), and a check() that
records failures."""
import socket
import struct

IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3e889045565a9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668e33ef
NBD_OPT_GO, NBD_OPT_STRUCTURED_REPLY = 7, 8
NBD_REP_ACK, NBD_REP_ERR_UNSUP = 1, 2**31 + 1
NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_DISC = 0, 1, 2
EINVAL, ENOSPC = 22, 28
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures.append(what)


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def closed_by_server(s):
    try:
        s.settimeout(10)
        while True:
            if not s.recv(4096):
                return True
    except (ConnectionError, OSError):
        return True
    except socket.timeout:
        return False


def handshake(s):
    hello = recv_exact(s, 18)
    assert hello[:8] == b"NBDMAGIC"
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_reply(s):
    magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
    assert magic == REP_MAGIC
    return rtype, recv_exact(s, length)


def go(s, name, structured=False):
    handshake(s)
    if structured:
        option(s, NBD_OPT_STRUCTURED_REPLY)
        assert option_reply(s)[0] == NBD_REP_ACK
    option(s, NBD_OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    while True:
        rtype, _ = option_reply(s)
        if rtype == NBD_REP_ACK:
            return
        assert rtype == 3, rtype  # NBD_REP_INFO


def request(s, cmd, offset, length, cookie=1, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie, offset, length) + payload)


def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == SIMPLE_MAGIC
    return err, cookie


def read_ok(s, offset, length):
    """A simple-reply read: the data, or False on an error reply."""
    request(s, NBD_CMD_READ, offset, length)
    err, _ = simple_reply(s)
    return err == 0 and recv_exact(s, length)


def disconnect(*socks):
    for s in socks:
        request(s, NBD_CMD_DISC, 0, 0)
        s.close()


def finish(name):
    """Exit status for the script: 1 if any check failed."""
    if failures:
        print("FAILED:", failures)
        return 1
    print(name + ": all passed")
    return 0
