// Dirty bitmaps of a node (QEMU's BdrvDirtyBitmap): each records which
// chunks of the node writes, write-zeroes and discards changed while it was
// enabled. Named bitmaps are the monitor's (block-dirty-bitmap-*); jobs
// make anonymous ones, which QMP cannot name (query lists them without a
// name). The request path (io.cc) marks every enabled bitmap of the node
// over each write's range when the write finishes, whether or not it
// failed; a read-only bitmap (one a read-only image holds) makes the node
// refuse writes instead.
//
// Thread contract:
//  - the list (create, release) and each bitmap's flags change in the main
//    thread inside a drained section of the node, so no request of the
//    node is in flight meanwhile;
//  - the bits change in the node's context (the request path marks them; a
//    job that copies what is dirty resets them there), or in the main
//    thread inside a drained section of the node (clear, merge). Whoever
//    reads them (a job, an NBD export) does so in the node's context or
//    drained; bits() asserts it. A drained section waits only for
//    requests, so a job or an export touches the bits inside one of its
//    counted requests (BlockBackend::co_begin_request .. end_request), not
//    between them: a drain then never runs beside it;
//  - the main thread reads names and flags at any time, and a bitmap's
//    dirty_bytes() may be read from any thread (a snapshot).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ioplane/block/dirty_bits.h"
#include "ioplane/core/error.h"

namespace ioplane::block {

class BlockNode;
class DirtyBitmaps;

// What a user of a bitmap checks first (QEMU's BDRV_BITMAP_*): that no
// operation holds it, that it may change, that it is consistent.
enum BitmapCheck : unsigned {
    kBitmapBusy = 1u << 0,
    kBitmapReadOnly = 1u << 1,
    kBitmapInconsistent = 1u << 2,
    kBitmapDefault = kBitmapBusy | kBitmapReadOnly | kBitmapInconsistent,  // to change it
    kBitmapAllowReadOnly = kBitmapBusy | kBitmapInconsistent,              // to read it, or flip enabled
};

// The longest name QEMU accepts (BDRV_BITMAP_MAX_NAME_SIZE).
inline constexpr size_t kMaxBitmapName = 1023;

class DirtyBitmap {
public:
    DirtyBitmap(const DirtyBitmap&) = delete;
    DirtyBitmap& operator=(const DirtyBitmap&) = delete;

    // Any thread (constant).
    const std::string& name() const { return name_; }  // empty: anonymous
    uint64_t granularity() const { return granularity_; }
    BlockNode& node() const;

    // Main thread.
    bool enabled() const { return enabled_; }
    // QEMU's "recording": enabled, or a successor records for it.
    bool recording() const { return enabled_ || (successor_ && successor_->enabled_); }
    bool busy() const { return busy_; }
    bool persistent() const { return persistent_; }
    bool readonly() const { return readonly_; }
    bool inconsistent() const { return inconsistent_; }
    // Main thread, or the node's context inside a request (the flags
    // change only while the node is drained): QEMU's
    // bdrv_dirty_bitmap_check with its messages, for the `what`
    // (BitmapCheck bits) that apply.
    Result<void> check(unsigned what) const;

    // Main thread, drained section of node(). A disabled bitmap ignores
    // writes; a busy one is refused to QMP ("in use by another
    // operation": a job or an export holds it); a read-only one refuses
    // writes to the node; an inconsistent one is disabled and only removed.
    void set_enabled(bool enabled);
    void set_busy(bool busy);
    void set_persistent(bool persistent);
    void set_readonly(bool readonly);
    void set_inconsistent();

    // Any thread: dirty bytes as QEMU counts them (query's "count").
    uint64_t dirty_bytes() const { return bits_.dirty_bytes(); }
    // The node's context, or the main thread in a drained section of the
    // node (asserted).
    DirtyBits& bits();
    const DirtyBits& bits() const;

    // Main thread, drained sections of both nodes: ORs `source` into this
    // bitmap after QEMU's checks (this one may change, `source` may be
    // read, both cover the same length); nothing changes on an error.
    Result<void> merge_from(const DirtyBitmap& source);

