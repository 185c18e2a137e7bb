#include "ioplane/core/io_buffer.h"

#include <array>
#include <cstdlib>
#include <new>

namespace ioplane {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCache = false;  // keep use-after-free of a buffer detectable
#else
constexpr bool kCache = true;
#endif

constexpr std::size_t kPage = 4096;
constexpr int kClasses = 9;                        // 4 KiB .. 1 MiB
constexpr std::size_t kCacheBytes = 16u << 20;     // per thread and class

std::size_t class_size(int cls) { return kPage << cls; }

struct FreeBuffer {
    FreeBuffer* next;
};

thread_local constinit bool t_cache_gone = false;

class BufferCache {
public:
    ~BufferCache() {
        t_cache_gone = true;
        for (auto& head : heads_) {
            while (FreeBuffer* b = head) {
                head = b->next;
                std::free(b);
            }
        }
    }
    char* take(int cls) {
        FreeBuffer* b = heads_[cls];
        if (b == nullptr) return nullptr;
        heads_[cls] = b->next;
        counts_[cls]--;
        return reinterpret_cast<char*>(b);
    }
    bool give(int cls, char* p) {
        if (counts_[cls] * class_size(cls) >= kCacheBytes) return false;
        heads_[cls] = new (p) FreeBuffer{heads_[cls]};
        counts_[cls]++;
        return true;
    }

private:
    std::array<FreeBuffer*, kClasses> heads_{};
    std::array<std::size_t, kClasses> counts_{};
};

thread_local BufferCache t_cache;

}  // namespace

IoBuffer IoBuffer::allocate(std::size_t len) {
    int cls = 0;
    while (cls < kClasses && class_size(cls) < len) cls++;
    if (cls == kClasses) {  // large: straight from the heap
        const std::size_t size = (len + kPage - 1) & ~(kPage - 1);
        return IoBuffer(static_cast<char*>(std::aligned_alloc(kPage, size)), -1);
    }
    if (kCache && !t_cache_gone) {
        if (char* p = t_cache.take(cls)) return IoBuffer(p, cls);
    }
    return IoBuffer(static_cast<char*>(std::aligned_alloc(kPage, class_size(cls))), cls);
}

void IoBuffer::release() noexcept {
    char* p = std::exchange(data_, nullptr);
    if (p == nullptr) return;
    if (kCache && cls_ >= 0 && !t_cache_gone && t_cache.give(cls_, p)) return;
    std::free(p);
}

}  // namespace ioplane
