// KickNotifier: how a virtqueue learns that the driver made buffers
// available — the back-end side of QEMU's ioeventfd state machine
// (../shared/design/background/2010-ioeventfd-virtqueue-notify-state-machine.txt,
// docs/VHOST-USER-BLK.md "Kick notifier").
//
//                 start(ctx, kick fd)                  start(ctx, no fd)
//   deassigned ----------------------> assigned    deassigned ---------> polled
//        ^                                 |            ^                  |
//        +-------------- stop() -----------+            +----- stop() -----+
//
//  - deassigned: nothing watches the ring. The initial state, and the state
//    after GET_VRING_BASE, a ring disable, a reset, a disconnect, or the
//    first half of a move to another IOThread.
//  - assigned: the kick eventfd is watched in the queue's IOThread; while
//    that loop busy-polls, the avail ring is polled instead and kicks are
//    turned off in the ring (the loop's set_polling hook).
//  - polled: the front end gave no kick fd (VHOST_USER_VRING_NOFD_MASK): the
//    IOThread checks the avail ring in its busy-poll phase and, when it
//    sleeps, every kPollInterval.
//
// No kick is lost across stop() and start(): the eventfd is not read while
// deassigned, so a kick sent meanwhile is still pending when it is watched
// again; stop() turns ring notifications back on; and start() always runs
// one check of the ring, for buffers made available while nobody watched.
// A move to another IOThread is stop() in the old one, start() in the new.
//
// Thread contract: start() and stop() in the home thread of the context the
// notifier starts or runs in; state() and context() there too. The hooks run
// in that context.
#pragma once

#include <functional>
#include <memory>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/event_notifier.h"
#include "ioplane/core/timer.h"

namespace ioplane::vhost_user {

class KickNotifier {
public:
    enum class State { deassigned, assigned, polled };
    static constexpr int64_t kPollInterval = 1'000'000;  // ns, polled state only

    struct Hooks {
        std::function<void()> process;                   // handle available buffers
        std::function<bool()> has_work;                  // buffers available? (cheap)
        std::function<void(bool)> set_notifications;    // ring kicks on/off
    };

    explicit KickNotifier(Hooks hooks) : hooks_(std::move(hooks)) {}
    // Must be deassigned.
    ~KickNotifier();
    KickNotifier(const KickNotifier&) = delete;
    KickNotifier& operator=(const KickNotifier&) = delete;

    // deassigned -> assigned (kick_fd >= 0, borrowed: it must stay open until
    // stop()) or polled (kick_fd < 0).
    Result<void> start(AioContext& ctx, int kick_fd);
    // assigned/polled -> deassigned. Does nothing when deassigned.
    void stop();

    State state() const { return state_; }
    AioContext* context() const { return ctx_; }
    static const char* state_name(State s);

private:
    void on_kick_fd();
    void on_poll_timer();

    Hooks hooks_;
    State state_ = State::deassigned;
    AioContext* ctx_ = nullptr;
    int kick_fd_ = -1;                  // assigned: the front end's eventfd
    std::unique_ptr<EventNotifier> idle_;  // polled: a never-set fd that carries the poll handler
    std::unique_ptr<Timer> poll_timer_;    // polled
    BhPtr first_check_;                    // the check start() schedules
};

}  // namespace ioplane::vhost_user
