// Per-thread free lists by size class: what the coroutine frame pool and
// IoBuffer recycle through, so that a hot path's allocations reuse memory
// its own thread freed, without locks or the allocator's trimming.
//
// Thread contract: one instance per thread (thread_local); every member in
// that thread.
#pragma once

#include <array>
#include <cstddef>
#include <new>

namespace ioplane::detail {

// Under ASan nothing is recycled: use-after-free of a frame or buffer must
// stay detectable.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kRecycleFreedMemory = false;
#else
inline constexpr bool kRecycleFreedMemory = true;
#endif

// `Release` returns a block to the heap when a list is full or at thread exit.
template <std::size_t Classes, void (*Release)(void*) noexcept>
class FreeLists {
public:
    // Set when this thread's lists are destroyed (at thread exit): blocks
    // freed after that, by later thread-local destructors, go to the heap.
    static inline thread_local constinit bool gone = false;

    FreeLists() = default;
    FreeLists(const FreeLists&) = delete;
    FreeLists& operator=(const FreeLists&) = delete;
    ~FreeLists() {
        gone = true;
        for (Node*& head : heads_) {
            while (Node* n = head) {
                head = n->next;
                Release(n);
            }
        }
    }

    // A block of class `cls`, or null if its list is empty.
    void* take(std::size_t cls) {
        Node* n = heads_[cls];
        if (n == nullptr) return nullptr;
        heads_[cls] = n->next;
        counts_[cls]--;
        return n;
    }
    // Keeps `p` unless class `cls` already holds `max_count` blocks.
    bool give(std::size_t cls, void* p, std::size_t max_count) {
        if (counts_[cls] >= max_count) return false;
        heads_[cls] = new (p) Node{heads_[cls]};
        counts_[cls]++;
        return true;
    }

private:
    struct Node {
        Node* next;
    };
    std::array<Node*, Classes> heads_{};
    std::array<std::size_t, Classes> counts_{};
};

}  // namespace ioplane::detail
