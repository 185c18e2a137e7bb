#include <fcntl.h>
#include <unistd.h>

#include <functional>

#include <nlohmann/json.hpp>

#include "drivers.h"
#include "graph_internal.h"
#include "ioplane/block/backend.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/unique_fd.h"

namespace ioplane::block {
namespace {

using Factory = Result<Opened> (*)(OptionReader&, const OpenContext&);

Factory find_driver(const std::string& name) {
    if (name == "file") return open_file;
    if (name == "null-co") return open_null;
    if (name == "raw") return open_raw;
    if (name == "blkdebug") return open_blkdebug;
    if (name == "throttle") return open_throttle;
    if (name == "copy-on-read") return open_copy_on_read;
    if (name == "qcow2") return open_qcow2;
    if (name == "copy-before-write") return open_copy_before_write;
    if (name == "snapshot-access") return open_snapshot_access;
    return nullptr;
}

// The generic options, over the flags inherited from the parent.
Result<NodeFlags> read_flags(OptionReader& reader, NodeFlags flags) {
    auto read_only = reader.get_bool("read-only");
    if (!read_only) return std::unexpected(read_only.error());
    flags.read_only = read_only->value_or(flags.read_only);
    auto auto_read_only = reader.get_bool("auto-read-only");
    if (!auto_read_only) return std::unexpected(auto_read_only.error());
    flags.auto_read_only = auto_read_only->value_or(flags.auto_read_only);
    auto discard = reader.get_string("discard");
    if (!discard) return std::unexpected(discard.error());
    if (*discard) {
        if (**discard == "unmap" || **discard == "on") flags.unmap = true;
        else if (**discard == "ignore" || **discard == "off") flags.unmap = false;
        else return fail(EINVAL, "parameter 'discard': expected 'ignore' or 'unmap'");
    }
    auto force_share = reader.get_bool("force-share");
    if (!force_share) return std::unexpected(force_share.error());
    flags.force_share = force_share->value_or(flags.force_share);
    if (flags.force_share && !flags.read_only)
        return fail(EINVAL, "force-share=on can only be used with read-only images");
    auto detect_zeroes = reader.get_string("detect-zeroes");
    if (!detect_zeroes) return std::unexpected(detect_zeroes.error());
    if (*detect_zeroes && **detect_zeroes != "off") return fail(ENOTSUP, "detect-zeroes is not supported");
    return flags;
}

// The backing file an image names: its path relative to the image's
// directory, its format recorded or probed (qcow2's magic, else raw).
Result<nlohmann::json> backing_file_options(const BlockNode& node, const BackingFile& backing) {
    std::string path = backing.filename;
    if (path.find("://") != std::string::npos || path.starts_with("json:"))
        return fail(ENOTSUP, "backing file '" + path + "': only local files are supported");
    const std::string image = node.driver().filename();
    if (!path.starts_with("/") && image.find('/') != std::string::npos)
        path = image.substr(0, image.rfind('/') + 1) + path;
    std::string format = backing.format;
    if (format.empty()) {
        format = "raw";
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        unsigned char magic[4];
        if (fd && ::pread(fd.get(), magic, 4, 0) == 4 && magic[0] == 'Q' && magic[1] == 'F' && magic[2] == 'I' &&
            magic[3] == 0xfb)
            format = "qcow2";
    }
    return nlohmann::json{{"driver", format}, {"file", {{"driver", "file"}, {"filename", path}}}};
}

// The backing child: the one the option names, none, or the image's own.
// It is opened read-only (QEMU's bdrv_backing_options).
Result<std::shared_ptr<BlockNode>> open_backing(BlockGraph& graph, const BlockNode& node, const BackingOption& option,
                                                const OpenContext& parent) {
    OpenContext oc = parent;
    oc.flags.read_only = true;
    oc.flags.auto_read_only = false;
    if (option.given) {
        if (option.spec.is_null()) return std::shared_ptr<BlockNode>{};
        return open_child(graph, option.spec, oc);
    }
    auto named = node.driver().backing_file();
    if (!named) return std::shared_ptr<BlockNode>{};
    auto spec = backing_file_options(node, *named);
    if (!spec) return std::unexpected(spec.error());
    oc.syntax = OptionSyntax::json;
    auto child = open_child(graph, *spec, oc);
    if (!child) return fail(child.error().code, "could not open backing file: " + child.error().message);
    return child;
}

Result<std::shared_ptr<BlockNode>> open_node(BlockGraph& graph, const OptionTree& options, AioContext& ctx,
                                             const std::string& node_name, const NodeFlags& inherited) {
    if (!options.root.is_object()) return fail(EINVAL, "options must be an object");
    OptionReader reader(options);
    (void)reader.get_raw("node-name");  // checked by the caller
    auto driver_name = reader.require_string("driver");
    if (!driver_name) return std::unexpected(driver_name.error());
    Factory factory = find_driver(*driver_name);
    if (factory == nullptr) return fail(EINVAL, "driver '" + *driver_name + "' is not supported");
    auto flags = read_flags(reader, inherited);
    if (!flags) return std::unexpected(flags.error());
    auto opened = factory(reader, OpenContext{graph, ctx, node_name, *flags, options.syntax});
    if (!opened) return std::unexpected(opened.error());
    if (auto r = reader.check_all_used(); !r) return std::unexpected(r.error());
    const bool read_only = flags->read_only || opened->fell_back_to_read_only;
    auto node = std::make_shared<BlockNode>(node_name, std::move(opened->driver), ctx, read_only);
    node->set_discard_and_sharing(flags->unmap, flags->force_share);
    for (auto& [role, child] : opened->children)
        if (auto r = node->attach_child(role, std::move(child)); !r) return std::unexpected(r.error());
    node->refresh_limits();
    if (auto r = run_to_completion(ctx, node->driver().co_open()); !r) return std::unexpected(r.error());
    node->refresh_limits();  // the length the image has: finish_open's bitmaps cover it
    if (auto r = node->driver().finish_open(); !r) return std::unexpected(r.error());
    if (node->driver().supports_backing()) {
        const OpenContext oc{graph, ctx, node_name, *flags, options.syntax};
        auto backing = open_backing(graph, *node, opened->backing, oc);
        if (!backing) return std::unexpected(backing.error());
        if (*backing)
            if (auto r = node->attach_child(ChildRole::backing, std::move(*backing)); !r)
                return std::unexpected(r.error());
    }
    node->refresh_limits();
    node->set_open_options(options.root);
    return node;
}

// QEMU's id_wellformed: a letter first, then letters, digits, '-', '.', '_'.
bool well_formed_id(const std::string& name) {
    if (name.empty() || !std::isalpha(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
    return true;
}

// QEMU's node names also fit in 31 characters.
bool valid_node_name(const std::string& name) { return name.size() <= 31 && well_formed_id(name); }

// Errors from opening a node say which node.
Error about_node(const std::string& name, const Error& e) { return Error{e.code, "node '" + name + "': " + e.message}; }

}  // namespace

Result<BackingOption> read_backing_option(OptionReader& opts) {
    const nlohmann::json* spec = opts.get_raw("backing");
    if (spec == nullptr) return BackingOption{};
    if (spec->is_null() || (opts.syntax() == OptionSyntax::keyval && spec->is_string() && spec->get<std::string>().empty()))
        return BackingOption{true, nullptr};
    return BackingOption{true, *spec};
}

std::string BlockGraph::anonymous_name() { return "#block" + std::to_string(anonymous_++); }

Result<std::shared_ptr<BlockNode>> open_child(BlockGraph& graph, const nlohmann::json& spec, const OpenContext& parent) {
    if (spec.is_string()) {
        auto node = graph.find(spec.get<std::string>());
        if (!node) return fail(ENOENT, "no node named '" + spec.get<std::string>() + "'");
        if (&node->ctx() != &parent.ctx)
            return fail(EINVAL, "node '" + node->node_name() + "' is in another context");
        return node;
    }
    if (!spec.is_object()) return fail(EINVAL, "a child must be a node-name or an object of options");
    std::string name;
    if (auto it = spec.find("node-name"); it != spec.end()) {
        if (!it->is_string() || !valid_node_name(it->get<std::string>()))
            return fail(EINVAL, "invalid node-name " + it->dump());
        name = it->get<std::string>();
        if (graph.name_in_use(name)) return fail(EEXIST, "duplicate node-name '" + name + "'");
    } else {
        name = graph.anonymous_name();
    }
    auto node = open_node(graph, OptionTree{spec, parent.syntax}, parent.ctx, name, parent.flags);
    if (!node) return std::unexpected(about_node(name, node.error()));
    graph.add_child_node(*node);
    return node;
}

Result<std::shared_ptr<BlockNode>> open_child(OptionReader& opts, const char* key, const OpenContext& parent) {
    const nlohmann::json* spec = opts.get_raw(key);
    if (spec == nullptr) return fail(EINVAL, "missing " + in_quotes(key));
    return open_child(parent.graph, *spec, parent);
}

namespace {

// The context of the existing nodes the options name as children ("file":
// "f0", "backing": "b0", at any depth), if they agree: a new node goes
// where its children live, as QEMU's does. Null: none named.
AioContext* children_context(const BlockGraph& graph, const nlohmann::json& options) {
    AioContext* found = nullptr;
    bool disagree = false;
    std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& o) {
        for (const char* key : {"file", "backing", "image", "data-file"}) {
            auto it = o.find(key);
            if (it == o.end()) continue;
            if (it->is_object()) {
                walk(*it);
            } else if (it->is_string()) {
                if (auto node = graph.find(it->get<std::string>())) {
                    if (found != nullptr && found != &node->ctx()) disagree = true;
                    found = &node->ctx();
                }
            }
        }
    };
    walk(options);
    return disagree ? nullptr : found;
}

}  // namespace

Result<std::shared_ptr<BlockNode>> BlockGraph::open(const OptionTree& options, AioContext& home) {
    assert_in_main_thread();
    AioContext* children = options.root.is_object() ? children_context(*this, options.root) : nullptr;
    AioContext& ctx = children ? *children : home;
    if (!options.root.is_object()) return fail(EINVAL, "blockdev options must be an object");
    auto name_it = options.root.find("node-name");
    if (name_it == options.root.end() || !name_it->is_string()) return fail(EINVAL, "blockdev: missing 'node-name'");
    const std::string name = name_it->get<std::string>();
    if (!valid_node_name(name)) return fail(EINVAL, "blockdev: invalid node-name '" + name + "'");
    if (name_in_use(name)) return fail(EEXIST, "blockdev: duplicate node-name '" + name + "'");
    auto node = open_node(*this, options, ctx, name, NodeFlags{});
    if (!node) return std::unexpected(about_node(name, node.error()));
    nodes_[name] = Entry{*node, *node};
    LOG_INFO("node '%s': opened (%s, %llu bytes%s)", name.c_str(), (*node)->driver().format_name(),
             (unsigned long long)(*node)->driver().length(), (*node)->read_only() ? ", read-only" : "");
    return node;
}
Result<std::shared_ptr<BlockNode>> BlockGraph::open_unnamed(const OptionTree& options, AioContext& ctx) {
    assert_in_main_thread();
    if (!options.root.is_object() || options.root.contains("node-name"))
        return fail(EINVAL, "an unnamed node's options must be an object without 'node-name'");
    return open_internal(options, ctx);
}

Result<std::shared_ptr<BlockNode>> BlockGraph::open_internal(const OptionTree& options, AioContext& ctx) {
    assert_in_main_thread();
    return open_child(*this, options.root, OpenContext{*this, ctx, "", NodeFlags{}, options.syntax});
}

std::shared_ptr<BlockNode> BlockGraph::find(const std::string& node_name) const {
    assert_in_main_thread();
    auto it = nodes_.find(node_name);
    return it == nodes_.end() ? nullptr : it->second.node.lock();
}

Result<void> BlockGraph::check_new_node_name(const std::string& name) const {
    assert_in_main_thread();
    // QEMU's order: well-formed, unused, then short enough.
    if (!well_formed_id(name)) return fail(EINVAL, "Invalid node-name: '" + name + "'");
    if (name_in_use(name)) return fail(EEXIST, "Duplicate nodes with node-name='" + name + "'");
    if (!valid_node_name(name)) return fail(EINVAL, "Node name too long");
    return {};
}

void BlockGraph::add_child_node(const std::shared_ptr<BlockNode>& node) {
    assert_in_main_thread();
    nodes_[node->node_name()] = Entry{node, nullptr};
}

Result<void> BlockGraph::check_removable(const std::string& node_name) const {
    assert_in_main_thread();
    auto node = find(node_name);
    if (!node) return fail(ENOENT, "Failed to find node with node-name='" + node_name + "'");
    if (!nodes_.at(node_name).owned) return fail(EINVAL, "Node " + node_name + " is not owned by the monitor");
    if (auto r = node->check_not_blocked(); !r) return r;
    if (auto r = node->check_not_backing(); !r) return r;
    for (const BlockEdge* e : node->parents())
        return fail(EBUSY, "Node '" + node_name + "' is busy: it is in use by " + e->parent_name());
    return {};
}

Result<void> BlockGraph::remove(const std::string& node_name) {
    if (auto r = check_removable(node_name); !r) return r;
    auto node = find(node_name);
    // What the node still does on its own (a copy-before-write node's copy
    // that outlived its cbw-timeout) ends first: it holds the node.
    { DrainedSection drained(*node); }
    nodes_.erase(node_name);
    // Children go with their parent; their entries expire (and are pruned here).
    node.reset();
    std::erase_if(nodes_, [](const auto& entry) { return entry.second.node.expired(); });
    return {};
}

std::vector<std::shared_ptr<BlockNode>> BlockGraph::nodes() const {
    assert_in_main_thread();
    std::vector<std::shared_ptr<BlockNode>> out;
    for (auto& [name, entry] : nodes_)
        if (auto node = entry.node.lock()) out.push_back(std::move(node));
    return out;
}

}  // namespace ioplane::block
