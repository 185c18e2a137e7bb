// Handlers that change the tree or an object's metadata: mkdir, symlink,
// mknod, link, rename, renameat, unlinkat, remove, setattr, and readlink.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "host_fs.h"
#include "ioplane/core/run_in_worker.h"
#include "session.h"
#include "session_reply.h"

namespace ioplane::fs9p {

using detail::reply;

namespace {

// mapped-xattr: a regular file of the daemon's, with `content`, stands for
// what the client made (a symlink: its target; a device node, fifo or
// socket: nothing).
int make_mapped_file(int dir, const char* name, std::string_view content) {
    const int fd = ::openat(dir, name, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, kMappedFileMode);
    if (fd < 0) return -errno;
    const ssize_t n = content.empty() ? 0 : ::write(fd, content.data(), content.size());
    const int rc = n == ssize_t(content.size()) ? 0 : n < 0 ? -errno : -EIO;
    ::close(fd);
    return rc;
}

// The fid of a directory to change, or an errno.
int check_dir(const FidRef& d, bool readonly) {
    if (!d || d->kind != Fid::Kind::object) return EBADF;
    if (!d->is_dir()) return ENOTDIR;
    return readonly ? EROFS : 0;
}

}  // namespace

template <class Make>
Task<Reply> Session::create_in(uint16_t tag, uint8_t rtype, uint32_t dfid, std::string_view name, uint32_t gid,
                               mode_t client_mode, dev_t rdev, Make make) {
    FidRef d = find(dfid);
    if (int e = check_dir(d, share_.readonly)) co_return error_reply(tag, e);
    if (!is_plain_name(name)) co_return error_reply(tag, EINVAL);
    struct stat st;
    const int dir = d->path_fd.get();
    const std::string n(name);
    const int r = co_await run_here_or_in_worker(tree_inline(*d), [&, dir, uid = d->uid, model = share_.security_model] {
        if (int rc = make(dir, n.c_str()); rc < 0) return rc;
        const int fd = open_child(dir, n);
        if (fd < 0) return fd;
        if (model == SecurityModel::mapped_xattr) {
            const MappedAttrs a{.uid = uid, .gid = gid, .mode = client_mode,
                                .rdev = rdev != 0 ? std::optional<uint64_t>(rdev) : std::nullopt};
            if (int rc = store_mapped(fd, a); rc < 0) {
                // Not left behind looking like the daemon's own file.
                ::close(fd);
                ::unlinkat(dir, n.c_str(), S_ISDIR(client_mode) ? AT_REMOVEDIR : 0);
                return rc;
            }
        } else if (::geteuid() == 0) {
            (void)::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
        }
        const int rc = stat_for_client(fd, st, model);
        ::close(fd);
        return rc;
    });
    if (r < 0) co_return error_reply(tag, -r);
    co_return detail::qid_reply(rtype, tag, qid_of(st));
}

Task<Reply> Session::mkdir(uint16_t tag, const Mkdir& m) {
    const mode_t mode = m.mode & 07777;
    const mode_t host_mode = mapped() ? kMappedDirMode : mode;
    return create_in(tag, Rmkdir, m.dfid, m.name, m.gid, S_IFDIR | mode, 0, [host_mode](int dir, const char* name) {
        return ::mkdirat(dir, name, host_mode) == 0 ? 0 : -errno;
    });
}

Task<Reply> Session::symlink(uint16_t tag, const Symlink& m) {
    // The target is only a string to us: it is never followed here.
    if (m.target.empty() || m.target.size() >= PATH_MAX || m.target.find('\0') != std::string_view::npos)
        co_return error_reply(tag, EINVAL);
    // A named local, not a temporary in the co_await (see run_in_worker.h).
    const std::string target(m.target);
    auto make = [&target, mapped = mapped()](int dir, const char* name) {
        if (mapped) return make_mapped_file(dir, name, target);
        return ::symlinkat(target.c_str(), dir, name) == 0 ? 0 : -errno;
    };
    co_return co_await create_in(tag, Rsymlink, m.fid, m.name, m.gid, S_IFLNK | 0777, 0, make);
}

Task<Reply> Session::mknod(uint16_t tag, const Mknod& m) {
    const mode_t type = m.mode & S_IFMT;
    const mode_t mode = m.mode & (S_IFMT | 07777);
    if (mapped()) {
        if (type != S_IFREG && type != S_IFIFO && type != S_IFCHR && type != S_IFBLK && type != S_IFSOCK)
            co_return error_reply(tag, EINVAL);
        // Any type: on the host it is a plain file of the daemon's.
        const dev_t rdev = (type == S_IFCHR || type == S_IFBLK) ? makedev(m.major, m.minor) : 0;
        co_return co_await create_in(tag, Rmknod, m.dfid, m.name, m.gid, mode, rdev,
                                     [](int dir, const char* name) { return make_mapped_file(dir, name, {}); });
    }
    // Regular files and fifos only: a device node made by a client would
    // give it the host's devices.
    if (type != S_IFREG && type != S_IFIFO) co_return error_reply(tag, EPERM);
    co_return co_await create_in(tag, Rmknod, m.dfid, m.name, m.gid, mode, 0, [mode](int dir, const char* name) {
        return ::mknodat(dir, name, mode, 0) == 0 ? 0 : -errno;
    });
}

Task<Reply> Session::readlink(uint16_t tag, const Readlink& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (f->qid.type != kQtSymlink) co_return error_reply(tag, EINVAL);  // as readlink(2)
    std::string target(PATH_MAX, '\0');
    const int fd = f->path_fd.get();
    const ssize_t n = co_await run_here_or_in_worker(tree_inline(*f), [fd, &target, mapped = mapped()] {
        ssize_t got = ::readlinkat(fd, "", target.data(), target.size());
        // A file holding the target (mapped-xattr): readlinkat(fd, "") says
        // ENOENT for an object that is not a symlink.
        if (got < 0 && (errno == ENOENT || errno == EINVAL) && mapped) {
            const int file = reopen(fd, O_RDONLY);
            if (file < 0) return ssize_t(file);
            got = ::read(file, target.data(), target.size());
            ::close(file);
        }
        return got < 0 ? ssize_t(-errno) : got;
    });
    if (n < 0) co_return error_reply(tag, int(-n));
    target.resize(size_t(n));
    co_return reply(Rreadlink, tag, [&](WireWriter& w) { w.str(target); });
}

Task<Reply> Session::link(uint16_t tag, const Link& m) {
    FidRef d = find(m.dfid);
    FidRef f = find(m.fid);
    if (int e = check_dir(d, share_.readonly)) co_return error_reply(tag, e);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (!is_plain_name(m.name)) co_return error_reply(tag, EINVAL);
    const int dir = d->path_fd.get();
    const int obj = f->path_fd.get();
    const std::string name(m.name);
    const int r = co_await run_here_or_in_worker(tree_inline(*d) && tree_inline(*f), [dir, obj, &name] {
        // Through /proc: linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH.
        return ::linkat(AT_FDCWD, proc_path(obj).c_str(), dir, name.c_str(), AT_SYMLINK_FOLLOW) == 0 ? 0 : -errno;
    });
    co_return detail::status_reply(Rlink, tag, r);
}

Task<Reply> Session::rename(uint16_t tag, const Rename& m) {
    FidRef f = find(m.fid);
    FidRef d = find(m.dfid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (int e = check_dir(d, share_.readonly)) co_return error_reply(tag, e);
    if (!is_plain_name(m.name)) co_return error_reply(tag, EINVAL);
    if (f->path.empty()) co_return error_reply(tag, EBUSY);  // the root
    const std::string from = f->path;
    const std::string to = detail::join_path(d->path, m.name);
    const int root = share_.root_fd;
    const int dir = d->path_fd.get();
    const std::string name(m.name);
    const int r = co_await run_in_worker([root, dir, &from, &name] {
        const int old_dir = open_beneath(root, detail::parent_path(from));
        if (old_dir < 0) return old_dir;
        const int rc = ::renameat(old_dir, detail::base_name(from).c_str(), dir, name.c_str()) == 0 ? 0 : -errno;
        ::close(old_dir);
        return rc;
    });
    if (r == 0) rename_paths(from, to);
    co_return detail::status_reply(Rrename, tag, r);
}

Task<Reply> Session::renameat(uint16_t tag, const Renameat& m) {
    FidRef od = find(m.olddirfid);
    FidRef nd = find(m.newdirfid);
    if (int e = check_dir(od, share_.readonly)) co_return error_reply(tag, e);
    if (int e = check_dir(nd, share_.readonly)) co_return error_reply(tag, e);
    if (!is_plain_name(m.oldname) || !is_plain_name(m.newname)) co_return error_reply(tag, EINVAL);
    const int from_dir = od->path_fd.get();
    const int to_dir = nd->path_fd.get();
    const std::string o(m.oldname), n(m.newname);
    const int r = co_await run_here_or_in_worker(tree_inline(*od) && tree_inline(*nd), [from_dir, to_dir, &o, &n] {
        return ::renameat(from_dir, o.c_str(), to_dir, n.c_str()) == 0 ? 0 : -errno;
    });
    if (r == 0) rename_paths(detail::join_path(od->path, m.oldname), detail::join_path(nd->path, m.newname));
    co_return detail::status_reply(Rrenameat, tag, r);
}

Task<Reply> Session::unlinkat(uint16_t tag, const Unlinkat& m) {
    FidRef d = find(m.dirfid);
    if (int e = check_dir(d, share_.readonly)) co_return error_reply(tag, e);
    if (!is_plain_name(m.name)) co_return error_reply(tag, EINVAL);
    if (m.flags & ~uint32_t(AT_REMOVEDIR)) co_return error_reply(tag, EINVAL);
    const int dir = d->path_fd.get();
    const std::string name(m.name);
    const int r = co_await run_here_or_in_worker(tree_inline(*d), [dir, &name, flags = int(m.flags)] {
        return ::unlinkat(dir, name.c_str(), flags) == 0 ? 0 : -errno;
    });
    co_return detail::status_reply(Runlinkat, tag, r);
}

Task<Reply> Session::remove(uint16_t tag, const Remove& m) {
    auto it = fids_.find(m.fid);
    if (it == fids_.end()) co_return error_reply(tag, EBADF);
    FidRef f = std::move(it->second);
    forget_fid(it);  // clunked even if the removal fails (remove(5))
    if (f->kind != Fid::Kind::object) co_return error_reply(tag, EINVAL);
    if (share_.readonly) co_return error_reply(tag, EROFS);
    if (f->path.empty()) co_return error_reply(tag, EBUSY);
    const int root = share_.root_fd;
    const int r = co_await run_in_worker([root, &f, dir = f->is_dir()] {
        const std::string& path = f->path;
        const int parent = open_beneath(root, detail::parent_path(path));
        if (parent < 0) return parent;
        const int rc = ::unlinkat(parent, detail::base_name(path).c_str(), dir ? AT_REMOVEDIR : 0) == 0 ? 0 : -errno;
        ::close(parent);
        return rc;
    });
    co_return detail::status_reply(Rremove, tag, r);
}

Task<Reply> Session::setattr(uint16_t tag, const Setattr& m) {
    FidRef f = find(m.fid);
    if (!f || f->kind != Fid::Kind::object) co_return error_reply(tag, EBADF);
    if (share_.readonly) co_return error_reply(tag, EROFS);
    if ((m.valid & kSetattrSize) && m.size > uint64_t(LLONG_MAX)) co_return error_reply(tag, EINVAL);
    const int fd = f->path_fd.get();
    const int r = co_await run_here_or_in_worker(tree_inline(*f), [fd, m, model = share_.security_model] {
        const std::string p = proc_path(fd);
        if (model == SecurityModel::mapped_xattr) {
            // Owner and mode as the client sees them, never the host's.
            MappedAttrs a;
            if (m.valid & kSetattrMode) {
                struct stat st;
                if (int rc = stat_for_client(fd, st, model); rc < 0) return rc;
                a.mode = (st.st_mode & S_IFMT) | (m.mode & 07777);
            }
            if (m.valid & kSetattrUid) a.uid = m.uid;
            if (m.valid & kSetattrGid) a.gid = m.gid;
            if (int rc = store_mapped(fd, a); rc < 0) return rc;
        } else {
            if ((m.valid & kSetattrMode) && ::chmod(p.c_str(), m.mode & 07777) != 0) return -errno;
            if (m.valid & (kSetattrUid | kSetattrGid)) {
                const uid_t uid = (m.valid & kSetattrUid) ? m.uid : uid_t(-1);
                const gid_t gid = (m.valid & kSetattrGid) ? m.gid : gid_t(-1);
                // `none`: a change of owner the host refuses is not the client's error.
                if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 &&
                    model != SecurityModel::none)
                    return -errno;
            }
        }
        if (m.valid & kSetattrSize) {
            struct stat st;
            if (int rc = stat_fd(fd, st); rc < 0) return rc;
            if (!S_ISREG(st.st_mode)) return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
            if (::truncate(p.c_str(), off_t(m.size)) != 0) return -errno;
        }
        if (m.valid & (kSetattrAtime | kSetattrMtime)) {
            // A time without its _SET bit means "now", as utimensat says it.
            auto pick = [&](uint32_t bit, uint32_t set_bit, uint64_t sec, uint64_t nsec) {
                timespec t{0, UTIME_OMIT};
                if (m.valid & bit) t = (m.valid & set_bit) ? timespec{time_t(sec), long(nsec)} : timespec{0, UTIME_NOW};
                return t;
            };
            const timespec times[2] = {pick(kSetattrAtime, kSetattrAtimeSet, m.atime_sec, m.atime_nsec),
                                       pick(kSetattrMtime, kSetattrMtimeSet, m.mtime_sec, m.mtime_nsec)};
            if (::utimensat(AT_FDCWD, p.c_str(), times, 0) != 0) return -errno;
        }
        return 0;
    });
    co_return detail::status_reply(Rsetattr, tag, r);
}

}  // namespace ioplane::fs9p
