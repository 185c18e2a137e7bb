#include "ioplane/block/dirty_bitmap.h"

#include <algorithm>
#include <bit>
#include <new>

#include "ioplane/block/node.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/thread_contract.h"

namespace ioplane::block {
namespace {

// What one bitmap may take in memory: at 512 B a 4 TiB node, at 64 KiB a
// 512 TiB one. QEMU has no limit (and aborts when the allocation fails);
// refusing is kinder to the other nodes of the daemon.
constexpr uint64_t kMaxBitmapMemory = uint64_t{1} << 30;

}  // namespace

bool valid_bitmap_granularity(uint64_t granularity) {
    // QMP's granularity is a uint32: 2 GiB is the largest power of two.
    return std::has_single_bit(granularity) && granularity >= 512 && granularity <= (uint64_t{1} << 31);
}

DirtyBitmap::DirtyBitmap(DirtyBitmaps& owner, std::string name, uint64_t length, uint64_t granularity)
    : owner_(owner), name_(std::move(name)), granularity_(granularity), bits_(length, granularity) {}

BlockNode& DirtyBitmap::node() const { return owner_.node_; }

Result<void> DirtyBitmap::check(unsigned what) const {
    IOPLANE_ASSERT(in_main_thread() || node().ctx().in_home_thread());
    if ((what & kBitmapBusy) && busy_)
        return fail(EBUSY, "Bitmap '" + name_ + "' is currently in use by another operation and cannot be used");
    if ((what & kBitmapReadOnly) && readonly_)
        return fail(EPERM, "Bitmap '" + name_ + "' is readonly and cannot be modified");
    if ((what & kBitmapInconsistent) && inconsistent_)
        return fail(EINVAL, "Bitmap '" + name_ + "' is inconsistent and cannot be used");
    return {};
}

void DirtyBitmap::set_enabled(bool enabled) {
    owner_.check_list_change();
    enabled_ = enabled;
    owner_.update_tracking();
}

void DirtyBitmap::set_busy(bool busy) {
    owner_.check_list_change();
    busy_ = busy;
}

void DirtyBitmap::set_persistent(bool persistent) {
    owner_.check_list_change();
    persistent_ = persistent;
}

void DirtyBitmap::set_readonly(bool readonly) {
    owner_.check_list_change();
    readonly_ = readonly;
    owner_.update_tracking();
}

// A persistent bitmap that was not stored properly: kept (so that the
// user sees it) but unusable, as QEMU keeps it.
void DirtyBitmap::set_inconsistent() {
    owner_.check_list_change();
    IOPLANE_ASSERT(persistent_);
    inconsistent_ = true;
    enabled_ = false;
    owner_.update_tracking();
}

void DirtyBitmap::check_bits_access() const {
    IOPLANE_ASSERT(node().ctx().in_home_thread() || (in_main_thread() && node().quiesced()));
}

DirtyBits& DirtyBitmap::bits() {
    check_bits_access();
    return bits_;
}

const DirtyBits& DirtyBitmap::bits() const {
    check_bits_access();
    return bits_;
}

Result<void> DirtyBitmap::merge_from(const DirtyBitmap& source) {
    assert_in_main_thread();
    IOPLANE_ASSERT(node().quiesced() && source.node().quiesced());
    if (auto r = check(kBitmapDefault); !r) return r;
    if (auto r = source.check(kBitmapAllowReadOnly); !r) return r;
    if (source.bits_.length() != bits_.length())
        return fail(EINVAL, "Bitmaps are of different sizes (destination size is " + std::to_string(bits_.length()) +
                                ", source size is " + std::to_string(source.bits_.length()) + ") and can't be merged");
    bits_.merge(source.bits_);
    return {};
}

Result<void> DirtyBitmap::create_successor() {
    owner_.check_list_change();
    if (auto r = check(kBitmapBusy); !r) return r;
    auto successor = owner_.create("", granularity_);
    if (!successor) return std::unexpected(successor.error());
    successor_ = *successor;
    successor_->enabled_ = enabled_;
    enabled_ = false;
    busy_ = true;
    owner_.update_tracking();
    return {};
}

void DirtyBitmap::abdicate() {
    owner_.check_list_change();
    IOPLANE_ASSERT(successor_ != nullptr);
    bits_ = successor_->bits_;
    end_succession();
}

void DirtyBitmap::reclaim() {
    owner_.check_list_change();
    IOPLANE_ASSERT(successor_ != nullptr);
    bits_.merge(successor_->bits_);
    end_succession();
}

void DirtyBitmap::end_succession() {
    enabled_ = successor_->enabled_;
    busy_ = false;
    DirtyBitmap& successor = *successor_;
    successor_ = nullptr;
    owner_.release(successor);
}

void DirtyBitmaps::check_list_change() const {
    assert_in_main_thread();
    IOPLANE_ASSERT(node_.quiesced());
}

void DirtyBitmaps::update_tracking() {
    readonly_count_ = unsigned(std::ranges::count_if(list_, [](const auto& b) { return b->readonly_; }));
    tracking_ = std::ranges::any_of(list_, [](const auto& b) { return b->enabled_ || b->readonly_; });
}

void DirtyBitmaps::mark(uint64_t offset, uint64_t bytes) {
    assert_in_context(node_.ctx());
    for (const auto& b : list_)
        if (b->enabled_) b->bits_.set(offset, bytes);
}

void DirtyBitmaps::resize(uint64_t length) {
    IOPLANE_ASSERT(node_.ctx().in_home_thread() || (in_main_thread() && node_.quiesced()));
    for (const auto& b : list_) b->bits_.resize(length);
}

DirtyBitmap* DirtyBitmaps::find(std::string_view name) const {
    assert_in_main_thread();
    if (name.empty()) return nullptr;
    for (const auto& b : list_)
        if (b->name_ == name) return b.get();
    return nullptr;
}

uint64_t DirtyBitmaps::default_granularity() const {
    assert_in_main_thread();
    const uint64_t cluster = node_.driver().cluster_size();
    return cluster == 0 ? 65536 : std::clamp<uint64_t>(cluster, 4096, 65536);
}

Result<void> DirtyBitmaps::can_store(const std::string& name, uint64_t granularity) const {
    assert_in_main_thread();
    return node_.driver().can_store_bitmap(name, granularity);
}

Result<DirtyBitmap*> DirtyBitmaps::create(std::string name, uint64_t granularity) {
    check_list_change();
    if (!name.empty()) {
        if (find(name)) return fail(EEXIST, "Bitmap already exists: " + name);
        if (name.size() > kMaxBitmapName) return fail(EINVAL, "Bitmap name too long: " + name);
    }
    if (!valid_bitmap_granularity(granularity)) return fail(EINVAL, "Granularity must be power of 2 and at least 512");
    const uint64_t length = node_.length();
    const uint64_t memory = DirtyBits::memory_needed(length, granularity);
    if (memory > kMaxBitmapMemory)
        return fail(ENOMEM, "A dirty bitmap of node '" + node_.node_name() + "' with granularity " +
                                std::to_string(granularity) + " would take " + std::to_string(memory >> 20) +
                                " MiB of memory, more than the " + std::to_string(kMaxBitmapMemory >> 20) +
                                " MiB allowed: use a larger granularity");
    std::unique_ptr<DirtyBitmap> bitmap;
    try {
        bitmap.reset(new DirtyBitmap(*this, std::move(name), length, granularity));
    } catch (const std::bad_alloc&) {
        return fail(ENOMEM, "Not enough memory for a dirty bitmap of node '" + node_.node_name() + "'");
    }
    // Newest first, as QEMU lists them.
    list_.insert(list_.begin(), std::move(bitmap));
    update_tracking();
    return list_.front().get();
}

void DirtyBitmaps::release(DirtyBitmap& bitmap) {
    check_list_change();
    IOPLANE_ASSERT(!bitmap.busy_);
    std::erase_if(list_, [&bitmap](const auto& b) { return b.get() == &bitmap; });
    update_tracking();
}

Result<void> DirtyBitmaps::remove_from_image(const DirtyBitmap& bitmap) {
    check_list_change();
    if (!bitmap.persistent_) return {};
    return run_to_completion(node_.ctx(), node_.driver().co_remove_persistent_bitmap(bitmap.name_));
}

}  // namespace ioplane::block
