"""A minimal synchronous 9P2000.L client (standard library only).

For tests: every message of 9P2000.L that a Linux client sends, each as a
method that sends one T-message, waits for its reply and decodes it; errors
come back as P9Error (an OSError whose errno is Rlerror's ecode). Below that,
raw access for malformed input and pipelining:
  - send(bytes) writes bytes as they are; recv() reads one whole reply
    (a Reply: type, tag, body) in arrival order;
  - request(type, body) sends one T-message without waiting and returns its
    tag; wait(tag) reads until that tag's reply arrives (replies for other
    tags are kept and handed out by later recv()/wait() calls);
  - message(type, tag, body) builds the bytes of any message, and the enc_*
    helpers build bodies, so a test can corrupt them before send().
Spec: shared/specs/9p2000L.md and 9p2000-base.man; type codes are Linux's
include/net/9p/9p.h (fs9p/messages.h has the same).

Usage:
    c = p9.Client.tcp("127.0.0.1", 5640)        # or p9.Client.unix(path)
    c.version(65536)
    root = c.attach(0, aname="/srv")             # fid 0 is now the root
    f = c.new_fid()
    c.walk(0, f, ["dir", "file"])
    c.lopen(f, p9.O_RDONLY)
    data = c.read(f, 0, 4096)
"""
import collections
import errno as _errno
import os
import socket
import struct

# Message types (Linux include/net/9p/9p.h).
Tlerror, Rlerror = 6, 7
Tstatfs, Rstatfs = 8, 9
Tlopen, Rlopen = 12, 13
Tlcreate, Rlcreate = 14, 15
Tsymlink, Rsymlink = 16, 17
Tmknod, Rmknod = 18, 19
Trename, Rrename = 20, 21
Treadlink, Rreadlink = 22, 23
Tgetattr, Rgetattr = 24, 25
Tsetattr, Rsetattr = 26, 27
Txattrwalk, Rxattrwalk = 30, 31
Txattrcreate, Rxattrcreate = 32, 33
Treaddir, Rreaddir = 40, 41
Tfsync, Rfsync = 50, 51
Tlock, Rlock = 52, 53
Tgetlock, Rgetlock = 54, 55
Tlink, Rlink = 70, 71
Tmkdir, Rmkdir = 72, 73
Trenameat, Rrenameat = 74, 75
Tunlinkat, Runlinkat = 76, 77
Tversion, Rversion = 100, 101
Tauth, Rauth = 102, 103
Tattach, Rattach = 104, 105
Terror, Rerror = 106, 107  # 9P2000 only; never valid in 9P2000.L
Tflush, Rflush = 108, 109
Twalk, Rwalk = 110, 111
Topen, Ropen = 112, 113  # 9P2000 only
Tcreate, Rcreate = 114, 115  # 9P2000 only
Tread, Rread = 116, 117
Twrite, Rwrite = 118, 119
Tclunk, Rclunk = 120, 121
Tremove, Rremove = 122, 123
Tstat, Rstat = 124, 125  # 9P2000 only
Twstat, Rwstat = 126, 127  # 9P2000 only

NAMES = {v: k for k, v in list(globals().items()) if k[:1] in "TR" and isinstance(v, int) and k[1:2].islower()}

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
NONUNAME = 0xFFFFFFFF
HEADER = 7  # size[4] type[1] tag[2]
IOHDR = 11  # Rread/Rreaddir overhead: header + count[4]
WRITEHDR = 23  # Twrite overhead: header + fid[4] offset[8] count[4]
IOHDRSZ = 24  # what Linux (P9_IOHDRSZ) and Plan 9 reserve: default I/O chunk is msize - IOHDRSZ
MAXWELEM = 16

# Qid types.
QTDIR, QTAPPEND, QTEXCL, QTMOUNT, QTAUTH, QTTMP, QTSYMLINK, QTFILE = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x00

# Open flags as Linux sends them (x86 values; P9_DOTL_* equal these).
O_RDONLY, O_WRONLY, O_RDWR = 0, 1, 2
O_CREAT, O_EXCL, O_NOCTTY, O_TRUNC, O_APPEND, O_NONBLOCK = 0o100, 0o200, 0o400, 0o1000, 0o2000, 0o4000
O_DIRECTORY, O_NOFOLLOW, O_CLOEXEC = 0o200000, 0o400000, 0o2000000
O_DSYNC, O_SYNC, O_DIRECT = 0o10000, 0o4010000, 0o40000
AT_REMOVEDIR = 0x200

