#include "daemon/bitmap_commands.h"
#include "daemon/qmp_results.h"
#include "daemon/transaction_actions.h"

#include <memory>
#include <optional>
#include <vector>

#include "ioplane/block/dirty_bitmap.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::daemon {
namespace {

using block::BlockNode;
using block::DirtyBitmap;
using monitor::QmpResult;
using nlohmann::json;

// BlockDirtyBitmap: {"node": str, "name": str}, nothing else. `path`
// prefixes the keys in messages (an element of merge's list).
Result<std::pair<std::string, std::string>> read_node_and_name(const json& args, const std::string& path = {}) {
    OptionReader r(args, OptionSyntax::json, path);
    auto node = r.require_string("node");
    if (!node) return std::unexpected(node.error());
    auto name = r.require_string("name");
    if (!name) return std::unexpected(name.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return std::pair{std::move(*node), std::move(*name)};
}

// A QAPI uint32, refused as QEMU's input visitor refuses it: what is not
// an integer as no uint64 (its first step), a negative or too large one as
// no uint32_t.
Result<std::optional<uint64_t>> read_uint32(OptionReader& r, const std::string& key) {
    const json* v = r.get_raw(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_number_integer()) return fail(EINVAL, "Parameter '" + r.full_name(key) + "' expects uint64");
    const bool in_range = v->is_number_unsigned() ? v->get<uint64_t>() <= UINT32_MAX
                                                  : v->get<int64_t>() >= 0 && v->get<int64_t>() <= UINT32_MAX;
    if (!in_range) return fail(EINVAL, "Parameter '" + r.full_name(key) + "' expects uint32_t");
    return v->get<uint64_t>();
}

struct AddArgs {
    std::string node, name;
    std::optional<uint64_t> granularity;
    bool persistent = false, disabled = false;
};

Result<AddArgs> read_add_args(const json& args, const std::string& path) {
    OptionReader r(args, OptionSyntax::json, path);
    AddArgs a;
    auto node = r.require_string("node");
    if (!node) return std::unexpected(node.error());
    auto name = r.require_string("name");
    if (!name) return std::unexpected(name.error());
    auto granularity = read_uint32(r, "granularity");
    if (!granularity) return std::unexpected(granularity.error());
    auto persistent = r.get_bool("persistent");
    if (!persistent) return std::unexpected(persistent.error());
    auto disabled = r.get_bool("disabled");
    if (!disabled) return std::unexpected(disabled.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return AddArgs{std::move(*node), std::move(*name), *granularity, persistent->value_or(false),
                   disabled->value_or(false)};
}

// block-dirty-bitmap-add (QEMU's qmp_block_dirty_bitmap_add, as its
// transaction action runs it): the checks in QEMU's order, then the bitmap
// made (disabled and persistent as asked) with its node drained. Abort
// releases it.
class AddAction final : public TransactionAction {
public:
    explicit AddAction(AddArgs a) : a_(std::move(a)) {}

    Result<void> prepare(Transaction& txn) override {
        if (auto r = txn.require_individual(); !r) return r;
        if (a_.name.empty()) return fail(EINVAL, "Bitmap name cannot be empty");
        node_ = txn.daemon().graph().find(a_.node);
        if (!node_) return fail(ENOENT, "Cannot find device='" + a_.node + "' nor node-name='" + a_.node + "'");
        block::DirtyBitmaps& bitmaps = node_->dirty_bitmaps();
        uint64_t granularity = bitmaps.default_granularity();
        if (a_.granularity) {
            if (!block::valid_bitmap_granularity(*a_.granularity))
                return fail(EINVAL, "Granularity must be power of 2 and at least 512");
            granularity = *a_.granularity;
        }
        if (a_.persistent)
            if (auto r = bitmaps.can_store(a_.name, granularity); !r) return r;
        txn.drain(*node_);
        auto bitmap = bitmaps.create(a_.name, granularity);
        if (!bitmap) return std::unexpected(bitmap.error());
        bitmap_ = *bitmap;
        if (a_.disabled) bitmap_->set_enabled(false);
        bitmap_->set_persistent(a_.persistent);
        return {};
    }
    void commit() override {
        LOG_INFO("node '%s': dirty bitmap '%s' added (granularity %llu%s%s)", a_.node.c_str(), a_.name.c_str(),
                 (unsigned long long)bitmap_->granularity(), a_.disabled ? ", disabled" : "",
                 a_.persistent ? ", persistent" : "");
    }
    // A later action that made it busy (a remove) was aborted first.
    void abort() override { node_->dirty_bitmaps().release(*bitmap_); }

private:
    const AddArgs a_;
    std::shared_ptr<BlockNode> node_;
    DirtyBitmap* bitmap_ = nullptr;
};

// The actions on one named bitmap: find it (QEMU's
// block_dirty_bitmap_lookup), check it, drain its node.
class OneBitmapAction : public TransactionAction {
public:
    OneBitmapAction(std::string node, std::string name) : node_name_(std::move(node)), name_(std::move(name)) {}

protected:
    Result<void> find(Transaction& txn, unsigned checks) {
        if (auto r = txn.require_individual(); !r) return r;
        auto found = lookup_bitmap(txn.daemon().graph(), node_name_, name_);
        if (!found) return std::unexpected(found.error());
        if (auto r = found->bitmap->check(checks); !r) return r;
        node_ = std::move(found->node);
        bitmap_ = found->bitmap;
        txn.drain(*node_);
        return {};
    }

    const std::string node_name_, name_;
    std::shared_ptr<BlockNode> node_;
    DirtyBitmap* bitmap_ = nullptr;
};

// block-dirty-bitmap-remove (QEMU's block_dirty_bitmap_remove_*): the
// bitmap stays, busy, until commit releases it; so a later action of the
// same transaction cannot use it, and abort has it back as it was. A
// persistent bitmap leaves the image at prepare, as in QEMU (an aborted
// removal keeps it in memory, and the next store writes it again).
class RemoveAction final : public OneBitmapAction {
public:
    using OneBitmapAction::OneBitmapAction;
    Result<void> prepare(Transaction& txn) override {
        if (auto r = find(txn, block::kBitmapBusy | block::kBitmapReadOnly); !r) return r;
        if (auto r = node_->dirty_bitmaps().remove_from_image(*bitmap_); !r) return r;
        bitmap_->set_busy(true);
        return {};
    }
    void commit() override {
        bitmap_->set_busy(false);
        node_->dirty_bitmaps().release(*bitmap_);
        LOG_INFO("node '%s': dirty bitmap '%s' removed", node_name_.c_str(), name_.c_str());
    }
    void abort() override { bitmap_->set_busy(false); }
};

// block-dirty-bitmap-clear: the bits kept until commit, for abort.
class ClearAction final : public OneBitmapAction {
public:
    using OneBitmapAction::OneBitmapAction;
    Result<void> prepare(Transaction& txn) override {
        if (auto r = find(txn, block::kBitmapDefault); !r) return r;
        backup_.emplace(bitmap_->bits());
        bitmap_->bits().clear();
        return {};
    }
    void abort() override { bitmap_->bits() = *backup_; }
    void clean() override { backup_.reset(); }

private:
    std::optional<block::DirtyBits> backup_;
};

// block-dirty-bitmap-enable and -disable; allowed on a read-only bitmap
// (QEMU's BDRV_BITMAP_ALLOW_RO).
class EnableAction final : public OneBitmapAction {
public:
    EnableAction(std::string node, std::string name, bool enable)
        : OneBitmapAction(std::move(node), std::move(name)), enable_(enable) {}
    Result<void> prepare(Transaction& txn) override {
        if (auto r = find(txn, block::kBitmapAllowReadOnly); !r) return r;
        was_enabled_ = bitmap_->enabled();
        bitmap_->set_enabled(enable_);
        return {};
    }
    void abort() override { bitmap_->set_enabled(was_enabled_); }

private:
    const bool enable_;
    bool was_enabled_ = false;
};

// block-dirty-bitmap-merge (QEMU's block_dirty_bitmap_merge): the target
// first, then each source in turn (a name on the target's node, or {node,
// name} anywhere), each checked as QEMU checks it just before merging it;
// QEMU undoes the merges done when a later source fails, so here every
// source is checked before any is merged. Every node involved is drained.
// The target's old bits are kept until commit, for abort.
class MergeAction final : public TransactionAction {
public:
    // `path`: the action's, for the members of a source in messages.
    MergeAction(std::string node, std::string target, json sources, std::string path)
        : node_name_(std::move(node)), target_(std::move(target)), sources_(std::move(sources)),
          path_(std::move(path)) {}

    Result<void> prepare(Transaction& txn) override {
        if (auto r = txn.require_individual(); !r) return r;
        const block::BlockGraph& graph = txn.daemon().graph();
        auto dst = lookup_bitmap(graph, node_name_, target_);
        if (!dst) return std::unexpected(dst.error());
        txn.drain(*dst->node);
        std::vector<const DirtyBitmap*> checked;
        std::vector<std::shared_ptr<BlockNode>> source_nodes;  // alive while merged
        for (size_t i = 0; i < sources_.size(); i++) {
            const json& s = sources_[i];
            const DirtyBitmap* src = nullptr;
            if (s.is_string()) {
                src = dst->node->dirty_bitmaps().find(s.get<std::string>());
                if (src == nullptr) return fail(ENOENT, "Dirty bitmap '" + s.get<std::string>() + "' not found");
            } else {
                auto ref = read_node_and_name(s, source_path(i));
                if (!ref) return std::unexpected(ref.error());
                auto found = lookup_bitmap(graph, ref->first, ref->second);
                if (!found) return std::unexpected(found.error());
                txn.drain(*found->node);
                src = found->bitmap;
                source_nodes.push_back(std::move(found->node));
            }
            if (auto r = dst->bitmap->check(block::kBitmapDefault); !r) return r;
            if (auto r = src->check(block::kBitmapAllowReadOnly); !r) return r;
            if (src->bits().length() != dst->bitmap->bits().length())
                return fail(EINVAL, "Bitmaps are of different sizes (destination size is " +
                                        std::to_string(dst->bitmap->bits().length()) + ", source size is " +
                                        std::to_string(src->bits().length()) + ") and can't be merged");
            checked.push_back(src);
        }
        node_ = std::move(dst->node);
        bitmap_ = dst->bitmap;
        if (checked.empty()) return {};  // QEMU 7.2's daemon dies of this; a no-op here
        backup_.emplace(bitmap_->bits());
        for (const DirtyBitmap* src : checked)
            if (auto r = bitmap_->merge_from(*src); !r) return r;  // checked above: cannot fail
        return {};
    }
    void abort() override {
        if (backup_) bitmap_->bits() = *backup_;
    }
    void clean() override { backup_.reset(); }

private:
    std::string source_path(size_t i) const { return path_ + "bitmaps[" + std::to_string(i) + "]."; }

    const std::string node_name_, target_;
    const json sources_;
    const std::string path_;
    std::shared_ptr<BlockNode> node_;
    DirtyBitmap* bitmap_ = nullptr;
    std::optional<block::DirtyBits> backup_;
};

// The "bitmaps" list: each element a name or an object (QAPI's alternate
// BlockDirtyBitmapOrStr).
Result<void> check_sources(const json* sources, const std::string& path) {
    if (sources == nullptr) return fail(EINVAL, "Parameter '" + path + "bitmaps' is missing");
    if (!sources->is_array()) return fail(EINVAL, "Invalid parameter type for '" + path + "bitmaps', expected: array");
    for (size_t i = 0; i < sources->size(); i++)
        if (!(*sources)[i].is_string() && !(*sources)[i].is_object())
            return fail(EINVAL, "Invalid parameter type for '" + path + "bitmaps[" + std::to_string(i) +
                                    "]', expected: BlockDirtyBitmapOrStr");
    return {};
}

}  // namespace

Result<FoundBitmap> lookup_bitmap(const block::BlockGraph& graph, const std::string& node_name,
                                  const std::string& name) {
    auto node = graph.find(node_name);
    if (!node) return fail(ENOENT, "Node '" + node_name + "' not found");
    DirtyBitmap* bitmap = node->dirty_bitmaps().find(name);
    if (bitmap == nullptr) return fail(ENOENT, "Dirty bitmap '" + name + "' not found");
    return FoundBitmap{std::move(node), bitmap};
}

json dirty_bitmaps_info(const BlockNode& node) {
    assert_in_main_thread();
    const auto& list = node.dirty_bitmaps().list();
    if (list.empty()) return nullptr;
    json out = json::array();
    for (const auto& b : list) {
        // QAPI's member order; "inconsistent" only when true, as QEMU.
        json info = json::object();
        if (!b->name().empty()) info["name"] = b->name();
        info["count"] = b->dirty_bytes();
        info["granularity"] = b->granularity();
        info["recording"] = b->recording();
        info["busy"] = b->busy();
        info["persistent"] = b->persistent();
        if (b->inconsistent()) info["inconsistent"] = true;
        out.push_back(std::move(info));
    }
    return out;
}

ParsedAction parse_bitmap_add_action(const json& data, const std::string& path) {
    auto a = read_add_args(data, path);
    if (!a) return std::unexpected(a.error());
    return std::make_unique<AddAction>(std::move(*a));
}

// The actions whose data is a BlockDirtyBitmap: {node, name}.
template <class Action, class... Extra>
ParsedAction parse_one_bitmap_action(const json& data, const std::string& path, Extra... extra) {
    auto a = read_node_and_name(data, path);
    if (!a) return std::unexpected(a.error());
    return std::make_unique<Action>(std::move(a->first), std::move(a->second), extra...);
}

ParsedAction parse_bitmap_remove_action(const json& data, const std::string& path) {
    return parse_one_bitmap_action<RemoveAction>(data, path);
}
ParsedAction parse_bitmap_clear_action(const json& data, const std::string& path) {
    return parse_one_bitmap_action<ClearAction>(data, path);
}
ParsedAction parse_bitmap_enable_action(const json& data, const std::string& path) {
    return parse_one_bitmap_action<EnableAction>(data, path, true);
}
ParsedAction parse_bitmap_disable_action(const json& data, const std::string& path) {
    return parse_one_bitmap_action<EnableAction>(data, path, false);
}

ParsedAction parse_bitmap_merge_action(const json& data, const std::string& path) {
    OptionReader r(data, OptionSyntax::json, path);
    auto node = r.require_string("node");
    if (!node) return std::unexpected(node.error());
    auto target = r.require_string("target");
    if (!target) return std::unexpected(target.error());
    const json* sources = r.get_raw("bitmaps");
    if (auto c = check_sources(sources, path); !c) return std::unexpected(c.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return std::make_unique<MergeAction>(std::move(*node), std::move(*target), *sources, path);
}

void register_bitmap_commands(StorageDaemon& daemon) {
    assert_in_main_thread();
    for (const char* command : {"block-dirty-bitmap-add", "block-dirty-bitmap-remove", "block-dirty-bitmap-clear",
                                "block-dirty-bitmap-enable", "block-dirty-bitmap-disable", "block-dirty-bitmap-merge"})
        daemon.dispatcher().add_command(command, action_command(daemon, command));
}

}  // namespace ioplane::daemon
