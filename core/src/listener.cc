#include "ioplane/core/listener.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "ioplane/core/log.h"

namespace ioplane {

Listener::Listener(AioContext& ctx, ListenAddress addr, std::string who, OnClient on_client)
    : ctx_(ctx), addr_(std::move(addr)), who_(std::move(who)), on_client_(std::move(on_client)),
      pause_(ctx, [this] { watch(true); }) {}

Result<std::unique_ptr<Listener>> Listener::start(AioContext& ctx, ListenAddress addr, std::string who,
                                                  OnClient on_client) {
    std::unique_ptr<Listener> l(new Listener(ctx, std::move(addr), std::move(who), std::move(on_client)));
    auto fds = listen_on(l->addr_);
    if (!fds) return fail(fds.error().code, l->who_ + ": " + fds.error().message);
    l->fds_ = std::move(*fds);
    for (int fd : l->fds_) {
        if (auto r = ctx.set_fd_handler(fd, {.on_read = [p = l.get(), fd] { p->on_acceptable(fd); }}); !r)
            return std::unexpected(r.error());  // the destructor unregisters and closes
    }
    return l;
}

Listener::~Listener() {
    for (int fd : fds_) ctx_.remove_fd_handler(fd);
    stop_listening(addr_, fds_);
}

void Listener::watch(bool on) {
    for (int fd : fds_) (void)ctx_.set_fd_events(fd, on ? uint32_t(kFdRead) : 0u);
}

void Listener::on_acceptable(int listen_fd) {
    for (;;) {
        std::string peer;
        const int fd = accept_client(listen_fd, peer);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                LOG_WARN("%s: accept: %s; pausing for 100 ms", who_.c_str(), strerror(errno));
                watch(false);
                pause_.arm_in(100'000'000);
            } else if (errno != EAGAIN) {
                LOG_WARN("%s: accept: %s", who_.c_str(), strerror(errno));
            }
            return;
        }
        if (peer != "unix") {
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        on_client_(fd, std::move(peer));
    }
}

}  // namespace ioplane
