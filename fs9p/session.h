// Session: the 9P2000.L state of one connection (negotiated msize, the fid
// table) and the handlers of every message, as QEMU's VirtFS does them: each
// request is a coroutine in the connection's context, and each blocking
// system call hops to a worker of that context's thread pool
// (run_in_worker) and back. Calls that cannot wait run inline instead, as
// a hop costs two thread wake-ups: dup of a held fd (a walk's start),
// fstat of an object on a filesystem that keeps inodes in memory, reads
// and writes of pages in memory (what is not in memory still goes to a
// worker), and, on a filesystem that lives in memory (tmpfs), the calls
// that look up, open, create, list and remove names. Nothing here knows
// about sockets; the connection feeds decoded requests in and sends the
// replies out.
//
// Thread contract: the connection's context, for every member; requests may
// run concurrently (interleaved at their worker hops).
#pragma once

#include <sys/stat.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "fid.h"
#include "security_model.h"
#include "ioplane/core/budget.h"
#include "ioplane/core/io_buffer.h"
#include "ioplane/core/page_cache.h"
#include "ioplane/core/task.h"
#include "messages.h"

namespace ioplane::fs9p {

// What a connection serves: one directory tree.
struct ShareConfig {
    std::string id;        // the export id (an accepted aname)
    std::string path;      // the directory (an accepted aname too)
    int root_fd = -1;      // O_PATH fd of the directory, owned by the export
    bool readonly = false;
    // Objects on the root's own filesystem (st_dev), if it keeps inodes in
    // memory (keeps_inodes_in_memory), are stat'ed in the connection's
    // thread, and their pages in memory are read and written there too
    // (page_cache: the root filesystem's mode). A submount of another kind
    // goes through workers.
    bool inline_calls = false;
    dev_t root_dev = 0;
    PageCacheMode page_cache = PageCacheMode::none;
    // The root filesystem lives in memory (tmpfs, ramfs: page_cache is
    // `memory`), so on it a lookup, open, create, unlink, rename or
    // getdents waits for no device either: those run in the connection's
    // thread too (tree_inline). They may wait for a directory's lock held
    // by another such call, only as long as that call.
    bool tree_in_memory = false;
    uint32_t max_msize = 4u << 20;
    size_t max_fids = 16384;
    SecurityModel security_model = SecurityModel::passthrough;
    // The daemon's descriptor budget, which every fid charges
    // (kDescriptorsPerFid); a connection holds at most
    // `descriptors_per_connection` of it. By default no limit but max_fids.
    std::shared_ptr<Budget> descriptors = std::make_shared<Budget>(UINT64_MAX);
    uint64_t descriptors_per_connection = UINT64_MAX;
};

// A fid holds the object's O_PATH fd and, once opened, the open file's.
inline constexpr uint64_t kDescriptorsPerFid = 2;

struct Reply {
    std::vector<uint8_t> head;  // the whole message, or its start when data follows
    IoBuffer data;              // Rread payload: data_len bytes sent after head
    uint32_t data_len = 0;
};

class Session {
public:
    explicit Session(const ShareConfig& share)
        : share_(share), descriptors_(*share.descriptors, share.descriptors_per_connection) {}
    ~Session() { forget_all_fids(); }

    // The msize in force: the server's maximum until Tversion negotiates.
    uint32_t msize() const { return msize_; }
    bool negotiated() const { return negotiated_; }

    // Tversion: negotiates msize and forgets every fid. The caller has waited
    // for the requests in flight (the spec aborts them).
    Reply version(uint16_t tag, const Version& m);
    // Any other request.
    Task<Reply> handle(const Request& req);

