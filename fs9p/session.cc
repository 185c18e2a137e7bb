// The fid table, negotiation, attach and walk, and the dispatch of every
// other message to its handler (session_files.cc, session_tree.cc).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "host_fs.h"
#include "ioplane/core/run_in_worker.h"
#include "session.h"
#include "session_reply.h"

namespace ioplane::fs9p {

using detail::reply;

Reply error_reply(uint16_t tag, int err) {
    return reply(Rlerror, tag, [&](WireWriter& w) { w.u32(uint32_t(err)); });
}

FidRef Session::find(uint32_t fid) const {
    auto it = fids_.find(fid);
    return it == fids_.end() ? nullptr : it->second;
}

bool Session::put(uint32_t fid, FidRef f) {
    if (!fids_.contains(fid) &&
        (fids_.size() >= share_.max_fids || !descriptors_.try_charge(kDescriptorsPerFid)))
        return false;
    fids_[fid] = std::move(f);
    return true;
}

void Session::forget_fid(std::unordered_map<uint32_t, FidRef>::iterator it) {
    fids_.erase(it);
    descriptors_.release(kDescriptorsPerFid);
}

void Session::forget_all_fids() {
    descriptors_.release(kDescriptorsPerFid * fids_.size());
    fids_.clear();
}

void Session::rename_paths(const std::string& from, const std::string& to) {
    for (auto& [id, f] : fids_) {
        if (f->path == from) {
            f->path = to;
        } else if (f->path.size() > from.size() && f->path.starts_with(from) && f->path[from.size()] == '/') {
            f->path = to + f->path.substr(from.size());
        }
    }
}

Reply Session::version(uint16_t tag, const Version& m) {
    forget_all_fids();
    // Our maximum, or less if the client asks (version(5): never more). A
    // client that offers less than a getattr reply or a walk of 16 names
    // needs gets no session.
    constexpr uint32_t kMinMsize = 512;
    msize_ = std::max(std::min(m.msize, share_.max_msize), kMinMsize);
    // "9P2000.L.x" is still 9P2000.L (version(5): the dot and what follows
    // may be ignored); anything else gets "unknown" and no session.
    const std::string_view v = m.version.substr(0, m.version.find('.', 7));
    negotiated_ = v == "9P2000.L" && m.msize >= kMinMsize;
    return reply(Rversion, tag, [&](WireWriter& w) {
        w.u32(msize_);
        w.str(negotiated_ ? "9P2000.L" : "unknown");
    });
}

Task<Reply> Session::handle(const Request& req) {
    const uint16_t tag = req.tag;
    if (!negotiated_) co_return error_reply(tag, EPROTO);
    // Dispatch by type; each handler decodes nothing more.
    co_return co_await std::visit(
        [&](const auto& m) -> Task<Reply> {
            using M = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<M, Attach>) return attach(tag, m);
            else if constexpr (std::is_same_v<M, Walk>) return walk(tag, m);
            else if constexpr (std::is_same_v<M, Lopen>) return lopen(tag, m);
            else if constexpr (std::is_same_v<M, Lcreate>) return lcreate(tag, m);
            else if constexpr (std::is_same_v<M, Read>) return read(tag, m);
            else if constexpr (std::is_same_v<M, Write>) return write(tag, m);
            else if constexpr (std::is_same_v<M, Clunk>) return clunk(tag, m);
            else if constexpr (std::is_same_v<M, Remove>) return remove(tag, m);
            else if constexpr (std::is_same_v<M, Getattr>) return getattr(tag, m);
            else if constexpr (std::is_same_v<M, Setattr>) return setattr(tag, m);
            else if constexpr (std::is_same_v<M, Statfs>) return statfs(tag, m);
            else if constexpr (std::is_same_v<M, Readdir>) return readdir(tag, m);
            else if constexpr (std::is_same_v<M, Fsync>) return fsync(tag, m);
            else if constexpr (std::is_same_v<M, Mkdir>) return mkdir(tag, m);
            else if constexpr (std::is_same_v<M, Symlink>) return symlink(tag, m);
            else if constexpr (std::is_same_v<M, Mknod>) return mknod(tag, m);
            else if constexpr (std::is_same_v<M, Readlink>) return readlink(tag, m);
            else if constexpr (std::is_same_v<M, Link>) return link(tag, m);
            else if constexpr (std::is_same_v<M, Rename>) return rename(tag, m);
            else if constexpr (std::is_same_v<M, Renameat>) return renameat(tag, m);
            else if constexpr (std::is_same_v<M, Unlinkat>) return unlinkat(tag, m);
            else if constexpr (std::is_same_v<M, Xattrwalk>) return xattrwalk(tag, m);
            else if constexpr (std::is_same_v<M, Xattrcreate>) return xattrcreate(tag, m);
            else if constexpr (std::is_same_v<M, Lock>) return lock(tag, m);
            else if constexpr (std::is_same_v<M, Getlock>) return getlock(tag, m);
            // Tauth: no authentication here (afid NOFID in Tattach). ENOENT
            // says so in diod's convention, which its clients (diodls,
            // diodcat) rely on. Tversion and Tflush are the connection's.
            else if constexpr (std::is_same_v<M, Auth>)
                return [](uint16_t t) -> Task<Reply> { co_return error_reply(t, ENOENT); }(tag);
            else return [](uint16_t t) -> Task<Reply> { co_return error_reply(t, EOPNOTSUPP); }(tag);
        },
        req.body);
}

