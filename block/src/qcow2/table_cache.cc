#include "table_cache.h"

#include <algorithm>

namespace ioplane::block::qcow2 {

TableCache::TableCache(size_t table_bytes, size_t capacity) : table_bytes_(table_bytes), entries_(capacity) {}

TableCache::Entry* TableCache::find(uint64_t offset) {
    auto it = index_.find(offset);
    return it == index_.end() ? nullptr : it->second;
}

TableCache::Entry* TableCache::victim() {
    Entry* best = nullptr;
    for (Entry& e : entries_) {
        if (e.offset == 0) return &e;
        if (e.pins == 0 && (best == nullptr || e.last_use < best->last_use)) best = &e;
    }
    return best;
}

void TableCache::assign(Entry& e, uint64_t offset) {
    if (e.offset != 0) forget(e);
    if (!e.data) e.data = std::make_unique<uint8_t[]>(table_bytes_);
    e.offset = offset;
    index_[offset] = &e;
    e.dirty = false;
    touch(e);
}

void TableCache::discard(uint64_t offset) {
    if (Entry* e = find(offset)) forget(*e);
}

void TableCache::forget(Entry& e) {
    index_.erase(e.offset);
    e.offset = 0;
    e.dirty = false;
}

std::vector<TableCache::Entry*> TableCache::dirty_entries() {
    std::vector<Entry*> out;
    for (Entry& e : entries_)
        if (e.offset != 0 && e.dirty) out.push_back(&e);
    std::sort(out.begin(), out.end(), [](const Entry* a, const Entry* b) { return a->last_use < b->last_use; });
    return out;
}

bool TableCache::any_dirty() const {
    return std::any_of(entries_.begin(), entries_.end(), [](const Entry& e) { return e.offset != 0 && e.dirty; });
}

void TableCache::clean() {
    for (Entry& e : entries_) {
        if (e.offset != 0 && !e.dirty && e.pins == 0 && !e.used_since_clean) {
            forget(e);
            e.data.reset();
        }
        e.used_since_clean = false;
    }
}

}  // namespace ioplane::block::qcow2
