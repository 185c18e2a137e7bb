// The host side of a 9P export: blocking system calls that never leave the
// export's directory tree, whatever the client sends and whatever the host
// does meanwhile. Lessons from the CVEs of QEMU's virtio-9p and virtiofsd:
//
//  - Every object a fid names is held as an O_PATH fd, taken when the client
//    walks to it, one component at a time, with openat2(RESOLVE_BENEATH |
//    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): a name is never resolved
//    through a symlink, so a directory swapped for a symlink mid-walk gives
//    ELOOP, not the symlink's target. A walk to a symlink gives the symlink
//    itself (the client reads it and resolves it in its own namespace).
//  - Names from the client are single components: non-empty, no '/', not
//    "." or ".." (".." in a walk is handled by the server, by path).
//  - Opening for I/O re-opens the O_PATH fd through /proc/self/fd, and only
//    regular files and directories, never a device node, fifo or socket; the
//    open is non-blocking, so a fifo swapped in cannot hang a worker, and
//    the opened file is checked again.
//  - Metadata changes use the O_PATH fd (fchownat AT_EMPTY_PATH, *at() with
//    the fd as directory) or its /proc/self/fd path, never a path string.
//
// Thread contract: every function is a synchronous system call wrapper for a
// worker thread (or any thread); errors are negative errno values.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "wire.h"

namespace ioplane::fs9p {

// A single path component a client may name.
bool is_plain_name(std::string_view name);

Qid qid_of(const struct stat& st);

// O_PATH fd of `name` in directory `dirfd` (which is beneath the root),
// never following a symlink; or -errno.
int open_child(int dirfd, std::string_view name);
// O_PATH fd of `relpath` ("" for the root itself) beneath `rootfd`, with no
// symlink anywhere on the way; or -errno.
int open_beneath(int rootfd, const std::string& relpath);

// An fd for I/O on the object of `opath_fd` with open(2) `flags` (O_CREAT,
// O_EXCL, O_NOCTTY, O_NOFOLLOW and O_PATH are dropped), if it is a regular
// file or a directory; -ENXIO for anything else; or -errno.
int reopen(int opath_fd, int flags);

// "/proc/self/fd/N", for the calls that have no fd form for O_PATH fds
// (chmod, truncate, utimensat, xattrs, linkat).
std::string proc_path(int fd);

// fstat, or -errno.
int stat_fd(int fd, struct stat& st);

// Whether the filesystem of `fd` never waits for a device or a network to
// fstat an object held open (its inode stays in memory while an fd pins
// it): tmpfs, ramfs and the local disk filesystems. Unknown ones (network,
// FUSE, overlays of them) answer false.
bool keeps_inodes_in_memory(int fd);

// One pread/pwrite, retried on EINTR; bytes transferred (maybe short) or -errno.
ssize_t read_at(int fd, void* buf, size_t count, off_t off);
ssize_t write_at(int fd, const void* buf, size_t count, off_t off);

}  // namespace ioplane::fs9p
