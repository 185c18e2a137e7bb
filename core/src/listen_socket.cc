#include "ioplane/core/listen_socket.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>

namespace ioplane {
namespace {

// Whether a server accepts connections on the socket file: a connect that
// is refused means its process is gone. Non-blocking: a full backlog
// (EAGAIN) is a live server too, and nothing waits.
Result<bool> someone_listens(const sockaddr_un& sun) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno("socket");
    const int r = ::connect(fd, reinterpret_cast<const sockaddr*>(&sun), sizeof sun);
    const int err = r == 0 ? 0 : errno;
    ::close(fd);
    if (err == 0 || err == EAGAIN || err == EINPROGRESS) return true;
    if (err == ECONNREFUSED) return false;
    return fail(err, std::string("checking whether a server listens on '") + sun.sun_path + "'");
}

Result<std::vector<int>> listen_unix(const ListenAddress& addr) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (addr.path.empty() || addr.path.size() >= sizeof sun.sun_path)
        return fail(EINVAL, "bad unix socket path '" + addr.path + "'");
    std::strcpy(sun.sun_path, addr.path.c_str());
    // A socket left behind by a process that is gone is replaced; one a live
    // server listens on is not taken over, nor is anything else.
    struct stat st;
    if (::lstat(addr.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
        if (auto live = someone_listens(sun); !live) return std::unexpected(live.error());
        else if (*live) return fail(EADDRINUSE, "unix socket '" + addr.path + "' is in use by a running server");
        ::unlink(addr.path.c_str());
    }
    if (::lstat(addr.path.c_str(), &st) == 0) return fail(EADDRINUSE, "'" + addr.path + "' exists");
    // The socket listens under a temporary name and then takes its own: a
    // client that sees the path can connect (bind() makes the file before
    // listen() accepts; clients that wait for the file would be refused in
    // between).
    std::string temp = addr.path + "." + std::to_string(::getpid()) + ".tmp";
    if (temp.size() >= sizeof sun.sun_path) temp.clear();  // too long: bind under the name itself
    if (!temp.empty()) std::strcpy(sun.sun_path, temp.c_str());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno("socket");
    if (!temp.empty()) ::unlink(temp.c_str());  // left by a process of the same pid
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) < 0 || ::listen(fd, 128) < 0 ||
        (!temp.empty() && ::rename(temp.c_str(), addr.path.c_str()) < 0)) {
        auto e = fail_errno("listening on '" + addr.path + "'");
        ::close(fd);
        if (!temp.empty()) ::unlink(temp.c_str());
        return std::unexpected(e.error());
    }
    return std::vector<int>{fd};
}

// A socket handed over by whoever started us (QEMU's addr.type=fd): it must
// already listen, as the spec's example makes it.
Result<std::vector<int>> listen_inherited(const ListenAddress& addr) {
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(addr.fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return fail_errno("fd " + std::to_string(addr.fd) + " is not an open socket");
    len = sizeof listening;
    if (type != SOCK_STREAM || ::getsockopt(addr.fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
        return fail(EINVAL, "fd " + std::to_string(addr.fd) + " is not a listening stream socket");
    if (::fcntl(addr.fd, F_SETFL, ::fcntl(addr.fd, F_GETFL) | O_NONBLOCK) != 0 ||
        ::fcntl(addr.fd, F_SETFD, FD_CLOEXEC) != 0)
        return fail_errno("fd " + std::to_string(addr.fd));
    return std::vector<int>{addr.fd};
}

Result<std::vector<int>> listen_inet(const ListenAddress& addr) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    addrinfo* res = nullptr;
    const char* host = addr.host.empty() ? nullptr : addr.host.c_str();
    if (int e = getaddrinfo(host, addr.port.c_str(), &hints, &res); e != 0)
        return fail(EINVAL, "address '" + describe(addr) + "': " + gai_strerror(e));
    std::vector<int> fds;
    Result<void> last = fail(EADDRNOTAVAIL, "no usable address for '" + describe(addr) + "'");
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
        int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) continue;
        int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        // Each family gets its own socket, so both can bind the same port.
        if (ai->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (::bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || ::listen(fd, 128) < 0) {
            last = fail_errno("listening on " + describe(addr));
            ::close(fd);
            continue;
        }
        fds.push_back(fd);
    }
    freeaddrinfo(res);
    if (fds.empty()) return std::unexpected(last.error());
    return fds;
}

}  // namespace

Result<std::vector<int>> listen_on(const ListenAddress& addr) {
    switch (addr.type) {
        case ListenAddress::Type::unix_socket: return listen_unix(addr);
        case ListenAddress::Type::inet: return listen_inet(addr);
        case ListenAddress::Type::fd: return listen_inherited(addr);
    }
    return fail(EINVAL, "unknown address type");
}

void stop_listening(const ListenAddress& addr, std::vector<int>& fds) {
    for (int fd : fds) ::close(fd);
    if (addr.type == ListenAddress::Type::unix_socket && !fds.empty()) ::unlink(addr.path.c_str());
    fds.clear();
}

ListenAddress bound_address(const ListenAddress& addr) {
    if (addr.type != ListenAddress::Type::fd) return addr;
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(addr.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return addr;
    ListenAddress out;
    if (ss.ss_family == AF_UNIX) {
        const auto* sun = reinterpret_cast<const sockaddr_un*>(&ss);
        if (len <= offsetof(sockaddr_un, sun_path) || sun->sun_path[0] == '\0') return addr;  // unnamed, abstract
        out.path.assign(sun->sun_path, strnlen(sun->sun_path, len - offsetof(sockaddr_un, sun_path)));
        return out;
    }
    char host[NI_MAXHOST] = "", port[NI_MAXSERV] = "";
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return addr;
    out.type = ListenAddress::Type::inet;
    out.host = host;
    out.port = port;
    return out;
}

std::string describe(const ListenAddress& addr) {
    if (addr.type == ListenAddress::Type::unix_socket) return "unix:" + addr.path;
    if (addr.type == ListenAddress::Type::fd) return "fd:" + std::to_string(addr.fd);
    return (addr.host.find(':') != std::string::npos ? "[" + addr.host + "]" : addr.host) + ":" + addr.port;
}

namespace {

std::string describe_peer(const sockaddr_storage& ss) {
    char host[NI_MAXHOST] = "", port[NI_MAXSERV] = "";
    if (ss.ss_family == AF_UNIX) return "unix";
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&ss), sizeof ss, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return "?";
    return std::string(host) + ":" + port;
}

}  // namespace

int accept_client(int listen_fd, std::string& peer) {
    for (;;) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED)) continue;
        if (fd >= 0) peer = describe_peer(ss);
        return fd;
    }
}

}  // namespace ioplane
