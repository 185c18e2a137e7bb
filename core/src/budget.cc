#include "ioplane/core/budget.h"

#include <unistd.h>

#include "ioplane/core/thread_contract.h"

namespace ioplane {

uint64_t default_buffer_memory() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return 1ull << 30;
    return uint64_t(pages) * uint64_t(page) / 8;
}

bool Budget::try_charge(uint64_t amount, bool always) {
    const uint64_t limit = limit_.load(std::memory_order_relaxed);
    uint64_t used = used_.load(std::memory_order_relaxed);
    do {
        if (!always && used + amount > limit) return false;
    } while (!used_.compare_exchange_weak(used, used + amount, std::memory_order_relaxed));
    // A statistic: relaxed, and a lost race only under-reports a peak for
    // an instant.
    uint64_t peak = peak_.load(std::memory_order_relaxed);
    while (used + amount > peak && !peak_.compare_exchange_weak(peak, used + amount, std::memory_order_relaxed)) {
    }
    return true;
}

std::optional<BudgetCharge> Budget::charge(uint64_t amount) {
    if (!try_charge(amount, false)) return std::nullopt;
    return BudgetCharge(*this, amount);
}

void Budget::release(uint64_t amount) {
    [[maybe_unused]] const uint64_t before = used_.fetch_sub(amount, std::memory_order_relaxed);
    IOPLANE_ASSERT(before >= amount);
}

bool BudgetShare::try_charge(uint64_t amount) {
    if (amount == 0) return true;
    const bool nothing_held = held_ == 0;
    if (!nothing_held && held_ + amount > cap_) return false;
    if (!budget_.try_charge(amount, nothing_held)) return false;
    held_ += amount;
    return true;
}

void BudgetShare::release(uint64_t amount) {
    IOPLANE_ASSERT(held_ >= amount);
    held_ -= amount;
    budget_.release(amount);
}

}  // namespace ioplane
