// The client side of 9P2000.L for ioplane-9pload: T-messages encoded with
// fs9p::WireWriter and R-message bodies decoded with fs9p::WireReader. The
// server side (fs9p/messages.h) decodes T-messages; this is its mirror, and
// its tests check each encoder against fs9p::decode_request.
//
// Decoders take the body of a reply (what follows size[4] type[1] tag[2]),
// check that every field is present and nothing trails, and return nullopt
// otherwise. Views point into the body.
//
// Thread contract: pure functions; any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "messages.h"
#include "wire.h"

namespace ioplane::load9p {

using fs9p::Qid;

// Encoders: each appends one whole message to `out`.
void put_version(std::vector<uint8_t>& out, uint32_t msize, std::string_view version);
void put_attach(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, std::string_view uname,
                std::string_view aname, uint32_t n_uname);
void put_walk(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint32_t newfid,
              std::span<const std::string_view> names);
void put_lopen(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint32_t flags);
void put_lcreate(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, std::string_view name, uint32_t flags,
                 uint32_t mode, uint32_t gid);
void put_mkdir(std::vector<uint8_t>& out, uint16_t tag, uint32_t dfid, std::string_view name, uint32_t mode,
               uint32_t gid);
void put_getattr(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t mask);
void put_read(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count);
// The Twrite up to its data: the caller sends `count` data bytes right after.
void put_write_header(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count);
void put_readdir(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid, uint64_t offset, uint32_t count);
void put_clunk(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid);
void put_unlinkat(std::vector<uint8_t>& out, uint16_t tag, uint32_t dirfid, std::string_view name, uint32_t flags);
void put_remove(std::vector<uint8_t>& out, uint16_t tag, uint32_t fid);

// Decoders of reply bodies.
struct RVersion { uint32_t msize; std::string_view version; };
struct ROpen { Qid qid; uint32_t iounit; };  // Rlopen and Rlcreate
struct RGetattr { uint64_t valid; Qid qid; uint32_t mode; uint64_t size; };
std::optional<RVersion> get_version(std::span<const uint8_t> body);
std::optional<Qid> get_qid(std::span<const uint8_t> body);  // Rattach, Rmkdir
// Rwalk: the number of qids (each checked for presence).
std::optional<uint16_t> get_walk(std::span<const uint8_t> body);
std::optional<ROpen> get_open(std::span<const uint8_t> body);
std::optional<RGetattr> get_getattr(std::span<const uint8_t> body);
// Rread and Rreaddir: the data.
std::optional<std::span<const uint8_t>> get_data(std::span<const uint8_t> body);
std::optional<uint32_t> get_write(std::span<const uint8_t> body);  // Rwrite: count
std::optional<uint32_t> get_lerror(std::span<const uint8_t> body);  // Rlerror: ecode
bool get_empty(std::span<const uint8_t> body);  // Rclunk, Runlinkat, Rremove

// One entry of Rreaddir data: qid[13] offset[8] type[1] name[s].
struct DirEntry { Qid qid; uint64_t offset; uint8_t type; std::string_view name; };

// Walks the entries of Rreaddir data, calling `fn(entry)` for each; false if
// the data does not split into whole entries.
template <class Fn>
bool for_each_entry(std::span<const uint8_t> data, Fn&& fn) {
    fs9p::WireReader r(data);
    while (r.ok() && r.left() > 0) {
        DirEntry e;
        e.qid = r.qid();
        e.offset = r.u64();
        e.type = r.u8();
        e.name = r.str();
        if (!r.ok()) return false;
        fn(e);
    }
    return r.ok();
}

}  // namespace ioplane::load9p