    size_t fid_count() const { return fids_.size(); }
    // Forgets every fid (closing their fds once no request holds them).
    void reset() {
        forget_all_fids();
        negotiated_ = false;
    }

private:
    Task<Reply> attach(uint16_t tag, const Attach& m);
    Task<Reply> walk(uint16_t tag, const Walk& m);
    Task<Reply> lopen(uint16_t tag, const Lopen& m);
    Task<Reply> lcreate(uint16_t tag, const Lcreate& m);
    Task<Reply> read(uint16_t tag, const Read& m);
    Task<Reply> write(uint16_t tag, const Write& m);
    Task<Reply> clunk(uint16_t tag, const Clunk& m);
    Task<Reply> remove(uint16_t tag, const Remove& m);
    Task<Reply> getattr(uint16_t tag, const Getattr& m);
    Task<Reply> setattr(uint16_t tag, const Setattr& m);
    Task<Reply> statfs(uint16_t tag, const Statfs& m);
    Task<Reply> readdir(uint16_t tag, const Readdir& m);
    Task<Reply> fsync(uint16_t tag, const Fsync& m);
    Task<Reply> mkdir(uint16_t tag, const Mkdir& m);
    Task<Reply> symlink(uint16_t tag, const Symlink& m);
    Task<Reply> mknod(uint16_t tag, const Mknod& m);
    Task<Reply> readlink(uint16_t tag, const Readlink& m);
    Task<Reply> link(uint16_t tag, const Link& m);
    Task<Reply> rename(uint16_t tag, const Rename& m);
    Task<Reply> renameat(uint16_t tag, const Renameat& m);
    Task<Reply> unlinkat(uint16_t tag, const Unlinkat& m);
    Task<Reply> xattrwalk(uint16_t tag, const Xattrwalk& m);
    Task<Reply> xattrcreate(uint16_t tag, const Xattrcreate& m);
    Task<Reply> lock(uint16_t tag, const Lock& m);
    Task<Reply> getlock(uint16_t tag, const Getlock& m);

    // Creates `name` in the directory `dir` with `make` (a worker call given
    // the directory's O_PATH fd, returning -errno or 0), then replies with
    // the new object's qid (and gives it to `uid`/`gid` when we can).
    // `client_mode` (with the file type) and `rdev`: what mapped-xattr
    // stores for the client; `make` then makes what the host keeps.
    template <class Make>
    Task<Reply> create_in(uint16_t tag, uint8_t rtype, uint32_t dfid, std::string_view name, uint32_t gid,
                          mode_t client_mode, dev_t rdev, Make make);
    bool mapped() const { return share_.security_model == SecurityModel::mapped_xattr; }

    FidRef find(uint32_t fid) const;
    // Adds (or replaces, for walk's newfid == fid) an entry; false past
    // max_fids or this connection's share of the descriptor budget.
    bool put(uint32_t fid, FidRef f);
    // Removes an entry (clunk, remove) and gives its descriptors back.
    void forget_fid(std::unordered_map<uint32_t, FidRef>::iterator it);
    void forget_all_fids();
    // Renames in this session change the paths other fids hold.
    void rename_paths(const std::string& from, const std::string& to);
    uint32_t iounit() const { return msize_ - uint32_t(kIoHeaderSize); }
    // Whether fstat of this object may run inline (ShareConfig::inline_calls).
    bool stat_inline(const struct stat& st) const { return share_.inline_calls && st.st_dev == share_.root_dev; }
    // Whether calls on f's names (lookups in it, open, create, unlink,
    // getdents, metadata) may run inline (ShareConfig::tree_in_memory).
    bool tree_inline(const Fid& f) const { return share_.tree_in_memory && f.inline_stat; }
    // Reads into / writes from `buf` at `off` on f's open fd: pages in
    // memory inline (transfer_from_memory), the rest in a worker. Bytes or
    // -errno.
    Task<ssize_t> transfer(Fid& f, bool write, void* buf, uint32_t count, off_t off);
    // After an open with `open_flags`: how f's pages in memory are served.
    void set_page_cache(Fid& f, uint32_t open_flags) const;

    const ShareConfig& share_;
    uint32_t msize_ = 8192;
    bool negotiated_ = false;
    std::unordered_map<uint32_t, FidRef> fids_;
    BudgetShare descriptors_;  // kDescriptorsPerFid for each entry of fids_
};

// Thread contract: pure; any thread. Replies that carry no payload.
Reply error_reply(uint16_t tag, int err);

}  // namespace ioplane::fs9p
