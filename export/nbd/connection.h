// One NBD client connection: option haggling in the main loop, then the
// transmission phase in the export's context, one coroutine per request.
// Replies go out through a BatchedWriter: whole, in the order they are ready
// (a slow request never holds back the replies of faster ones behind it), and
// those ready in the same loop iteration in one system call.
//
// Thread contract: created, started and shut down from the main thread;
// everything else runs in the connection's current context (the main loop
// during negotiation, the export node's context afterwards).
#pragma once

#include <sys/uio.h>

#include <memory>
#include <string>

#include "ioplane/core/async_fd.h"
#include "ioplane/core/batched_writer.h"
#include "ioplane/core/budget.h"
#include "ioplane/core/buffered_reader.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/io_buffer.h"
#include "ioplane/core/timer.h"
#include "nbd/extent_list.h"
#include "nbd/meta_context.h"
#include "nbd/protocol.h"

namespace ioplane::block {
class BlockBackend;
}

namespace ioplane::nbd {

class NbdServer;
class NbdExport;

class Connection : public std::enable_shared_from_this<Connection> {
public:
    // `socket`: the descriptor budget's charge for `fd`, given back with it.
    Connection(NbdServer& server, int fd, std::string peer, BudgetCharge socket);
    ~Connection();

    // Main thread.
    void start(int64_t handshake_timeout_ns);
    // Any thread: ends the connection (its coroutines see the socket fail).
    void shutdown_socket();

    const std::string& peer() const { return peer_; }

    // In the old / new context, inside the export's drained section.
    void detach_aio_context();
    void attach_aio_context(AioContext& ctx);
    // In the node's context: ends the connection if its replies have found no
    // room in the socket for `limit_ns` (the client does not read them).
    void disconnect_if_not_reading(int64_t now, int64_t limit_ns);

private:
    struct Negotiated;

    Task<void> run();
    Task<Result<std::shared_ptr<NbdExport>>> negotiate();
    Task<Result<bool>> handle_option(uint32_t option, std::vector<uint8_t>& payload, std::shared_ptr<NbdExport>& chosen);
    Task<Result<void>> send_option_reply(std::vector<uint8_t>& bytes);
    Task<void> transmission(NbdExport& exp);
    Task<void> handle_request(NbdExport& exp, Request req, IoBuffer payload, uint64_t charged);
    Task<Result<void>> handle_read(NbdExport& exp, const Request& req);
    // Whether SET_META_CONTEXT selected contexts of `exp` (so that
    // NBD_CMD_BLOCK_STATUS is valid on it); and forgetting them.
    bool meta_contexts_selected_for(const std::shared_ptr<NbdExport>& exp) const;
    void forget_meta_contexts();
    // The extents of base:allocation or qemu:allocation-depth (`depth`)
    // for the request's range, into `out`.
    Task<Result<void>> allocation_extents(NbdExport& exp, const Request& req, bool depth, ExtentList& out);
    Task<Result<void>> handle_block_status(NbdExport& exp, const Request& req);
    Task<void> send_error(const Request& req, uint32_t nbd_error, const std::string& message);
    Task<Result<void>> send(std::span<iovec> iov);
    // Waits until one of this connection's requests ends, then continues in
    // the node's context (the node may have moved meanwhile).
    Task<void> wait_for_a_request(block::BlockBackend& blk);
    void request_done();

    NbdServer& server_;
    const int fd_;
    const BudgetCharge socket_charge_;
    const std::string peer_;
    std::unique_ptr<AsyncFd> afd_;
    std::unique_ptr<BufferedReader> recv_;
    std::unique_ptr<BatchedWriter> writer_;
    std::unique_ptr<Timer> handshake_timer_;  // main loop

    // Negotiated options.
    bool no_zeroes_ = false;
    bool structured_ = false;
    // What SET_META_CONTEXT selected, and on which export: the selection
    // is by index into that export's offer, so it holds for that export
    // only, not for another one added under the same name meanwhile.
    std::weak_ptr<NbdExport> meta_export_;
    MetaContextSelection meta_;
    ExportLimits limits_{};

    // Transmission phase, in the connection's context.
    CoQueue slot_free_;          // the receive loop waits here when too much is in flight
    unsigned requests_in_flight_ = 0;
    // The data of reads and writes in flight (a write's payload, a read's
    // reply), in the daemon's budget.
    BudgetShare memory_;
    CoQueue idle_;               // the closing receive loop waits here for requests to end
    bool broken_ = false;        // a reply could not be sent: stop
};

}  // namespace ioplane::nbd
