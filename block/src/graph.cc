#include <nlohmann/json.hpp>

#include "drivers.h"
#include "graph_internal.h"
#include "ioplane/block/backend.h"
#include "ioplane/core/log.h"

namespace ioplane::block {
namespace {

using Factory = Result<Opened> (*)(opts::Reader&, const OpenContext&);

Factory find_driver(const std::string& name) {
    if (name == "file") return open_file;
    if (name == "null-co") return open_null;
    if (name == "raw") return open_raw;
    return nullptr;
}

bool valid_node_name(const std::string& name) {
    // QEMU: a letter first, then letters, digits, '-', '.', '_'; at most 31.
    if (name.empty() || name.size() > 31 || !std::isalpha(static_cast<unsigned char>(name[0]))) return false;
    for (char c : name)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return false;
    return true;
}

}  // namespace

std::string BlockGraph::anonymous_name() { return "#block" + std::to_string(anonymous_++); }

Result<std::shared_ptr<BlockNode>> open_node(BlockGraph& graph, const nlohmann::json& options, AioContext& ctx,
                                             std::string node_name, bool inherited_read_only) {
    if (!options.is_object()) return fail(EINVAL, "blockdev options must be an object");
    opts::Reader reader(options, "node '" + node_name + "'");
    reader.ignore("node-name");
    auto driver_name = reader.required_string("driver");
    if (!driver_name) return std::unexpected(driver_name.error());
    Factory factory = find_driver(*driver_name);
    if (factory == nullptr)
        return fail(EINVAL, "node '" + node_name + "': driver '" + *driver_name + "' is not supported");
    auto read_only = reader.boolean("read-only");
    if (!read_only) return std::unexpected(read_only.error());
    // Generic options qemu-storage-daemon users pass; accepted, no effect here.
    for (const char* key : {"auto-read-only", "force-share", "discard", "detect-zeroes"}) reader.ignore(key);
    if (auto dz = options.find("detect-zeroes"); dz != options.end() && *dz != "off")
        return fail(ENOTSUP, "node '" + node_name + "': detect-zeroes is not supported");

    const bool ro = read_only->value_or(inherited_read_only);
    auto opened = factory(reader, OpenContext{graph, ctx, node_name, ro});
    if (!opened) return std::unexpected(opened.error());
    if (auto r = reader.check_all_used(); !r) return std::unexpected(r.error());
    auto node = std::make_shared<BlockNode>(node_name, std::move(opened->driver), ctx, ro);
    if (opened->file_child) node->set_child("file", std::move(opened->file_child));
    return node;
}

Result<std::shared_ptr<BlockNode>> open_child(BlockGraph& graph, const nlohmann::json& spec, AioContext& ctx,
                                              const std::string& what, bool read_only) {
    if (spec.is_string()) {
        auto node = graph.find(spec.get<std::string>());
        if (!node) return fail(ENOENT, what + ": no node named '" + spec.get<std::string>() + "'");
        if (&node->ctx() != &ctx) return fail(EINVAL, what + ": node '" + node->node_name() + "' is in another context");
        return node;
    }
    return open_node(graph, spec, ctx, graph.anonymous_name(), read_only);
}

Result<std::shared_ptr<BlockNode>> BlockGraph::open(const nlohmann::json& options, AioContext& ctx) {
    if (!options.is_object()) return fail(EINVAL, "blockdev options must be an object");
    auto name_it = options.find("node-name");
    if (name_it == options.end() || !name_it->is_string()) return fail(EINVAL, "blockdev: 'node-name' is required");
    const std::string name = name_it->get<std::string>();
    if (!valid_node_name(name)) return fail(EINVAL, "blockdev: invalid node-name '" + name + "'");
    if (nodes_.count(name)) return fail(EEXIST, "blockdev: duplicate node-name '" + name + "'");
    auto node = open_node(*this, options, ctx, name, false);
    if (!node) return node;
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
