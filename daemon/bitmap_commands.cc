#include "daemon/bitmap_commands.h"
#include "daemon/qmp_results.h"

#include <memory>
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

// A bitmap found by node-name and name (QEMU's block_dirty_bitmap_lookup).
struct Found {
    std::shared_ptr<BlockNode> node;
    DirtyBitmap* bitmap;
};

Result<Found> lookup(const block::BlockGraph& graph, const std::string& node_name, const std::string& name) {
    auto node = graph.find(node_name);
    if (!node) return fail(ENOENT, "Node '" + node_name + "' not found");
    DirtyBitmap* bitmap = node->dirty_bitmaps().find(name);
    if (bitmap == nullptr) return fail(ENOENT, "Dirty bitmap '" + name + "' not found");
    return Found{std::move(node), bitmap};
}

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
    if (!v->is_number_integer()) return fail(EINVAL, "Parameter '" + key + "' expects uint64");
    const bool in_range = v->is_number_unsigned() ? v->get<uint64_t>() <= UINT32_MAX
                                                  : v->get<int64_t>() >= 0 && v->get<int64_t>() <= UINT32_MAX;
    if (!in_range) return fail(EINVAL, "Parameter '" + key + "' expects uint32_t");
    return v->get<uint64_t>();
}

struct AddArgs {
    std::string node, name;
    std::optional<uint64_t> granularity;
    bool persistent = false, disabled = false;
};

Result<AddArgs> read_add_args(const json& args) {
    OptionReader r(args, OptionSyntax::json, "");
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

// QEMU's qmp_block_dirty_bitmap_add: the checks in its order, then the
// bitmap made (disabled and persistent as asked) in one drained section.
Result<void> add_bitmap(const block::BlockGraph& graph, const AddArgs& a) {
    if (a.name.empty()) return fail(EINVAL, "Bitmap name cannot be empty");
    auto node = graph.find(a.node);
    if (!node) return fail(ENOENT, "Cannot find device='" + a.node + "' nor node-name='" + a.node + "'");
    block::DirtyBitmaps& bitmaps = node->dirty_bitmaps();
    uint64_t granularity = bitmaps.default_granularity();
    if (a.granularity) {
        if (!block::valid_bitmap_granularity(*a.granularity))
            return fail(EINVAL, "Granularity must be power of 2 and at least 512");
        granularity = *a.granularity;
    }
    if (a.persistent)
        if (auto r = bitmaps.can_store(a.name, granularity); !r) return r;
    block::DrainedSection drained(*node);
    auto bitmap = bitmaps.create(a.name, granularity);
    if (!bitmap) return std::unexpected(bitmap.error());
    if (a.disabled) (*bitmap)->set_enabled(false);
    (*bitmap)->set_persistent(a.persistent);
    LOG_INFO("node '%s': dirty bitmap '%s' added (granularity %llu%s%s)", a.node.c_str(), a.name.c_str(),
             (unsigned long long)granularity, a.disabled ? ", disabled" : "", a.persistent ? ", persistent" : "");
    return {};
}

// QEMU's block_dirty_bitmap_remove: a persistent bitmap leaves the image
// too (an inconsistent one may be removed: that is all it is good for).
Result<void> remove_bitmap(const block::BlockGraph& graph, const std::string& node_name, const std::string& name) {
    auto found = lookup(graph, node_name, name);
    if (!found) return std::unexpected(found.error());
    if (auto r = found->bitmap->check(block::kBitmapBusy | block::kBitmapReadOnly); !r) return r;
    block::DrainedSection drained(*found->node);
    if (auto r = found->node->dirty_bitmaps().remove(*found->bitmap); !r) return r;
    LOG_INFO("node '%s': dirty bitmap '%s' removed", node_name.c_str(), name.c_str());
    return {};
}

Result<void> clear_bitmap(const block::BlockGraph& graph, const std::string& node_name, const std::string& name) {
    auto found = lookup(graph, node_name, name);
    if (!found) return std::unexpected(found.error());
    if (auto r = found->bitmap->check(block::kBitmapDefault); !r) return r;
    block::DrainedSection drained(*found->node);
    found->bitmap->bits().clear();
    return {};
}

// Enabling and disabling are allowed on a read-only bitmap (QEMU's
// BDRV_BITMAP_ALLOW_RO).
Result<void> enable_bitmap(const block::BlockGraph& graph, const std::string& node_name, const std::string& name,
                           bool enable) {
    auto found = lookup(graph, node_name, name);
    if (!found) return std::unexpected(found.error());
    if (auto r = found->bitmap->check(block::kBitmapAllowReadOnly); !r) return r;
    block::DrainedSection drained(*found->node);
    found->bitmap->set_enabled(enable);
    return {};
}

// QEMU's block_dirty_bitmap_merge: the target first, then each source in
// turn (a name on the target's node, or {node, name} anywhere), each
// checked as QEMU checks it just before merging it; QEMU undoes the merges
// done when a later source fails, so here every source is checked before
// any is merged. Sources are read and the target written with all their
// nodes drained.
Result<void> merge_bitmaps(const block::BlockGraph& graph, const std::string& node_name, const std::string& target,
                           const json& sources) {
    auto dst = lookup(graph, node_name, target);
    if (!dst) return std::unexpected(dst.error());
    std::vector<std::unique_ptr<block::DrainedSection>> drained;
    std::vector<BlockNode*> drained_nodes;
    auto drain = [&](BlockNode& n) {
        if (std::find(drained_nodes.begin(), drained_nodes.end(), &n) != drained_nodes.end()) return;
        drained.push_back(std::make_unique<block::DrainedSection>(n));
        drained_nodes.push_back(&n);
    };
    drain(*dst->node);
    std::vector<const DirtyBitmap*> checked;
    for (size_t i = 0; i < sources.size(); i++) {
        const json& s = sources[i];
        const DirtyBitmap* src = nullptr;
        if (s.is_string()) {
            src = dst->node->dirty_bitmaps().find(s.get<std::string>());
            if (src == nullptr) return fail(ENOENT, "Dirty bitmap '" + s.get<std::string>() + "' not found");
        } else {
            auto ref = read_node_and_name(s, "bitmaps[" + std::to_string(i) + "].");
            if (!ref) return std::unexpected(ref.error());
            auto found = lookup(graph, ref->first, ref->second);
            if (!found) return std::unexpected(found.error());
            drain(*found->node);
            src = found->bitmap;
        }
        if (auto r = dst->bitmap->check(block::kBitmapDefault); !r) return r;
        if (auto r = src->check(block::kBitmapAllowReadOnly); !r) return r;
        if (src->bits().length() != dst->bitmap->bits().length())
            return fail(EINVAL, "Bitmaps are of different sizes (destination size is " +
                                    std::to_string(dst->bitmap->bits().length()) + ", source size is " +
                                    std::to_string(src->bits().length()) + ") and can't be merged");
        checked.push_back(src);
    }
    for (const DirtyBitmap* src : checked)
        if (auto r = dst->bitmap->merge_from(*src); !r) return r;  // checked above: cannot fail
    return {};
}

// The "bitmaps" list: each element a name or an object (QAPI's alternate
// BlockDirtyBitmapOrStr).
Result<void> check_sources(const json* sources) {
    if (sources == nullptr) return fail(EINVAL, "Parameter 'bitmaps' is missing");
    if (!sources->is_array()) return fail(EINVAL, "Invalid parameter type for 'bitmaps', expected: array");
    for (size_t i = 0; i < sources->size(); i++)
        if (!(*sources)[i].is_string() && !(*sources)[i].is_object())
            return fail(EINVAL, "Invalid parameter type for 'bitmaps[" + std::to_string(i) +
                                    "]', expected: BlockDirtyBitmapOrStr");
    return {};
}

}  // namespace

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

