// Listener: a listening socket (or two, for IPv4 and IPv6) watched in one
// AioContext, handing each accepted client to a callback. Shared by the
// NBD server, the QMP monitors and the 9P exports.
//
// When the process runs out of fds (EMFILE and friends) the client stays in
// the backlog and the socket stays readable; the listener then stops
// watching for 100 ms instead of spinning the loop.
//
// Thread contract: home context of `ctx` for every member (created and
// destroyed there too).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/listen_socket.h"
#include "ioplane/core/timer.h"

namespace ioplane {

class Listener {
public:
    // `fd` is non-blocking and close-on-exec, and TCP_NODELAY for TCP
    // clients; the callback owns it. `peer` is "unix" or "HOST:PORT".
    using OnClient = std::function<void(int fd, std::string peer)>;

    // Listens on `addr`; `who` starts log lines and errors ("nbd-server").
    static Result<std::unique_ptr<Listener>> start(AioContext& ctx, ListenAddress addr, std::string who,
                                                   OnClient on_client);
    // Stops watching, closes the sockets and removes a unix socket's path.
    ~Listener();
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    const ListenAddress& address() const { return addr_; }

private:
    Listener(AioContext& ctx, ListenAddress addr, std::string who, OnClient on_client);
    void on_acceptable(int listen_fd);
    void watch(bool on);

    AioContext& ctx_;
    const ListenAddress addr_;
    const std::string who_;
    OnClient on_client_;
    std::vector<int> fds_;
    Timer pause_;  // re-enables accepting after running out of fds
};

}  // namespace ioplane
