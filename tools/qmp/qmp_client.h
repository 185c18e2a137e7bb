// A blocking QMP client over a unix or TCP socket: connects, reads the
// greeting, negotiates capabilities, then runs one command at a time. Events
// that arrive meanwhile are kept for the caller. Every wait has a deadline,
// so a server that stops answering cannot hang a script.
//
// Errors are one-line messages: the tool's only reaction to a broken
// connection or protocol is to print it and exit.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <expected>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "json_stream.h"  // monitor/: the server's splitter

namespace ioplane::qmp_tool {

using Clock = std::chrono::steady_clock;

class QmpClient {
public:
    // `address` is a socket path, or HOST:PORT ([HOST]:PORT for IPv6) if `tcp`.
    // Thread contract: single-threaded program.
    static std::expected<QmpClient, std::string> connect(const std::string& address, bool tcp,
                                                         Clock::duration timeout);

    QmpClient(QmpClient&& other) noexcept
        : fd_(std::exchange(other.fd_, -1)), next_id_(other.next_id_), splitter_(std::move(other.splitter_)), pieces_(std::move(other.pieces_)),
          events_(std::move(other.events_)) {}
    QmpClient& operator=(QmpClient&&) = delete;
    ~QmpClient();

    // Sends `command` (adding an "id" if it has none) and returns the reply
    // carrying that id. Replies without an id count as this one's: QEMU
    // answers a request it could not parse that way, and only one is in flight.
    // Thread contract: single-threaded program.
    std::expected<nlohmann::json, std::string> execute(nlohmann::json command, Clock::duration timeout);

    // Reads what the socket holds now without blocking, keeping the events:
    // for a caller that polls fd() together with other input.
    // Thread contract: single-threaded program.
    std::expected<void, std::string> read_available();

    // Events received so far, oldest first; the client forgets them.
    // Thread contract: single-threaded program.
    std::vector<nlohmann::json> take_events() { return std::exchange(events_, {}); }

    // Thread contract: single-threaded program.
    int fd() const { return fd_; }

private:
    explicit QmpClient(int fd) : fd_(fd) {}
    // The next message that is not an event, or an error at the deadline.
    std::expected<nlohmann::json, std::string> next_reply(Clock::time_point deadline);
    // The same from what is buffered; none if more must be read. Events go to events_.
    std::expected<std::optional<nlohmann::json>, std::string> pop_reply();
    std::expected<void, std::string> send(const std::string& text, Clock::time_point deadline);
    // One read() into splitter_; false when nothing was there.
    std::expected<bool, std::string> read_once();

    int fd_;
    uint64_t next_id_ = 1;
    // The server's messages, cut as the server cuts requests.
    monitor::JsonSplitter splitter_{size_t{64} << 20};
    std::deque<monitor::JsonPiece> pieces_;
    std::vector<nlohmann::json> events_;
};

}  // namespace ioplane::qmp_tool
