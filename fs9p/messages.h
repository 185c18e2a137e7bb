// 9P2000.L messages: type codes, the T-messages a server receives decoded
// into plain structs, and the header every message starts with. Spec:
// ../shared/specs/9p2000L.md (and 9p2000-base.man for version, flush, walk,
// read, write, clunk, remove). Type codes are Linux's (include/net/9p/9p.h).
//
// Decoding checks framing only: that every field is present, nothing trails,
// and counts are within the protocol's limits. What the fields mean (is the
// fid known, is the name a single component) is the server's to check.
// Strings and data are views into the message buffer, which must outlive the
// decoded request.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "ioplane/core/error.h"
#include "wire.h"

namespace ioplane::fs9p {

enum MsgType : uint8_t {
    Tlerror = 6, Rlerror,
    Tstatfs = 8, Rstatfs,
    Tlopen = 12, Rlopen,
    Tlcreate = 14, Rlcreate,
    Tsymlink = 16, Rsymlink,
    Tmknod = 18, Rmknod,
    Trename = 20, Rrename,
    Treadlink = 22, Rreadlink,
    Tgetattr = 24, Rgetattr,
    Tsetattr = 26, Rsetattr,
    Txattrwalk = 30, Rxattrwalk,
    Txattrcreate = 32, Rxattrcreate,
    Treaddir = 40, Rreaddir,
    Tfsync = 50, Rfsync,
    Tlock = 52, Rlock,
    Tgetlock = 54, Rgetlock,
    Tlink = 70, Rlink,
    Tmkdir = 72, Rmkdir,
    Trenameat = 74, Rrenameat,
    Tunlinkat = 76, Runlinkat,
    Tversion = 100, Rversion,
    Tauth = 102, Rauth,
    Tattach = 104, Rattach,
    Tflush = 108, Rflush,
    Twalk = 110, Rwalk,
    Tread = 116, Rread,
    Twrite = 118, Rwrite,
    Tclunk = 120, Rclunk,
    Tremove = 122, Rremove,
};

inline constexpr size_t kHeaderSize = 7;  // size[4] type[1] tag[2]
inline constexpr uint16_t kNoTag = 0xffff;
inline constexpr uint32_t kNoFid = 0xffffffff;
inline constexpr size_t kMaxWalkNames = 16;  // MAXWELEM
inline constexpr size_t kIoHeaderSize = 11;  // size type tag count[4]: Rread/Rreaddir overhead

// Qid types.
inline constexpr uint8_t kQtDir = 0x80;
inline constexpr uint8_t kQtSymlink = 0x02;
inline constexpr uint8_t kQtFile = 0x00;

// getattr request/valid masks.
inline constexpr uint64_t kGetattrBasic = 0x7ff;
inline constexpr uint64_t kGetattrAll = 0x3fff;

// setattr valid bits.
enum : uint32_t {
    kSetattrMode = 0x1, kSetattrUid = 0x2, kSetattrGid = 0x4, kSetattrSize = 0x8,
    kSetattrAtime = 0x10, kSetattrMtime = 0x20, kSetattrCtime = 0x40,
    kSetattrAtimeSet = 0x80, kSetattrMtimeSet = 0x100,
};

// Lock types and statuses.
enum : uint8_t { kLockRead = 0, kLockWrite = 1, kLockUnlock = 2 };
enum : uint8_t { kLockSuccess = 0, kLockBlocked = 1, kLockError = 2 };

// Tlopen/Tlcreate flags are Linux's open flags on x86 (the client sends its
// own, and both client and server here are Linux); unlinkat's AT_REMOVEDIR
// likewise.

struct Header {
    uint32_t size;
    uint8_t type;
    uint16_t tag;
};
// The first kHeaderSize bytes of a message.
Header decode_header(std::span<const uint8_t, kHeaderSize> bytes);

struct Version { uint32_t msize; std::string_view version; };
struct Auth { uint32_t afid; std::string_view uname, aname; uint32_t n_uname; };
struct Attach { uint32_t fid, afid; std::string_view uname, aname; uint32_t n_uname; };
struct Flush { uint16_t oldtag; };
struct Walk { uint32_t fid, newfid; std::vector<std::string_view> names; };
struct Read { uint32_t fid; uint64_t offset; uint32_t count; };
struct Write { uint32_t fid; uint64_t offset; std::span<const uint8_t> data; };
struct Clunk { uint32_t fid; };
struct Remove { uint32_t fid; };
struct Statfs { uint32_t fid; };
struct Lopen { uint32_t fid, flags; };
struct Lcreate { uint32_t fid; std::string_view name; uint32_t flags, mode, gid; };
struct Symlink { uint32_t fid; std::string_view name, target; uint32_t gid; };
struct Mknod { uint32_t dfid; std::string_view name; uint32_t mode, major, minor, gid; };
struct Rename { uint32_t fid, dfid; std::string_view name; };
struct Readlink { uint32_t fid; };
struct Getattr { uint32_t fid; uint64_t mask; };
struct Setattr {
    uint32_t fid, valid, mode, uid, gid;
    uint64_t size, atime_sec, atime_nsec, mtime_sec, mtime_nsec;
};
struct Xattrwalk { uint32_t fid, newfid; std::string_view name; };
struct Xattrcreate { uint32_t fid; std::string_view name; uint64_t size; uint32_t flags; };
struct Readdir { uint32_t fid; uint64_t offset; uint32_t count; };
struct Fsync { uint32_t fid, datasync; };
struct Lock {
    uint32_t fid; uint8_t type; uint32_t flags; uint64_t start, length; uint32_t proc_id;
    std::string_view client_id;
};
struct Getlock { uint32_t fid; uint8_t type; uint64_t start, length; uint32_t proc_id; std::string_view client_id; };
struct Link { uint32_t dfid, fid; std::string_view name; };
struct Mkdir { uint32_t dfid; std::string_view name; uint32_t mode, gid; };
struct Renameat { uint32_t olddirfid; std::string_view oldname; uint32_t newdirfid; std::string_view newname; };
struct Unlinkat { uint32_t dirfid; std::string_view name; uint32_t flags; };

using Body = std::variant<Version, Auth, Attach, Flush, Walk, Read, Write, Clunk, Remove, Statfs, Lopen, Lcreate,
                          Symlink, Mknod, Rename, Readlink, Getattr, Setattr, Xattrwalk, Xattrcreate, Readdir,
                          Fsync, Lock, Getlock, Link, Mkdir, Renameat, Unlinkat>;

struct Request {
    uint8_t type;
    uint16_t tag;
    Body body;
};

// A whole message (size field included). Errors: EPROTO for a truncated or
// over-long message or a count beyond the protocol's limits, EOPNOTSUPP for a
// type this server does not implement (e.g. 9P2000's Topen, or an R-message);
// the tag in `tag_out` is set as soon as the header could be read, so the
// caller can answer with Rlerror.
Result<Request> decode_request(std::span<const uint8_t> message, uint16_t* tag_out = nullptr);

// A name of the message type for logs ("Twalk"), or "T?" for unknown types.
const char* message_name(uint8_t type);

}  // namespace ioplane::fs9p
