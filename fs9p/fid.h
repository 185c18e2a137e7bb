// A fid: what one client handle names on the server. Fids are shared_ptrs,
// so that a request that uses a fid keeps it (and its fds) alive while its
// system call runs in a worker, even if the client clunks it meanwhile.
//
// Thread contract: fields are read and written in the connection's context;
// a worker gets the fds it needs by value (plus a reference that keeps them
// open) and touches nothing else, except `dir_mu`, which serializes
// readdir's lseek+getdents pairs on `open_fd` across workers (and the
// connection's thread, where readdir runs inline).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ioplane/core/page_cache.h"
#include "ioplane/core/unique_fd.h"
#include "wire.h"

namespace ioplane::fs9p {

struct Fid {
    enum class Kind { object, xattr_read, xattr_write };
    Kind kind = Kind::object;

    UniqueFd path_fd;  // O_PATH fd of the object
    std::string path;  // relative to the export root ("" is the root): for ".." and removal
    Qid qid;
    uint32_t uid = 0;  // n_uname of the attach this fid descends from
    bool inline_stat = false;  // fstat runs in the connection's thread (ShareConfig::inline_calls)

    // After Tlopen/Tlcreate.
    UniqueFd open_fd;
    bool opening = false;  // a Tlopen is in a worker: a second one is refused
    // How pages of open_fd in memory are read and written in the
    // connection's thread (ShareConfig::page_cache; none with O_DIRECT or
    // O_SYNC, whose calls wait for the device anyway), each direction until
    // the kernel refuses RWF_NOWAIT for it.
    PageCacheMode page_cache_reads = PageCacheMode::none;
    PageCacheMode page_cache_writes = PageCacheMode::none;
    std::mutex dir_mu;

    // Xattr fids: the value (or name list) read by Txattrwalk, or what the
    // client has written after Txattrcreate, set on clunk.
    std::vector<uint8_t> xattr;
    std::string xattr_name;
    uint64_t xattr_size = 0;
    uint32_t xattr_flags = 0;

    bool is_dir() const { return qid.type & 0x80; }
};

using FidRef = std::shared_ptr<Fid>;

}  // namespace ioplane::fs9p
