#include "daemon/options.h"

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <set>
#include <string_view>
#include <utility>

namespace ioplane::daemon {

using nlohmann::json;

namespace {

// NBD's limit on export names and descriptions (NBD_MAX_STRING_SIZE in QEMU).
constexpr size_t kMaxNbdString = 4096;
// QEMU stores node names in char[32].
constexpr size_t kMaxNodeNameLength = 31;

std::unexpected<Error> invalid(std::string message) { return fail(EINVAL, std::move(message)); }
std::unexpected<Error> unsupported(std::string message) { return fail(ENOTSUP, std::move(message)); }

// QEMU's id_wellformed(): a letter, then letters, digits, '-', '.' and '_'.
bool id_wellformed(std::string_view id) {
    const auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (id.empty() || !alpha(id[0])) return false;
    for (const char c : id.substr(1)) {
        if (!alpha(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_') return false;
    }
    return true;
}

Result<void> check_id(std::string_view name, std::string_view id) {
    if (id_wellformed(id)) return {};
    return invalid("parameter " + in_quotes(name) + ": expected an identifier (a letter, then letters, digits, " +
                   "'-', '.' or '_'), got " + in_quotes(id));
}

Result<void> check_node_name(std::string_view name, std::string_view node_name) {
    if (auto r = check_id(name, node_name); !r) return r;
    if (node_name.size() > kMaxNodeNameLength) {
        return invalid("parameter " + in_quotes(name) + ": " + in_quotes(node_name) + " is longer than " +
                       std::to_string(kMaxNodeNameLength) + " characters");
    }
    return {};
}

// Keys that QEMU accepts and ioplane deliberately does not: an error rather
// than "unexpected parameter", so that the user knows the syntax was right.
Result<void> reject_unsupported(const OptionReader& r, std::initializer_list<std::string_view> keys) {
    for (const std::string_view key : keys) {
        if (r.has(key)) return unsupported("parameter " + in_quotes(r.full_name(key)) + " is not supported");
    }
    return {};
}

// Reads an optional boolean into `out` (left unchanged when absent).
Result<void> read_bool(OptionReader& r, std::string_view key, bool& out) {
    auto v = r.get_bool(key);
    if (!v) return std::unexpected(v.error());
    if (*v) out = **v;
    return {};
}

// Reads an optional int64 that must not be negative into `out`.
Result<void> read_non_negative(OptionReader& r, std::string_view key, int64_t& out) {
    auto v = r.get_int64(key);
    if (!v) return std::unexpected(v.error());
    if (!*v) return {};
    if (**v < 0) {
        return invalid("parameter " + in_quotes(r.full_name(key)) + ": must be in range [0, " +
                       std::to_string(INT64_MAX) + "]");
    }
    out = **v;
    return {};
}

// Walks the members of a --blockdev below its root: every nested object with
// a node-name is a block node, whose name must be well formed.
Result<void> walk_nested_nodes(const json& v, const std::string& path, std::vector<std::string>* names) {
    if (v.is_array()) {
        for (size_t i = 0; i < v.size(); i++) {
            if (auto r = walk_nested_nodes(v[i], path + std::to_string(i) + ".", names); !r) return r;
        }
        return {};
    }
    if (!v.is_object()) return {};
    if (auto it = v.find("node-name"); it != v.end() && !path.empty()) {
        const std::string key = path + "node-name";
        if (!it->is_string()) return invalid("parameter " + in_quotes(key) + ": expected a string");
        if (auto r = check_node_name(key, it->get_ref<const std::string&>()); !r) return r;
        if (names) names->push_back(it->get<std::string>());
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
        if (!it.value().is_structured()) continue;
        if (auto r = walk_nested_nodes(it.value(), path + it.key() + ".", names); !r) return r;
    }
    return {};
}

// An inherited fd, by number. QEMU also takes a name the monitor's getfd
// gave an fd; a daemon started with its sockets has none.
Result<int> parse_fd_number(const std::string& text, const std::string& param) {
    int fd = -1;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() || fd < 0)
        return unsupported("parameter " + in_quotes(param) + ": " + in_quotes(text) +
                           " is not an fd number (fd names from the monitor's getfd are not supported)");
    if (fd <= 2) return invalid("parameter " + in_quotes(param) + ": fd " + text + " is standard input, output or error");
    return fd;
}

Result<SocketAddress> read_socket_address(OptionReader& a) {
    auto type = a.require_string("type");
    if (!type) return std::unexpected(type.error());
    SocketAddress addr;
    if (*type == "unix") {
        if (auto r = reject_unsupported(a, {"abstract", "tight"}); !r) return std::unexpected(r.error());
        auto path = a.require_string("path");
        if (!path) return std::unexpected(path.error());
        if (path->empty()) return invalid("parameter " + in_quotes(a.full_name("path")) + ": must not be empty");
        addr.type = SocketAddress::Type::unix_socket;
        addr.path = std::move(*path);
    } else if (*type == "inet") {
        if (auto r = reject_unsupported(a, {"numeric", "to", "ipv4", "ipv6", "keep-alive", "mptcp"}); !r) {
            return std::unexpected(r.error());
        }
        auto host = a.require_string("host");
        if (!host) return std::unexpected(host.error());
        auto port = a.require_string("port");
        if (!port) return std::unexpected(port.error());
        if (port->empty()) return invalid("parameter " + in_quotes(a.full_name("port")) + ": must not be empty");
        addr.type = SocketAddress::Type::inet;
        addr.host = std::move(*host);
        addr.port = std::move(*port);
    } else if (*type == "fd") {
        auto str = a.require_string("str");
        if (!str) return std::unexpected(str.error());
        auto fd = parse_fd_number(*str, a.full_name("str"));
        if (!fd) return std::unexpected(fd.error());
        addr.type = SocketAddress::Type::fd;
        addr.fd = *fd;
    } else if (*type == "vsock") {
        return unsupported("parameter " + in_quotes(a.full_name("type")) + ": " + in_quotes(*type) +
                           " is not supported");
    } else {
        return invalid("parameter " + in_quotes(a.full_name("type")) + ": expected 'unix', 'inet' or 'fd', got " +
                       in_quotes(*type));
    }
    if (auto r = a.check_all_used(); !r) return std::unexpected(r.error());
    return addr;
}

// ---------------------------------------------------------------- help texts

constexpr const char* kUsage =
    "Usage: ioplane-storage-daemon [options]\n"
    "ioplane storage daemon (command line compatible with qemu-storage-daemon)\n"
    "\n"
    "  -h, --help             display this help and exit\n"
    "  -T, --trace <options>  accepted for compatibility and ignored with a warning\n"
    "                         (ioplane has no QEMU trace events)\n"
    "  -V, --version          output version information and exit\n"
    "\n"
    "  --blockdev [driver=]<driver>,node-name=<N>[,read-only=on|off]\n"
    "             [,cache.direct=on|off][,driver specific parameters...]\n"
    "                         configure a block node\n"
    "\n"
    "  --chardev socket,id=<id>,path=<path>[,server=on|off][,wait=on|off]\n"
    "  --chardev socket,id=<id>,host=<host>,port=<port>[,server=on|off][,wait=on|off]\n"
    "  --chardev socket,id=<id>,fd=<fd>[,server=on|off][,wait=on|off]\n"
    "  --chardev stdio,id=<id>\n"
    "                         configure a character device backend (for --monitor);\n"
    "                         server=on listens for QMP clients, server=off (the\n"
    "                         default) connects to one that listens, once at startup\n"
    "\n"
    "  --daemonize            daemonize the process, and have the parent exit\n"
    "                         once startup is complete\n"
    "\n"
    "  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
    "           [,description=<text>][,writable=on|off][,allocation-depth=on|off]\n"
    "           [,bitmaps.0=<bitmap>|bitmaps.0.node=<node>,bitmaps.0.name=<bitmap>...]\n"
    "           [,iothread=<id>][,fixed-iothread=on|off]\n"
    "                         export the specified block node over NBD\n"
    "                         (requires --nbd-server)\n"
    "  --export [type=]vhost-user-blk,id=<id>,node-name=<node-name>,addr.type=unix,\n"
    "           addr.path=<socket-path>|addr.type=fd,addr.str=<fd>[,writable=on|off][,num-queues=<n>]\n"
    "           [,logical-block-size=<size>][,iothread=<id>|iothread.0=<id>,iothread.1=<id>...]\n"
    "                         export the specified block node as a vhost-user-blk\n"
    "                         device; with an iothread list, queue i runs in the\n"
    "                         (i mod n)-th\n"
    "  --export type=9p,id=<id>,path=<dir>,addr.type=unix,addr.path=<socket-path>\n"
    "           [,readonly=on|off][,max-connections=<n>][,iothread=<id>]\n"
    "           [,security-model=passthrough|mapped-xattr|none]\n"
    "                         serve a directory over 9P2000.L (also addr.type=inet;\n"
    "                         max-connections: default 64; security-model: default\n"
    "                         passthrough, mapped-xattr when running as root;\n"
    "                         not in qemu-storage-daemon)\n"
    "\n"
    "  --monitor [chardev=]<id>[,id=<id>][,mode=control][,pretty=on|off]\n"
    "                         configure a QMP monitor\n"
    "\n"
    "  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
    "               [,max-connections=<n>]\n"
    "  --nbd-server addr.type=unix,addr.path=<path>[,max-connections=<n>]\n"
    "  --nbd-server addr.type=fd,addr.str=<fd>[,max-connections=<n>]\n"
    "                         start an NBD server for exporting block nodes\n"
    "\n"
    "  --object help          list object types that can be added\n"
    "  --object <type>,help   list properties for the given object type\n"
    "  --object iothread,id=<id>[,poll-max-ns=<ns>][,poll-grow=<n>][,poll-shrink=<n>]\n"
    "                         create an IOThread, which exports can run in\n"
    "  --object throttle-group,id=<id>[,limits.iops-total=<n>][,limits.bps-total=<n>]...\n"
    "                         create a throttle group, which throttle nodes share\n"
    "\n"
    "  --pidfile <path>       write process ID to a file after startup\n"
    "\n"
    "  --max-buffer-memory <size>\n"
    "                         the memory all clients together may hold in requests\n"
    "                         and replies the daemon buffers (default: 1/8 of RAM);\n"
    "                         a client past its share waits (not in qemu-storage-daemon)\n"
    "\n"
    "Options are processed in the order given: a node, iothread or chardev must be\n"
    "defined before the option that refers to it. Options written as key=value\n"
    "lists also accept a JSON object, e.g. --blockdev '{\"driver\":\"file\",...}'.\n"
    "addr.type=fd takes a listening socket the daemon inherited, by number. TLS and\n"
    "object types other than iothread and throttle-group are not supported.\n";

constexpr const char* kObjectTypesHelp =
    "List of user creatable objects:\n"
    "  iothread\n"
    "  throttle-group\n";

constexpr const char* kThrottleGroupHelp =
    "throttle-group options (QEMU's ThrottleLimits, see docs/BLOCK.md):\n"
    "  id=<str>                      - the group's name, which throttle nodes refer to (required)\n"
    "  limits.iops-total=<int>       - operations per second, reads and writes together\n"
    "  limits.iops-read=<int>, limits.iops-write=<int>\n"
    "  limits.bps-total=<int>        - bytes per second, reads and writes together\n"
    "  limits.bps-read=<int>, limits.bps-write=<int>\n"
    "  limits.<limit>-max=<int>      - burst rate of any of the above\n"
    "  limits.<limit>-max-length=<int> - seconds a burst may last (default 1)\n"
    "  limits.iops-size=<int>        - bytes that count as one operation (0: any request is one)\n";

constexpr const char* kIOThreadHelp =
    "iothread options:\n"
    "  id=<str>               - the IOThread's name, which exports refer to (required)\n"
    "  poll-grow=<int>        - divisor used to grow the polling time (0: default)\n"
    "  poll-max-ns=<int>      - maximum polling time in ns; 0 disables polling (default: 32768)\n"
    "  poll-shrink=<int>      - divisor used to shrink the polling time (0: default)\n"
    "  aio-max-batch=<int>    - accepted for compatibility, ignored\n"
    "  thread-pool-max=<int>  - accepted for compatibility, ignored\n"
    "  thread-pool-min=<int>  - accepted for compatibility, ignored\n";

constexpr const char* kChardevBackendsHelp =
    "Available chardev backend types:\n"
    "  socket\n"
    "  stdio\n";

constexpr const char* kSocketChardevHelp =
    "socket options:\n"
    "  id=<str>               - the chardev's name, which --monitor refers to (required)\n"
    "  path=<str>             - UNIX domain socket path\n"
    "  host=<str>             - TCP host (with port)\n"
    "  port=<str>             - TCP port (with host)\n"
    "  server=on|off          - listen (on) or connect (off, default): a client-mode\n"
    "                           chardev connects once at startup, no reconnect\n"
    "  fd=<int>               - an inherited socket: listening (server=on) or connected\n"
    "  wait=on|off            - server: wait for a client at startup (default: on)\n";

constexpr const char* kStdioChardevHelp =
    "stdio options:\n"
    "  id=<str>               - the chardev's name, which --monitor refers to (required)\n";

// ---------------------------------------------------------------- argv

enum class Opt {
    blockdev,
    chardev,
    daemonize,
    export_,
    help,
    max_buffer_memory,
    monitor,
    nbd_server,
    object,
    pidfile,
    trace,
    version
};

struct LongOption {
    std::string_view name;
    Opt opt;
    bool has_arg;
};

// qemu-storage-daemon's long options (and getopt_long's rules for them).
constexpr LongOption kLongOptions[] = {
    {"blockdev", Opt::blockdev, true},  {"chardev", Opt::chardev, true},
    {"daemonize", Opt::daemonize, false}, {"export", Opt::export_, true},
    {"help", Opt::help, false},          {"max-buffer-memory", Opt::max_buffer_memory, true},
    {"monitor", Opt::monitor, true},
    {"nbd-server", Opt::nbd_server, true}, {"object", Opt::object, true},
    {"pidfile", Opt::pidfile, true},     {"trace", Opt::trace, true},
    {"version", Opt::version, false},
};

// One option as written, after the first pass.
struct Item {
    std::optional<Opt> opt;  // empty: a positional argument
    std::string name;        // "--blockdev", "-T"; the argument itself if positional
    std::string arg;
};

// First pass, like qemu-storage-daemon's pre-init pass: getopt errors, and
// -h/-V, which end processing wherever they appear.
Result<std::vector<Item>> split_argv(int argc, const char* const* argv, DaemonConfig& config) {
    std::vector<Item> items;
    bool options_ended = false;
    for (int i = 1; i < argc; i++) {
        const std::string_view a = argv[i];
        if (options_ended || a.size() < 2 || a[0] != '-') {
            items.push_back(Item{std::nullopt, std::string(a), {}});
            continue;
        }
        if (a == "--") {
            options_ended = true;
            continue;
        }
        if (a.starts_with("--")) {
            const std::string_view body = a.substr(2);
            const size_t eq = body.find('=');
            const std::string_view name = body.substr(0, eq);
            // getopt_long: an exact name, or an unambiguous prefix of one.
            const LongOption* match = nullptr;
            int prefix_matches = 0;
            for (const LongOption& o : kLongOptions) {
                if (o.name == name) {
                    match = &o;
                    prefix_matches = 1;
                    break;
                }
                if (!name.empty() && o.name.starts_with(name)) {
                    match = &o;
                    prefix_matches++;
                }
            }
            if (prefix_matches == 0) return invalid("unknown option " + in_quotes(std::string("--") += name));
            if (prefix_matches > 1) return invalid("option " + in_quotes(std::string("--") += name) + " is ambiguous");
            const std::string canonical = "--" + std::string(match->name);
            if (match->opt == Opt::help) {
                if (eq != std::string_view::npos) return invalid("option '--help' doesn't allow an argument");
                config.help = true;
                return items;
            }
            if (match->opt == Opt::version) {
                if (eq != std::string_view::npos) return invalid("option '--version' doesn't allow an argument");
                config.version = true;
                return items;
            }
            Item item{match->opt, canonical, {}};
            if (match->has_arg) {
                if (eq != std::string_view::npos) {
                    item.arg = body.substr(eq + 1);
                } else if (i + 1 < argc) {
                    item.arg = argv[++i];  // taken even if it starts with '-', as getopt does
                } else {
                    return invalid("option " + in_quotes(canonical) + " requires an argument");
                }
            } else if (eq != std::string_view::npos) {
                return invalid("option " + in_quotes(canonical) + " doesn't allow an argument");
            }
            items.push_back(std::move(item));
            continue;
        }
        // A cluster of short options: -h, -V, -T ARG or -TARG.
        for (size_t j = 1; j < a.size(); j++) {
            const char c = a[j];
            if (c == 'h') {
                config.help = true;
                return items;
            }
            if (c == 'V') {
                config.version = true;
                return items;
            }
            if (c == 'T') {
                Item item{Opt::trace, "-T", {}};
                if (j + 1 < a.size()) {
                    item.arg = a.substr(j + 1);
                } else if (i + 1 < argc) {
                    item.arg = argv[++i];
                } else {
                    return invalid("option '-T' requires an argument");
                }
                items.push_back(std::move(item));
                break;
            }
            return invalid("unknown option " + in_quotes(std::string("-") += c));
        }
    }
    return items;
}

// State of the second pass: what earlier options defined.
class CommandLine {
public:
    explicit CommandLine(DaemonConfig& config) : config_(config) {}

    // The warnings of the options processed since the last call.
    std::vector<std::string> take_warnings() { return std::exchange(warnings_, {}); }

    // Processes one option; sets `stop` when it asks to print help and exit.
    Result<void> process(const Item& item, bool& stop) {
        switch (*item.opt) {
            case Opt::blockdev:
                return blockdev(item.arg);
            case Opt::chardev:
                return chardev(item.arg, stop);
            case Opt::daemonize:
                config_.daemonize = true;
                return {};
            case Opt::export_:
                return export_(item.arg);
            case Opt::monitor:
                return monitor(item.arg);
            case Opt::nbd_server:
                return nbd_server(item.arg);
            case Opt::object:
                return object(item.arg, stop);
            case Opt::pidfile:
                if (item.arg.empty()) return invalid("must not be empty");
                config_.pidfile = item.arg;  // QEMU: the last one wins
                return {};
            case Opt::max_buffer_memory: {
                auto n = parse_size_value(item.arg);
                if (!n) return invalid(n.error().message);
                if (*n < (1u << 20)) return invalid("must be at least 1M");
                config_.max_buffer_memory = *n;
                return {};
            }
            case Opt::trace:
                warnings_.push_back("ignored: ioplane has no QEMU trace events");
                return {};
            case Opt::help:
            case Opt::version:
                break;  // handled by split_argv
        }
        return {};
    }

private:
    Result<void> blockdev(const std::string& arg) {
        auto tree = parse_option_string(arg, "driver");
        if (!tree) return std::unexpected(tree.error());
        auto options = parse_blockdev(std::move(*tree));
        if (!options) return std::unexpected(options.error());
        for (std::string& name : blockdev_node_names(*options)) {
            if (!nodes_.insert(name).second) return invalid("duplicate node name " + in_quotes(name));
        }
        config_.blockdevs.push_back(std::move(*options));
        return {};
    }

    Result<void> object(const std::string& arg, bool& stop) {
        bool help = false;
        auto tree = parse_option_string(arg, "qom-type", &help);
        if (!tree) return std::unexpected(tree.error());
        if (help) {
            auto type = tree->root.find("qom-type");
            if (type == tree->root.end()) {
                config_.option_help = kObjectTypesHelp;
            } else if (*type == "iothread") {
                config_.option_help = kIOThreadHelp;
            } else if (*type == "throttle-group") {
                config_.option_help = kThrottleGroupHelp;
            } else {
                return unsupported("object type " + in_quotes(type->is_string() ? type->get<std::string>() : "?") +
                                   " is not supported");
            }
            stop = true;
            return {};
        }
        std::vector<std::string> warnings;
        auto object = parse_object(*tree, warnings);
        if (!object) return std::unexpected(object.error());
        if (!object_ids_.insert(object->id()).second) return invalid("duplicate object id " + in_quotes(object->id()));
        for (auto& w : warnings) warnings_.push_back(std::move(w));
        if (object->iothread) {
            iothreads_.insert(object->id());
            config_.iothreads.push_back(std::move(*object->iothread));
        } else {
            config_.throttle_groups.push_back(std::move(*object->throttle_group));
        }
        return {};
    }

    Result<void> nbd_server(const std::string& arg) {
        auto tree = parse_option_string(arg);
        if (!tree) return std::unexpected(tree.error());
        auto server = parse_nbd_server(*tree);
        if (!server) return std::unexpected(server.error());
        if (config_.nbd_server) return invalid("an NBD server is already configured");
        config_.nbd_server = std::move(*server);
        return {};
    }

    Result<void> export_(const std::string& arg) {
        auto tree = parse_option_string(arg, "type");
        if (!tree) return std::unexpected(tree.error());
        auto exp = parse_export(*tree);
        if (!exp) return std::unexpected(exp.error());
        if (!exports_.insert(exp->id).second) return invalid("duplicate export id " + in_quotes(exp->id));
        if (!exp->fs9p && !nodes_.contains(exp->node_name)) {
            return invalid("node " + in_quotes(exp->node_name) + " not found (define it with an earlier --blockdev)");
        }
        std::vector<std::string> iothreads = exp->vhost_user_blk ? exp->vhost_user_blk->queue_iothreads
                                                                 : std::vector<std::string>{};
        if (exp->iothread) iothreads.push_back(*exp->iothread);
        for (const std::string& id : iothreads)
            if (!iothreads_.contains(id))
                return invalid("iothread " + in_quotes(id) + " not found (define it with an earlier --object iothread)");
        if (exp->nbd) {
            if (!config_.nbd_server) return invalid("NBD server not running (give --nbd-server before --export)");
            if (!nbd_names_.insert(exp->nbd->name).second) {
                return invalid("duplicate NBD export name " + in_quotes(exp->nbd->name));
            }
        }
        config_.exports.push_back(std::move(*exp));
        return {};
    }

    Result<void> chardev(const std::string& arg, bool& stop) {
        bool help = false;
        std::vector<std::string> warnings;
        auto tree = parse_qemu_opts(arg, "backend", warnings, &help);
        if (!tree) return std::unexpected(tree.error());
        if (help) {
            auto backend = tree->root.find("backend");
            if (backend == tree->root.end()) {
                config_.option_help = kChardevBackendsHelp;
            } else if (*backend == "socket") {
                config_.option_help = kSocketChardevHelp;
            } else if (*backend == "stdio") {
                config_.option_help = kStdioChardevHelp;
            } else {
                return unsupported("chardev backend " + in_quotes(backend->get<std::string>()) + " is not supported");
            }
            stop = true;
            return {};
        }
        auto chr = parse_chardev(*tree);
        if (!chr) return std::unexpected(chr.error());
        if (!chardevs_.insert(chr->id).second) return invalid("duplicate chardev id " + in_quotes(chr->id));
        for (auto& w : warnings) warnings_.push_back(std::move(w));
        config_.chardevs.push_back(std::move(*chr));
        return {};
    }

    Result<void> monitor(const std::string& arg) {
        auto tree = parse_option_string(arg, "chardev");
        if (!tree) return std::unexpected(tree.error());
        auto mon = parse_monitor(*tree);
        if (!mon) return std::unexpected(mon.error());
        if (!chardevs_.contains(mon->chardev)) {
            return invalid("chardev " + in_quotes(mon->chardev) + " not found (define it with an earlier --chardev)");
        }
        if (!monitor_chardevs_.insert(mon->chardev).second) {
            return invalid("chardev " + in_quotes(mon->chardev) + " is already used by another monitor");
        }
        if (mon->id && !monitors_.insert(*mon->id).second) {
            return invalid("duplicate monitor id " + in_quotes(*mon->id));
        }
        config_.monitors.push_back(std::move(*mon));
        return {};
    }

    DaemonConfig& config_;
    std::vector<std::string> warnings_;  // of the option being processed
    std::set<std::string, std::less<>> nodes_;
    std::set<std::string, std::less<>> iothreads_;
    std::set<std::string, std::less<>> object_ids_;  // iothreads and throttle groups
    std::set<std::string, std::less<>> exports_;
    std::set<std::string, std::less<>> nbd_names_;
    std::set<std::string, std::less<>> chardevs_;
    std::set<std::string, std::less<>> monitor_chardevs_;
    std::set<std::string, std::less<>> monitors_;
};

}  // namespace

// ---------------------------------------------------------------- one option

Result<BlockdevOptions> parse_blockdev(OptionTree tree) {
    BlockdevOptions out;
    {
        OptionReader r(tree);
        auto driver = r.require_string("driver");
        if (!driver) return std::unexpected(driver.error());
        if (driver->empty()) return invalid("parameter 'driver': must not be empty");
        auto node_name = r.require_string("node-name");
        if (!node_name) return std::unexpected(node_name.error());
        if (auto c = check_node_name("node-name", *node_name); !c) return std::unexpected(c.error());
        if (auto w = walk_nested_nodes(tree.root, "", nullptr); !w) return std::unexpected(w.error());
        out.driver = std::move(*driver);
        out.node_name = std::move(*node_name);
    }
    out.options = std::move(tree);
    return out;
}

std::vector<std::string> blockdev_node_names(const BlockdevOptions& blockdev) {
    std::vector<std::string> names{blockdev.node_name};
    // Already validated by parse_blockdev; a failure here would only shorten the list.
    (void)walk_nested_nodes(blockdev.options.root, "", &names);
    return names;
}

namespace {

// The group's properties go to the block layer, which reads (and checks)
// them when the daemon creates the group, before anything is served.
Result<ObjectOptions> parse_throttle_group(OptionReader& r, std::string id) {
    ThrottleGroupOptions out{std::move(id), OptionTree{r.unused(), r.syntax()}};
    out.properties.root.erase("qom-type");
    out.properties.root.erase("id");
    return ObjectOptions{.throttle_group = std::move(out)};
}

}  // namespace

Result<ObjectOptions> parse_object(const OptionTree& tree, std::vector<std::string>& warnings) {
    OptionReader r(tree);
    auto type = r.require_string("qom-type");
    if (!type) return std::unexpected(type.error());
    if (*type != "iothread" && *type != "throttle-group") {
        return unsupported("object type " + in_quotes(*type) +
                           " is not supported (ioplane supports 'iothread' and 'throttle-group')");
    }
    auto id = r.require_string("id");
    if (!id) return std::unexpected(id.error());
    if (auto c = check_id("id", *id); !c) return std::unexpected(c.error());
    if (*type == "throttle-group") return parse_throttle_group(r, std::move(*id));
    IOThreadOptions out;
    out.id = std::move(*id);
    if (auto v = read_non_negative(r, "poll-max-ns", out.poll_max_ns); !v) return std::unexpected(v.error());
    if (auto v = read_non_negative(r, "poll-grow", out.poll_grow); !v) return std::unexpected(v.error());
    if (auto v = read_non_negative(r, "poll-shrink", out.poll_shrink); !v) return std::unexpected(v.error());
    for (const char* ignored : {"aio-max-batch", "thread-pool-min", "thread-pool-max"}) {
        int64_t value = -1;
        if (auto v = read_non_negative(r, ignored, value); !v) return std::unexpected(v.error());
        if (value >= 0) {
            warnings.push_back("parameter " + in_quotes(ignored) + " ignored: ioplane does not implement it");
        }
    }
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return ObjectOptions{.iothread = std::move(out)};
}

Result<NbdServerOptions> parse_nbd_server(const OptionTree& tree) {
    OptionReader r(tree);
    if (auto u = reject_unsupported(r, {"tls-creds", "tls-authz"}); !u) return std::unexpected(u.error());
    auto addr = r.get_object("addr");
    if (!addr) return std::unexpected(addr.error());
    if (!*addr) return invalid("missing 'addr'");
    NbdServerOptions out;
    auto a = read_socket_address(**addr);
    if (!a) return std::unexpected(a.error());
    out.addr = std::move(*a);
    auto max = r.get_uint64("max-connections");
    if (!max) return std::unexpected(max.error());
    if (*max) {
        if (**max > UINT32_MAX) {
            return invalid("parameter 'max-connections': " + std::to_string(**max) + " is out of range (at most " +
                           std::to_string(UINT32_MAX) + ")");
        }
        out.max_connections = static_cast<uint32_t>(**max);
    }
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return out;
}

namespace {

// type=9p: path, addr, readonly, max-connections, security-model, iothread;
// no node and no block options.
Result<ExportOptions> parse_9p_export(OptionReader& r, ExportOptions out) {
    Fs9pExportOptions fs;
    auto path = r.require_string("path");
    if (!path) return std::unexpected(path.error());
    if (path->empty() || !path->starts_with("/"))
        return invalid("parameter 'path': must be an absolute directory path");
    fs.path = std::move(*path);
    auto addr = r.get_object("addr");
    if (!addr) return std::unexpected(addr.error());
    if (!*addr) return invalid("missing 'addr'");
    auto a = read_socket_address(**addr);
    if (!a) return std::unexpected(a.error());
    fs.addr = std::move(*a);
    if (auto b = read_bool(r, "readonly", fs.readonly); !b) return std::unexpected(b.error());
    auto max = r.get_uint64("max-connections");
    if (!max) return std::unexpected(max.error());
    if (*max) {
        if (**max == 0 || **max > 65536)
            return invalid("parameter 'max-connections': " + std::to_string(**max) + " is out of range (1 to 65536)");
        fs.max_connections = uint32_t(**max);
    }
    auto model = r.get_string("security-model");
    if (!model) return std::unexpected(model.error());
    if (*model) {
        if (**model != "passthrough" && **model != "mapped-xattr" && **model != "mapped" && **model != "none")
            return invalid("parameter 'security-model': expected 'passthrough', 'mapped-xattr' or 'none', got " +
                           in_quotes(**model));
        fs.security_model = **model;
    }
    auto iothread = r.get_string("iothread");
    if (!iothread) return std::unexpected(iothread.error());
    out.iothread = std::move(*iothread);
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    out.fs9p = std::move(fs);
    return out;
}

// `iothread`: one name, or (vhost-user-blk only) a list, one per queue group.
Result<void> read_export_iothread(OptionReader& r, ExportOptions& out, std::vector<std::string>& list) {
    const nlohmann::json* raw = out.type == "vhost-user-blk" && r.has("iothread") ? r.get_raw("iothread") : nullptr;
    if (!raw || !raw->is_array()) {
        if (raw) {
            if (!raw->is_string()) return invalid("parameter 'iothread': expected a string or a list of strings");
            out.iothread = raw->get<std::string>();
            return {};
        }
        auto iothread = r.get_string("iothread");
        if (!iothread) return std::unexpected(iothread.error());
        out.iothread = std::move(*iothread);
        return {};
    }
    if (raw->empty()) return invalid("parameter 'iothread': an empty list");
    for (const auto& v : *raw) {
        if (!v.is_string()) return invalid("parameter 'iothread': expected a list of strings");
        list.push_back(v.get<std::string>());
    }
    out.iothread = list.front();
    return {};
}

// type=nbd's `bitmaps`: a list whose elements are bitmap names or
// {node, name} objects (bitmaps.0=b0, or bitmaps.0.node=n,bitmaps.0.name=b0).
Result<std::vector<NbdBitmapRef>> read_nbd_bitmaps(OptionReader& r) {
    std::vector<NbdBitmapRef> out;
    const nlohmann::json* raw = r.get_raw("bitmaps");
    if (raw == nullptr) return out;
    if (!raw->is_array()) return invalid("parameter " + in_quotes(r.full_name("bitmaps")) + ": expected a list");
    const bool json = r.syntax() == OptionSyntax::json;
    for (size_t i = 0; i < raw->size(); i++) {
        const nlohmann::json& v = (*raw)[i];
        const std::string key = r.full_name("bitmaps") + (json ? "[" + std::to_string(i) + "]" : "." + std::to_string(i));
        if (v.is_string()) {
            out.push_back({std::nullopt, v.get<std::string>()});
            continue;
        }
        if (!v.is_object())
            return invalid("parameter " + in_quotes(key) + ": expected a bitmap name or an object with 'node' and 'name'");
        OptionReader e(v, r.syntax(), key + ".");
        auto node = e.require_string("node");
        if (!node) return std::unexpected(node.error());
        auto name = e.require_string("name");
        if (!name) return std::unexpected(name.error());
        if (auto c = e.check_all_used(); !c) return std::unexpected(c.error());
        out.push_back({std::move(*node), std::move(*name)});
    }
    return out;
}

// type=vhost-user-blk: addr (unix), num-queues, logical-block-size.
Result<ExportOptions> parse_vhost_user_blk_export(OptionReader& r, ExportOptions out, std::vector<std::string> list) {
    VhostUserBlkOptions v;
    v.queue_iothreads = std::move(list);
    auto addr = r.get_object("addr");
    if (!addr) return std::unexpected(addr.error());
    if (!*addr) return invalid("missing 'addr'");
    auto a = read_socket_address(**addr);
    if (!a) return std::unexpected(a.error());
    if (a->type == SocketAddress::Type::inet) return invalid("parameter 'addr.type': vhost-user-blk needs 'unix' or 'fd'");
    v.addr = std::move(*a);
    auto queues = r.get_uint64("num-queues");
    if (!queues) return std::unexpected(queues.error());
    if (*queues) {
        if (**queues == 0 || **queues > 256) return invalid("parameter 'num-queues': must be between 1 and 256");
        v.num_queues = uint16_t(**queues);
    }
    auto lbs = r.get_size("logical-block-size");
    if (!lbs) return std::unexpected(lbs.error());
    if (*lbs) {
        const uint64_t b = **lbs;
        if (b < 512 || b > 32768 || (b & (b - 1)))
            return invalid("parameter 'logical-block-size': must be a power of 2 between 512 and 32768");
        v.logical_block_size = uint32_t(b);
    }
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    out.vhost_user_blk = std::move(v);
    return out;
}

}  // namespace

Result<ExportOptions> parse_export(const OptionTree& tree) {
    OptionReader r(tree);
    ExportOptions out;
    auto type = r.require_string("type");
    if (!type) return std::unexpected(type.error());
    if (*type == "vduse-blk") return unsupported("export type 'vduse-blk' is not supported");
    if (*type != "nbd" && *type != "vhost-user-blk" && *type != "fuse" && *type != "9p") {
        return invalid("parameter 'type': expected 'nbd', 'vhost-user-blk', 'fuse' or '9p', got " + in_quotes(*type));
    }
    out.type = std::move(*type);
    auto id = r.require_string("id");
    if (!id) return std::unexpected(id.error());
    if (auto c = check_id("id", *id); !c) return std::unexpected(c.error());
    out.id = std::move(*id);
    if (out.type == "9p") return parse_9p_export(r, std::move(out));
    auto node_name = r.require_string("node-name");
    if (!node_name) return std::unexpected(node_name.error());
    out.node_name = std::move(*node_name);
    std::vector<std::string> iothread_list;
    if (auto t = read_export_iothread(r, out, iothread_list); !t) return std::unexpected(t.error());
    if (auto b = read_bool(r, "writable", out.writable); !b) return std::unexpected(b.error());
    if (auto b = read_bool(r, "fixed-iothread", out.fixed_iothread); !b) return std::unexpected(b.error());
    bool writethrough = false;
    if (auto b = read_bool(r, "writethrough", writethrough); !b) return std::unexpected(b.error());
    if (writethrough) return unsupported("parameter 'writethrough' is not supported");

    if (out.type == "vhost-user-blk") return parse_vhost_user_blk_export(r, std::move(out), std::move(iothread_list));
    if (out.type != "nbd") {
        out.type_options = OptionTree{r.unused(), tree.syntax};
        return out;
    }
    NbdExportOptions nbd;
    auto name = r.get_string("name");
    if (!name) return std::unexpected(name.error());
    nbd.name = name->value_or(out.node_name);
    if (nbd.name.size() > kMaxNbdString) {
        return invalid("parameter 'name': longer than " + std::to_string(kMaxNbdString) + " bytes");
    }
    auto description = r.get_string("description");
    if (!description) return std::unexpected(description.error());
    if (*description && (*description)->size() > kMaxNbdString) {
        return invalid("parameter 'description': longer than " + std::to_string(kMaxNbdString) + " bytes");
    }
    nbd.description = std::move(*description);
    if (auto b = read_bool(r, "allocation-depth", nbd.allocation_depth); !b) return std::unexpected(b.error());
    auto bitmaps = read_nbd_bitmaps(r);
    if (!bitmaps) return std::unexpected(bitmaps.error());
    nbd.bitmaps = std::move(*bitmaps);
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    out.nbd = std::move(nbd);
    return out;
}

Result<ChardevOptions> parse_chardev(const OptionTree& tree) {
    OptionReader r(tree);
    ChardevOptions out;
    auto backend = r.require_string("backend");
    if (!backend) return std::unexpected(backend.error());
    auto id = r.require_string("id");
    if (!id) return std::unexpected(id.error());
    if (auto c = check_id("id", *id); !c) return std::unexpected(c.error());
    out.id = std::move(*id);
    if (*backend == "stdio") {
        if (auto u = reject_unsupported(r, {"signal", "mux", "logfile", "logappend"}); !u) {
            return std::unexpected(u.error());
        }
        out.backend = ChardevOptions::Backend::stdio;
    } else if (*backend == "socket") {
        if (auto u = reject_unsupported(r, {"reconnect", "telnet", "tn3270", "websocket", "tls-creds",
                                            "tls-authz", "delay", "nodelay", "abstract", "tight", "to", "ipv4",
                                            "ipv6", "mux", "logfile", "logappend"});
            !u) {
            return std::unexpected(u.error());
        }
        out.backend = ChardevOptions::Backend::socket;
        if (auto b = read_bool(r, "server", out.server); !b) return std::unexpected(b.error());
        auto wait = r.get_bool("wait");
        if (!wait) return std::unexpected(wait.error());
        if (*wait && !out.server) {
            return invalid("'wait' option is incompatible with socket in client connect mode");
        }
        out.wait = wait->value_or(true);
        auto path = r.get_string("path");
        if (!path) return std::unexpected(path.error());
        auto host = r.get_string("host");
        if (!host) return std::unexpected(host.error());
        auto port = r.get_string("port");
        if (!port) return std::unexpected(port.error());
        auto fd = r.get_string("fd");
        if (!fd) return std::unexpected(fd.error());
        if (*fd) {
            if (*path || *host || *port) return invalid("'fd' cannot be combined with 'path', 'host' or 'port'");
            auto n = parse_fd_number(**fd, "fd");
            if (!n) return std::unexpected(n.error());
            out.addr.type = SocketAddress::Type::fd;
            out.addr.fd = *n;
        } else if (*path) {
            if (*host || *port) return invalid("'path' cannot be combined with 'host' or 'port'");
            if ((*path)->empty()) return invalid("parameter 'path': must not be empty");
            out.addr.type = SocketAddress::Type::unix_socket;
            out.addr.path = std::move(**path);
        } else {
            if (!*host) return invalid("missing 'path' (UNIX socket) or 'host' and 'port' (TCP)");
            if (!*port || (*port)->empty()) return invalid("missing 'port'");
            out.addr.type = SocketAddress::Type::inet;
            out.addr.host = std::move(**host);
            out.addr.port = std::move(**port);
        }
    } else {
        return unsupported("chardev backend " + in_quotes(*backend) +
                           " is not supported (ioplane supports 'socket' and 'stdio')");
    }
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return out;
}

Result<MonitorOptions> parse_monitor(const OptionTree& tree) {
    OptionReader r(tree);
    MonitorOptions out;
    auto chardev = r.require_string("chardev");
    if (!chardev) return std::unexpected(chardev.error());
    out.chardev = std::move(*chardev);
    auto id = r.get_string("id");
    if (!id) return std::unexpected(id.error());
    out.id = std::move(*id);
    auto mode = r.get_string("mode");
    if (!mode) return std::unexpected(mode.error());
    if (*mode && **mode != "control") {
        if (**mode == "readline") {
            return unsupported("parameter 'mode': 'readline' (HMP) is not supported, only QMP (mode=control)");
        }
        return invalid("parameter 'mode': expected 'readline' or 'control', got " + in_quotes(**mode));
    }
    if (auto b = read_bool(r, "pretty", out.pretty); !b) return std::unexpected(b.error());
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    return out;
}

// ---------------------------------------------------------------- command line

const char* usage_text() { return kUsage; }

Result<DaemonConfig> parse_command_line(int argc, const char* const* argv) {
    DaemonConfig config;
    auto items = split_argv(argc, argv, config);
    if (!items) return std::unexpected(items.error());
    if (config.help || config.version) return config;

    CommandLine cl(config);
    for (const Item& item : *items) {
        if (!item.opt) return invalid("unexpected argument " + in_quotes(item.name));
        bool stop = false;
        const std::string where = item.name + " " + in_quotes(item.arg);
        if (auto r = cl.process(item, stop); !r) return fail(r.error().code, where + ": " + r.error().message);
        for (auto& w : cl.take_warnings()) config.warnings.push_back(where + ": " + w);
        if (stop) break;
    }
    return config;
}

}  // namespace ioplane::daemon
