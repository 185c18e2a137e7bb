#include "codec.h"

namespace ioplane::load9p {
namespace {
using fs9p::WireReader;
using fs9p::WireWriter;

// A decoder's verdict: every field present and nothing after them.
bool whole(const WireReader& r) { return r.ok() && r.left() == 0; }
}  // namespace

void put_version(std::vector<uint8_t>& out, uint32_t msize, std::string_view version) {
    WireWriter w(out);
    w.begin(fs9p::Tversion, fs9p::kNoTag);
    w.u32(msize);
    w.str(version);
    w.finish();
}

void put_attach(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, std::string_view uname,
                std::string_view aname, uint32_t n_uname) {
    WireWriter w(out);
    w.begin(fs9p::Tattach, tag);
    w.u32(fid);
    w.u32(fs9p::kNoFid);  // afid: no authentication
    w.str(uname);
    w.str(aname);
    w.u32(n_uname);
    w.finish();
}

void put_walk(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint32_t newfid,
              std::span<const std::string_view> names) {
    WireWriter w(out);
    w.begin(fs9p::Twalk, tag);
    w.u32(fid);
    w.u32(newfid);
    w.u16(uint16_t(names.size()));
    for (std::string_view n : names) w.str(n);
    w.finish();
}

void put_lopen(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint32_t flags) {
    WireWriter w(out);
    w.begin(fs9p::Tlopen, tag);
    w.u32(fid);
    w.u32(flags);
    w.finish();
}

void put_lcreate(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, std::string_view name, uint32_t flags,
                 uint32_t mode, uint32_t gid) {
    WireWriter w(out);
    w.begin(fs9p::Tlcreate, tag);
    w.u32(fid);
    w.str(name);
    w.u32(flags);
    w.u32(mode);
    w.u32(gid);
    w.finish();
}

void put_mkdir(std::vector<uint8_t>& out, uint16_t tag, uint32_t dfid, std::string_view name, uint32_t mode,
               uint32_t gid) {
    WireWriter w(out);
    w.begin(fs9p::Tmkdir, tag);
    w.u32(dfid);
    w.str(name);
    w.u32(mode);
    w.u32(gid);
    w.finish();
}

void put_getattr(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t mask) {
    WireWriter w(out);
    w.begin(fs9p::Tgetattr, tag);
    w.u32(fid);
    w.u64(mask);
    w.finish();
}

void put_read(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count) {
    WireWriter w(out);
    w.begin(fs9p::Tread, tag);
    w.u32(fid);
    w.u64(offset);
    w.u32(count);
    w.finish();
}

void put_write_header(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count) {
    WireWriter w(out);
    w.begin(fs9p::Twrite, tag);
    w.u32(fid);
    w.u64(offset);
    w.u32(count);
    w.finish(count);
}

void put_readdir(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count) {
    WireWriter w(out);
    w.begin(fs9p::Treaddir, tag);
    w.u32(fid);
    w.u64(offset);
    w.u32(count);
    w.finish();
}

void put_clunk(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid) {
    WireWriter w(out);
    w.begin(fs9p::Tclunk, tag);
    w.u32(fid);
    w.finish();
}

void put_unlinkat(std::vector<uint8_t>& out, uint16_t tag, uint32_t dirfid, std::string_view name, uint32_t flags) {
    WireWriter w(out);
    w.begin(fs9p::Tunlinkat, tag);
    w.u32(dirfid);
    w.str(name);
    w.u32(flags);
    w.finish();
}

void put_remove(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid) {
    WireWriter w(out);
    w.begin(fs9p::Tremove, tag);
    w.u32(fid);
    w.finish();
}

std::optional<RVersion> get_version(std::span<const uint8_t> body) {
    WireReader r(body);
    RVersion v;
    v.msize = r.u32();
    v.version = r.str();
    if (!whole(r)) return std::nullopt;
    return v;
}

std::optional<Qid> get_qid(std::span<const uint8_t> body) {
    WireReader r(body);
    Qid q = r.qid();
    if (!whole(r)) return std::nullopt;
    return q;
}

std::optional<uint16_t> get_walk(std::span<const uint8_t> body) {
    WireReader r(body);
    const uint16_t n = r.u16();
    if (n > fs9p::kMaxWalkNames) return std::nullopt;
    for (uint16_t i = 0; i < n; i++) r.qid();
    if (!whole(r)) return std::nullopt;
    return n;
}

std::optional<ROpen> get_open(std::span<const uint8_t> body) {
    WireReader r(body);
    ROpen o;
    o.qid = r.qid();
    o.iounit = r.u32();
    if (!whole(r)) return std::nullopt;
    return o;
}

std::optional<RGetattr> get_getattr(std::span<const uint8_t> body) {
    WireReader r(body);
    RGetattr a;
    a.valid = r.u64();
    a.qid = r.qid();
    a.mode = r.u32();
    r.u32();  // uid
    r.u32();  // gid
    r.u64();  // nlink
    r.u64();  // rdev
    a.size = r.u64();
    for (int i = 0; i < 12; i++) r.u64();  // blksize blocks, 4 times (sec nsec), gen data_version
    if (!whole(r)) return std::nullopt;
    return a;
}

std::optional<std::span<const uint8_t>> get_data(std::span<const uint8_t> body) {
    WireReader r(body);
    const uint32_t n = r.u32();
    auto data = r.bytes(n);
    if (!whole(r)) return std::nullopt;
    return data;
}

std::optional<uint32_t> get_write(std::span<const uint8_t> body) {
    WireReader r(body);
    const uint32_t n = r.u32();
    if (!whole(r)) return std::nullopt;
    return n;
}

std::optional<uint32_t> get_lerror(std::span<const uint8_t> body) { return get_write(body); }

bool get_empty(std::span<const uint8_t> body) { return body.empty(); }

}  // namespace ioplane::load9p
