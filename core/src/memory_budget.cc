#include "ioplane/core/memory_budget.h"

#include <unistd.h>

#include "ioplane/core/thread_contract.h"

namespace ioplane {

uint64_t default_buffer_memory() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 1ull << 30;
    return uint64_t(pages) * uint64_t(page) / 8;
}

bool MemoryBudget::try_charge(uint64_t bytes, bool always) {
    const uint64_t limit = limit_.load(std::memory_order_relaxed);
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
        if (!always && used + bytes > limit) return false;
    } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
    // A statistic: relaxed, and a lost race only under-reports a peak for
    // an instant.
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (used + bytes > peak && !peak_.compare_exchange_weak(peak, used + bytes, std::memory_order_relaxed)) {
    }
    return true;
}

void MemoryBudget::release(uint64_t bytes) {
    [[maybe_unused]] const uint64_t before = used_.fetch_sub(bytes, std::memory_order_relaxed);
    IOPLANE_ASSERT(before >= bytes);
}

bool BudgetShare::try_charge(uint64_t bytes) {
    if (bytes == 0) return true;
    const bool nothing_held = held_ == 0;
    if (!nothing_held && held_ + bytes > cap_) return false;
    if (!budget_.try_charge(bytes, nothing_held)) return false;
    held_ += bytes;
    return true;
}

void BudgetShare::release(uint64_t bytes) {
    IOPLANE_ASSERT(held_ >= bytes);
    held_ -= bytes;
    budget_.release(bytes);
}

}  // namespace ioplane
