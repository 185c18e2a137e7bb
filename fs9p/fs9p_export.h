// Fs9pExport: one directory served over 9P2000.L on its own socket
// (--export type=9p,id=ID,path=DIR,addr.type=...[,readonly=on][,iothread=ID]).
// Clients are accepted in the main loop; each connection then runs in the
// export's context (an IOThread's, or the main loop's), with its blocking
// system calls in that context's worker threads.
//
// Thread contract: main thread, for every member except share() and
// context() (any thread: immutable).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/listen_socket.h"
#include "ioplane/core/listener.h"
#include "ioplane/core/budget.h"
#include "session.h"

namespace ioplane::fs9p {

class Connection;

struct Fs9pExportOptions {
    std::string id;
    std::string path;  // the directory to serve
    ListenAddress addr;
    bool readonly = false;
    uint32_t max_connections = 64;  // clients past it are refused
    SecurityModel security_model = SecurityModel::passthrough;
    // The daemon's budget for buffered requests and replies (not null; it
    // outlives the export).
    Budget* memory_budget = nullptr;
    // The daemon's descriptor budget, which each connection's socket and
    // fids charge, and the most one connection may hold of it
    // (ShareConfig). By default no limit but max_fids.
    std::shared_ptr<Budget> descriptors = std::make_shared<Budget>(UINT64_MAX);
    uint64_t descriptors_per_connection = UINT64_MAX;
};

class Fs9pExport {
public:
    // Opens the directory and listens. Errors name the export.
    static Result<std::unique_ptr<Fs9pExport>> start(AioContext& main_ctx, AioContext& ctx,
                                                     Fs9pExportOptions options);
    // Stops listening, disconnects every client and waits for them.
    ~Fs9pExport();
    Fs9pExport(const Fs9pExport&) = delete;
    Fs9pExport& operator=(const Fs9pExport&) = delete;

    const std::string& id() const { return options_.id; }
    const Fs9pExportOptions& options() const { return options_; }
    const ShareConfig& share() const { return share_; }
    AioContext& context() const { return ctx_; }
    AioContext& main_context() const { return main_ctx_; }
    Budget& memory_budget() const { return *options_.memory_budget; }
    size_t connection_count() const { return connections_.size(); }
    // Disconnects every client and waits until they are gone.
    void disconnect_clients();

    // Called by a connection in the main loop when it has ended.
    void connection_closed(const std::shared_ptr<Connection>& c);

private:
    Fs9pExport(AioContext& main_ctx, AioContext& ctx, Fs9pExportOptions options);
    // A client accepted: refused past max_connections or the descriptor
    // budget (its socket is a descriptor).
    void on_client(int fd, std::string peer);

    AioContext& main_ctx_;
    AioContext& ctx_;
    const Fs9pExportOptions options_;
    ShareConfig share_;
    std::unique_ptr<Listener> listener_;
    std::vector<std::shared_ptr<Connection>> connections_;
};

}  // namespace ioplane::fs9p
