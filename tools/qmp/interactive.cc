#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "command_line.h"
#include "modes.h"

namespace ioplane::qmp_tool {
namespace {
using nlohmann::json;

void print_events(QmpClient& client) {
    for (const json& event : client.take_events())
        std::cout << "event: " << event.dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    std::cout.flush();
}

bool is_quit(const json& command) {
    auto name = command.find("execute");
    return name != command.end() && *name == "quit";
}
}  // namespace

ExitStatus run_interactive(QmpClient& client, const Options& options) {
    bool tty = ::isatty(STDIN_FILENO);
    std::string pending;  // stdin bytes short of a full line
    bool quit_done = false;  // the server was told to quit, so its hanging up is the expected end
    auto broken = [&](const std::string& message) {
        if (quit_done) return kSuccess;
        std::cerr << "ioplane-qmp: " << message << "\n";
        return kBroken;
    };
    if (tty) std::cout << "qmp> " << std::flush;
    for (;;) {
        // stdin is read raw, not through std::cin, so that poll() sees all of
        // it and events are printed while the user is idle.
        pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {client.fd(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return broken(std::string("poll: ") + std::strerror(errno));
        }
        if (fds[1].revents) {
            auto r = client.read_available();
            print_events(client);
            if (!r) return broken(r.error());
        }
        if (!fds[0].revents) continue;
        char buffer[4096];
        ssize_t n = ::read(STDIN_FILENO, buffer, sizeof buffer);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n < 0) return broken(std::string("read stdin: ") + std::strerror(errno));
        bool eof = n == 0;
        pending.append(buffer, size_t(n));
        if (pending.size() > (size_t{64} << 20)) return broken("input line longer than 64 MiB");
        for (size_t nl; (nl = pending.find('\n')) != pending.npos || (eof && !pending.empty());) {
            std::string line = pending.substr(0, nl);
            pending.erase(0, nl == pending.npos ? nl : nl + 1);
            if (auto words = split_words(line); words && *words == std::vector<std::string>{"exit"}) return kSuccess;
            auto command = parse_line(line);
            if (!command) {
                std::cerr << "ioplane-qmp: " << command.error() << "\n";
                continue;
            }
            if (!*command) continue;
            bool quitting = is_quit(**command);
            auto reply = client.execute(std::move(**command), options.timeout);
            print_events(client);
            if (!reply) return broken(reply.error());
            // An odd reply (neither return nor error) is reported but does not end the session.
            if (print_reply(*reply, options.raw) == kSuccess && quitting) quit_done = true;
        }
        if (eof) {
            if (tty) std::cout << std::endl;  // leave the shell's prompt on a line of its own after ^D
            return kSuccess;
        }
        if (tty) std::cout << "qmp> " << std::flush;
    }
}

}  // namespace ioplane::qmp_tool
