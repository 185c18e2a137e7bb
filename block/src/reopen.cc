// blockdev-reopen: a node gets its complete options again, as QEMU 7.2
// takes them. What may change: `read-only` (absent means read-write, as in
// QEMU), `backing` of a format with backing files (another node by name, or
// null to detach; it must be given when the node has one or its image
// names one), and the options a driver lists as reopenable (blkdebug's
// rules).
// Everything else must say what the node was opened with — values compared
// by meaning, so that a keyval string "on" from the command line equals a
// JSON true from QMP — and a child may be named by its node-name instead of
// repeating its options. Anything else is refused naming the option ("Cannot
// change the option 'X'"), and nothing changes: every node is checked before
// any is reopened.
#include <functional>

#include "drivers.h"
#include "ioplane/block/graph.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::block {
namespace {

// Keys every node takes, which reopen handles itself.
bool generic_key(const std::string& key) {
    return key == "node-name" || key == "driver" || key == "read-only" || key == "auto-read-only";
}

// Whether two option values mean the same; a keyval string stands for the
// JSON type on the other side.
bool same_value(const nlohmann::json& a, const nlohmann::json& b) {
    if (a.is_string() && !b.is_string()) return same_value(b, a);
    if (b.is_string() && !a.is_string()) {
        const std::string& text = b.get_ref<const std::string&>();
        if (a.is_boolean()) {
            auto v = parse_bool_value(text);
            return v && *v == a.get<bool>();
        }
        // Integers: sizes ("1M") and plain numbers are both read as sizes,
        // as the options that take them do; negative ones as integers.
        if (a.is_number_integer() && (a.is_number_unsigned() || a.get<int64_t>() >= 0)) {
            auto v = parse_size_value(text);
            return v && *v == a.get<uint64_t>();
        }
        if (a.is_number_integer()) {
            auto v = parse_int64_value(text);
            return v && *v == a.get<int64_t>();
        }
        return false;
    }
    if (a.is_object() && b.is_object()) {
        if (a.size() != b.size()) return false;
        for (auto it = a.begin(); it != a.end(); ++it)
            if (!b.contains(it.key()) || !same_value(it.value(), b.at(it.key()))) return false;
        return true;
    }
    if (a.is_array() && b.is_array()) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); i++)
            if (!same_value(a[i], b[i])) return false;
        return true;
    }
    return a == b;
}

// A child given by node-name where the node was opened with the child's
// options (or the same name): the same child.
bool same_child(const BlockNode& node, const nlohmann::json& now, const nlohmann::json& asked) {
    if (!asked.is_string()) return false;
    const std::string& name = asked.get_ref<const std::string&>();
    for (const auto& edge : node.children()) {
        if (edge->child().node_name() != name) continue;
        if (now.is_string()) return now == asked;
        return now.is_object() && (!now.contains("node-name") || now["node-name"] == asked);
    }
    return false;
}

struct Prepared {
    std::shared_ptr<BlockNode> node;
    bool read_only;
    std::function<void()> commit_driver;  // may be empty
    // Engaged: the backing child becomes this node (null: none).
    std::optional<std::shared_ptr<BlockNode>> backing;
};

// QEMU's bdrv_reopen_parse_file_or_backing for `backing`: what the backing
// child becomes, if it changes. Options (not a name) reopen the child as it
// is, so they must be the ones it was opened with.
Result<std::optional<std::shared_ptr<BlockNode>>> prepare_backing(BlockGraph& graph, BlockNode& node,
                                                                  OptionReader& r) {
    using Change = std::optional<std::shared_ptr<BlockNode>>;
    const BlockEdge* old = node.child(ChildRole::backing);
    auto given = read_backing_option(r);
    if (!given) return std::unexpected(given.error());
    if (!given->given) {
        if (old != nullptr || node.driver().backing_file())
            return fail(EINVAL, "backing is missing for '" + node.node_name() + "'");
        return Change{};
    }
    const nlohmann::json& now = node.open_options().contains("backing") ? node.open_options()["backing"] : nullptr;
    if (given->spec.is_object()) {
        if (same_value(now, given->spec)) return Change{};
        // QEMU compares the flattened options: it names the first one.
        std::string key = "backing";
        for (auto it = given->spec.begin(); it != given->spec.end(); ++it)
            if (!now.is_object() || !now.contains(it.key()) || !same_value(now[it.key()], it.value())) {
                key += "." + it.key();
                break;
            }
        return fail(EINVAL, "Cannot change the option '" + key + "'");
    }
    std::shared_ptr<BlockNode> to;
    if (given->spec.is_string()) {
        const std::string& name = given->spec.get_ref<const std::string&>();
        to = graph.find(name);
        if (!to) return fail(ENOENT, "Cannot find device='' nor node-name='" + name + "'");
        if (std::ranges::count(to->subtree(), &node))
            return fail(EINVAL, "Making '" + name + "' a backing child of '" + node.node_name() + "' would create a cycle");
    } else if (!given->spec.is_null()) {
        return fail(EINVAL, "Invalid parameter type for 'backing', expected: BlockdevRefOrNull");
    }
    if ((old ? old->child_ptr() : nullptr) == to) return Change{};
    // A job's chain (stream, commit) cannot change under it.
    if (auto c = node.check_not_blocked(); !c) return std::unexpected(c.error());
    if (to && &to->ctx() != &node.ctx())
        return fail(EINVAL, "node '" + to->node_name() + "' is in another iothread than node '" + node.node_name() + "'");
    return Change{std::move(to)};
}

