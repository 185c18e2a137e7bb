#include "ioplane/core/page_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

namespace ioplane {
namespace {

// A file in /dev/shm (tmpfs, the `memory` mode) or in the build tree (`nowait`).
class PageCacheTest : public ::testing::Test {
protected:
    int create(const char* dir) {
        path_ = std::string(dir) + "/ioplane-page-cache-XXXXXX";
        const int fd = ::mkstemp(path_.data());
        EXPECT_GE(fd, 0) << path_;
        return fd;
    }
    void TearDown() override {
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    std::string path_;
};

ssize_t transfer(PageCacheMode mode, int fd, bool write, std::vector<char>& buf, uint64_t offset) {
    const iovec v{buf.data(), buf.size()};
    return transfer_from_memory(mode, fd, write, {&v, 1}, offset, buf.size());
}

TEST_F(PageCacheTest, TmpfsIsMemoryAndServesOnlyRangesThatArePresent) {
    const int fd = create("/dev/shm");
    ASSERT_GE(fd, 0);
    ASSERT_EQ(page_cache_mode(fd), PageCacheMode::memory);
    ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);  // one hole: no page present
    std::vector<char> buf(8192, 'x');
    EXPECT_FALSE(pages_in_memory(fd, 0, 8192));
    EXPECT_EQ(transfer(PageCacheMode::memory, fd, false, buf, 0), -EAGAIN);
    EXPECT_EQ(transfer(PageCacheMode::memory, fd, true, buf, 0), -EAGAIN);
    ASSERT_EQ(::pwrite(fd, buf.data(), buf.size(), 4096), ssize_t(buf.size()));  // pages 1 and 2
    const bool have_cachestat = pages_in_memory(fd, 4096, 8192);
    if (!have_cachestat) GTEST_SKIP() << "this kernel has no cachestat(2) (Linux < 6.5): memory mode never serves";
    EXPECT_TRUE(pages_in_memory(fd, 4096 + 100, 8000));   // inside them
    EXPECT_FALSE(pages_in_memory(fd, 2048, 8192));        // starts in the hole
    EXPECT_FALSE(pages_in_memory(fd, 4096, 8192 + 1));    // one byte into page 3
    std::vector<char> got(8192);
    EXPECT_EQ(transfer(PageCacheMode::memory, fd, false, got, 4096), 8192);
    EXPECT_EQ(got, buf);
    std::vector<char> patch(100, 'p');
    const iovec v{patch.data(), patch.size()};
    EXPECT_EQ(transfer_from_memory(PageCacheMode::memory, fd, true, {&v, 1}, 5000, patch.size()), 100);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 5050), 1);
    EXPECT_EQ(c, 'p');
    EXPECT_EQ(transfer(PageCacheMode::none, fd, false, got, 4096), -EAGAIN);
    ::close(fd);
}

TEST_F(PageCacheTest, NowaitReadsCachedPagesOrSaysWhyNot) {
    const int fd = create(".");
    ASSERT_GE(fd, 0);
    std::vector<char> buf(4096, 'n');
    ASSERT_EQ(::pwrite(fd, buf.data(), buf.size(), 0), 4096);
    if (page_cache_mode(fd) != PageCacheMode::nowait) GTEST_SKIP() << "the build tree is on a memory filesystem";
    std::vector<char> got(4096);
    const ssize_t n = transfer(PageCacheMode::nowait, fd, false, got, 0);
    // Just written, so cached: copied, or refused by a filesystem without RWF_NOWAIT.
    ASSERT_TRUE(n == 4096 || n == -EOPNOTSUPP) << n;
    if (n == 4096) {
        EXPECT_EQ(got, buf);
    }
    ::close(fd);
}

}  // namespace
}  // namespace ioplane