# getattr masks.
GETATTR_MODE, GETATTR_NLINK, GETATTR_UID, GETATTR_GID = 0x1, 0x2, 0x4, 0x8
GETATTR_RDEV, GETATTR_ATIME, GETATTR_MTIME, GETATTR_CTIME = 0x10, 0x20, 0x40, 0x80
GETATTR_INO, GETATTR_SIZE, GETATTR_BLOCKS = 0x100, 0x200, 0x400
GETATTR_BTIME, GETATTR_GEN, GETATTR_DATA_VERSION = 0x800, 0x1000, 0x2000
GETATTR_BASIC, GETATTR_ALL = 0x7FF, 0x3FFF

# setattr valid bits.
SETATTR_MODE, SETATTR_UID, SETATTR_GID, SETATTR_SIZE = 0x1, 0x2, 0x4, 0x8
SETATTR_ATIME, SETATTR_MTIME, SETATTR_CTIME = 0x10, 0x20, 0x40
SETATTR_ATIME_SET, SETATTR_MTIME_SET = 0x80, 0x100

# Locks.
LOCK_TYPE_RDLCK, LOCK_TYPE_WRLCK, LOCK_TYPE_UNLCK = 0, 1, 2
LOCK_FLAGS_BLOCK, LOCK_FLAGS_RECLAIM = 1, 2
LOCK_SUCCESS, LOCK_BLOCKED, LOCK_ERROR, LOCK_GRACE = 0, 1, 2, 3

# xattrcreate flags (setxattr(2)).
XATTR_CREATE, XATTR_REPLACE = 1, 2


class P9Error(OSError):
    """An Rlerror: .errno is the server's ecode."""

    def __init__(self, ecode, request=None):
        name = _errno.errorcode.get(ecode, "E?")
        text = "%s (%d): %s" % (name, ecode, os.strerror(ecode) if ecode < 4096 else "?")
        if request is not None:
            text += " [%s]" % NAMES.get(request, request)
        super().__init__(ecode, text)
        self.request = request


class ProtocolError(Exception):
    """The server's reply did not follow the protocol (wrong type, tag, framing)."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection (or reset it)."""


Qid = collections.namedtuple("Qid", "type version path")
Reply = collections.namedtuple("Reply", "type tag body")
Stat = collections.namedtuple(
    "Stat", "valid qid mode uid gid nlink rdev size blksize blocks atime_sec atime_nsec mtime_sec mtime_nsec "
            "ctime_sec ctime_nsec btime_sec btime_nsec gen data_version")
StatFs = collections.namedtuple("StatFs", "type bsize blocks bfree bavail files ffree fsid namelen")
Dirent = collections.namedtuple("Dirent", "qid offset type name")
LockInfo = collections.namedtuple("LockInfo", "type start length proc_id client_id")


# --- encoding -------------------------------------------------------------

def s(text):
    """A 9P string: length[2] bytes. str is encoded as UTF-8; bytes pass as is."""
    b = text.encode() if isinstance(text, str) else bytes(text)
    if len(b) > 0xFFFF:
        raise ValueError("string too long for 9P")
    return struct.pack("<H", len(b)) + b


def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v & 0xFFFFFFFF)
def u64(v): return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def message(type_, tag, body=b"", size=None):
    """The bytes of one message; size overrides the size field (for malformed input)."""
    if size is None:
        size = HEADER + len(body)
    return struct.pack("<IBH", size & 0xFFFFFFFF, type_, tag) + bytes(body)