// The backing child becomes `to` (null: none); the node is drained, and so
// is `to`.
Result<void> change_backing(BlockNode& node, const std::shared_ptr<BlockNode>& to) {
    BlockEdge* edge = node.child(ChildRole::backing);
    if (!to) {
        node.detach_child(*edge);
    } else if (edge) {
        if (auto r = node.replace_child(*edge, to); !r) return r;
    } else if (auto r = node.attach_child(ChildRole::backing, to); !r) {
        return std::unexpected(r.error());
    }
    nlohmann::json options = node.open_options();
    options["backing"] = to ? nlohmann::json(to->node_name()) : nlohmann::json(nullptr);
    node.set_open_options(std::move(options));
    LOG_INFO("node '%s': backing is now %s", node.node_name().c_str(), to ? to->node_name().c_str() : "none");
    return {};
}

Result<Prepared> prepare(BlockGraph& graph, const OptionTree& asked) {
    OptionReader r(asked);
    auto name = r.require_string("node-name");
    if (!name) return std::unexpected(name.error());
    auto node = graph.find(*name);
    if (!node) return fail(ENOENT, "Cannot find node named '" + *name + "'");
    auto driver = r.require_string("driver");
    if (!driver) return std::unexpected(driver.error());
    if (*driver != node->driver().format_name()) return fail(EINVAL, "Cannot change the option 'driver'");
    auto read_only = r.get_bool("read-only");
    if (!read_only) return std::unexpected(read_only.error());
    (void)r.get_raw("auto-read-only");
    std::optional<std::shared_ptr<BlockNode>> backing;
    if (node->driver().supports_backing()) {
        auto change = prepare_backing(graph, *node, r);
        if (!change) return std::unexpected(change.error());
        backing = std::move(*change);
    }
    const std::vector<std::string> reopenable = node->driver().reopenable_options();
    const nlohmann::json& now = node->open_options();
    std::set<std::string> keys;
    for (auto it = now.begin(); it != now.end(); ++it) keys.insert(it.key());
    for (auto it = asked.root.begin(); it != asked.root.end(); ++it) keys.insert(it.key());
    if (node->driver().supports_backing()) keys.erase("backing");
    for (const std::string& key : keys) {
        if (generic_key(key) || std::ranges::count(reopenable, key)) continue;
        const bool in_now = now.contains(key), in_asked = asked.root.contains(key);
        if (in_now && in_asked && (same_value(now[key], asked.root[key]) || same_child(*node, now[key], asked.root[key]))) {
            (void)r.get_raw(key);
            continue;
        }
        return fail(EINVAL, "Cannot change the option '" + key + "'");
    }
    auto commit = node->driver().prepare_reopen(r);
    if (!commit) return std::unexpected(commit.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return Prepared{std::move(node), read_only->value_or(false), std::move(*commit), std::move(backing)};
}

}  // namespace

Result<void> BlockGraph::reopen(const std::vector<OptionTree>& options_list) {
    assert_in_main_thread();
    std::vector<Prepared> prepared;
    for (const OptionTree& options : options_list) {
        auto p = prepare(*this, options);
        if (!p) return std::unexpected(p.error());
        prepared.push_back(std::move(*p));
    }
    for (Prepared& p : prepared) {
        // A new backing node joins the drained component: drained first.
        std::optional<DrainedSection> drained_backing;
        if (p.backing && *p.backing) drained_backing.emplace(**p.backing);
        DrainedSection drained(*p.node);
        if (auto r = p.node->set_read_only(p.read_only); !r) return r;
        if (p.backing)
            if (auto r = change_backing(*p.node, *p.backing); !r) return r;
        if (p.commit_driver) p.commit_driver();
        LOG_INFO("node '%s': reopened%s", p.node->node_name().c_str(), p.read_only ? " read-only" : " read-write");
    }
    return {};
}

}  // namespace ioplane::block
