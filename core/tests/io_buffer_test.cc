#include "ioplane/core/io_buffer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <thread>

namespace ioplane {
namespace {

bool page_aligned(const char* p) { return (reinterpret_cast<uintptr_t>(p) & 4095) == 0; }

TEST(IoBuffer, PageAlignedAndLargeEnoughForEverySize) {
    for (size_t len : {size_t(0), size_t(1), size_t(4096), size_t(4097), size_t(65536), size_t(1) << 20,
                       (size_t(1) << 20) + 1, size_t(32) << 20}) {
        IoBuffer b = IoBuffer::allocate(len);
        ASSERT_TRUE(b) << len;
        EXPECT_TRUE(page_aligned(b.get())) << len;
        std::memset(b.get(), 0xab, len);  // ASan checks the size
    }
}

TEST(IoBuffer, MovesAndReleasesOnce) {
    IoBuffer a = IoBuffer::allocate(8192);
    char* p = a.get();
    IoBuffer b = std::move(a);
    EXPECT_FALSE(a);
    EXPECT_EQ(b.get(), p);
    b = IoBuffer::allocate(4096);
    b.reset();
    EXPECT_FALSE(b);
}

#if !defined(__SANITIZE_ADDRESS__)
TEST(IoBuffer, FreedBufferIsReusedBySameClass) {
    char* p = IoBuffer::allocate(5000).get();  // the temporary frees it at once
    IoBuffer again = IoBuffer::allocate(8000);  // same 8 KiB class
    EXPECT_EQ(again.get(), p);
}
#endif

TEST(IoBuffer, FreedOnAnotherThread) {
    IoBuffer b = IoBuffer::allocate(4096);
    std::thread([moved = std::move(b)]() mutable { moved.reset(); }).join();
    std::thread([] { IoBuffer local = IoBuffer::allocate(4096); }).join();  // thread exit frees its cache
}

}  // namespace
}  // namespace ioplane