def enc_version(msize, version): return u32(msize) + s(version)
def enc_attach(fid, afid, uname, aname, n_uname): return u32(fid) + u32(afid) + s(uname) + s(aname) + u32(n_uname)
def enc_auth(afid, uname, aname, n_uname): return u32(afid) + s(uname) + s(aname) + u32(n_uname)
def enc_walk(fid, newfid, names): return u32(fid) + u32(newfid) + u16(len(names)) + b"".join(s(n) for n in names)
def enc_lopen(fid, flags): return u32(fid) + u32(flags)
def enc_lcreate(fid, name, flags, mode, gid): return u32(fid) + s(name) + u32(flags) + u32(mode) + u32(gid)
def enc_read(fid, offset, count): return u32(fid) + u64(offset) + u32(count)
def enc_write(fid, offset, data): return u32(fid) + u64(offset) + u32(len(data)) + bytes(data)
def enc_fid(fid): return u32(fid)
def enc_getattr(fid, mask): return u32(fid) + u64(mask)
def enc_flush(oldtag): return u16(oldtag)
def enc_readdir(fid, offset, count): return u32(fid) + u64(offset) + u32(count)
def enc_fsync(fid, datasync): return u32(fid) + u32(datasync)
def enc_mkdir(dfid, name, mode, gid): return u32(dfid) + s(name) + u32(mode) + u32(gid)
def enc_symlink(fid, name, target, gid): return u32(fid) + s(name) + s(target) + u32(gid)
def enc_link(dfid, fid, name): return u32(dfid) + u32(fid) + s(name)
def enc_rename(fid, dfid, name): return u32(fid) + u32(dfid) + s(name)
def enc_unlinkat(dfid, name, flags): return u32(dfid) + s(name) + u32(flags)
def enc_xattrwalk(fid, newfid, name): return u32(fid) + u32(newfid) + s(name)
def enc_xattrcreate(fid, name, size, flags): return u32(fid) + s(name) + u64(size) + u32(flags)


def enc_mknod(dfid, name, mode, major, minor, gid):
    return u32(dfid) + s(name) + u32(mode) + u32(major) + u32(minor) + u32(gid)


def enc_renameat(olddfid, oldname, newdfid, newname):
    return u32(olddfid) + s(oldname) + u32(newdfid) + s(newname)


def enc_setattr(fid, valid, mode=0, uid=0, gid=0, size=0, atime=(0, 0), mtime=(0, 0)):
    return (u32(fid) + u32(valid) + u32(mode) + u32(uid) + u32(gid) + u64(size)
            + u64(atime[0]) + u64(atime[1]) + u64(mtime[0]) + u64(mtime[1]))


def enc_lock(fid, type_, flags, start, length, proc_id, client_id):
    return u32(fid) + u8(type_) + u32(flags) + u64(start) + u64(length) + u32(proc_id) + s(client_id)


def enc_getlock(fid, type_, start, length, proc_id, client_id):
    return u32(fid) + u8(type_) + u64(start) + u64(length) + u32(proc_id) + s(client_id)


# --- decoding -------------------------------------------------------------

class Decoder:
    """Reads fields from a reply body; any overrun or leftover is a ProtocolError."""

    def __init__(self, data, what="reply"):
        self.data, self.pos, self.what = bytes(data), 0, what

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ProtocolError("%s: truncated (need %d bytes at %d of %d)" % (self.what, n, self.pos, len(self.data)))
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self): return self.take(1)[0]
    def u16(self): return struct.unpack("<H", self.take(2))[0]
    def u32(self): return struct.unpack("<I", self.take(4))[0]
    def u64(self): return struct.unpack("<Q", self.take(8))[0]
    def qid(self): return Qid(*struct.unpack("<BIQ", self.take(13)))

    def str(self):
        b = self.take(self.u16())
        try:
            return b.decode()
        except UnicodeDecodeError:
            return b.decode("latin-1")

    def end(self):
        if self.pos != len(self.data):
            raise ProtocolError("%s: %d trailing bytes" % (self.what, len(self.data) - self.pos))


def parse_dirents(data):
    """Rreaddir's data: a list of Dirent."""
    d = Decoder(data, "Rreaddir data")
    out = []
    while d.pos < len(d.data):
        qid = d.qid()
        off = d.u64()
        typ = d.u8()
        out.append(Dirent(qid, off, typ, d.str()))
    return out


# --- the client -----------------------------------------------------------

