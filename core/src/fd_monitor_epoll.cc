// epoll backend of FdMonitor. Level-triggered: a handler that leaves data
// unread is called again next iteration, which is what the loop's callers
// (and the re-entrancy deferral) expect.
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <climits>

#include <cstring>

#include "ioplane/core/fd_monitor.h"
#include "ioplane/core/log.h"

namespace ioplane {
namespace {

uint32_t to_epoll(uint32_t events) {
    uint32_t e = 0;
    if (events & kFdRead) e |= EPOLLIN | EPOLLRDHUP;
    if (events & kFdWrite) e |= EPOLLOUT;
    return e;
}

uint32_t from_epoll(uint32_t e) {
    uint32_t events = 0;
    if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) events |= kFdRead;
    if (e & EPOLLOUT) events |= kFdWrite;
    if (e & (EPOLLERR | EPOLLHUP)) events |= kFdError;
    return events;
}

class EpollMonitor final : public FdMonitor {
public:
    explicit EpollMonitor(int epfd) : epfd_(epfd) {}
    ~EpollMonitor() override { ::close(epfd_); }
    const char* name() const override { return "epoll"; }

    Result<void> add(int fd, uint32_t events, void* token) override {
        return control(EPOLL_CTL_ADD, fd, events, token);
    }
    Result<void> modify(int fd, uint32_t events, void* token) override {
        return control(EPOLL_CTL_MOD, fd, events, token);
    }
    void remove(int fd) override {
        // Fails only if the fd was closed first: then a dup of it could still
        // deliver events for a freed handler. Callers remove before closing.
        if (::epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr) < 0)
            LOG_ERROR("epoll: removing fd %d: %s (closed before its handler was removed?)", fd, strerror(errno));
    }

    size_t wait(std::span<ReadyFd> out, int64_t timeout_ns) override {
        epoll_event events[128];
        int max = int(std::min<size_t>(out.size(), std::size(events)));
        int n = wait_kernel(events, max, timeout_ns);
        for (int i = 0; i < n; i++) out[i] = ReadyFd{events[i].data.ptr, from_epoll(events[i].events)};
        return n < 0 ? 0 : size_t(n);
    }

private:
    Result<void> control(int op, int fd, uint32_t events, void* token) {
        epoll_event ev{};
        ev.events = to_epoll(events);
        ev.data.ptr = token;
        if (::epoll_ctl(epfd_, op, fd, &ev) < 0) return fail_errno("epoll_ctl");
        return {};
    }

    // epoll_pwait2 takes nanoseconds (Linux 5.11); older kernels get
    // epoll_wait with the timeout rounded up to whole milliseconds, so a timer
    // never fires early.
    int wait_kernel(epoll_event* events, int max, int64_t timeout_ns) {
        if (have_pwait2_) {
            timespec ts{timeout_ns / 1'000'000'000, timeout_ns % 1'000'000'000};
            int n = ::epoll_pwait2(epfd_, events, max, timeout_ns < 0 ? nullptr : &ts, nullptr);
            if (n >= 0 || errno != ENOSYS) return n;
            have_pwait2_ = false;
        }
        int ms = -1;
        if (timeout_ns >= 0) ms = int(std::min<int64_t>((timeout_ns + 999'999) / 1'000'000, INT_MAX));
        return ::epoll_wait(epfd_, events, max, ms);
    }

    int epfd_;
    bool have_pwait2_ = true;
};

}  // namespace

Result<std::unique_ptr<FdMonitor>> make_epoll_monitor() {
    int epfd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) return fail_errno("epoll_create1");
    return std::unique_ptr<FdMonitor>(new EpollMonitor(epfd));
}

}  // namespace ioplane
