// Listening stream sockets for the daemon's servers (NBD, QMP monitors, 9P):
// a unix socket path or a TCP host:port, non-blocking and close-on-exec,
// ready for accept4() from an fd handler.
//
// Thread contract: any thread; the functions are synchronous system calls.
#pragma once

#include <sys/socket.h>

#include <string>
#include <vector>

#include "ioplane/core/error.h"

namespace ioplane {

struct ListenAddress {
    enum class Type { unix_socket, inet, fd };
    Type type = Type::unix_socket;
    std::string path;  // unix_socket
    std::string host;  // inet; empty: every local address
    std::string port;  // inet: a number or a service name
    int fd = -1;       // fd: a listening socket the daemon inherited (its user owns it from then on)
};

// Any thread. What an inherited socket (Type::fd) is bound to, as a unix or
// inet address (for URIs to show); any other address as it is.
ListenAddress bound_address(const ListenAddress& addr);

// Any thread. Binds and listens. A unix socket left behind by an earlier run
// is replaced (anything else at the path is not); an inet address may give
// several fds (IPv4 and IPv6); an inherited fd must be a listening stream
// socket, and is made non-blocking and close-on-exec. Errors name the
// address.
Result<std::vector<int>> listen_on(const ListenAddress& addr);

// Any thread. Closes the fds and removes the unix socket's path.
void stop_listening(const ListenAddress& addr, std::vector<int>& fds);

// Any thread. "unix:PATH" or "HOST:PORT", for log lines and messages.
std::string describe(const ListenAddress& addr);

// Any thread. Accepts one pending client, non-blocking and close-on-exec,
// retrying EINTR and ECONNABORTED; sets `peer` to its address ("unix" or
// "HOST:PORT"). -1 with errno set when none is pending (EAGAIN) or on error.
int accept_client(int listen_fd, std::string& peer);

}  // namespace ioplane
