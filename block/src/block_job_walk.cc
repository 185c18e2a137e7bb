// BlockJob::co_walk: a job's pass over an image in steps that run side by
// side (as QEMU's block-copy runs its tasks), for jobs whose steps do not
// depend on each other (backup, commit). A failed step leaves what it did
// not copy to be copied again; the walk waits for the steps in flight, lets
// the error policy decide once, and resumes at the first failed step.
#include "ioplane/block/block_job.h"

#include <mutex>

#include "ioplane/core/co_queue.h"
#include "ioplane/core/coroutine.h"

namespace ioplane::block {
namespace {

// The walk's coroutine frame holds it; its steps finish before the walk
// returns. The steps run in the job's context (their requests take them
// there); the walk itself may be in another thread meanwhile (it continues
// in the main thread after an error policy's decision), hence the atomic
// and the lock.
struct WalkState {
    std::atomic<uint64_t> in_flight{0};
    CoQueue step_done;
    std::mutex mu;
    std::optional<BlockJob::StepFailure> failure;  // mu: the first failed step's, by offset
    uint64_t failed_offset = 0;                    // mu

    Task<void> co_wait_for(uint64_t max) {
        while (in_flight.load() > max) co_await step_done.wait_while([this, max] { return in_flight.load() > max; });
    }
    bool failed() {
        std::lock_guard lock(mu);
        return failure.has_value();
    }
};

Task<void> run_step(WalkState* state, BlockBackend* blk, BlockJob::WalkStep* fn, uint64_t offset, uint64_t bytes) {
    co_await blk->co_begin_request();
    std::optional<BlockJob::StepFailure> failure = co_await (*fn)(offset, bytes);
    blk->end_request();
    if (failure) {
        std::lock_guard lock(state->mu);
        if (!state->failure || offset < state->failed_offset) {
            state->failure = std::move(failure);
            state->failed_offset = offset;
        }
    }
    state->in_flight--;
    state->step_done.restart_all();
}

}  // namespace

Task<Result<void>> BlockJob::co_walk(uint64_t len, uint64_t step, uint64_t max_in_flight, WalkStep fn) {
    WalkState state;
    uint64_t offset = 0;
    for (;;) {
        while (offset < len && !cancelled()) {
            co_await co_ratelimit_sleep();
            co_await state.co_wait_for(max_in_flight - 1);
            if (cancelled() || state.failed()) break;
            const uint64_t n = std::min(step, len - offset);
            state.in_flight++;
            spawn_now(run_step(&state, &blk(), &fn, offset, n));
            offset += n;
        }
        co_await state.co_wait_for(0);  // no step in flight from here on
        if (cancelled() || !state.failed()) co_return Result<void>{};
        const StepFailure failure = *std::exchange(state.failure, std::nullopt);
        const ErrorAction action = co_await co_error_action(failure.read, failure.error.code);
        if (action == ErrorAction::report) co_return std::unexpected(io_error(failure.error.code));
        offset = state.failed_offset;  // stopped (and resumed) or ignored: from there again
    }
}

}  // namespace ioplane::block
