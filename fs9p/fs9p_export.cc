#include "fs9p_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>

#include "connection.h"
#include "host_fs.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"

namespace ioplane::fs9p {

Fs9pExport::Fs9pExport(AioContext& main_ctx, AioContext& ctx, Fs9pExportOptions options)
    : main_ctx_(main_ctx), ctx_(ctx), options_(std::move(options)) {}

Result<std::unique_ptr<Fs9pExport>> Fs9pExport::start(AioContext& main_ctx, AioContext& ctx,
                                                      Fs9pExportOptions options) {
    IOPLANE_ASSERT(options.memory_budget != nullptr);
    std::unique_ptr<Fs9pExport> exp(new Fs9pExport(main_ctx, ctx, std::move(options)));
    const std::string who = "9p export '" + exp->options_.id + "'";
    const int root = ::open(exp->options_.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) return fail_errno(who + ": " + exp->options_.path);
    exp->share_.id = exp->options_.id;
    exp->share_.path = exp->options_.path;
    exp->share_.root_fd = root;
    exp->share_.readonly = exp->options_.readonly;
    exp->share_.security_model = exp->options_.security_model;
    exp->share_.descriptors = exp->options_.descriptors;
    exp->share_.descriptors_per_connection = exp->options_.descriptors_per_connection;
    struct stat root_st;
    if (::fstat(root, &root_st) == 0 && keeps_inodes_in_memory(root)) {
        exp->share_.inline_calls = true;
        exp->share_.root_dev = root_st.st_dev;
        exp->share_.page_cache = page_cache_mode(root);
        exp->share_.tree_in_memory = exp->share_.page_cache == PageCacheMode::memory;
    }
    auto listener = Listener::start(main_ctx, exp->options_.addr, who,
                                    [p = exp.get()](int fd, std::string peer) { p->on_client(fd, std::move(peer)); });
    if (!listener) return std::unexpected(listener.error());
    exp->listener_ = std::move(*listener);
    LOG_INFO("%s: '%s' served over 9P2000.L on %s%s, security model %s", who.c_str(), exp->options_.path.c_str(),
             describe(exp->options_.addr).c_str(), exp->options_.readonly ? " (read-only)" : "",
             security_model_name(exp->options_.security_model));
    return exp;
}

Fs9pExport::~Fs9pExport() {
    listener_.reset();
    disconnect_clients();
    if (share_.root_fd >= 0) ::close(share_.root_fd);
}

void Fs9pExport::disconnect_clients() {
    for (auto& c : connections_) c->shutdown_socket();
    aio_wait_while(main_ctx_, [this] { return !connections_.empty(); });
}

void Fs9pExport::on_client(int fd, std::string peer) {
    const bool room = connections_.size() < options_.max_connections;
    std::optional<BudgetCharge> socket = room ? share_.descriptors->charge(1) : std::nullopt;
    if (!socket) {
        LOG_WARN("9p export '%s': refusing client %s: %s", options_.id.c_str(), peer.c_str(),
                 room ? "the descriptors left to clients are taken" : "max-connections reached");
        ::close(fd);
        return;
    }
    auto c = std::make_shared<Connection>(*this, fd, std::move(peer), std::move(*socket));
    connections_.push_back(c);
    c->start();
}

void Fs9pExport::connection_closed(const std::shared_ptr<Connection>& c) {
    connections_.erase(std::remove(connections_.begin(), connections_.end(), c), connections_.end());
}

}  // namespace ioplane::fs9p
