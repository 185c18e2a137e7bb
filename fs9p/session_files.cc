// Handlers for open files: open and create, read and write, readdir, fsync,
// POSIX locks, and extended attributes (which read and write like files).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "host_fs.h"
#include "ioplane/core/run_in_worker.h"
#include "session.h"
#include "session_reply.h"

namespace ioplane::fs9p {

using detail::reply;

namespace {

constexpr int kWriteFlags = O_WRONLY | O_RDWR | O_TRUNC | O_APPEND;
constexpr size_t kXattrMax = 64 * 1024;  // XATTR_SIZE_MAX and XATTR_LIST_MAX

// Removes mapped-xattr's own names from a listxattr list (names, each
// NUL-terminated) in place; returns the new length.
size_t drop_mapped_names(uint8_t* list, size_t len) {
    size_t out = 0;
    for (size_t at = 0; at < len;) {
        const char* name = reinterpret_cast<const char*>(list + at);
        const size_t n = ::strnlen(name, len - at) + 1;
        if (!is_mapped_xattr(std::string_view(name, n - 1))) {
            std::memmove(list + out, list + at, std::min(n, len - at));
            out += std::min(n, len - at);
        }
        at += n;
    }
    return out;
}

// Writes the `n` low bytes of v, little-endian as 9P has them; returns the end.
uint8_t* put_le(uint8_t* p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) *p++ = uint8_t(v >> (8 * i));
    return p;
}

bool wants_write(uint32_t flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_TRUNC | O_APPEND));
}

Reply open_reply(uint8_t type, uint16_t tag, const Qid& q, uint32_t iounit) {
    return reply(type, tag, [&](WireWriter& w) {
        w.qid(q);
        w.u32(iounit);
    });
}

}  // namespace

Task<Reply> Session::lopen(uint16_t tag, const Lopen& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (f->open_fd || f->opening) co_return error_reply(tag, EBADF);
    if (share_.readonly && wants_write(m.flags)) co_return error_reply(tag, EROFS);
    f->opening = true;
    const int path_fd = f->path_fd.get();
    const int fd = co_await run_here_or_in_worker(tree_inline(*f), [path_fd, flags = int(m.flags)] {
        return reopen(path_fd, flags);
    });
    f->opening = false;
    if (fd < 0) co_return error_reply(tag, -fd);
    f->open_fd.reset(fd);
    if (f->inline_stat && !f->is_dir()) set_page_cache(*f, m.flags);
    co_return open_reply(Rlopen, tag, f->qid, iounit());
}

Task<Reply> Session::lcreate(uint16_t tag, const Lcreate& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || f->open_fd || f->opening) co_return error_reply(tag, EBADF);
    if (!f->is_dir()) co_return error_reply(tag, ENOTDIR);
    if (!is_plain_name(m.name)) co_return error_reply(tag, EINVAL);
    if (share_.readonly) co_return error_reply(tag, EROFS);
    struct Created {
        int fd = -1, path_fd = -1;
        struct stat st;
    };
    f->opening = true;
    const int dir = f->path_fd.get();
    const uint32_t uid = f->uid;
    const std::string name(m.name);
    const SecurityModel model = share_.security_model;
    const mode_t mode = m.mode & 07777;
    const mode_t host_mode = model == SecurityModel::mapped_xattr ? kMappedFileMode : mode;
    Created c = co_await run_here_or_in_worker(tree_inline(*f), [dir, &name, flags = int(m.flags), mode, host_mode, uid,
                                                                 gid = m.gid, model] {
        Created c;
        // A plain name in a directory we hold: O_NOFOLLOW is enough to never
        // create or open through a symlink; O_NONBLOCK that a fifo found
        // there (without O_EXCL) cannot hang us before fstat refuses it.
        const int clean = (flags & ~(O_DIRECTORY | O_PATH | O_NOCTTY)) | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
        c.fd = ::openat(dir, name.c_str(), clean, host_mode);
        if (c.fd < 0) {
            c.fd = -errno;
            return c;
        }
        if (::fstat(c.fd, &c.st) != 0 || !S_ISREG(c.st.st_mode)) {
            ::close(c.fd);
            c.fd = -ENXIO;
            return c;
        }
        if (!(flags & O_NONBLOCK)) ::fcntl(c.fd, F_SETFL, ::fcntl(c.fd, F_GETFL) & ~O_NONBLOCK);
        if (model == SecurityModel::mapped_xattr) {
            // Without O_EXCL the file may have existed: it keeps what it had.
            if (!has_mapped_mode(c.fd)) {
                const MappedAttrs a{.uid = uid, .gid = gid, .mode = S_IFREG | mode};
                if (int r = store_mapped(c.fd, a); r < 0) {
                    ::close(c.fd);
                    c.fd = r;
                    return c;
                }
            }
            apply_mapped(c.fd, c.st);
        } else if (::geteuid() == 0) {
            (void)::fchown(c.fd, uid, gid);  // the creator owns it, as on a local disk
        }
        c.path_fd = ::open(proc_path(c.fd).c_str(), O_PATH | O_CLOEXEC);
        if (c.path_fd < 0) {
            ::close(c.fd);
            c.fd = -errno;
        }
        return c;
    });
    f->opening = false;
    if (c.fd < 0) co_return error_reply(tag, -c.fd);
    // The fid now stands for the new, open file.
    f->path_fd.reset(c.path_fd);
    f->open_fd.reset(c.fd);
    f->inline_stat = stat_inline(c.st);
    if (f->inline_stat) set_page_cache(*f, m.flags);
    f->path = detail::join_path(f->path, m.name);
    f->qid = qid_of(c.st);
    co_return open_reply(Rlcreate, tag, f->qid, iounit());
}

