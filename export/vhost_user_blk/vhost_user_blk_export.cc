#include "vhost_user_blk_export.h"

#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::vhost_user {

namespace {

Task<void> serve(std::shared_ptr<Session> session, std::function<void()> on_end) {
    co_await session->run(std::move(on_end));
}

}  // namespace

Result<void> check_vhost_user_blk_options(const VhostUserBlkExportOptions& o) {
    if (o.num_queues == 0) return fail(EINVAL, "num-queues must be greater than 0");
    if (o.num_queues > 256) return fail(EINVAL, "num-queues must be at most 256");  // vring fd messages carry 8 bits
    const uint32_t lbs = o.logical_block_size;
    if (lbs < 512 || lbs > 32768 || (lbs & (lbs - 1)))
        return fail(EINVAL, "logical-block-size must be a power of 2 between 512 and 32768");
    if (o.addr.type == ListenAddress::Type::inet)
        return fail(EINVAL, "vhost-user-blk exports listen on unix sockets (a path or a passed fd) only");
    return {};
}

Result<std::unique_ptr<VhostUserBlkExport>> VhostUserBlkExport::start(AioContext& main_ctx,
                                                                       VhostUserBlkExportOptions options,
                                                                       std::shared_ptr<block::BlockNode> node) {
    assert_in_main_thread();
    if (auto r = check_vhost_user_blk_options(options); !r) return std::unexpected(r.error());
    std::unique_ptr<VhostUserBlkExport> exp(new VhostUserBlkExport(main_ctx, std::move(options), std::move(node)));
    if (exp->config_.size_bytes == 0)
        return fail(EINVAL, exp->name_ + ": the node is smaller than one logical block");
    auto listener = Listener::start(main_ctx, exp->options_.addr, exp->name_,
                                    [e = exp.get()](int fd, std::string) { e->on_client(fd); });
    if (!listener) return std::unexpected(listener.error());
    exp->listener_ = std::move(*listener);
    return exp;
}

VhostUserBlkExport::VhostUserBlkExport(AioContext& main_ctx, VhostUserBlkExportOptions options,
                                       std::shared_ptr<block::BlockNode> node)
    : main_ctx_(main_ctx), options_(std::move(options)), name_("vhost-user-blk export '" + options_.id + "'") {
    blk_ = std::make_unique<block::BlockBackend>(std::move(node), options_.writable, block::kAnonymousUser);
    // Requests are counted from pop to completion (BlkQueue): the I/O inside
    // must not wait for a drained section again.
    blk_->disable_request_queuing();
    blk_->set_owner(this);
    config_.logical_block_size = options_.logical_block_size;
    config_.size_bytes = blk_->length() / options_.logical_block_size * options_.logical_block_size;
    config_.num_queues = options_.num_queues;
    config_.read_only = !options_.writable || blk_->node().read_only();
    config_.serial = options_.id;
}

VhostUserBlkExport::~VhostUserBlkExport() {
    listener_.reset();
    if (session_) session_->close();
    session_.reset();
    blk_->set_owner(nullptr);
}

std::vector<AioContext*> VhostUserBlkExport::queue_contexts() const {
    std::vector<AioContext*> out;
    for (uint32_t i = 0; i < options_.num_queues; i++) {
        const auto& fixed = options_.queue_contexts;
        out.push_back(fixed.empty() ? &blk_->ctx() : fixed[i % fixed.size()]);
    }
    return out;
}

void VhostUserBlkExport::on_client(int fd) {
    UniqueFd client(fd);
    if (session_) {
        LOG_WARN("%s: a front end is connected already; refusing another", name_.c_str());
        return;
    }
    auto session = Session::create(main_ctx_, {*blk_, config_, queue_contexts(), name_, writeback_}, std::move(client));
    if (!session) {
        LOG_ERROR("%s: %s", name_.c_str(), session.error().describe().c_str());
        return;
    }
    LOG_INFO("%s: front end connected", name_.c_str());
    session_ = *session;
    spawn(main_ctx_, serve(session_, [this, s = session_.get()] {
              if (session_.get() == s) session_.reset();
          }));
}

void VhostUserBlkExport::attach_aio_context(AioContext& ctx) {
    if (session_ && options_.queue_contexts.empty()) session_->move_queues(ctx);
}

}  // namespace ioplane::vhost_user
