#include "kick_notifier.h"

#include <unistd.h>

#include <cassert>
#include <cstdint>

namespace ioplane::vhost_user {

KickNotifier::~KickNotifier() { assert(state_ == State::deassigned); }

const char* KickNotifier::state_name(State s) {
    switch (s) {
    case State::deassigned: return "deassigned";
    case State::assigned: return "assigned";
    case State::polled: return "polled";
    }
    return "?";
}

Result<void> KickNotifier::start(AioContext& ctx, int kick_fd) {
    assert(state_ == State::deassigned);
    assert_in_context(ctx);
    FdHandlerSpec spec;
    spec.poll = [this] { return hooks_.has_work(); };
    spec.on_poll_ready = [this] { hooks_.process(); };
    spec.set_polling = [this](bool on) { hooks_.set_notifications(!on); };
    int watched = kick_fd;
    if (kick_fd >= 0) {
        spec.on_read = [this] { on_kick_fd(); };
    } else {
        // The loop's poll handlers hang off an fd; this one is never set.
        auto idle = EventNotifier::create();
        if (!idle) return std::unexpected(idle.error());
        idle_ = std::make_unique<EventNotifier>(std::move(*idle));
        watched = idle_->fd();
        spec.on_read = [] {};
    }
    if (auto r = ctx.set_fd_handler(watched, std::move(spec)); !r) {
        idle_.reset();
        return r;
    }
    ctx_ = &ctx;
    kick_fd_ = kick_fd;
    if (kick_fd >= 0) {
        state_ = State::assigned;
    } else {
        state_ = State::polled;
        poll_timer_ = std::make_unique<Timer>(ctx, [this] { on_poll_timer(); });
        poll_timer_->arm_in(kPollInterval);
    }
    // Buffers made available while nobody watched came without a kick.
    first_check_ = ctx.new_bh([this] { hooks_.process(); });
    first_check_->schedule();
    return {};
}

void KickNotifier::stop() {
    if (state_ == State::deassigned) return;
    assert_in_context(*ctx_);
    ctx_->remove_fd_handler(state_ == State::assigned ? kick_fd_ : idle_->fd());
    // The loop may have turned kicks off while polling; whoever watches next
    // relies on them.
    hooks_.set_notifications(true);
    first_check_.reset();
    poll_timer_.reset();
    idle_.reset();
    kick_fd_ = -1;
    ctx_ = nullptr;
    state_ = State::deassigned;
}

void KickNotifier::on_kick_fd() {
    uint64_t count;
    // Any amount read clears the eventfd; an fd that is not readable (EAGAIN)
    // just had nothing pending.
    (void)!read(kick_fd_, &count, sizeof count);
    hooks_.process();
}

void KickNotifier::on_poll_timer() {
    if (hooks_.has_work()) hooks_.process();
    poll_timer_->arm_in(kPollInterval);
}

}  // namespace ioplane::vhost_user