void register_bitmap_commands(StorageDaemon& daemon) {
    assert_in_main_thread();
    monitor::QmpDispatcher& qmp = daemon.dispatcher();
    qmp.add_command("block-dirty-bitmap-add", [&daemon](const json& args) -> QmpResult {
        auto a = read_add_args(args);
        if (!a) return refuse(a.error().message);
        return done(add_bitmap(daemon.graph(), *a));
    });
    qmp.add_command("block-dirty-bitmap-remove", [&daemon](const json& args) -> QmpResult {
        auto a = read_node_and_name(args);
        if (!a) return refuse(a.error().message);
        return done(remove_bitmap(daemon.graph(), a->first, a->second));
    });
    qmp.add_command("block-dirty-bitmap-clear", [&daemon](const json& args) -> QmpResult {
        auto a = read_node_and_name(args);
        if (!a) return refuse(a.error().message);
        return done(clear_bitmap(daemon.graph(), a->first, a->second));
    });
    for (auto [command, enable] : {std::pair{"block-dirty-bitmap-enable", true},
                                   std::pair{"block-dirty-bitmap-disable", false}}) {
        qmp.add_command(command, [&daemon, enable](const json& args) -> QmpResult {
            auto a = read_node_and_name(args);
            if (!a) return refuse(a.error().message);
            return done(enable_bitmap(daemon.graph(), a->first, a->second, enable));
        });
    }
    qmp.add_command("block-dirty-bitmap-merge", [&daemon](const json& args) -> QmpResult {
        OptionReader r(args, OptionSyntax::json, "");
        auto node = r.require_string("node");
        if (!node) return refuse(node.error().message);
        auto target = r.require_string("target");
        if (!target) return refuse(target.error().message);
        const json* sources = r.get_raw("bitmaps");
        if (auto c = check_sources(sources); !c) return refuse(c.error().message);
        if (auto c = r.check_all_used(); !c) return refuse(c.error().message);
        return done(merge_bitmaps(daemon.graph(), *node, *target, *sources));
    });
}

}  // namespace ioplane::daemon
