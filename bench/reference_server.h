// What the benchmarks' reference servers share: a blocking listening socket
// made by the daemon's own listen_on(), stop signals that interrupt a
// blocking accept(), and the accept loop.
//
// Thread contract: install_stop_signals() and listen_blocking() in main()
// before any thread starts; accept_until_stopped() in the main thread.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "ioplane/core/listen_socket.h"

namespace ioplane::bench {

inline volatile sig_atomic_t g_stop = 0;

// The block servers' command line, PROGRAM SOCKET_PATH [SIZE_BYTES]: false
// after printing the usage; `size` is left alone when not given.
inline bool parse_socket_and_size(int argc, char** argv, const char*& path, uint64_t& size) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: %s SOCKET_PATH [SIZE_BYTES]\n", argv[0]);
        return false;
    }
    path = argv[1];
    if (argc == 3) size = std::strtoull(argv[2], nullptr, 0);
    return true;
}

// SIGTERM and SIGINT set g_stop; without SA_RESTART they also make the
// blocking accept() (and recvmsg()) of the main thread return EINTR.
// SIGPIPE is ignored: a vanished client is an EPIPE.
inline void install_stop_signals() {
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_stop = 1; };
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
}

// The first listening fd for `addr`, switched to blocking (the reference
// servers block in accept()), or -1 after printing why.
inline int listen_blocking(const ListenAddress& addr, const char* who) {
    auto fds = listen_on(addr);
    if (!fds) {
        std::fprintf(stderr, "%s: %s\n", who, fds.error().describe().c_str());
        return -1;
    }
    for (size_t i = 1; i < fds->size(); i++) ::close((*fds)[i]);
    const int fd = fds->front();
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

// Accepts clients (blocking, close-on-exec) until a stop signal, calling
// serve(fd) for each; then closes `lfd` and removes a unix socket's path.
template <class Serve>
void accept_until_stopped(const ListenAddress& addr, int lfd, Serve serve) {
    while (!g_stop) {
        const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            std::perror("accept");
            break;
        }
        serve(fd);
    }
    ::close(lfd);
    if (addr.type == ListenAddress::Type::unix_socket) ::unlink(addr.path.c_str());
}

}  // namespace ioplane::bench
