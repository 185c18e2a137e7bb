#include "queue_runner.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ioplane::vublk {

namespace {

bool hung_up(int fd, int timeout_ms) {
    pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, timeout_ms) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

constexpr const char* kHangup = "the back end closed the control connection";

// A hint to the CPU that this is a spin-wait loop.
void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

}  // namespace

QueueRunner::QueueRunner(Queue& q, std::vector<BlkSlot> slots, WaitMode mode, bool indirect, int hangup_fd,
                         std::chrono::milliseconds timeout)
    : q_(q), slots_(std::move(slots)), slot_of_head_(q.vq.size(), -1), mode_(mode), indirect_(indirect),
      hangup_fd_(hangup_fd), timeout_(timeout) {
    // Both modes run with used-buffer notifications off; event mode turns
    // them on only just before it sleeps.
    q_.vq.disable_notifications();
}

std::expected<void, std::string> QueueRunner::submit(uint16_t slot, const BlkRequest& r) {
    auto segs = slots_[slot].prepare(r);
    if (!segs) return std::unexpected(segs.error());
    auto head = indirect_ ? q_.vq.add_indirect(*segs, slots_[slot].indirect()) : q_.vq.add_chain(*segs);
    if (!head) return std::unexpected(head.error());
    slot_of_head_[*head] = slot;
    q_.vq.make_available(*head);
    return {};
}

void QueueRunner::publish() {
    if (q_.vq.publish()) {
        q_.kick();
        counters_.kicks++;
    }
    counters_.publishes++;
}

std::expected<size_t, std::string> QueueRunner::harvest(std::vector<Completion>& out) {
    size_t n = 0;
    for (;;) {
        auto e = q_.vq.next_used();
        if (!e) return std::unexpected(e.error());
        if (!*e) return n;
        const int32_t slot = slot_of_head_[(*e)->id];
        slot_of_head_[(*e)->id] = -1;
        out.push_back(Completion{uint16_t(slot), slots_[size_t(slot)].status(), (*e)->len});
        n++;
    }
}

std::string QueueRunner::stall_message() const {
    return "no request completed within " + std::to_string(timeout_.count()) + " ms (" +
           std::to_string(q_.vq.outstanding()) + " outstanding, avail idx " + std::to_string(q_.vq.avail_idx()) +
           ", used idx " + std::to_string(q_.vq.raw_used_idx()) + ")";
}

std::expected<void, std::string> QueueRunner::sleep_on_call(std::chrono::steady_clock::time_point deadline) {
    counters_.sleeps++;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() < 0) return std::unexpected(stall_message());
        pollfd p[2] = {{q_.call_fd, POLLIN, 0}, {hangup_fd_, POLLRDHUP, 0}};
        const int r = ::poll(p, hangup_fd_ >= 0 ? 2 : 1, int(left.count()) + 1);
        if (r < 0 && errno != EINTR) return std::unexpected(std::string("poll: ") + std::strerror(errno));
        if (r > 0 && (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) return std::unexpected(kHangup);
        if (r > 0 && (p[0].revents & POLLIN)) {
            uint64_t v;  // resets the eventfd; its count does not matter
            [[maybe_unused]] ssize_t n = ::read(q_.call_fd, &v, sizeof v);
            return {};
        }
    }
}

std::expected<void, std::string> QueueRunner::wait(std::vector<Completion>& out) {
    if (q_.vq.outstanding() == 0) return std::unexpected("wait with no request outstanding");
    const auto deadline = std::chrono::steady_clock::now() + timeout_;
    for (uint64_t spins = 0;; spins++) {
        auto n = harvest(out);
        if (!n) return std::unexpected(n.error());
        if (*n) return {};
        if (mode_ == WaitMode::kEvent) {
            // Re-arm, then re-check: entries that arrived meanwhile mean no sleep.
            if (!q_.vq.enable_notifications()) {
                if (auto s = sleep_on_call(deadline); !s) return s;
            }
            q_.vq.disable_notifications();
            continue;
        }
        // Poll mode: a pause per spin; the clock and the socket now and then.
        cpu_relax();
        if ((spins & 0xfff) == 0xfff) {
            if (std::chrono::steady_clock::now() > deadline) return std::unexpected(stall_message());
            if ((spins & 0xfffff) == 0xfffff && hangup_fd_ >= 0 && hung_up(hangup_fd_, 0))
                return std::unexpected(kHangup);
        }
    }
}

std::expected<Completion, std::string> QueueRunner::execute(uint16_t slot, const BlkRequest& r) {
    if (auto s = submit(slot, r); !s) return std::unexpected(s.error());
    publish();
    std::vector<Completion> done;
    while (done.empty())
        if (auto w = wait(done); !w) return std::unexpected(w.error());
    return done.front();
}

}  // namespace ioplane::vublk
