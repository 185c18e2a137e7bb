#include "job.h"

#include <cstring>

#include "pattern.h"

namespace ioplane::vublk {

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint8_t kReadPoison = 0xa5;  // a read buffer's bytes before the device fills it

}  // namespace

Job::Job(QueueRunner& runner, JobConfig c, uint16_t queue_index, const std::atomic<bool>& stop)
    : runner_(runner), c_(c), queue_(queue_index), stop_(stop), inflight_(runner.slot_count()),
      rng_(0x9e3779b97f4a7c15ull * (uint64_t(c.seed) + 1) + queue_index * 0xbf58476d1ce4e5b9ull + 1) {
    for (size_t i = runner.slot_count(); i > 0; i--) free_slots_.push_back(uint16_t(i - 1));
    if (c_.verify) {
        generation_.assign(c_.slice_blocks, 0);
        busy_.assign(c_.slice_blocks, false);
    }
}

uint64_t Job::random() {  // xorshift64*
    rng_ ^= rng_ >> 12, rng_ ^= rng_ << 25, rng_ ^= rng_ >> 27;
    return rng_ * 0x2545f4914f6cdd1dull;
}

std::optional<uint64_t> Job::pick_block(uint64_t& cursor) {
    // With --verify a block with a request outstanding is skipped: two
    // requests in flight on one block have no defined outcome. The slice has
    // more blocks than iodepth, so a free one exists.
    for (;;) {
        const uint64_t b = rw_random(c_.rw) ? random() % c_.slice_blocks : cursor++ % c_.slice_blocks;
        if (!c_.verify || !busy_[b]) return b;
    }
}

void Job::note_failure(const std::string& what) {
    if (stats_.first_failure.empty()) stats_.first_failure = "queue " + std::to_string(queue_) + ": " + what;
}

void Job::complete(const Completion& c, Clock::time_point now, const Window* window) {
    const InFlight& f = inflight_[c.slot];
    BlkSlot& s = runner_.slot(c.slot);
    const uint64_t offset = c_.slice_offset + f.block * c_.bs;
    if (c.used_len != s.expected_used_len()) stats_.used_len_mismatches++;
    if (c.status != kBlkSOk) {
        stats_.errors++;
        note_failure(std::string(op_name(f.op)) + " of " + std::to_string(c_.bs) + " bytes at offset " +
                     std::to_string(offset) + ": status " + status_name(c.status));
        if (c_.verify && f.op == BlkOp::kWrite) generation_[f.block] = 0;  // contents now unknown
    } else {
        if (c_.verify) {
            if (f.op == BlkOp::kWrite) {
                generation_[f.block] = f.generation;
            } else if (generation_[f.block] != 0) {
                stats_.verified_blocks++;
                auto bad = check_pattern({s.data(), c_.bs}, offset, generation_[f.block], c_.seed);
                if (bad) {
                    stats_.verify_mismatches++;
                    note_failure("verify: read of " + std::to_string(c_.bs) + " bytes at offset " +
                                 std::to_string(offset) + ": " + *bad);
                }
            }
        }
        if (window && now >= window->start && now < window->end) {
            stats_.ios++;
            (f.op == BlkOp::kRead ? stats_.reads : stats_.writes)++;
            stats_.bytes += c_.bs;
            stats_.latency.add(uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(now - f.submitted).count()));
        }
    }
    if (c_.verify) busy_[f.block] = false;
}

std::expected<void, std::string> Job::drive(const std::function<std::optional<Io>()>& next, const Window* window) {
    std::vector<Completion> done;
    done.reserve(runner_.slot_count());
    bool exhausted = false;
    for (;;) {
        if (!exhausted && !free_slots_.empty()) {
            const auto now = Clock::now();
            bool any = false;
            while (!free_slots_.empty()) {
                const auto io = stop_.load(std::memory_order_relaxed) ? std::nullopt : next();
                if (!io) {
                    exhausted = true;
                    break;
                }
                const uint16_t slot = free_slots_.back();
                free_slots_.pop_back();
                InFlight& f = inflight_[slot];
                f = InFlight{io->op, io->block, 0, now};
                const uint64_t offset = c_.slice_offset + io->block * c_.bs;
                BlkSlot& s = runner_.slot(slot);
                if (c_.verify) {
                    busy_[io->block] = true;
                    if (io->op == BlkOp::kWrite) {
                        f.generation = next_generation_++;
                        fill_pattern({s.data(), c_.bs}, offset, f.generation, c_.seed);
                    } else {
                        // A read that the device reports OK without writing
                        // the buffer must not find the last request's data.
                        std::memset(s.data(), kReadPoison, c_.bs);
                    }
                }
                BlkRequest r;
                r.op = io->op;
                r.sector = offset / kSectorSize;
                r.bytes = c_.bs;
                r.data_segments = c_.segments;
                if (auto sub = runner_.submit(slot, r); !sub)
                    return std::unexpected("queue " + std::to_string(queue_) + ": " + sub.error());
                any = true;
            }
            if (any) runner_.publish();
        }
        if (runner_.outstanding() == 0) return {};
        done.clear();
        if (auto w = runner_.wait(done); !w) return std::unexpected("queue " + std::to_string(queue_) + ": " + w.error());
        const auto now = Clock::now();
        for (const Completion& c : done) {
            complete(c, now, window);
            free_slots_.push_back(c.slot);
        }
    }
}

std::expected<void, std::string> Job::prefill() {
    uint64_t b = 0;
    return drive([&]() -> std::optional<Io> {
        if (b == c_.slice_blocks) return std::nullopt;
        return Io{BlkOp::kWrite, b++};
    }, nullptr);
}

std::expected<void, std::string> Job::run(const Window& window) {
    uint64_t cursor = 0;
    bool in_window = false;
    RunnerCounters at_start{};
    auto snapshot_end = [&] {
        const RunnerCounters& now = runner_.counters();
        stats_.window_publishes = now.publishes - at_start.publishes;
        stats_.window_kicks = now.kicks - at_start.kicks;
        stats_.window_sleeps = now.sleeps - at_start.sleeps;
    };
    auto r = drive([&]() -> std::optional<Io> {
        const auto now = Clock::now();
        if (now >= window.end) {
            if (in_window) snapshot_end();
            in_window = false;
            return std::nullopt;
        }
        if (!in_window && now >= window.start) {
            in_window = true;
            at_start = runner_.counters();
        }
        BlkOp op = BlkOp::kRead;
        if (c_.rw == Rw::kRandRw) op = random() % 100 < c_.rwmixread ? BlkOp::kRead : BlkOp::kWrite;
        else if (rw_writes(c_.rw)) op = BlkOp::kWrite;
        return Io{op, *pick_block(cursor)};
    }, &window);
    if (in_window) snapshot_end();  // stopped early
    return r;
}

std::expected<void, std::string> Job::read_back() {
    uint64_t b = 0;
    return drive([&]() -> std::optional<Io> {
        while (b < c_.slice_blocks && generation_[b] == 0) b++;
        if (b == c_.slice_blocks) return std::nullopt;
        return Io{BlkOp::kRead, b++};
    }, nullptr);
}

}  // namespace ioplane::vublk
