// copy-on-read: a filter whose reads copy data from the backing chain of its
// child into the child (QEMU's copy-on-read driver), so that the child
// comes to hold what it reads: what the stream job does in the background,
// done as a guest reads. With `bottom`, only data from the layers above and
// including that node is copied (the stream job's base stays shared).
#include "drivers.h"
#include "filter_driver.h"
#include "graph_internal.h"
#include "ioplane/block/chain.h"
#include "io_vector.h"

namespace ioplane::block {
namespace {

class CopyOnReadDriver final : public FilterDriver {
public:
    explicit CopyOnReadDriver(std::shared_ptr<BlockNode> bottom) : bottom_(std::move(bottom)) {}
    const char* format_name() const override { return "copy-on-read"; }

    Task<Result<void>> co_preadv(uint64_t offset, uint64_t bytes, std::span<const iovec> iov) override {
        if (!bottom_) co_return co_await edge().co_preadv(offset, bytes, iov, kCopyOnRead);
        // Piece by piece: copy what comes from above the node below bottom.
        const BlockEdge* below_bottom = bottom_->chain_child();
        const BlockNode* base = below_bottom ? &below_bottom->child() : nullptr;
        for (uint64_t done = 0; done < bytes;) {
            unsigned depth = 0;
            auto st = co_await co_block_status_above(edge(), base, offset + done, bytes - done, &depth);
            if (!st) co_return std::unexpected(st.error());
            const std::vector<iovec> part = iov_slice(iov, done, st->bytes);
            auto r = co_await edge().co_preadv(offset + done, st->bytes, part, depth > 0 ? uint32_t(kCopyOnRead) : 0u);
            if (!r) co_return r;
            done += st->bytes;
        }
        co_return Result<void>{};
    }
    // Copies are writes of unchanged data (QEMU's cor_child_perm).
    Perms child_perms(ChildRole, uint32_t perm, uint32_t shared) const override {
        return {perm | kPermWriteUnchanged, shared};
    }

private:
    const std::shared_ptr<BlockNode> bottom_;
};

}  // namespace

Result<Opened> open_copy_on_read(OptionReader& opts, const OpenContext& oc) {
    auto bottom_name = opts.get_string("bottom");
    if (!bottom_name) return std::unexpected(bottom_name.error());
    auto file = open_child(opts, "file", oc);
    if (!file) return std::unexpected(file.error());
    std::shared_ptr<BlockNode> bottom;
    if (*bottom_name) {
        bottom = oc.graph.find(**bottom_name);
        if (!bottom) return fail(ENOENT, "no node named '" + **bottom_name + "'");
        // It must be in the chain below the file.
        bool below = false;
        for (const BlockEdge* e = (*file)->chain_child(); e && !below; e = e->child().chain_child())
            below = &e->child() == bottom.get();
        if (!below) return fail(EINVAL, "node '" + **bottom_name + "' is not in the backing chain of the filter's file");
    }
    return Opened{std::make_unique<CopyOnReadDriver>(std::move(bottom)), {{ChildRole::filtered, *file}}};
}

}  // namespace ioplane::block
