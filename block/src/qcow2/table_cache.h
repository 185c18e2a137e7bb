// A bounded cache of cluster-sized metadata tables (L2 tables or refcount
// blocks) keyed by their offset in the image file (QEMU's Qcow2Cache). It only
// keeps memory: the driver reads tables into it and writes dirty ones back,
// in the order crash safety needs (qcow2/README in docs/QCOW2.md).
//
// A table in use is pinned (TableRef) and never evicted; the least recently
// used unpinned table goes first. clean() drops what was not used since the
// previous clean() (cache-clean-interval).
//
// Thread contract: the node's context, under the driver's metadata lock.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "format.h"

namespace ioplane::block::qcow2 {

class TableCache {
public:
    struct Entry {
        uint64_t offset = 0;  // 0: free slot
        std::unique_ptr<uint8_t[]> data;
        bool dirty = false;
        bool used_since_clean = false;
        unsigned pins = 0;
        uint64_t last_use = 0;
    };

    TableCache(size_t table_bytes, size_t capacity);
    size_t table_bytes() const { return table_bytes_; }
    size_t capacity() const { return entries_.size(); }

    // The cached table at `offset`, or null.
    Entry* find(uint64_t offset);
    // A slot for a new table: a free one, or the least recently used
    // unpinned one (which the caller writes back first if it is dirty).
    // Null when every slot is pinned.
    Entry* victim();
    // Makes `e` (from victim(), written back) hold the table at `offset`;
    // the caller fills its data.
    void assign(Entry& e, uint64_t offset);
    // Forgets the table at `offset` (a freed cluster), dirty or not.
    void discard(uint64_t offset);
    void touch(Entry& e) {
        e.last_use = ++clock_;
        e.used_since_clean = true;
    }
    // Dirty entries, oldest use first.
    std::vector<Entry*> dirty_entries();
    bool any_dirty() const;
    // Drops clean, unpinned tables not used since the previous call.
    void clean();

private:
    void forget(Entry& e);

    size_t table_bytes_;
    std::vector<Entry> entries_;
    std::unordered_map<uint64_t, Entry*> index_;  // by offset
    uint64_t clock_ = 0;
};

// A pinned table: reads and writes its 64-bit big-endian entries.
class TableRef {
public:
    TableRef() = default;
    explicit TableRef(TableCache::Entry& e) : e_(&e) { e_->pins++; }
    TableRef(TableRef&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
    TableRef& operator=(TableRef&& o) noexcept {
        if (this != &o) {
            reset();
            e_ = std::exchange(o.e_, nullptr);
        }
        return *this;
    }
    ~TableRef() { reset(); }
    void reset() {
        if (e_) e_->pins--;
        e_ = nullptr;
    }
    explicit operator bool() const { return e_ != nullptr; }

    TableCache::Entry& entry() const { return *e_; }
    uint64_t offset() const { return e_->offset; }
    uint8_t* data() const { return e_->data.get(); }
    uint64_t get(uint64_t index) const { return load_be64(e_->data.get() + 8 * index); }
    void set(uint64_t index, uint64_t value) {
        store_be64(e_->data.get() + 8 * index, value);
        e_->dirty = true;
    }
    void mark_dirty() { e_->dirty = true; }

private:
    TableCache::Entry* e_ = nullptr;
};

}  // namespace ioplane::block::qcow2