Task<Reply> Session::attach(uint16_t tag, const Attach& m) {
    if (m.afid != kNoFid) co_return error_reply(tag, EOPNOTSUPP);  // no Tauth, so no afid
    std::string_view aname = m.aname;
    while (aname.size() > 1 && aname.ends_with('/')) aname.remove_suffix(1);
    if (!aname.empty() && aname != share_.id && aname != share_.path) co_return error_reply(tag, ENOENT);
    if (fids_.contains(m.fid)) co_return error_reply(tag, EBADF);
    struct stat st;
    const int root = share_.root_fd;
    const int fd = co_await run_in_worker([root, &st, model = share_.security_model] {
        const int fd = open_beneath(root, "");
        if (fd < 0) return fd;
        if (int r = stat_for_client(fd, st, model); r < 0) {
            ::close(fd);
            return r;
        }
        return fd;
    });
    if (fd < 0) co_return error_reply(tag, -fd);
    auto f = std::make_shared<Fid>();
    f->path_fd.reset(fd);
    f->qid = qid_of(st);
    f->inline_stat = stat_inline(st);
    f->uid = m.n_uname == kNoFid ? uint32_t(::geteuid()) : m.n_uname;
    if (!put(m.fid, f)) co_return error_reply(tag, EMFILE);
    co_return detail::qid_reply(Rattach, tag, f->qid);
}

namespace {

// Where a walk has got to.
struct WalkState {
    std::vector<Qid> qids;  // one per name reached
    int fd = -1;            // O_PATH fd of the last object reached (owned)
    bool is_dir = true;
    dev_t dev = 0;          // and its filesystem
    std::string path;
    int err = 0;            // why the walk stopped early
};

// Walks the names from s.qids.size() on, each from the previous one's fd,
// so that nothing is resolved twice and a component swapped meanwhile is
// caught by openat2. With `stay_on` (the part of a walk run inline), stops
// before a name that would look beyond that filesystem: a name under an
// object on another one, and ".." (resolved from the root, by path). On an
// error, s.fd is closed. `model`: how objects look to the client.
void walk_names(WalkState& s, const std::vector<std::string_view>& names, int root, const dev_t* stay_on,
                SecurityModel model) {
    while (s.err == 0 && s.qids.size() < names.size()) {
        const std::string_view name = names[s.qids.size()];
        if (stay_on && (s.dev != *stay_on || name == "..")) return;
        std::string next_path;
        int next;
        if (!s.is_dir) {
            next = -ENOTDIR;
        } else if (name == ".") {  // itself, as QEMU and diod have it (diodls -l walks it)
            next_path = s.path;
            next = ::fcntl(s.fd, F_DUPFD_CLOEXEC, 0);
            if (next < 0) next = -errno;
        } else if (name == "..") {  // lexically, stopping at the root
            next_path = detail::parent_path(s.path);
            next = open_beneath(root, next_path);
        } else {
            next_path = detail::join_path(s.path, name);
            next = open_child(s.fd, name);
            if (next == -EINVAL) next = -ENOENT;  // a name with '/': no such entry
        }
        struct stat st;
        if (next >= 0) {
            if (int r = stat_for_client(next, st, model); r < 0) {
                ::close(next);
                next = r;
            }
        }
        if (next < 0) {
            s.err = -next;
            ::close(s.fd);
            s.fd = -1;
            return;
        }
        ::close(s.fd);
        s.fd = next;
        s.is_dir = S_ISDIR(st.st_mode);
        s.dev = st.st_dev;
        s.qids.push_back(qid_of(st));
        s.path = std::move(next_path);
    }
}

}  // namespace

