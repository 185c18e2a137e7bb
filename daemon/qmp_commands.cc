#include "daemon/qmp_commands.h"

#include "daemon/bitmap_commands.h"
#include "daemon/qmp_results.h"
#include "daemon/transaction.h"
#include "ioplane/core/log.h"

namespace ioplane::daemon {
namespace {

using monitor::generic_error;
using monitor::QmpResult;
using nlohmann::json;

// A command whose arguments must be empty.
QmpResult no_arguments(const json& args) {
    OptionTree tree = arguments(args);
    if (auto r = OptionReader(tree).check_all_used(); !r) return error_of(r);
    return json::object();
}

// The argument of a command whose only argument is the string `key`.
Result<std::string> only_string_argument(const json& args, std::string_view key) {
    OptionTree tree = arguments(args);
    OptionReader r(tree);
    auto value = r.require_string(key);
    if (!value) return value;
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return value;
}

// nbd-server-start takes QEMU's SocketAddressLegacy ({"type": "unix", "data":
// {"path": ...}}) where --nbd-server takes the flat SocketAddress.
Result<json> flatten_legacy_address(const json& addr) {
    if (!addr.is_object() || !addr.contains("type") || !addr.contains("data") || !addr["data"].is_object())
        return fail(EINVAL, "Invalid parameter 'addr': expected {\"type\": ..., \"data\": {...}}");
    json flat = addr["data"];
    flat["type"] = addr["type"];
    return flat;
}

// qom-get and qom-set: which object, which property.
struct QomTarget {
    std::string path;
    std::string property;
};

Result<QomTarget> read_qom_target(OptionReader& r) {
    auto path = r.require_string("path");
    if (!path) return std::unexpected(path.error());
    auto property = r.require_string("property");
    if (!property) return std::unexpected(property.error());
    return QomTarget{std::move(*path), std::move(*property)};
}

// QEMU's ImageInfo; with its backing image nested unless `flat`.
json image_info(const block::BlockNode& node, bool flat) {
    const block::Driver& d = node.driver();
    json image = {{"filename", d.filename()}, {"format", d.format_name()}, {"virtual-size", d.length()},
                  {"actual-size", d.allocated_bytes()}, {"dirty-flag", false}};
    d.add_image_info(image);
    if (const block::BlockEdge* backing = node.child(block::ChildRole::backing)) {
        image["full-backing-filename"] = backing->child().driver().filename();
        if (!flat) image["backing-image"] = image_info(backing->child(), false);
    }
    return image;
}

json block_device_info(const block::BlockNode& node, bool flat) {
    const block::Driver& d = node.driver();
    // QEMU's: the chain below (backing files and filtered children), and 0
    // for flat output, which stops at the node.
    int depth = 0;
    if (!flat)
        for (const block::BlockEdge* b = node.chain_child(); b != nullptr; b = b->child().chain_child()) depth++;
    json info = {{"node-name", node.node_name()},
            {"drv", d.format_name()},
            {"file", d.filename()},
            {"ro", node.read_only()},
            {"encrypted", false},
            {"backing_file_depth", depth},
            {"detect_zeroes", "off"},
            {"bps", 0}, {"bps_rd", 0}, {"bps_wr", 0},
            {"iops", 0}, {"iops_rd", 0}, {"iops_wr", 0},
            {"write_threshold", 0},
            {"cache", {{"writeback", true}, {"direct", d.direct_io()}, {"no-flush", false}}},
            {"image", image_info(node, flat)}};
    if (const block::BlockEdge* b = node.child(block::ChildRole::backing))
        info["backing_file"] = b->child().driver().filename();
    if (json bitmaps = dirty_bitmaps_info(node); !bitmaps.is_null()) info["dirty-bitmaps"] = std::move(bitmaps);
    return info;
}

}  // namespace

void register_qmp_commands(StorageDaemon& daemon) {
    monitor::QmpDispatcher& qmp = daemon.dispatcher();

    qmp.add_command("query-version", [](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        return monitor::version_info();
    });
    qmp.add_command("query-commands", [&qmp](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        json list = json::array();
        for (const std::string& name : qmp.command_names()) list.push_back({{"name", name}});
        return list;
    });
    qmp.add_command("quit", [&daemon, &qmp](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        // As qemu-storage-daemon: no SHUTDOWN event, and the response comes
        // after the events of the shutdown (exports deleted, jobs cancelled).
        LOG_INFO("quit: shutting down");
        qmp.defer_response_to_shutdown();
        daemon.request_shutdown();
        return json::object();
    });

    // Block nodes.
    qmp.add_command("blockdev-add", [&daemon](const json& args) -> QmpResult {
        auto options = parse_blockdev(arguments(args));
        if (!options) return error_of(options);
        return done(daemon.add_blockdev(*options));
    });
    qmp.add_command("blockdev-reopen", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        const json* list = r.get_raw("options");
        if (list == nullptr || !list->is_array())
            return error_of(Result<void>(fail(EINVAL, "Parameter 'options' is missing or not a list")));
        if (auto c = r.check_all_used(); !c) return error_of(c);
        return done(daemon.reopen_blockdevs(*list));
    });
    qmp.add_command("blockdev-del", [&daemon](const json& args) -> QmpResult {
        auto name = only_string_argument(args, "node-name");
        if (!name) return error_of(name);
        return done(daemon.del_blockdev(*name));
    });
    qmp.add_command("blockdev-create", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto job_id = r.require_string("job-id");
        if (!job_id) return error_of(job_id);
        const json* options = r.get_raw("options");
        if (options == nullptr || !options->is_object())
            return error_of(Result<void>(fail(EINVAL, "Parameter 'options' is missing")));
        if (auto c = r.check_all_used(); !c) return error_of(c);
        return done(daemon.create_image(*job_id, OptionTree{*options, OptionSyntax::json}));
    });
    qmp.add_command("block_resize", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto device = r.get_string("device");
        if (!device) return error_of(device);
        auto node_name = r.get_string("node-name");
        if (!node_name) return error_of(node_name);
        auto size = r.get_int64("size");
        if (!size) return error_of(size);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        if (!*size) return error_of(Result<void>(fail(EINVAL, "Parameter 'size' is missing")));
        if (**size < 0) return error_of(Result<void>(fail(EINVAL, "Parameter 'size' expects a >0 size")));
        // The storage daemon has no devices: a node-name either way.
        const std::string name = node_name->value_or(device->value_or(""));
        return done(daemon.resize_node(name, uint64_t(**size)));
    });
    // Snapshots: actions of `transaction` (transaction.h, image_commands.cc).
    qmp.add_command("blockdev-snapshot", action_command(daemon, "blockdev-snapshot"));
    qmp.add_command("blockdev-snapshot-sync", action_command(daemon, "blockdev-snapshot-sync"));
    qmp.add_command("query-jobs", [&daemon](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        return daemon.jobs().query();
    });
    // job-cancel is forced: a ready mirror stops without completing.
    qmp.add_command("job-cancel", [&daemon](const json& args) -> QmpResult {
        auto id = only_string_argument(args, "id");
        if (!id) return error_of(id);
        return done(daemon.jobs().cancel(*id, true));
    });
    using JobVerbFn = Result<void> (block::JobManager::*)(const std::string&);
    for (auto [name, verb] : std::initializer_list<std::pair<const char*, JobVerbFn>>{
             {"job-pause", &block::JobManager::pause},
             {"job-resume", &block::JobManager::resume},
             {"job-complete", &block::JobManager::complete},
             {"job-finalize", &block::JobManager::finalize},
             {"job-dismiss", &block::JobManager::dismiss}}) {
        qmp.add_command(name, [&daemon, verb](const json& args) -> QmpResult {
            auto id = only_string_argument(args, "id");
            if (!id) return error_of(id);
            return done((daemon.jobs().*verb)(*id));
        });
    }
    qmp.add_command("query-named-block-nodes", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto flat = r.get_bool("flat");
        if (!flat) return error_of(flat);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        json list = json::array();
        for (auto& node : daemon.graph().nodes()) list.push_back(block_device_info(*node, flat->value_or(false)));
        return list;
    });
    qmp.add_command("x-blockdev-set-iothread", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto name = r.require_string("node-name");
        if (!name) return error_of(name);
        const json* iothread = r.get_raw("iothread");  // a name, or null for the main loop
        if (iothread == nullptr) return std::unexpected(generic_error("Parameter 'iothread' is missing"));
        if (!iothread->is_string() && !iothread->is_null())
            return std::unexpected(generic_error("Invalid parameter type for 'iothread', expected: string or null"));
        auto force = r.get_bool("force");
        if (!force) return error_of(force);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        std::optional<std::string> target;
        if (iothread->is_string()) target = iothread->get<std::string>();
        return done(daemon.set_iothread(*name, target, force->value_or(false)));
    });

    // Dirty bitmaps (bitmap_commands.cc), and transactions of them and
    // snapshots (transaction.cc).
    register_bitmap_commands(daemon);
    register_transaction_command(daemon);

    // Objects: IOThreads and throttle groups.
    qmp.add_command("object-add", [&daemon](const json& args) -> QmpResult {
        std::vector<std::string> warnings;
        auto options = parse_object(arguments(args), warnings);
        if (!options) return error_of(options);
        for (const std::string& w : warnings) LOG_WARN("object-add: %s", w.c_str());
        return done(daemon.add_object(*options));
    });
    qmp.add_command("object-del", [&daemon](const json& args) -> QmpResult {
        auto id = only_string_argument(args, "id");
        if (!id) return error_of(id);
        return done(daemon.del_object(*id));
    });
    qmp.add_command("qom-get", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto target = read_qom_target(r);
        if (!target) return error_of(target);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        auto value = daemon.qom_get(target->path, target->property);
        if (!value) return error_of(value);
        return *value;
    });
    qmp.add_command("qom-set", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto target = read_qom_target(r);
        if (!target) return error_of(target);
        const json* value = r.get_raw("value");
        if (value == nullptr) return error_of(Result<void>(fail(EINVAL, "Parameter 'value' is missing")));
        if (auto c = r.check_all_used(); !c) return error_of(c);
        return done(daemon.qom_set(target->path, target->property, *value));
    });
    qmp.add_command("query-iothreads", [&daemon](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        json list = json::array();
        for (auto& [id, io] : daemon.iothreads()) {
            const PollParams& p = io->poll_params();
            list.push_back({{"id", id},
                            {"thread-id", io->thread_id()},
                            {"poll-max-ns", p.max_ns},
                            {"poll-grow", p.grow},
                            {"poll-shrink", p.shrink},
                            {"aio-max-batch", 0}});
        }
        return list;
    });

    // NBD server and exports.
    qmp.add_command("nbd-server-start", [&daemon](const json& args) -> QmpResult {
        json flat = args;
        if (args.contains("addr")) {
            auto addr = flatten_legacy_address(args["addr"]);
            if (!addr) return error_of(addr);
            flat["addr"] = std::move(*addr);
        }
        auto options = parse_nbd_server(arguments(flat));
        if (!options) return error_of(options);
        return done(daemon.start_nbd_server(*options));
    });
    qmp.add_command("nbd-server-stop", [&daemon](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        return done(daemon.stop_nbd_server());
    });
    qmp.add_command("block-export-add", [&daemon](const json& args) -> QmpResult {
        auto options = parse_export(arguments(args));
        if (!options) return error_of(options);
        return done(daemon.add_export(*options));
    });
    qmp.add_command("block-export-del", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto id = r.require_string("id");
        if (!id) return error_of(id);
        auto mode = r.get_string("mode");
        if (!mode) return error_of(mode);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        const std::string m = mode->value_or("safe");
        if (m != "safe" && m != "hard")
            return std::unexpected(generic_error("Parameter 'mode' does not accept value '" + m + "'"));
        return done(daemon.del_export(*id, m == "hard"));
    });
    qmp.add_command("query-block-exports", [&daemon](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        json list = json::array();
        for (const auto& e : daemon.exports()) {
            list.push_back({{"id", e.options.id}, {"type", e.options.type}, {"node-name", e.node_name()},
                            {"shutting-down", false}});
        }
        return list;
    });
    // ioplane's own: per-export request counters (x-: not in QEMU's schema).
    qmp.add_command("x-query-export-stats", [&daemon](const json& args) -> QmpResult {
        if (auto r = no_arguments(args); !r) return r;
        json list = json::array();
        for (const auto& e : daemon.exports())
            if (e.nbd)  // 9P exports have no per-operation counters yet
                list.push_back({{"id", e.options.id},
                            {"type", e.options.type},
                            {"node-name", e.node_name()},
                            {"connections", e.nbd->connection_count()},
                            {"ops", e.nbd->stats().snapshot()}});
        return list;
    });
}

}  // namespace ioplane::daemon