void Session::set_page_cache(Fid& f, uint32_t open_flags) const {
    const bool waits_for_device = open_flags & (O_DIRECT | O_SYNC | O_DSYNC);
    f.page_cache_reads = f.page_cache_writes = waits_for_device ? PageCacheMode::none : share_.page_cache;
}

// Pages in memory are a memcpy: done here they cost a system call, where a
// worker hop costs two thread wake-ups (the 9P benchmark's concurrency-1
// rows). What is not in memory (all, or the rest of a short transfer) goes
// to a worker, as does anything large (the copy would hold up the
// connection's other requests).
Task<ssize_t> Session::transfer(Fid& f, bool write, void* buf, uint32_t count, off_t off) {
    constexpr uint32_t kMaxInline = 256 * 1024;
    const int fd = f.open_fd.get();
    PageCacheMode& mode = write ? f.page_cache_writes : f.page_cache_reads;
    ssize_t done = -EAGAIN;
    if (count <= kMaxInline) {
        const iovec v{buf, count};
        done = transfer_from_memory(mode, fd, write, {&v, 1}, uint64_t(off), count);
    }
    if (done == -EOPNOTSUPP) {  // no RWF_NOWAIT for this file and direction
        mode = PageCacheMode::none;
        done = -EAGAIN;
    }
    // Complete, at the end of the file, or an error that waiting would not cure.
    if (done != -EAGAIN && (done <= 0 || size_t(done) == count)) co_return done;
    const size_t head = done > 0 ? size_t(done) : 0;
    const ssize_t rest = co_await run_in_worker([fd, write, p = static_cast<char*>(buf) + head, n = count - head,
                                                 at = off + off_t(head)] {
        return write ? write_at(fd, p, n, at) : read_at(fd, p, n, at);
    });
    if (rest < 0) co_return head > 0 ? ssize_t(head) : rest;
    co_return ssize_t(head) + rest;
}

