#include "ioplane/core/detail/frame_pool.h"

#include <array>
#include <new>

namespace ioplane::detail {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCache = false;
#else
constexpr bool kCache = true;
#endif

constexpr std::size_t kGranule = 64;
constexpr std::size_t kClasses = 32;  // frames up to 2 KiB are cached
constexpr unsigned kMaxPerClass = 256;

struct FreeFrame {
    FreeFrame* next;
};

// Set when this thread's cache is destroyed (at thread exit): frames freed
// after that, by later thread-local destructors, go straight to the heap.
thread_local constinit bool t_cache_gone = false;

class FrameCache {
public:
    ~FrameCache() {
        t_cache_gone = true;
        for (std::size_t c = 0; c < kClasses; c++) {
            while (FreeFrame* f = heads_[c]) {
                heads_[c] = f->next;
                ::operator delete(f);
            }
        }
    }
    void* take(std::size_t cls) {
        FreeFrame* f = heads_[cls];
        if (f == nullptr) return nullptr;
        heads_[cls] = f->next;
        counts_[cls]--;
        return f;
    }
    bool give(std::size_t cls, void* p) {
        if (counts_[cls] >= kMaxPerClass) return false;
        heads_[cls] = new (p) FreeFrame{heads_[cls]};
        counts_[cls]++;
        return true;
    }

private:
    std::array<FreeFrame*, kClasses> heads_{};
    std::array<unsigned, kClasses> counts_{};
};

thread_local FrameCache t_cache;

// Class c holds frames of (c * kGranule, (c + 1) * kGranule] bytes, allocated
// at the class's full size so that any frame of the class fits.
std::size_t size_class(std::size_t size) { return (size - 1) / kGranule; }

}  // namespace

void* alloc_frame(std::size_t size) {
    const std::size_t cls = size_class(size);
    if (!kCache || cls >= kClasses || t_cache_gone) return ::operator new(size);
    if (void* p = t_cache.take(cls)) return p;
    return ::operator new((cls + 1) * kGranule);
}

void free_frame(void* p, std::size_t size) noexcept {
    const std::size_t cls = size_class(size);
    if (kCache && cls < kClasses && !t_cache_gone && t_cache.give(cls, p)) return;
    ::operator delete(p);
}

}  // namespace ioplane::detail
