// NbdServer: listens on a unix or TCP socket (qemu-storage-daemon's
// --nbd-server), accepts clients in the main loop, and serves the exports
// added to it.
//
// Thread contract: main thread, for every member.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/budget.h"
#include "ioplane/core/listen_socket.h"
#include "ioplane/core/listener.h"
#include "nbd/nbd_export.h"

namespace ioplane::nbd {

class Connection;

struct NbdServerOptions {
    ListenAddress addr;
    uint32_t max_connections = 0;  // 0: unlimited
    int64_t handshake_timeout_ns = 10'000'000'000;
    // The daemon's budget for buffered requests and replies (not null; it
    // outlives the server).
    Budget* memory_budget = nullptr;
    // The daemon's descriptor budget: each connection's socket charges it,
    // and clients past it are refused.
    std::shared_ptr<Budget> descriptors = std::make_shared<Budget>(UINT64_MAX);
};

class NbdServer {
public:
    static Result<std::unique_ptr<NbdServer>> start(AioContext& main_ctx, NbdServerOptions options);
    // Stops listening, disconnects every client and waits for them.
    ~NbdServer();

    Result<void> add_export(std::shared_ptr<NbdExport> exp);
    // Disconnects the export's clients, waits for them, forgets it, and
    // releases its bitmaps.
    void remove_export(NbdExport* exp);
    std::shared_ptr<NbdExport> find_export(const std::string& name) const;
    // Whether `exp` is still one of ours (a connection that chose it may
    // outlive its removal).
    bool serves(const NbdExport* exp) const;
    std::vector<NbdExport*> exports() const;
    // Disconnects the clients of one export (or all) and waits until they are gone.
    void disconnect_clients(NbdExport* only = nullptr);

    AioContext& main_ctx() const { return main_ctx_; }
    Budget& memory_budget() const { return *options_.memory_budget; }
    // Where clients connect, as an NBD URI prefix (nbd+unix:///NAME?socket=... or nbd://host:port/NAME).
    std::string uri(const std::string& export_name) const;

    // Called by a connection in the main loop.
    void connection_closed(const std::shared_ptr<Connection>& c);
    size_t connection_count() const { return connections_.size(); }

private:
    NbdServer(AioContext& main_ctx, NbdServerOptions options) : main_ctx_(main_ctx), options_(std::move(options)) {}
    void on_client(int fd, std::string peer);

    AioContext& main_ctx_;
    const NbdServerOptions options_;
    std::unique_ptr<Listener> listener_;
    std::map<std::string, std::shared_ptr<NbdExport>> exports_;  // by name
    std::vector<std::shared_ptr<Connection>> connections_;
};

}  // namespace ioplane::nbd
