// A 9P2000.L session for ioplane-9pload: Tversion and Tattach, then one
// request at a time (tag 0) for setting files up and removing them. The
// measured run pipelines on the same connection (workloads.h).
//
// Errors: an Rlerror becomes an Error with the server's errno and a message
// naming the request; a malformed or unexpected reply is EPROTO and marks
// the session broken (nothing more is sent on it).
//
// Thread contract: single-threaded program.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "codec.h"
#include "connection.h"
#include "ioplane/core/error.h"
#include "options.h"

namespace ioplane::load9p {

// Fids: fixed ones for the set-up, one per slot from kFirstSlotFid, and
// kFirstTreeFid up for remove_tree.
inline constexpr uint32_t kRootFid = 0;     // the attach
inline constexpr uint32_t kWorkFid = 1;     // the work directory
inline constexpr uint32_t kFileFid = 2;     // the file of getattr, read*, write*
inline constexpr uint32_t kSubdirFid = 3;   // the directory readdir lists
inline constexpr uint32_t kTempFid = 4;
inline constexpr uint32_t kRemoveFid = 5;   // unlinkat()'s Tremove fallback
inline constexpr uint32_t kFirstSlotFid = 16;
inline constexpr uint32_t kFirstTreeFid = 1u << 20;

// What a Tread or Twrite may carry at most: msize less Linux's P9_IOHDRSZ.
inline constexpr uint32_t kIoOverhead = 24;

struct Entry {
    std::string name;
    uint8_t qid_type;
};

class Session {
public:
    // Tversion ("9P2000.L", msize proposed by the caller; the server's answer
    // if lower) and Tattach of kRootFid.
    static Result<Session> start(Connection connection, uint32_t msize, std::string_view uname,
                                 std::string_view aname, uint32_t n_uname);

    Connection& connection() { return conn_; }
    uint32_t msize() const { return msize_; }
    uint32_t max_io() const { return msize_ - kIoOverhead; }
    bool broken() const { return broken_; }
    void set_unlink_mode(UnlinkMode mode) { unlink_ = mode; }
    // Whether names are removed with Twalk and Tremove (asked, or learned
    // from an EOPNOTSUPP to Tunlinkat in auto mode).
    bool unlink_by_remove() const { return unlink_ == UnlinkMode::kRemove; }
    void set_broken() { broken_ = true; }

    // Sends what the caller encoded into connection().out() (one request,
    // tag 0) and returns its reply, which must be of `reply_type` (else
    // EPROTO) or Rlerror (the server's errno). `what` names the request in
    // errors: "Tlcreate 'data'". The reply's body lives until the next call.
    Result<Message> call(uint8_t reply_type, const std::string& what);

    Result<void> walk(uint32_t fid, uint32_t newfid, std::span<const std::string_view> names);
    Result<Qid> mkdir(uint32_t dfid, std::string_view name, uint32_t mode);
    Result<ROpen> lcreate(uint32_t fid, std::string_view name, uint32_t flags, uint32_t mode);
    Result<ROpen> lopen(uint32_t fid, uint32_t flags);
    Result<void> clunk(uint32_t fid);
    // Clunks every fid these calls made (attach, walk) and did not clunk,
    // but those in `keep`; errors are ignored.
    void clunk_all_but(std::initializer_list<uint32_t> keep);
    // Tunlinkat, or Twalk (kRemoveFid) and Tremove: see UnlinkMode.
    Result<void> unlinkat(uint32_t dirfid, std::string_view name, uint32_t flags);
    // Writes [0, size) of the open `fid` with `pattern` repeated, up to 8
    // Twrites of max_io() bytes in flight; pattern.size() >= max_io().
    Result<void> fill(uint32_t fid, uint64_t size, std::span<const uint8_t> pattern);
    // The entries of directory `dirfid` but "." and "..", read through a
    // clone of it (kFirstTreeFid + depth).
    Result<std::vector<Entry>> list(uint32_t dirfid, uint32_t depth = 0);
    // Unlinks everything under directory `dirfid`, directories depth first.
    Result<void> remove_tree(uint32_t dirfid, uint32_t depth = 0);

private:
    explicit Session(Connection connection) : conn_(std::move(connection)) {}
    Connection conn_;
    uint32_t msize_ = 0;
    bool broken_ = false;
    UnlinkMode unlink_ = UnlinkMode::kAuto;
    std::set<uint32_t> live_;  // fids made by walk() and start() and not clunked
};

// Whether an errno means "this request is not implemented": EOPNOTSUPP,
// Linux's internal ENOTSUPP (524), or ENOSYS.
bool not_implemented(int code);

// The message for an Rlerror to `what`, e.g. "Tlcreate 'x': Rlerror 13".
Error lerror(const std::string& what, const Message& reply);

}  // namespace ioplane::load9p
