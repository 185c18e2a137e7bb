// One 9P client connection: reads messages, runs each request as its own
// coroutine in the export's context (Session), and sends the replies
// through a BatchedWriter (whole, in the order they are ready; those ready
// in one loop iteration in one system call).
//
// Bad input ends this connection only: a size field below the header or
// above the negotiated msize, a message that does not decode, a tag
// already in flight. A message type we do not implement is answered with
// Rlerror(EOPNOTSUPP). Tflush marks the request it names so that its reply
// is dropped, waits for it to end, then answers.
//
// Thread contract: created, started and shut down from the main thread;
// everything else runs in the export's context.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/batched_writer.h"
#include "ioplane/core/buffered_reader.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/io_buffer.h"
#include "ioplane/core/budget.h"
#include "session.h"

namespace ioplane::fs9p {

class Fs9pExport;

class Connection : public std::enable_shared_from_this<Connection> {
public:
    // `socket`: the descriptor budget's charge for `fd`, given back with it.
    Connection(Fs9pExport& exp, int fd, std::string peer, BudgetCharge socket);
    ~Connection();

    // Main thread.
    void start();
    // Any thread: ends the connection (its coroutines see the socket fail).
    void shutdown_socket();
    const std::string& peer() const { return peer_; }

private:
    struct InFlight {
        bool dropped = false;  // flushed, or the session was reset: no reply
        CoQueue done;          // Tflush waits here for the request to end
    };

    Task<void> run();
    Task<void> receive_loop();
    Task<void> serve(Request req, IoBuffer msg, uint64_t charged);
    Task<void> flush(uint16_t tag, uint16_t oldtag);
    Task<void> send(Reply& r);
    // Waits until every active request has ended.
    Task<void> wait_idle();
    void request_done(uint64_t charged);

    Fs9pExport& export_;
    const int fd_;
    const BudgetCharge socket_charge_;
    const std::string peer_;
    Session session_;
    std::unique_ptr<AsyncFd> afd_;
    std::unique_ptr<BufferedReader> recv_;
    std::unique_ptr<BatchedWriter> writer_;

    // Requests whose reply has not been queued yet, by tag (a tag is free
    // again once its reply is queued).
    std::unordered_map<uint16_t, InFlight*> in_flight_;
    unsigned active_ = 0;  // requests (and flushes) whose coroutine has not ended
    // What the active requests hold: their messages and the largest replies
    // they can make (a Tread's or Treaddir's count), in the daemon's budget.
    BudgetShare memory_;
    CoQueue slot_free_;  // the receive loop waits here when too much is in flight
    CoQueue idle_;       // wait_idle() waits here
    bool broken_ = false;
};

}  // namespace ioplane::fs9p