Task<Reply> Session::read(uint16_t tag, const Read& m) {
    FidRef f = find(m.fid);
    if (!f) co_return error_reply(tag, EBADF);
    const uint32_t count = std::min(m.count, iounit());
    Reply r;
    if (f->kind == Fid::Kind::xattr_read) {
        const uint64_t at = std::min<uint64_t>(m.offset, f->xattr.size());
        r.data_len = uint32_t(std::min<uint64_t>(count, f->xattr.size() - at));
        r.data = IoBuffer::allocate(r.data_len);
        if (!r.data) co_return error_reply(tag, ENOMEM);
        std::memcpy(r.data.get(), f->xattr.data() + at, r.data_len);
    } else {
        if (f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
        if (m.offset > uint64_t(LLONG_MAX)) co_return error_reply(tag, EINVAL);
        r.data = IoBuffer::allocate(count);
        if (!r.data) co_return error_reply(tag, ENOMEM);
        const ssize_t n = co_await transfer(*f, false, r.data.get(), count, off_t(m.offset));
        if (n < 0) co_return error_reply(tag, int(-n));
        r.data_len = uint32_t(n);
    }
    co_return detail::data_reply(Rread, tag, std::move(r));
}

Task<Reply> Session::write(uint16_t tag, const Write& m) {
    FidRef f = find(m.fid);
    if (!f) co_return error_reply(tag, EBADF);
    const uint32_t count = uint32_t(m.data.size());
    if (f->kind == Fid::Kind::xattr_write) {
        // Written in order, up to the size Txattrcreate announced.
        if (m.offset != f->xattr.size() || f->xattr.size() + count > f->xattr_size) co_return error_reply(tag, EINVAL);
        f->xattr.insert(f->xattr.end(), m.data.begin(), m.data.end());
    } else {
        if (f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
        if (share_.readonly) co_return error_reply(tag, EROFS);
        if (m.offset > uint64_t(LLONG_MAX)) co_return error_reply(tag, EINVAL);
        const ssize_t n =
            co_await transfer(*f, true, const_cast<uint8_t*>(m.data.data()), count, off_t(m.offset));
        if (n < 0) co_return error_reply(tag, int(-n));
        co_return reply(Rwrite, tag, [&](WireWriter& w) { w.u32(uint32_t(n)); });
    }
    co_return reply(Rwrite, tag, [&](WireWriter& w) { w.u32(count); });
}

Task<Reply> Session::readdir(uint16_t tag, const Readdir& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
    if (!f->is_dir()) co_return error_reply(tag, ENOTDIR);
    const uint32_t count = std::min(m.count, iounit());
    Reply r;
    r.data = IoBuffer::allocate(count);
    if (!r.data) co_return error_reply(tag, ENOMEM);
    // One worker hop (or none, in memory) for the whole batch: seek to the client's offset, then
    // getdents64 until the reply is full. Each dirent's d_off is the offset
    // of the entry after it, exactly what 9P's readdir offset means.
    const int n = co_await run_here_or_in_worker(tree_inline(*f), [&f, count, offset = m.offset, out = r.data.get()] {
        std::lock_guard lk(f->dir_mu);
        const int fd = f->open_fd.get();
        if (::lseek(fd, off_t(offset), SEEK_SET) < 0) return -errno;
        alignas(8) char buf[32 * 1024];
        uint32_t used = 0;
        for (;;) {
            const long got = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
            if (got < 0) return used > 0 ? int(used) : -errno;
            if (got == 0) return int(used);
            for (long pos = 0; pos < got;) {
                auto* d = reinterpret_cast<const struct dirent64*>(buf + pos);
                pos += d->d_reclen;
                const size_t len = std::strlen(d->d_name);
                const size_t need = kQidSize + 8 + 1 + 2 + len;
                if (used + need > count) {
                    // Full: the next call starts at this entry.
                    return used > 0 ? int(used) : -EINVAL;  // count too small for one entry
                }
                // qid[13] offset[8] type[1] name[s], straight into the reply.
                uint8_t* p = reinterpret_cast<uint8_t*>(out) + used;
                *p++ = d->d_type == DT_DIR ? kQtDir : d->d_type == DT_LNK ? kQtSymlink : kQtFile;
                p = put_le(p, 0, 4);  // qid.version
                p = put_le(p, d->d_ino, 8);
                p = put_le(p, uint64_t(d->d_off), 8);
                *p++ = d->d_type;
                p = put_le(p, len, 2);
                std::memcpy(p, d->d_name, len);
                used += uint32_t(need);
            }
        }
    });
    if (n < 0) co_return error_reply(tag, -n);
    r.data_len = uint32_t(n);
    co_return detail::data_reply(Rreaddir, tag, std::move(r));
}

Task<Reply> Session::fsync(uint16_t tag, const Fsync& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
    const int fd = f->open_fd.get();
    // On a filesystem in memory there is nothing to wait for.
    const int r = co_await run_here_or_in_worker(tree_inline(*f), [fd, data = m.datasync != 0] {
        return (data ? ::fdatasync(fd) : ::fsync(fd)) == 0 ? 0 : -errno;
    });
    co_return detail::status_reply(Rfsync, tag, r);
}

// POSIX record locks, as open file description locks on the fid's open
// file: they belong to the client's open file, not to the server process
// (classic fcntl locks would all merge into one owner, ours).
Task<Reply> Session::lock(uint16_t tag, const Lock& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
    if (m.type > kLockUnlock || m.start > uint64_t(LLONG_MAX) || m.length > uint64_t(LLONG_MAX))
        co_return error_reply(tag, EINVAL);
    const int fd = f->open_fd.get();
    // Never waits: a blocking request that conflicts gets BLOCKED, and the
    // Linux client sleeps and asks again.
    const uint8_t status = co_await run_in_worker([fd, m] {
        struct flock fl {};
        fl.l_type = short(m.type == kLockRead ? F_RDLCK : m.type == kLockWrite ? F_WRLCK : F_UNLCK);
        fl.l_whence = SEEK_SET;
        fl.l_start = off_t(m.start);
        fl.l_len = off_t(m.length);
        if (::fcntl(fd, F_OFD_SETLK, &fl) == 0) return kLockSuccess;
        return (errno == EAGAIN || errno == EACCES) ? kLockBlocked : kLockError;
    });
    co_return reply(Rlock, tag, [&](WireWriter& w) { w.u8(status); });
}

Task<Reply> Session::getlock(uint16_t tag, const Getlock& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || !f->open_fd) co_return error_reply(tag, EBADF);
    if (m.type > kLockWrite || m.start > uint64_t(LLONG_MAX) || m.length > uint64_t(LLONG_MAX))
        co_return error_reply(tag, EINVAL);
    struct flock fl {};
    fl.l_type = short(m.type == kLockRead ? F_RDLCK : F_WRLCK);
    fl.l_whence = SEEK_SET;
    fl.l_start = off_t(m.start);
    fl.l_len = off_t(m.length);
    const int fd = f->open_fd.get();
    const int r = co_await run_in_worker([fd, &fl] { return ::fcntl(fd, F_OFD_GETLK, &fl) == 0 ? 0 : -errno; });
    if (r < 0) co_return error_reply(tag, -r);
    const bool free = fl.l_type == F_UNLCK;
    co_return reply(Rgetlock, tag, [&](WireWriter& w) {
        w.u8(free ? kLockUnlock : fl.l_type == F_RDLCK ? kLockRead : kLockWrite);
        w.u64(free ? m.start : uint64_t(fl.l_start));
        w.u64(free ? m.length : uint64_t(fl.l_len));
        w.u32(free ? m.proc_id : uint32_t(fl.l_pid));
        w.str(m.client_id);
    });
}

Task<Reply> Session::xattrwalk(uint16_t tag, const Xattrwalk& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (m.newfid == m.fid || fids_.contains(m.newfid)) co_return error_reply(tag, EBADF);
    if (m.name.find('\0') != std::string_view::npos) co_return error_reply(tag, EINVAL);
    auto x = std::make_shared<Fid>();
    x->kind = Fid::Kind::xattr_read;
    x->xattr.resize(kXattrMax);
    const int fd = f->path_fd.get();
    const std::string name(m.name);
    if (mapped() && is_mapped_xattr(m.name)) co_return error_reply(tag, ENODATA);
    const ssize_t n = co_await run_in_worker([fd, &name, buf = x->xattr.data(), mapped = mapped()] {
        const std::string p = proc_path(fd);
        const ssize_t got = name.empty() ? ::listxattr(p.c_str(), reinterpret_cast<char*>(buf), kXattrMax)
                                         : ::getxattr(p.c_str(), name.c_str(), buf, kXattrMax);
        if (got < 0) return ssize_t(-errno);
        return name.empty() && mapped ? ssize_t(drop_mapped_names(buf, size_t(got))) : got;
    });
    if (n < 0) co_return error_reply(tag, int(-n));
    x->xattr.resize(size_t(n));
    x->xattr.shrink_to_fit();
    if (!put(m.newfid, x)) co_return error_reply(tag, EMFILE);
    co_return reply(Rxattrwalk, tag, [&](WireWriter& w) { w.u64(uint64_t(n)); });
}

Task<Reply> Session::xattrcreate(uint16_t tag, const Xattrcreate& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object || f->open_fd) co_return error_reply(tag, EBADF);
    if (share_.readonly) co_return error_reply(tag, EROFS);
    if (m.size > kXattrMax) co_return error_reply(tag, E2BIG);
    if (m.name.empty() || m.name.find('\0') != std::string_view::npos) co_return error_reply(tag, EINVAL);
    if (m.flags & ~uint32_t(XATTR_CREATE | XATTR_REPLACE)) co_return error_reply(tag, EINVAL);
    if (mapped() && is_mapped_xattr(m.name)) co_return error_reply(tag, EPERM);  // the model's own
    // The fid becomes a write-only attribute; clunk sets it.
    f->kind = Fid::Kind::xattr_write;
    f->xattr_name = std::string(m.name);
    f->xattr_size = m.size;
    f->xattr_flags = m.flags;
    f->xattr.reserve(size_t(m.size));
    co_return detail::empty_reply(Rxattrcreate, tag);
}

}  // namespace ioplane::fs9p
