#include "ioplane/block/block_job.h"

#include <cstring>

#include "ioplane/core/clock.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "permissions.h"

namespace ioplane::block {
namespace {

constexpr int64_t kSliceNs = 100'000'000;  // QEMU's SLICE_TIME

}  // namespace

std::optional<OnError> parse_on_error(const std::string& name) {
    if (name == "report") return OnError::report;
    if (name == "ignore") return OnError::ignore;
    if (name == "enospc") return OnError::enospc;
    if (name == "stop") return OnError::stop;
    if (name == "auto") return OnError::auto_;
    return std::nullopt;
}

BlockJob::BlockJob(std::string type, const BlockJobOptions& options)
    : Job(options.id, std::move(type), options.auto_finalize, options.auto_dismiss),
      on_error_(options.on_error),
      on_target_error_(options.on_target_error),
      speed_(options.speed > 0 ? uint64_t(options.speed) : 0),
      initial_speed_(options.speed) {}

Result<void> BlockJob::setup() {
    if (initial_speed_ < 0) return fail(EINVAL, "Invalid parameter 'speed'");
    auto r = setup_nodes();
    if (!r) clean();  // the job never runs: what it took goes back now
    return r;
}

Result<void> BlockJob::reopen_writable(const std::shared_ptr<BlockNode>& node) {
    assert_in_main_thread();
    IOPLANE_ASSERT(!reopened_);
    if (!node->read_only()) return {};
    DrainedSection drained(*node);
    if (auto r = node->set_read_only(false); !r) return r;
    reopened_ = node;
    return {};
}

void BlockJob::clean() {
    release_nodes();
    if (!reopened_) return;
    DrainedSection drained(*reopened_);
    (void)reopened_->set_read_only(true);  // fewer needs: only a new writer could object
    reopened_.reset();
}

BlockJob::~BlockJob() { release_nodes(); }

Result<void> BlockJob::block_node(BlockNode& node) {
    if (auto r = node.check_not_blocked(); !r) return r;
    node.set_op_blocker("block device is in use by block job: " + type());
    blocked_.push_back(node.shared_from_this());
    return {};
}

Result<void> BlockJob::attach_main(std::shared_ptr<BlockNode> node, uint32_t perm, uint32_t shared) {
    assert_in_main_thread();
    IOPLANE_ASSERT(!blk_);
    if (auto r = block_node(*node); !r) return r;
    if (auto r = BlockBackend::can_attach(*node, perm, shared, description()); !r) return r;
    blk_ = std::make_unique<BlockBackend>(std::move(node), perm, shared, description());
    // The job counts its requests itself (a status walk, a read and a write
    // in one), as exports do.
    blk_->disable_request_queuing();
    return {};
}

Result<BlockEdge*> BlockJob::attach_node(std::shared_ptr<BlockNode> node, const char* child_name, uint32_t perm,
                                         uint32_t shared) {
    assert_in_main_thread();
    if (auto r = block_node(*node); !r) return std::unexpected(r.error());
    auto edge = std::make_unique<BlockEdge>(nullptr, description(), ChildRole::job, std::move(node), child_name);
    PermissionUpdate update;
    update.propose(*edge, perm, shared);
    if (auto r = update.commit(); !r) return std::unexpected(r.error());
    edges_.push_back(std::move(edge));
    return edges_.back().get();
}

void BlockJob::release_nodes() {
    assert_in_main_thread();
    blk_.reset();
    edges_.clear();
    for (auto& node : blocked_) node->set_op_blocker("");
    blocked_.clear();
}

Result<void> BlockJob::set_speed(int64_t speed) {
    assert_in_main_thread();
    if (speed < 0) return fail(EINVAL, "Invalid parameter 'speed'");
    const uint64_t old = speed_.exchange(uint64_t(speed));
    // Faster (or unlimited) now: a sleep under the old limit ends early.
    if (speed == 0 || uint64_t(speed) > old) kick();
    return {};
}

void BlockJob::ratelimit_processed(uint64_t bytes) { unaccounted_.fetch_add(bytes, std::memory_order_relaxed); }

// QEMU's ratelimit_calculate_delay: work is free within a slice's quota;
// past it the slice stretches by the excess, and the job sleeps to its end.
Task<void> BlockJob::co_ratelimit_sleep() {
    for (;;) {
        const uint64_t speed = speed_.load(std::memory_order_relaxed);
        const uint64_t done = unaccounted_.exchange(0, std::memory_order_relaxed);
        int64_t delay = 0;
        if (speed > 0) {
            const int64_t now = now_ns();
            const double quota = std::max(double(speed) * kSliceNs / 1e9, 1.0);
            if (limit_.slice_end < now) {
                limit_.slice_start = now;
                limit_.slice_end = now + kSliceNs;
                limit_.dispatched = 0;
            }
            limit_.dispatched += done;
            if (double(limit_.dispatched) >= quota) {
                limit_.slice_end = limit_.slice_start + int64_t(double(limit_.dispatched) / quota * kSliceNs);
                delay = limit_.slice_end - now;
            }
        }
        if (delay <= 0) {
            co_await pause_point();
            co_return;
        }
        co_await sleep_ns(delay);
        if (cancelled()) co_return;
    }
}

Task<BlockJob::ErrorAction> BlockJob::co_error_action(bool read, int error) {
    co_await co_to_main();
    ErrorAction action = ErrorAction::report;
    switch (read ? on_error_ : on_target_error_) {
        case OnError::enospc:
        case OnError::auto_: action = error == ENOSPC ? ErrorAction::stop : ErrorAction::report; break;
        case OnError::stop: action = ErrorAction::stop; break;
        case OnError::ignore: action = ErrorAction::ignore; break;
        case OnError::report: break;
    }
    static const char* const kActions[] = {"report", "ignore", "stop"};
    if (!user_paused())
        manager().emit("BLOCK_JOB_ERROR", {{"device", id()},
                                           {"operation", read ? "read" : "write"},
                                           {"action", kActions[int(action)]}});
    if (action == ErrorAction::stop) {
        pause_for_error();
        io_status_ = error == ENOSPC ? "nospace" : "failed";
    }
    co_return action;
}

Error BlockJob::io_error(int error) { return Error{error, std::strerror(error)}; }

nlohmann::json BlockJob::event_data() const {
    return {{"type", type()},
            {"device", id()},
            {"len", progress_total()},
            {"offset", progress_current()},
            {"speed", speed()}};
}

void BlockJob::emit_completed(JobManager& manager) {
    nlohmann::json data = event_data();
    if (error()) data["error"] = *error();
    manager.emit("BLOCK_JOB_COMPLETED", std::move(data));
}

void BlockJob::emit_cancelled(JobManager& manager) { manager.emit("BLOCK_JOB_CANCELLED", event_data()); }

void BlockJob::emit_pending(JobManager& manager) {
    manager.emit("BLOCK_JOB_PENDING", {{"type", type()}, {"id", id()}});
}

void BlockJob::emit_ready(JobManager& manager) { manager.emit("BLOCK_JOB_READY", event_data()); }

nlohmann::json BlockJob::block_info() const {
    assert_in_main_thread();
    nlohmann::json j = {{"type", type()},
                        {"device", id()},
                        {"len", progress_total()},
                        {"offset", progress_current()},
                        {"busy", busy()},
                        {"paused", paused()},
                        {"speed", speed()},
                        {"io-status", io_status_},
                        {"ready", status() == JobStatus::ready || status() == JobStatus::standby},
                        {"status", job_status_name(status())},
                        {"auto-finalize", auto_finalize()},
                        {"auto-dismiss", auto_dismiss()}};
    if (error()) j["error"] = *error();
    return j;
}

}  // namespace ioplane::block