    // Successors (QEMU's bdrv_dirty_bitmap_create_successor and friends): a
    // backup job reads this bitmap while an anonymous successor records
    // the writes that come meanwhile; at the job's end the bitmap either
    // takes the successor's bits (abdicate: what the backup copied is no
    // longer dirty) or adds them to its own (reclaim: nothing is lost).
    // Main thread, drained section of node(). Refused when busy; makes the
    // bitmap busy and not enabled, the successor enabled as it was.
    Result<void> create_successor();
    // Main thread, drained: the successor's bits replace this bitmap's, or
    // are added to them; the successor goes, this bitmap records as the
    // successor did and is no longer busy.
    void abdicate();
    void reclaim();
    DirtyBitmap* successor() const { return successor_; }

private:
    friend class DirtyBitmaps;
    DirtyBitmap(DirtyBitmaps& owner, std::string name, uint64_t length, uint64_t granularity);
    void check_bits_access() const;
    void end_succession();

    DirtyBitmaps& owner_;
    const std::string name_;
    const uint64_t granularity_;
    DirtyBits bits_;
    // Main thread, drained (see the thread contract).
    bool enabled_ = true;
    bool busy_ = false;
    bool persistent_ = false;
    bool readonly_ = false;
    bool inconsistent_ = false;
    DirtyBitmap* successor_ = nullptr;  // owned by the node's list
};

// The bitmaps of one node (a member of BlockNode).
class DirtyBitmaps {
public:
    explicit DirtyBitmaps(BlockNode& node) : node_(node) {}
    DirtyBitmaps(const DirtyBitmaps&) = delete;
    DirtyBitmaps& operator=(const DirtyBitmaps&) = delete;

    // The node's context (the request path): whether writes must go
    // through mark() or be refused: one load, false for a node without
    // bitmaps, so that its writes keep the fast path.
    bool tracking() const { return tracking_; }
    // The node's context: whether a read-only bitmap forbids writes.
    bool refuse_writes() const { return readonly_count_ > 0; }
    // The node's context: every enabled bitmap records [offset, offset +
    // bytes) as dirty.
    void mark(uint64_t offset, uint64_t bytes);
    // The node's context, or main thread drained: the node is now `length`
    // bytes long (a truncate).
    void resize(uint64_t length);

    // Main thread: newest first (the order QEMU lists them in).
    const std::vector<std::unique_ptr<DirtyBitmap>>& list() const { return list_; }
    bool empty() const { return list_.empty(); }
    // Main thread: the named bitmap, or null (an empty name finds none).
    DirtyBitmap* find(std::string_view name) const;
    // Main thread: what a new bitmap gets without a granularity (QEMU's
    // bdrv_get_default_bitmap_granularity): the image's cluster size
    // clamped to [4 KiB, 64 KiB], or 64 KiB.
    uint64_t default_granularity() const;
    // Main thread: whether the node's format can make `name` a persistent
    // bitmap (QEMU's bdrv_can_store_new_dirty_bitmap and its messages).
    Result<void> can_store(const std::string& name, uint64_t granularity) const;

    // Main thread, drained section of the node. A bitmap over the node's
    // current length, enabled, clean. `name` empty: anonymous (a job's).
    // Refused, with QEMU's messages, for a name in use or too long, and
    // when the bits would not fit in memory.
    Result<DirtyBitmap*> create(std::string name, uint64_t granularity);
    // Main thread, drained section of the node. The bitmap must not be
    // busy (its user releases it, or clears busy first).
    void release(DirtyBitmap& bitmap);
    // Main thread, drained section of the node: a persistent bitmap
    // leaves the node's image (QEMU's bdrv_remove_persistent_dirty_bitmap,
    // the first step of block-dirty-bitmap-remove); the DirtyBitmap stays
    // until its remover releases it. A transient one: nothing to do.
    Result<void> remove_from_image(const DirtyBitmap& bitmap);

private:
    friend class DirtyBitmap;
    // Main thread, drained: tracking_ and readonly_count_ follow the flags.
    void update_tracking();
    void check_list_change() const;

    BlockNode& node_;
    std::vector<std::unique_ptr<DirtyBitmap>> list_;  // main thread, drained
    // Read by the request path in the node's context; written in the main
    // thread while drained, which orders it before the requests that
    // follow the section (they pass the node's quiesce check after it).
    bool tracking_ = false;       // some bitmap is enabled or read-only
    unsigned readonly_count_ = 0;  // read-only bitmaps
};

// Checks QEMU makes of a granularity given to block-dirty-bitmap-add.
bool valid_bitmap_granularity(uint64_t granularity);

}  // namespace ioplane::block