class Client:
    """One connection. Not thread-safe; one thread drives it."""

    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.msize = 8192  # until version() says otherwise; replies longer than max_reply are errors
        self.max_reply = 1 << 24
        self.version_string = None
        self._next_tag = 0
        self._next_fid = 1
        self._pending = set()
        self._stash = collections.deque()
        self._rbuf = b""

    # connection ----------------------------------------------------------
    @classmethod
    def tcp(cls, host, port, timeout=10.0):
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, timeout)

    @classmethod
    def unix(cls, path, timeout=10.0):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(path)
        return cls(sock, timeout)

    @classmethod
    def connect(cls, addr, timeout=10.0):
        """addr: ("tcp", host, port) or ("unix", path)."""
        if addr[0] == "unix":
            return cls.unix(addr[1], timeout)
        return cls.tcp(addr[1], addr[2], timeout)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def new_fid(self):
        f = self._next_fid
        self._next_fid += 1
        return f

    def new_tag(self):
        for _ in range(0xFFFF):
            t = self._next_tag
            self._next_tag = (self._next_tag + 1) % NOTAG
            if t not in self._pending:
                return t
        raise ProtocolError("no free tag")

    # raw -------------------------------------------------------------------
    def send(self, data):
        """Write raw bytes (any framing, valid or not)."""
        self.sock.sendall(bytes(data))

    def shutdown_write(self):
        """Half-close: the server sees end of stream after what was sent."""
        self.sock.shutdown(socket.SHUT_WR)

    def _read_exact(self, n):
        while len(self._rbuf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self._rbuf)))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise ConnectionClosed("connection reset: %s" % e)
            if not chunk:
                raise ConnectionClosed("connection closed by server (%d bytes of a partial message)" % len(self._rbuf))
            self._rbuf += chunk
        out, self._rbuf = self._rbuf[:n], self._rbuf[n:]
        return out

    def recv_raw(self):
        """Read one whole message from the wire; returns (type, tag, body).
        Raises ConnectionClosed, TimeoutError (socket.timeout) or ProtocolError."""
        hdr = self._read_exact(HEADER)
        size, type_, tag = struct.unpack("<IBH", hdr)
        if size < HEADER:
            raise ProtocolError("reply size %d < 7" % size)
        if size > self.max_reply:
            raise ProtocolError("reply size %d > %d" % (size, self.max_reply))
        body = self._read_exact(size - HEADER)
        return Reply(type_, tag, body)

    def recv(self):
        """The next reply, in arrival order (including ones stashed by wait())."""
        if self._stash:
            r = self._stash.popleft()
        else:
            r = self.recv_raw()
        self._pending.discard(r.tag)
        return r

    def request(self, type_, body=b"", tag=None):
        """Send one T-message without waiting for its reply; returns its tag."""
        if tag is None:
            tag = self.new_tag()
        self._pending.add(tag)
        self.send(message(type_, tag, body))
        return tag

    def wait(self, tag):
        """Read until the reply for tag arrives (others are kept for recv())."""
        for i, r in enumerate(self._stash):
            if r.tag == tag:
                del self._stash[i]
                self._pending.discard(tag)
                return r
        while True:
            r = self.recv_raw()
            if r.tag == tag:
                self._pending.discard(tag)
                return r
            self._stash.append(r)

    @staticmethod
    def check(reply, ttype):
        """The body of reply if it answers ttype; raises P9Error for Rlerror."""
        if reply.type == Rlerror:
            d = Decoder(reply.body, "Rlerror")
            ecode = d.u32()
            d.end()
            raise P9Error(ecode, ttype)
        if reply.type != ttype + 1:
            raise ProtocolError("%s answered with %s (type %d)" % (
                NAMES.get(ttype, ttype), NAMES.get(reply.type, "?"), reply.type))
        return reply.body

    def rpc(self, ttype, body=b"", tag=None):
        """Send one request and wait for its reply; returns the reply body."""
        tag = self.request(ttype, body, tag)
        return self.check(self.wait(tag), ttype)

    def _dec(self, body, ttype):
        return Decoder(body, NAMES.get(ttype + 1, "reply"))

    # messages ------------------------------------------------------------
    def version(self, msize=65536, version="9P2000.L"):
        """Returns (msize, version) and adopts the server's msize."""
        d = self._dec(self.rpc(Tversion, enc_version(msize, version), tag=NOTAG), Tversion)
        m, v = d.u32(), d.str()
        d.end()
        self.msize, self.version_string = m, v
        self.max_reply = max(m, HEADER + 4)
        return m, v

    def auth(self, afid, uname="root", aname="", n_uname=0):
        d = self._dec(self.rpc(Tauth, enc_auth(afid, uname, aname, n_uname)), Tauth)
        q = d.qid()
        d.end()
        return q

    def attach(self, fid, uname="root", aname="", n_uname=0, afid=NOFID):
        d = self._dec(self.rpc(Tattach, enc_attach(fid, afid, uname, aname, n_uname)), Tattach)
        q = d.qid()
        d.end()
        return q

    def walk(self, fid, newfid, names):
        """Returns the list of qids (fewer than names on a partial walk)."""
        d = self._dec(self.rpc(Twalk, enc_walk(fid, newfid, names)), Twalk)
        n = d.u16()
        qids = [d.qid() for _ in range(n)]
        d.end()
        return qids

    def walk_new(self, fid, names):
        """Walk to a fresh fid; returns it. A partial walk raises P9Error(ENOENT)."""
        nf = self.new_fid()
        qids = self.walk(fid, nf, names)
        if len(qids) != len(names):
            raise P9Error(_errno.ENOENT, Twalk)
        return nf

    def lopen(self, fid, flags):
        """Returns (qid, iounit)."""
        d = self._dec(self.rpc(Tlopen, enc_lopen(fid, flags)), Tlopen)
        q, iounit = d.qid(), d.u32()
        d.end()
        return q, iounit

    def lcreate(self, fid, name, flags, mode, gid=0):
        """fid (a directory) becomes the new open file. Returns (qid, iounit)."""
        d = self._dec(self.rpc(Tlcreate, enc_lcreate(fid, name, flags, mode, gid)), Tlcreate)
        q, iounit = d.qid(), d.u32()
        d.end()
        return q, iounit

    def read(self, fid, offset, count):
        d = self._dec(self.rpc(Tread, enc_read(fid, offset, count)), Tread)
        n = d.u32()
        data = d.take(n)
        d.end()
        return data

    def write(self, fid, offset, data):
        d = self._dec(self.rpc(Twrite, enc_write(fid, offset, data)), Twrite)
        n = d.u32()
        d.end()
        return n

    def read_all(self, fid, offset=0, chunk=None):
        """Read until a zero-length Rread, in requests of at most chunk bytes
        (default msize - IOHDRSZ, as Linux asks)."""
        chunk = chunk or (self.msize - IOHDRSZ)
        out = []
        while True:
            b = self.read(fid, offset, chunk)
            if not b:
                return b"".join(out)
            out.append(b)
            offset += len(b)

    def write_all(self, fid, offset, data, chunk=None):
        """Write data in requests of at most chunk bytes (default msize -
        IOHDRSZ, as Linux sends); short writes continue."""
        chunk = chunk or (self.msize - IOHDRSZ)
        pos = 0
        while pos < len(data):
            n = self.write(fid, offset + pos, data[pos:pos + chunk])
            if n <= 0:
                raise ProtocolError("Rwrite count %d" % n)
            pos += n
        return pos

    def clunk(self, fid):
        self._dec(self.rpc(Tclunk, enc_fid(fid)), Tclunk).end()

    def remove(self, fid):
        self._dec(self.rpc(Tremove, enc_fid(fid)), Tremove).end()

    def getattr(self, fid, mask=GETATTR_ALL):
        d = self._dec(self.rpc(Tgetattr, enc_getattr(fid, mask)), Tgetattr)
        valid, qid = d.u64(), d.qid()
        mode, uid, gid = d.u32(), d.u32(), d.u32()
        rest = [d.u64() for _ in range(15)]
        d.end()
        return Stat(valid, qid, mode, uid, gid, *rest)

    def setattr(self, fid, valid, mode=0, uid=0, gid=0, size=0, atime=(0, 0), mtime=(0, 0)):
        self._dec(self.rpc(Tsetattr, enc_setattr(fid, valid, mode, uid, gid, size, atime, mtime)), Tsetattr).end()

    def statfs(self, fid):
        d = self._dec(self.rpc(Tstatfs, enc_fid(fid)), Tstatfs)
        r = StatFs(d.u32(), d.u32(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u64(), d.u32())
        d.end()
        return r

    def readdir_raw(self, fid, offset, count):
        """The data of one Rreaddir (bytes)."""
        d = self._dec(self.rpc(Treaddir, enc_readdir(fid, offset, count)), Treaddir)
        n = d.u32()
        data = d.take(n)
        d.end()
        return data

    def readdir(self, fid, offset, count):
        """One Treaddir: a list of Dirent (empty at the end)."""
        return parse_dirents(self.readdir_raw(fid, offset, count))

    def readdir_all(self, fid, count=None, offset=0, limit=10_000_000):
        """All entries from offset on, each Treaddir continuing at the last entry's offset
        (count defaults to msize - IOHDRSZ, as Linux asks)."""
        count = count or (self.msize - IOHDRSZ)
        out = []
        for _ in range(limit):
            ents = self.readdir(fid, offset, count)
            if not ents:
                return out
            out.extend(ents)
            offset = ents[-1].offset
        raise ProtocolError("readdir did not end after %d calls" % limit)

    def fsync(self, fid, datasync=0):
        self._dec(self.rpc(Tfsync, enc_fsync(fid, datasync)), Tfsync).end()

    def mkdir(self, dfid, name, mode=0o755, gid=0):
        d = self._dec(self.rpc(Tmkdir, enc_mkdir(dfid, name, mode, gid)), Tmkdir)
        q = d.qid()
        d.end()
        return q

    def symlink(self, dfid, name, target, gid=0):
        d = self._dec(self.rpc(Tsymlink, enc_symlink(dfid, name, target, gid)), Tsymlink)
        q = d.qid()
        d.end()
        return q

    def readlink(self, fid):
        d = self._dec(self.rpc(Treadlink, enc_fid(fid)), Treadlink)
        t = d.str()
        d.end()
        return t

    def link(self, dfid, fid, name):
        self._dec(self.rpc(Tlink, enc_link(dfid, fid, name)), Tlink).end()

    def mknod(self, dfid, name, mode, major=0, minor=0, gid=0):
        d = self._dec(self.rpc(Tmknod, enc_mknod(dfid, name, mode, major, minor, gid)), Tmknod)
        q = d.qid()
        d.end()
        return q

    def rename(self, fid, dfid, name):
        self._dec(self.rpc(Trename, enc_rename(fid, dfid, name)), Trename).end()

    def renameat(self, olddfid, oldname, newdfid, newname):
        self._dec(self.rpc(Trenameat, enc_renameat(olddfid, oldname, newdfid, newname)), Trenameat).end()

    def unlinkat(self, dfid, name, flags=0):
        self._dec(self.rpc(Tunlinkat, enc_unlinkat(dfid, name, flags)), Tunlinkat).end()

    def xattrwalk(self, fid, newfid, name=""):
        """Returns the attribute's size (or of the name list when name is "")."""
        d = self._dec(self.rpc(Txattrwalk, enc_xattrwalk(fid, newfid, name)), Txattrwalk)
        n = d.u64()
        d.end()
        return n

    def xattrcreate(self, fid, name, size, flags=0):
        self._dec(self.rpc(Txattrcreate, enc_xattrcreate(fid, name, size, flags)), Txattrcreate).end()

    def lock(self, fid, type_, start=0, length=0, proc_id=1, client_id="p9test", flags=0):
        """Returns the status byte (LOCK_SUCCESS, LOCK_BLOCKED, ...)."""
        d = self._dec(self.rpc(Tlock, enc_lock(fid, type_, flags, start, length, proc_id, client_id)), Tlock)
        st = d.u8()
        d.end()
        return st

    def getlock(self, fid, type_, start=0, length=0, proc_id=1, client_id="p9test"):
        d = self._dec(self.rpc(Tgetlock, enc_getlock(fid, type_, start, length, proc_id, client_id)), Tgetlock)
        r = LockInfo(d.u8(), d.u64(), d.u64(), d.u32(), d.str())
        d.end()
        return r

    def flush(self, oldtag):
        self._dec(self.rpc(Tflush, enc_flush(oldtag)), Tflush).end()

    # conveniences ----------------------------------------------------------
    def xattr_get(self, fid, name):
        """xattrwalk + read + clunk: the value of attribute name on fid."""
        xf = self.new_fid()
        size = self.xattrwalk(fid, xf, name)
        try:
            data = self.read_all(xf) if size else b""
        finally:
            self.clunk(xf)
        return data

    def xattr_set(self, fid, name, value, flags=0):
        """Clone fid, xattrcreate + write + clunk (the clunk commits it)."""
        xf = self.new_fid()
        self.walk(fid, xf, [])
        try:
            self.xattrcreate(xf, name, len(value), flags)
            if value:
                self.write_all(xf, 0, value)
        except BaseException:
            try:
                self.clunk(xf)
            except (P9Error, ProtocolError, OSError):
                pass
            raise
        self.clunk(xf)


def read_file(path, name, count, timeout=10.0):
    """A whole session on unix socket `path`: version, attach, walk to `name`
    in the share's root, open it and read `count` bytes from its start."""
    with Client.unix(path, timeout) as c:
        c.version()
        root = c.new_fid()
        c.attach(root, aname="")
        fid = c.walk_new(root, [name])
        c.lopen(fid, os.O_RDONLY)
        return c.read(fid, 0, count)
