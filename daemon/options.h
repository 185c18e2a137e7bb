// qemu-storage-daemon's command line (QEMU 7.2 syntax), parsed into plain
// configuration structs. Users switch from QEMU by changing the binary's name,
// so the options, their syntax (keyval or JSON, see keyval.h) and their
// in-order semantics follow qemu-storage-daemon's; main() acts on the result.
//
// What parse_command_line() checks, as QEMU does while it processes options
// in order: each option's keys and types, duplicate identifiers (node names,
// including those of nested nodes; iothread, export, chardev and monitor ids;
// NBD export names), and that a reference names something an earlier option
// defined (an export's node and iothread, the NBD server an NBD export needs,
// a monitor's chardev). What it leaves to the code that owns an option: the
// driver-specific keys of --blockdev and the type-specific keys of non-NBD
// exports, kept as OptionTrees.
//
// Choices that differ from qemu-storage-daemon, and why:
//  - features ioplane lacks (TLS, fd passing, vsock, HMP monitors, object
//    types other than iothread, dirty bitmaps over NBD) are errors that say
//    "not supported", never silently ignored: each changes who may connect or
//    what a client sees;
//  - -T/--trace is accepted and ignored with a warning: ioplane has no QEMU
//    trace events, and a diagnostic option should not stop a working setup;
//  - iothread properties aio-max-batch, thread-pool-min and thread-pool-max
//    are checked and then ignored with a warning: they tune performance only;
//  - a key given twice, numbers with a leading zero and similar keyval
//    details: see keyval.h;
//  - arguments after "--" are an error (QEMU ignores them).
//
// Thread contract: every function here is pure; any thread (main() calls
// parse_command_line at startup, on the main thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ioplane/core/error.h"
#include "ioplane/core/keyval.h"
#include "ioplane/core/listen_socket.h"

