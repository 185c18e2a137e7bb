// blockdev-create's drivers: "file" here, "qcow2" in qcow2/create.cc.
#include "ioplane/block/create.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "ioplane/core/main_loop.h"
#include "ioplane/core/run_in_worker.h"
#include "ioplane/core/unique_fd.h"
#include "qcow2/qcow2.h"

namespace ioplane::block {
namespace {

// The work of a file's creation, in a worker: the file emptied, then sized
// (and with falloc or full, its space allocated or written), as QEMU's
// raw_co_create does. Returns 0 or -errno with `what` failing.
int make_file(const char* path, uint64_t size, int prealloc, const char*& what) {
    UniqueFd fd(::open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return what = "open", -errno;
    if (::ftruncate(fd.get(), 0) < 0 || ::ftruncate(fd.get(), off_t(size)) < 0) return what = "truncate", -errno;
    if (prealloc == 1) {
        if (int e = ::posix_fallocate(fd.get(), 0, off_t(size)); e != 0) return what = "fallocate", -e;
    } else if (prealloc == 2) {
        std::vector<char> zeroes(1 << 20, 0);
        for (uint64_t pos = 0; pos < size;) {
            const ssize_t n = ::pwrite(fd.get(), zeroes.data(), std::min<uint64_t>(zeroes.size(), size - pos), off_t(pos));
            if (n < 0) return what = "write", -errno;
            pos += uint64_t(n);
        }
    }
    if (::fsync(fd.get()) < 0) return what = "fsync", -errno;
    return 0;
}

Task<Result<void>> co_create_file(OptionReader& opts) {
    auto filename = opts.require_string("filename");
    if (!filename) co_return std::unexpected(filename.error());
    auto size = opts.get_size("size");
    if (!size) co_return std::unexpected(size.error());
    if (!*size) co_return fail(EINVAL, "Parameter 'size' is missing");
    auto prealloc = opts.get_string("preallocation");
    if (!prealloc) co_return std::unexpected(prealloc.error());
    int mode = 0;
    if (*prealloc && **prealloc == "falloc") mode = 1;
    else if (*prealloc && **prealloc == "full") mode = 2;
    else if (*prealloc && **prealloc != "off")
        co_return fail(EINVAL, "Unsupported preallocation mode '" + **prealloc + "'");
    // Accepted for QEMU's command lines; they change nothing on this host's
    // file systems that matters to the image.
    if (auto v = opts.get_bool("nocow"); !v) co_return std::unexpected(v.error());
    if (auto v = opts.get_size("extent-size-hint"); !v) co_return std::unexpected(v.error());
    if (auto r = opts.check_all_used(); !r) co_return r;
    const char* path = filename->c_str();
    const uint64_t bytes = **size;
    const char* what = nullptr;
    const int ret = co_await run_in_worker([&] { return make_file(path, bytes, mode, what); });
    if (ret < 0) co_return fail(-ret, "Could not create '" + *filename + "': " + what + ": " + std::strerror(-ret));
    co_return Result<void>{};
}

}  // namespace

Task<Result<void>> co_create_image(BlockGraph& graph, const OptionTree& options) {
    assert_in_main_thread();
    OptionReader opts(options);
    auto driver = opts.require_string("driver");
    if (!driver) co_return std::unexpected(driver.error());
    if (*driver == "file") co_return co_await co_create_file(opts);
    if (*driver == "qcow2") co_return co_await qcow2::co_create_qcow2(graph, opts);
    co_return fail(ENOTSUP, "Driver '" + *driver + "' does not support blockdev-create");
}

}  // namespace ioplane::block
