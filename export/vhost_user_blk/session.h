// Session: one vhost-user front end (a QEMU process) connected to a
// vhost-user-blk export. It reads the control messages in the main loop,
// keeps the negotiated features and the guest memory table, and starts and
// stops the device's queues (BlkQueue) as the front end sets them up.
//
// Everything the front end sends is checked; a message that breaks the
// protocol ends the session (QEMU itself treats a failed vhost-user message
// as fatal for the device), never the daemon.
//
// Thread contract: main thread. Each message is handled holding the
// configuration turn (main_loop.h): handling may wait for a queue's
// requests, running nested main-loop iterations.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "blk_queue.h"
#include "ioplane/core/async_fd.h"
#include "message_io.h"

namespace ioplane::vhost_user {

class Session {
public:
    // What a session needs from its export (which outlives it or calls
    // close() first).
    struct Device {
        block::BlockBackend& blk;
        const BlkDeviceConfig& config;
        std::vector<AioContext*> queue_contexts;  // queue i runs in [i]
        std::string name;                         // "vhost-user-blk export 'e0'"
        // The cache mode (CONFIG_WCE's `writeback`), kept by the export across
        // sessions and device resets: QEMU keeps the config it read and the
        // guest its choice, so the device must keep doing what it reported.
        bool& writeback;
    };

    static Result<std::shared_ptr<Session>> create(AioContext& main_ctx, Device device, UniqueFd fd);
    ~Session();

    // The receive loop; ends at disconnect, a protocol error or close().
    // `on_end` runs (in the main thread) when the loop ends by itself.
    Task<void> run(std::function<void()> on_end);
    // Stops every queue (waiting for their requests), unmaps guest memory
    // and disconnects. Idempotent. The export calls it before it goes away.
    void close();
    bool closed() const { return closed_; }
    // Moves the queues that follow the node (the export has no queue
    // iothreads) to `ctx`; in a drained section.
    void move_queues(AioContext& ctx);

private:
    Session(Device device, UniqueFd fd, std::unique_ptr<AsyncFd> afd);

    // The reply to send (possibly empty), or an error that ends the session.
    Result<std::vector<uint8_t>> handle(Message& m);
    Result<std::vector<uint8_t>> handle_queue_message(Message& m);
    Result<BlkQueue*> queue(uint32_t index);
    Result<void> set_mem_table(Message& m);
    Result<InflightDescription> decode_inflight_for_device(const Message& m) const;
    Result<std::vector<uint8_t>> get_inflight_fd(const Message& m);
    Result<void> set_inflight_fd(const Message& m);
    // Stops the running queues (their requests complete first), runs
    // `change`, and starts them again.
    Result<void> restart_running_queues(const std::function<void()>& change);
    Result<void> set_features(uint64_t features);
    std::vector<uint8_t> get_config(const ConfigAccess& access) const;
    Result<void> set_config(const ConfigAccess& access);
    // Starts the queue if its setup is complete and memory is mapped.
    Result<void> maybe_start(BlkQueue& q);
    QueueFeatures queue_features() const;
    void stop_all_queues();
    void reset_device();

    Device device_;
    UniqueFd fd_;
    std::unique_ptr<AsyncFd> afd_;
    std::vector<std::unique_ptr<BlkQueue>> queues_;
    std::shared_ptr<const GuestMemory> memory_;
    std::shared_ptr<InflightArea> inflight_;  // SET_INFLIGHT_FD's, until a reset
    UniqueFd reply_fd_;                       // goes with the reply being made
    uint64_t features_ = 0;
    uint64_t protocol_features_ = 0;
    bool closed_ = false;
};

}  // namespace ioplane::vhost_user
