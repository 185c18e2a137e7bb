// QmpClient: one connection to a monitor. A reader coroutine splits the
// input into requests and handles them in order (a response is queued before
// the next request is read); a writer coroutine sends the queued responses
// and events. The client ends when the input ends and the queue is sent, or
// when the connection fails or is closed.
//
// Thread contract: main thread, under the BQL, for every member.
#pragma once

#include <memory>
#include <string>

#include "ioplane/core/async_fd.h"
#include "json_stream.h"
#include "qmp_server.h"

namespace ioplane::monitor {

class QmpClient {
public:
    // A client whose output queue grows past this is not reading: it is
    // disconnected rather than allowed to grow the daemon without bound.
    static constexpr size_t kMaxPendingOutput = 16 << 20;

    // in_fd and out_fd may be the same (a socket). `owns_fds`: close them at
    // the end (sockets) or leave them (stdio, made blocking again).
    QmpClient(QmpMonitor& monitor, QmpDispatcher& dispatcher, int in_fd, int out_fd, bool owns_fds,
              std::string peer, bool pretty);
    ~QmpClient();
    QmpClient(const QmpClient&) = delete;
    QmpClient& operator=(const QmpClient&) = delete;

    // Sends the greeting and starts reading.
    Result<void> start(AioContext& ctx);
    const std::string& peer() const { return peer_; }
    // Whether capabilities negotiation is done (events go only to such clients).
    bool in_command_mode() const { return command_mode_; }
    // Whether its monitor has pretty=on.
    bool pretty() const { return pretty_; }

    // Queues one text for sending (dropped once the client is closing).
    void send(std::string text);
    // Writes what is queued if the socket takes it without waiting: the last
    // words (the shutdown's events, quit's response) before the daemon closes
    // the connection.
    void flush_without_waiting();
    // Ends the connection: both coroutines stop; queued output is dropped.
    void close();

private:
    Task<void> read_loop();
    Task<void> write_loop();
    // One non-blocking write from the queue; false if nothing went out.
    bool write_some_now();
    Task<void> handle(std::string_view text);
    QmpResult negotiate(const QmpRequest& request);
    void coroutine_ended();

    QmpMonitor& monitor_;
    QmpDispatcher& dispatcher_;
    const int in_fd_, out_fd_;
    const bool owns_fds_;
    const std::string peer_;
    const bool pretty_;
    std::unique_ptr<AsyncFd> in_, out_afd_;  // out_afd_ only when out_fd_ != in_fd_
    JsonSplitter splitter_;
    std::string pending_;  // queued output not yet handed to the writer
    bool command_mode_ = false;
    bool closing_ = false;
    bool writing_ = false;  // the writer coroutine runs
    int coroutines_ = 0;
};

}  // namespace ioplane::monitor
