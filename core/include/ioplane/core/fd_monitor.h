// FdMonitor: the kernel interface that tells an AioContext which fds are
// ready. A small backend interface (Seastar's reactor_backend habit) so that an
// io_uring backend can sit beside epoll later without touching the loop.
//
// Thread contract: home context only (the AioContext that owns it).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "ioplane/core/error.h"

namespace ioplane {

enum FdEvents : uint32_t {
    kFdRead = 1u << 0,
    kFdWrite = 1u << 1,
    kFdError = 1u << 2,  // reported even when not asked for
};

struct ReadyFd {
    void* token;      // what was registered with the fd
    uint32_t events;  // FdEvents
};

class FdMonitor {
public:
    virtual ~FdMonitor() = default;
    virtual const char* name() const = 0;

    // Starts, changes or stops watching `fd`. `events == 0` keeps the fd
    // registered but silent. Errors (EBADF, ENOMEM, EPERM for regular files)
    // are returned; the monitor is unchanged then.
    virtual Result<void> add(int fd, uint32_t events, void* token) = 0;
    virtual Result<void> modify(int fd, uint32_t events, void* token) = 0;
    virtual void remove(int fd) = 0;

    // Waits until a watched fd is ready or `timeout_ns` passes (-1: forever,
    // 0: just look). Returns how many entries of `out` were filled.
    virtual size_t wait(std::span<ReadyFd> out, int64_t timeout_ns) = 0;
};

// Any thread. The epoll backend (level-triggered).
Result<std::unique_ptr<FdMonitor>> make_epoll_monitor();

}  // namespace ioplane
