// BufferPool: buffers lent again after their lease ends, up to `keep` of
// them; larger requests served apart; every buffer aligned and as large as
// asked.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <vector>

#include "buffer_pool.h"

namespace ioplane::block {
namespace {

TEST(BufferPoolTest, ReturnedBuffersAreLentAgainUpToKeep) {
    BufferPool pool(4096, 1 << 20, 2);
    std::set<char*> first;
    {
        std::vector<BufferPool::Lease> leases;
        for (int i = 0; i < 3; i++) {
            leases.push_back(pool.take(1 << 20));
            ASSERT_TRUE(leases.back());
            EXPECT_EQ(reinterpret_cast<uintptr_t>(leases.back().data()) % 4096, 0u);
            first.insert(leases.back().data());
        }
        EXPECT_EQ(first.size(), 3u);
    }
    // Two of the three were kept: the next two leases are those.
    BufferPool::Lease a = pool.take(4096), b = pool.take(1 << 20);
    EXPECT_TRUE(first.count(a.data()));
    EXPECT_TRUE(first.count(b.data()));
    EXPECT_NE(a.data(), b.data());
    // The lease's buffer is the pool's size, whatever was asked.
    const iovec iov = a.first(1 << 20);
    EXPECT_EQ(iov.iov_len, 1u << 20);
}

TEST(BufferPoolTest, LargerRequestsGetTheirOwnBuffer) {
    BufferPool pool(4096, 64 * 1024, 4);
    BufferPool::Lease small = pool.take(64 * 1024);
    BufferPool::Lease big = pool.take(1 << 20);
    ASSERT_TRUE(small && big);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(big.data()) % 4096, 0u);
    big.data()[(1 << 20) - 1] = 1;  // the whole size is there (ASan checks)
    EXPECT_NE(small.data(), big.data());
}

}  // namespace
}  // namespace ioplane::block