namespace ioplane::daemon {

// QEMU's SocketAddress, for the types ioplane supports.
using SocketAddress = ListenAddress;

// --blockdev. Drivers read their own options from `options` (which also holds
// driver and node-name), so that a new driver needs no change here.
struct BlockdevOptions {
    std::string driver;
    std::string node_name;
    OptionTree options;
};

// --object iothread.
struct IOThreadOptions {
    std::string id;
    int64_t poll_max_ns = 32768;  // QEMU's default for IOThreads
    int64_t poll_grow = 0;        // 0: the AioContext's default
    int64_t poll_shrink = 0;      // 0: the AioContext's default
};

// --object throttle-group / object-add qom-type=throttle-group: the group's
// properties, which the block layer reads (`limits`: QEMU's ThrottleLimits).
struct ThrottleGroupOptions {
    std::string id;
    OptionTree properties;
};

// --object / object-add: one of the object types ioplane supports.
struct ObjectOptions {
    std::optional<IOThreadOptions> iothread;
    std::optional<ThrottleGroupOptions> throttle_group;
    const std::string& id() const { return iothread ? iothread->id : throttle_group->id; }
};

// --nbd-server.
struct NbdServerOptions {
    SocketAddress addr;
    uint32_t max_connections = 0;  // 0 = unlimited
};

// One element of an NBD export's `bitmaps` (QEMU's BlockDirtyBitmapOrStr):
// a bitmap name, looked up from the exported node down its chain, or a
// node-name and a bitmap name.
struct NbdBitmapRef {
    std::optional<std::string> node;  // absent: the name alone
    std::string name;
};

// The NBD-specific part of an export.
struct NbdExportOptions {
    std::string name;  // defaults to the node name
    std::optional<std::string> description;
    bool allocation_depth = false;  // offer the qemu:allocation-depth meta context
    std::vector<NbdBitmapRef> bitmaps;  // offered as qemu:dirty-bitmap:NAME contexts
};

// The 9P-specific part of an export (type=9p: not in qemu-storage-daemon,
// which serves 9P only inside QEMU; the keys follow its fsdev/virtfs names).
struct Fs9pExportOptions {
    std::string path;  // the directory to serve
    SocketAddress addr;
    bool readonly = false;
    uint32_t max_connections = 64;  // clients past it are refused
    std::string security_model = "passthrough";  // passthrough, mapped-xattr (mapped), none
};

// The vhost-user-blk-specific part of an export.
struct VhostUserBlkOptions {
    SocketAddress addr;  // unix only
    uint16_t num_queues = 1;
    uint32_t logical_block_size = 512;
    // iothread.0=A,iothread.1=B (not in qemu-storage-daemon 7.2): queue i
    // runs in the i mod n-th; the node moves to the first (also `iothread`).
    std::vector<std::string> queue_iothreads;
};

// --export.
struct ExportOptions {
    std::string type;  // "nbd", "vhost-user-blk", "fuse" or "9p"
    std::string id;
    std::string node_name;  // empty for type=9p, which serves a directory
    std::optional<std::string> iothread;
    bool writable = false;
    bool fixed_iothread = false;
    std::optional<NbdExportOptions> nbd;    // set iff type == "nbd"
    std::optional<Fs9pExportOptions> fs9p;  // set iff type == "9p"
    std::optional<VhostUserBlkOptions> vhost_user_blk;  // set iff type == "vhost-user-blk"
    // The keys other than the common ones above, for the export type to read
    // and check; always empty for type=nbd and type=9p, whose keys are all
    // checked here (so for every type but fuse).
    OptionTree type_options;
};

// --chardev.
struct ChardevOptions {
    enum class Backend { socket, stdio };
    std::string id;
    Backend backend = Backend::socket;
    // socket only:
    SocketAddress addr;
    bool server = false;  // listen (on) or connect (off)
    bool wait = true;     // server: wait for a client before startup continues
};

// --monitor (QMP only: qemu-storage-daemon has no HMP either).
struct MonitorOptions {
    std::optional<std::string> id;
    std::string chardev;
    bool pretty = false;
};

// The whole command line, in the order the options were given.
struct DaemonConfig {
    std::vector<BlockdevOptions> blockdevs;
    std::vector<IOThreadOptions> iothreads;
    std::vector<ThrottleGroupOptions> throttle_groups;
    std::optional<NbdServerOptions> nbd_server;
    std::vector<ExportOptions> exports;
    std::vector<ChardevOptions> chardevs;
    std::vector<MonitorOptions> monitors;
    std::optional<std::string> pidfile;
    bool daemonize = false;
    // --max-buffer-memory SIZE (ioplane's own): what all connections of all
    // exports may hold in buffered requests and replies together. Empty: an
    // eighth of the machine's RAM.
    std::optional<uint64_t> max_buffer_memory;
    // -h/--help: print usage_text() and exit 0. -V/--version: print the
    // version and exit 0. As in QEMU's first pass, the first of them ends
    // parsing: options before it are only checked for getopt errors (unknown
    // option, missing argument), options after it not at all.
    bool help = false;
    bool version = false;
    // --object help, --object TYPE,help, --chardev help, --chardev TYPE,help:
    // the text to print before exiting 0. Parsing stopped at that option.
    std::optional<std::string> option_help;
    // Lines to log at startup (ignored options, deprecated syntax), each
    // naming its option.
    std::vector<std::string> warnings;
};

// Thread contract: any thread; pure.
// Parses argv[1..argc-1]. Errors are one line naming the option and the
// problem, e.g. "--export 'type=nbd,id=e0': missing 'node-name'", for main()
// to print as "ioplane-storage-daemon: <message>" before exiting 1. The code
// is ENOTSUP for valid QEMU syntax that ioplane does not support, EINVAL for
// everything else.
Result<DaemonConfig> parse_command_line(int argc, const char* const* argv);

// Thread contract: any thread; pure.
// The --help text.
const char* usage_text();

// Thread contract: any thread; pure.
// The options one at a time, from their trees, for the command line and for
// the QMP commands that take the same arguments (blockdev-add, object-add,
// nbd-server-start, block-export-add). Messages name keys but not the option;
// checks that involve other options are parse_command_line's.
Result<BlockdevOptions> parse_blockdev(OptionTree tree);
// qom-type=iothread or throttle-group. Properties accepted but ignored add a
// line to `warnings`.
Result<ObjectOptions> parse_object(const OptionTree& tree, std::vector<std::string>& warnings);
Result<NbdServerOptions> parse_nbd_server(const OptionTree& tree);
Result<ExportOptions> parse_export(const OptionTree& tree);
// `tree` comes from parse_qemu_opts(text, "backend", ...).
Result<ChardevOptions> parse_chardev(const OptionTree& tree);
Result<MonitorOptions> parse_monitor(const OptionTree& tree);

// Thread contract: any thread; pure.
// Every node name a --blockdev defines: its own and those of nested nodes.
std::vector<std::string> blockdev_node_names(const BlockdevOptions& blockdev);

}  // namespace ioplane::daemon