Task<Reply> Session::walk(uint16_t tag, const Walk& m) {
    FidRef from = find(m.fid);
    if (!from || from->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    // walk(5) says the fid "must not have been opened for I/O", but diod's
    // clients (diodls -l) walk from the directory they are reading, and
    // QEMU and diod allow it: so do we (a walk does not touch the open file).
    if (m.newfid != m.fid && fids_.contains(m.newfid)) co_return error_reply(tag, EBADF);
    if (!m.names.empty() && !from->is_dir()) co_return error_reply(tag, ENOTDIR);

    // The walk starts from a copy of the fd, made here: dup never waits,
    // and a clone (a walk of no names, half of what a client's open or
    // create sends) then needs no worker at all. On a filesystem in memory
    // the names are looked up here too; what is left (names beyond it)
    // goes to a worker. (The state is not returned by value through
    // co_await: GCC 12 relocates such a result bitwise, which breaks a
    // std::string in it.)
    WalkState s;
    s.path = from->path;
    s.fd = ::fcntl(from->path_fd.get(), F_DUPFD_CLOEXEC, 0);
    if (s.fd < 0) co_return error_reply(tag, errno);
    const int root = share_.root_fd;
    if (tree_inline(*from)) {
        s.dev = share_.root_dev;
        walk_names(s, m.names, root, &share_.root_dev, share_.security_model);
    }
    if (s.err == 0 && s.qids.size() < m.names.size())
        co_await run_in_worker(
            [&m, root, &s, model = share_.security_model] { walk_names(s, m.names, root, nullptr, model); });
    if (s.err != 0) {
        // A partial walk answers with the qids it reached (and creates no
        // newfid); failing on the first name is an error.
        if (s.qids.empty()) co_return error_reply(tag, s.err);
        co_return reply(Rwalk, tag, [&](WireWriter& w) {
            w.u16(uint16_t(s.qids.size()));
            for (auto& q : s.qids) w.qid(q);
        });
    }
    auto f = std::make_shared<Fid>();
    f->path_fd.reset(s.fd);
    f->path = std::move(s.path);
    f->qid = s.qids.empty() ? from->qid : s.qids.back();
    f->inline_stat = s.qids.empty() ? from->inline_stat : share_.inline_calls && s.dev == share_.root_dev;
    f->uid = from->uid;
    if (!put(m.newfid, f)) co_return error_reply(tag, EMFILE);
    co_return reply(Rwalk, tag, [&](WireWriter& w) {
        w.u16(uint16_t(s.qids.size()));
        for (auto& q : s.qids) w.qid(q);
    });
}

Task<Reply> Session::clunk(uint16_t tag, const Clunk& m) {
    auto it = fids_.find(m.fid);
    if (it == fids_.end()) co_return error_reply(tag, EBADF);
    FidRef f = std::move(it->second);
    forget_fid(it);  // gone whatever happens next, as the spec says
    if (f->kind != Fid::Kind::xattr_write) co_return detail::empty_reply(Rclunk, tag);
    // The attribute is set now, with exactly the bytes announced.
    if (f->xattr.size() != f->xattr_size) co_return error_reply(tag, EINVAL);
    const int r = co_await run_in_worker([&f] {
        const std::string p = proc_path(f->path_fd.get());
        const int rc = f->xattr_size == 0  // as QEMU: an empty value is Linux's removexattr
                           ? ::removexattr(p.c_str(), f->xattr_name.c_str())
                           : ::setxattr(p.c_str(), f->xattr_name.c_str(), f->xattr.data(), f->xattr.size(),
                                        int(f->xattr_flags));
        return rc == 0 ? 0 : -errno;
    });
    co_return detail::status_reply(Rclunk, tag, r);
}

Task<Reply> Session::getattr(uint16_t tag, const Getattr& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    struct stat st;
    const int fd = f->path_fd.get();
    // Inline, where fstat cannot wait (ShareConfig::inline_calls): a worker
    // hop would cost two thread wake-ups for a call of a microsecond.
    const int r = co_await run_here_or_in_worker(
        f->inline_stat, [fd, &st, model = share_.security_model] { return stat_for_client(fd, st, model); });
    if (r < 0) co_return error_reply(tag, -r);
    co_return reply(Rgetattr, tag, [&](WireWriter& w) {
        w.u64(kGetattrBasic);
        w.qid(qid_of(st));
        w.u32(st.st_mode);
        w.u32(st.st_uid);
        w.u32(st.st_gid);
        w.u64(st.st_nlink);
        w.u64(st.st_rdev);
        w.u64(uint64_t(st.st_size));
        w.u64(uint64_t(st.st_blksize));
        w.u64(uint64_t(st.st_blocks));
        for (const timespec& t : {st.st_atim, st.st_mtim, st.st_ctim}) {
            w.u64(uint64_t(t.tv_sec));
            w.u64(uint64_t(t.tv_nsec));
        }
        for (int i = 0; i < 4; i++) w.u64(0);  // btime, gen, data_version: not valid
    });
}

Task<Reply> Session::statfs(uint16_t tag, const Statfs& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    struct statfs sf;
    const int fd = f->path_fd.get();
    const int r = co_await run_here_or_in_worker(tree_inline(*f), [fd, &sf] { return ::fstatfs(fd, &sf) == 0 ? 0 : -errno; });
    if (r < 0) co_return error_reply(tag, -r);
    co_return reply(Rstatfs, tag, [&](WireWriter& w) {
        w.u32(uint32_t(sf.f_type));
        w.u32(uint32_t(sf.f_bsize));
        w.u64(sf.f_blocks);
        w.u64(sf.f_bfree);
        w.u64(sf.f_bavail);
        w.u64(sf.f_files);
        w.u64(sf.f_ffree);
        uint64_t fsid;
        static_assert(sizeof fsid == sizeof sf.f_fsid);
        std::memcpy(&fsid, &sf.f_fsid, sizeof fsid);
        w.u64(fsid);
        w.u32(uint32_t(sf.f_namelen));
    });
}

}  // namespace ioplane::fs9p
