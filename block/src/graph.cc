#include <nlohmann/json.hpp>

#include "drivers.h"
#include "graph_internal.h"
#include "ioplane/block/backend.h"
#include "ioplane/core/log.h"

namespace ioplane::block {
namespace {

using Factory = Result<Opened> (*)(OptionReader&, const OpenContext&);

Factory find_driver(const std::string& name) {
    if (name == "file") return open_file;
    if (name == "null-co") return open_null;
    if (name == "raw") return open_raw;
    return nullptr;
}

Result<std::shared_ptr<BlockNode>> open_node(BlockGraph& graph, const OptionTree& options, AioContext& ctx,
                                             const std::string& node_name, bool inherited_read_only) {
    if (!options.root.is_object()) return fail(EINVAL, "options must be an object");
    OptionReader reader(options);
    (void)reader.get_raw("node-name");  // checked by the caller
    auto driver_name = reader.require_string("driver");
    if (!driver_name) return std::unexpected(driver_name.error());
    Factory factory = find_driver(*driver_name);
    if (factory == nullptr) return fail(EINVAL, "driver '" + *driver_name + "' is not supported");
    auto read_only = reader.get_bool("read-only");
    if (!read_only) return std::unexpected(read_only.error());
    // Generic options qemu-storage-daemon users pass; accepted, no effect here.
    for (const char* key : {"auto-read-only", "force-share", "discard"}) (void)reader.get_raw(key);
    auto detect_zeroes = reader.get_string("detect-zeroes");
    if (!detect_zeroes) return std::unexpected(detect_zeroes.error());
    if (*detect_zeroes && **detect_zeroes != "off") return fail(ENOTSUP, "detect-zeroes is not supported");

    const bool ro = read_only->value_or(inherited_read_only);
    auto opened = factory(reader, OpenContext{graph, ctx, node_name, ro, options.syntax});
    if (!opened) return std::unexpected(opened.error());
    if (auto r = reader.check_all_used(); !r) return std::unexpected(r.error());
    auto node = std::make_shared<BlockNode>(node_name, std::move(opened->driver), ctx, ro);
    if (opened->file_child) node->set_child("file", std::move(opened->file_child));
    return node;
}

bool valid_node_name(const std::string& name) {
    // QEMU: a letter first, then letters, digits, '-', '.', '_'; at most 31.
    if (name.empty() || name.size() > 31 || !std::isalpha(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
    return true;
}

// Errors from opening a node say which node.
Error about_node(const std::string& name, const Error& e) { return Error{e.code, "node '" + name + "': " + e.message}; }

}  // namespace

std::string BlockGraph::anonymous_name() { return "#block" + std::to_string(anonymous_++); }

Result<std::shared_ptr<BlockNode>> open_child(BlockGraph& graph, const nlohmann::json& spec, const OpenContext& parent) {
    if (spec.is_string()) {
        auto node = graph.find(spec.get<std::string>());
        if (!node) return fail(ENOENT, "no node named '" + spec.get<std::string>() + "'");
        if (&node->ctx() != &parent.ctx)
            return fail(EINVAL, "node '" + node->node_name() + "' is in another context");
        return node;
    }
    const std::string name = graph.anonymous_name();
    auto node = open_node(graph, OptionTree{spec, parent.syntax}, parent.ctx, name, parent.read_only);
    if (!node) return std::unexpected(about_node(name, node.error()));
    return node;
}

Result<std::shared_ptr<BlockNode>> BlockGraph::open(const OptionTree& options, AioContext& ctx) {
    if (!options.root.is_object()) return fail(EINVAL, "blockdev options must be an object");
    auto name_it = options.root.find("node-name");
    if (name_it == options.root.end() || !name_it->is_string()) return fail(EINVAL, "blockdev: missing 'node-name'");
    const std::string name = name_it->get<std::string>();
    if (!valid_node_name(name)) return fail(EINVAL, "blockdev: invalid node-name '" + name + "'");
    if (nodes_.count(name)) return fail(EEXIST, "blockdev: duplicate node-name '" + name + "'");
    auto node = open_node(*this, options, ctx, name, false);
    if (!node) return std::unexpected(about_node(name, node.error()));
    nodes_[name] = *node;
    LOG_INFO("node '%s': opened (%s, %llu bytes%s)", name.c_str(), (*node)->driver().format_name(),
             (unsigned long long)(*node)->driver().length(), (*node)->read_only() ? ", read-only" : "");
    return node;
}
std::shared_ptr<BlockNode> BlockGraph::find(const std::string& node_name) const {
    auto it = nodes_.find(node_name);
    return it == nodes_.end() ? nullptr : it->second;
}

Result<void> BlockGraph::remove(const std::string& node_name) {
    auto it = nodes_.find(node_name);
    if (it == nodes_.end()) return fail(ENOENT, "no node named '" + node_name + "'");
    BlockNode& node = *it->second;
    if (!node.users().empty()) return fail(EBUSY, "node '" + node_name + "' is in use by an export");
    if (node.has_parents()) return fail(EBUSY, "node '" + node_name + "' is a child of another node");
    nodes_.erase(it);
    return {};
}

std::vector<std::shared_ptr<BlockNode>> BlockGraph::nodes() const {
    std::vector<std::shared_ptr<BlockNode>> out;
    for (auto& [name, node] : nodes_) out.push_back(node);
    return out;
}

}  // namespace ioplane::block
