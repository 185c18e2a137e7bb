#include "messages.h"

#include <cerrno>

namespace ioplane::fs9p {

Header decode_header(std::span<const uint8_t, kHeaderSize> bytes) {
    WireReader r(bytes);
    Header h;
    h.size = r.u32();
    h.type = r.u8();
    h.tag = r.u16();
    return h;
}

namespace {

Result<Body> decode_body(uint8_t type, WireReader& r) {
    switch (type) {
        case Tversion: { Version m; m.msize = r.u32(); m.version = r.str(); return m; }
        case Tauth: { Auth m; m.afid = r.u32(); m.uname = r.str(); m.aname = r.str(); m.n_uname = r.u32(); return m; }
        case Tattach: {
            Attach m;
            m.fid = r.u32(); m.afid = r.u32(); m.uname = r.str(); m.aname = r.str(); m.n_uname = r.u32();
            return m;
        }
        case Tflush: return Flush{r.u16()};
        case Twalk: {
            Walk m;
            m.fid = r.u32(); m.newfid = r.u32();
            const uint16_t n = r.u16();
            if (n > kMaxWalkNames) return fail(EPROTO, "Twalk with " + std::to_string(n) + " names (at most 16)");
            m.names.reserve(n);
            for (uint16_t i = 0; i < n && r.ok(); i++) m.names.push_back(r.str());
            return m;
        }
        case Tread: { Read m; m.fid = r.u32(); m.offset = r.u64(); m.count = r.u32(); return m; }
        case Twrite: {
            Write m;
            m.fid = r.u32(); m.offset = r.u64();
            const uint32_t count = r.u32();
            m.data = r.bytes(count);
            return m;
        }
        case Tclunk: return Clunk{r.u32()};
        case Tremove: return Remove{r.u32()};
        case Tstatfs: return Statfs{r.u32()};
        case Tlopen: { Lopen m; m.fid = r.u32(); m.flags = r.u32(); return m; }
        case Tlcreate: {
            Lcreate m;
            m.fid = r.u32(); m.name = r.str(); m.flags = r.u32(); m.mode = r.u32(); m.gid = r.u32();
            return m;
        }
        case Tsymlink: { Symlink m; m.fid = r.u32(); m.name = r.str(); m.target = r.str(); m.gid = r.u32(); return m; }
        case Tmknod: {
            Mknod m;
            m.dfid = r.u32(); m.name = r.str(); m.mode = r.u32(); m.major = r.u32(); m.minor = r.u32(); m.gid = r.u32();
            return m;
        }
        case Trename: { Rename m; m.fid = r.u32(); m.dfid = r.u32(); m.name = r.str(); return m; }
        case Treadlink: return Readlink{r.u32()};
        case Tgetattr: { Getattr m; m.fid = r.u32(); m.mask = r.u64(); return m; }
        case Tsetattr: {
            Setattr m;
            m.fid = r.u32(); m.valid = r.u32(); m.mode = r.u32(); m.uid = r.u32(); m.gid = r.u32();
            m.size = r.u64(); m.atime_sec = r.u64(); m.atime_nsec = r.u64(); m.mtime_sec = r.u64();
            m.mtime_nsec = r.u64();
            return m;
        }
        case Txattrwalk: { Xattrwalk m; m.fid = r.u32(); m.newfid = r.u32(); m.name = r.str(); return m; }
        case Txattrcreate: {
            Xattrcreate m;
            m.fid = r.u32(); m.name = r.str(); m.size = r.u64(); m.flags = r.u32();
            return m;
        }
        case Treaddir: { Readdir m; m.fid = r.u32(); m.offset = r.u64(); m.count = r.u32(); return m; }
        case Tfsync: { Fsync m; m.fid = r.u32(); m.datasync = r.u32(); return m; }
        case Tlock: {
            Lock m;
            m.fid = r.u32(); m.type = r.u8(); m.flags = r.u32(); m.start = r.u64(); m.length = r.u64();
            m.proc_id = r.u32(); m.client_id = r.str();
            return m;
        }
        case Tgetlock: {
            Getlock m;
            m.fid = r.u32(); m.type = r.u8(); m.start = r.u64(); m.length = r.u64(); m.proc_id = r.u32();
            m.client_id = r.str();
            return m;
        }
        case Tlink: { Link m; m.dfid = r.u32(); m.fid = r.u32(); m.name = r.str(); return m; }
        case Tmkdir: { Mkdir m; m.dfid = r.u32(); m.name = r.str(); m.mode = r.u32(); m.gid = r.u32(); return m; }
        case Trenameat: {
            Renameat m;
            m.olddirfid = r.u32(); m.oldname = r.str(); m.newdirfid = r.u32(); m.newname = r.str();
            return m;
        }
        case Tunlinkat: { Unlinkat m; m.dirfid = r.u32(); m.name = r.str(); m.flags = r.u32(); return m; }
        default:
            return fail(EOPNOTSUPP, std::string("unsupported message type ") + message_name(type) + " (" +
                                        std::to_string(type) + ")");
    }
}

}  // namespace

Result<Request> decode_request(std::span<const uint8_t> message, uint16_t* tag_out) {
    if (message.size() < kHeaderSize) return fail(EPROTO, "message shorter than its header");
    const Header h = decode_header(message.first<kHeaderSize>());
    if (tag_out) *tag_out = h.tag;
    if (h.size != message.size()) return fail(EPROTO, "message size field does not match its length");
    WireReader r(message.subspan(kHeaderSize));
    auto body = decode_body(h.type, r);
    if (!body) return std::unexpected(body.error());
    if (!r.ok()) return fail(EPROTO, std::string(message_name(h.type)) + " truncated");
    if (r.left() != 0) return fail(EPROTO, std::string(message_name(h.type)) + " has trailing bytes");
    return Request{h.type, h.tag, std::move(*body)};
}

const char* message_name(uint8_t type) {
    switch (type) {
        case Tlerror: return "Tlerror"; case Rlerror: return "Rlerror";
        case Tstatfs: return "Tstatfs"; case Tlopen: return "Tlopen"; case Tlcreate: return "Tlcreate";
        case Tsymlink: return "Tsymlink"; case Tmknod: return "Tmknod"; case Trename: return "Trename";
        case Treadlink: return "Treadlink"; case Tgetattr: return "Tgetattr"; case Tsetattr: return "Tsetattr";
        case Txattrwalk: return "Txattrwalk"; case Txattrcreate: return "Txattrcreate";
        case Treaddir: return "Treaddir"; case Tfsync: return "Tfsync"; case Tlock: return "Tlock";
        case Tgetlock: return "Tgetlock"; case Tlink: return "Tlink"; case Tmkdir: return "Tmkdir";
        case Trenameat: return "Trenameat"; case Tunlinkat: return "Tunlinkat"; case Tversion: return "Tversion";
        case Tauth: return "Tauth"; case Tattach: return "Tattach"; case Tflush: return "Tflush";
        case Twalk: return "Twalk"; case Tread: return "Tread"; case Twrite: return "Twrite";
        case Tclunk: return "Tclunk"; case Tremove: return "Tremove";
        case 112: return "Topen"; case 114: return "Tcreate"; case 124: return "Tstat"; case 126: return "Twstat";
        default: return (type & 1) ? "R?" : "T?";
    }
}

}  // namespace ioplane::fs9p
