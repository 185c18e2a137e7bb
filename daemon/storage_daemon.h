// StorageDaemon: what one run of ioplane-storage-daemon sets up from its
// command line — IOThreads, block nodes, the NBD server and exports — and
// tears down again (stop accepting, disconnect, flush every node, stop the
// IOThreads).
//
// Thread contract: main thread, with the main loop created.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "daemon/options.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/iothread.h"
#include "ioplane/core/main_loop.h"
#include "nbd/server.h"

namespace ioplane::daemon {

class StorageDaemon {
public:
    explicit StorageDaemon(MainLoop& main_loop) : main_loop_(main_loop) {}
    ~StorageDaemon();

    // Builds everything in command-line order of kinds (iothreads, nodes,
    // server, exports). On error the message names the object.
    Result<void> start(const DaemonConfig& config);
    // Stops serving, flushes every node and stops the IOThreads. False if a
    // flush failed (data may not be on stable storage). Idempotent.
    bool shutdown();

private:
    Result<void> add_export(const ExportOptions& e);
    bool flush_all_nodes();

    MainLoop& main_loop_;
    std::map<std::string, std::unique_ptr<IOThread>> iothreads_;
    block::BlockGraph graph_;
    std::unique_ptr<nbd::NbdServer> nbd_server_;
    std::vector<std::shared_ptr<nbd::NbdExport>> exports_;
    bool shut_down_ = false;
};

}  // namespace ioplane::daemon
