#include "host_fs.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include "messages.h"

namespace ioplane::fs9p {

namespace {

int openat2_beneath(int dirfd, const char* path, int flags) {
    open_how how{};
    how.flags = uint64_t(flags) | O_CLOEXEC;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    int fd;
    do {
        fd = int(::syscall(SYS_openat2, dirfd, path, &how, sizeof how));
    } while (fd < 0 && errno == EAGAIN);  // a concurrent rename: the kernel asks us to retry
    return fd < 0 ? -errno : fd;
}

}  // namespace

bool is_plain_name(std::string_view name) {
    if (name.empty() || name.size() > NAME_MAX || name == "." || name == "..") return false;
    return name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

Qid qid_of(const struct stat& st) {
    Qid q;
    q.type = S_ISDIR(st.st_mode) ? kQtDir : S_ISLNK(st.st_mode) ? kQtSymlink : kQtFile;
    q.version = 0;  // like diod: clients revalidate with getattr
    q.path = st.st_ino;
    return q;
}

int open_child(int dirfd, std::string_view name) {
    if (!is_plain_name(name)) return -EINVAL;
    const std::string n(name);
    return openat2_beneath(dirfd, n.c_str(), O_PATH | O_NOFOLLOW);
}

int open_beneath(int rootfd, const std::string& relpath) {
    return openat2_beneath(rootfd, relpath.empty() ? "." : relpath.c_str(), O_PATH | O_NOFOLLOW);
}

std::string proc_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

int stat_fd(int fd, struct stat& st) { return ::fstat(fd, &st) == 0 ? 0 : -errno; }

bool keeps_inodes_in_memory(int fd) {
    struct statfs sf;
    if (::fstatfs(fd, &sf) != 0) return false;
    switch (static_cast<unsigned long>(sf.f_type)) {
    case TMPFS_MAGIC:
    case RAMFS_MAGIC:
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC: return true;
    default: return false;
    }
}

ssize_t read_at(int fd, void* buf, size_t count, off_t off) {
    ssize_t n;
    do {
        n = ::pread(fd, buf, count, off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

ssize_t write_at(int fd, const void* buf, size_t count, off_t off) {
    ssize_t n;
    do {
        n = ::pwrite(fd, buf, count, off);
    } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

int reopen(int opath_fd, int flags) {
    struct stat st;
    if (int r = stat_fd(opath_fd, st); r < 0) return r;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return -ENXIO;
    flags &= ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW | O_PATH | O_CLOEXEC);
    // The magic link names exactly the object we hold; O_NONBLOCK keeps a
    // worker from hanging if it were a fifo after all.
    const int fd = ::open(proc_path(opath_fd).c_str(), flags | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -errno;
    struct stat now;
    if (::fstat(fd, &now) != 0 || now.st_ino != st.st_ino || now.st_dev != st.st_dev ||
        (!S_ISREG(now.st_mode) && !S_ISDIR(now.st_mode))) {
        ::close(fd);
        return -ENXIO;
    }
    if (!(flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

}  // namespace ioplane::fs9p
