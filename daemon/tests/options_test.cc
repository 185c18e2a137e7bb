// The qemu-storage-daemon command line: each option in keyval and JSON form,
// cross-option checks, argv handling, and the manual's examples.
#include "daemon/options.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <initializer_list>
#include <string>
#include <vector>

namespace ioplane::daemon {
namespace {

using nlohmann::json;

Result<DaemonConfig> parse(std::initializer_list<const char*> args) {
    std::vector<const char*> argv{"ioplane-storage-daemon"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(nullptr);  // as in main()
    return parse_command_line(static_cast<int>(argv.size() - 1), argv.data());
}

DaemonConfig ok(std::initializer_list<const char*> args) {
    auto c = parse(args);
    EXPECT_TRUE(c.has_value()) << c.error().message;
    return c ? std::move(*c) : DaemonConfig{};
}

// The message of a command line that must fail with `code`.
std::string error(std::initializer_list<const char*> args, int code = EINVAL) {
    auto c = parse(args);
    EXPECT_FALSE(c.has_value());
    if (c) return {};
    EXPECT_EQ(c.error().code, code) << c.error().message;
    return c.error().message;
}

// Enough of a node setup for export tests.
#define NBD_SETUP "--blockdev", "driver=file,node-name=disk,filename=x.img", "--nbd-server", "addr.type=unix,addr.path=s"

// ---------------------------------------------------------------- manual examples

TEST(CommandLine, ManualExportOverNbdUnixSocket) {
    auto c = ok({"--blockdev", "driver=file,node-name=disk,filename=disk.img", "--nbd-server",
                 "addr.type=unix,addr.path=nbd.sock", "--export", "type=nbd,id=export,node-name=disk,writable=on"});
    ASSERT_EQ(c.blockdevs.size(), 1u);
    EXPECT_EQ(c.blockdevs[0].driver, "file");
    EXPECT_EQ(c.blockdevs[0].node_name, "disk");
    EXPECT_EQ(c.blockdevs[0].options.root["filename"], "disk.img");
    ASSERT_TRUE(c.nbd_server.has_value());
    EXPECT_EQ(c.nbd_server->addr.type, SocketAddress::Type::unix_socket);
    EXPECT_EQ(c.nbd_server->addr.path, "nbd.sock");
    EXPECT_EQ(c.nbd_server->max_connections, 0u);
    ASSERT_EQ(c.exports.size(), 1u);
    const ExportOptions& e = c.exports[0];
    EXPECT_EQ(e.type, "nbd");
    EXPECT_EQ(e.id, "export");
    EXPECT_EQ(e.node_name, "disk");
    EXPECT_TRUE(e.writable);
    EXPECT_FALSE(e.fixed_iothread);
    EXPECT_EQ(e.iothread, std::nullopt);
    ASSERT_TRUE(e.nbd.has_value());
    EXPECT_EQ(e.nbd->name, "disk");  // defaults to the node name
    EXPECT_EQ(e.nbd->description, std::nullopt);
    EXPECT_FALSE(e.nbd->allocation_depth);
    EXPECT_EQ(e.type_options.root, json::object());
    EXPECT_TRUE(c.warnings.empty());
}

TEST(CommandLine, ManualQmpMonitor) {
    auto c = ok({"--chardev", "socket,path=qmp.sock,server=on,wait=off,id=char1", "--monitor", "chardev=char1"});
    ASSERT_EQ(c.chardevs.size(), 1u);
    EXPECT_EQ(c.chardevs[0].id, "char1");
    EXPECT_EQ(c.chardevs[0].backend, ChardevOptions::Backend::socket);
    EXPECT_EQ(c.chardevs[0].addr.type, SocketAddress::Type::unix_socket);
    EXPECT_EQ(c.chardevs[0].addr.path, "qmp.sock");
    EXPECT_TRUE(c.chardevs[0].server);
    EXPECT_FALSE(c.chardevs[0].wait);
    ASSERT_EQ(c.monitors.size(), 1u);
    EXPECT_EQ(c.monitors[0].chardev, "char1");
    EXPECT_EQ(c.monitors[0].id, std::nullopt);
    EXPECT_FALSE(c.monitors[0].pretty);
}

TEST(CommandLine, ManualVhostUserBlk) {
    auto c = ok({"--blockdev", "driver=file,node-name=file,filename=disk.qcow2", "--blockdev",
                 "driver=qcow2,node-name=qcow2,file=file", "--export",
                 "type=vhost-user-blk,id=export,addr.type=unix,addr.path=vhost-user-blk.sock,node-name=qcow2"});
    ASSERT_EQ(c.blockdevs.size(), 2u);
    EXPECT_EQ(c.blockdevs[1].options.root["file"], "file");
    ASSERT_EQ(c.exports.size(), 1u);
    EXPECT_EQ(c.exports[0].type, "vhost-user-blk");
    EXPECT_EQ(c.exports[0].node_name, "qcow2");
    EXPECT_FALSE(c.exports[0].nbd.has_value());
    ASSERT_TRUE(c.exports[0].vhost_user_blk.has_value());
    const VhostUserBlkOptions& v = *c.exports[0].vhost_user_blk;
    EXPECT_EQ(v.addr.path, "vhost-user-blk.sock");
    EXPECT_EQ(v.num_queues, 1u);
    EXPECT_EQ(v.logical_block_size, 512u);
    EXPECT_TRUE(v.queue_iothreads.empty());
}

TEST(CommandLine, VhostUserBlkQueuesOnSeveralIOThreads) {
    auto c = ok({"--object", "iothread,id=io0", "--object", "iothread,id=io1", "--blockdev",
                 "driver=null-co,node-name=n", "--export",
                 "type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=s,num-queues=4,"
                 "logical-block-size=4096,iothread.0=io0,iothread.1=io1"});
    const VhostUserBlkOptions& v = *c.exports[0].vhost_user_blk;
    EXPECT_EQ(v.num_queues, 4u);
    EXPECT_EQ(v.logical_block_size, 4096u);
    EXPECT_EQ(v.queue_iothreads, (std::vector<std::string>{"io0", "io1"}));
    EXPECT_EQ(c.exports[0].iothread, "io0");  // the node goes to the first
}

TEST(CommandLine, VhostUserBlkBadOptions) {
    auto with = [](const char* extra) {
        static std::string arg;
        arg = std::string("type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path=s,") + extra;
        return error({"--object", "iothread,id=io0", "--blockdev", "driver=null-co,node-name=n", "--export",
                      arg.c_str()});
    };
    EXPECT_NE(with("num-queues=0").find("num-queues"), std::string::npos);
    EXPECT_NE(with("num-queues=257").find("num-queues"), std::string::npos);
    EXPECT_NE(with("logical-block-size=1000").find("logical-block-size"), std::string::npos);
    EXPECT_NE(with("iothread.0=io0,iothread.1=nope").find("nope"), std::string::npos);
    EXPECT_NE(with("bogus=1").find("bogus"), std::string::npos);
    EXPECT_NE(error({"--blockdev", "driver=null-co,node-name=n", "--export",
                     "type=vhost-user-blk,id=e,node-name=n,addr.type=inet,addr.host=h,addr.port=1"})
                  .find("unix"),
              std::string::npos);
}

TEST(CommandLine, ManualFuseExport) {
    auto c = ok({"--blockdev", "driver=file,node-name=file,filename=disk.qcow2", "--blockdev",
                 "driver=qcow2,node-name=qcow2,file=file", "--export",
                 "type=fuse,id=export,node-name=qcow2,mountpoint=disk.qcow2,writable=on"});
    ASSERT_EQ(c.exports.size(), 1u);
    EXPECT_EQ(c.exports[0].type, "fuse");
    EXPECT_TRUE(c.exports[0].writable);
    EXPECT_EQ(c.exports[0].type_options.root, json({{"mountpoint", "disk.qcow2"}}));
}

TEST(CommandLine, FullRealisticCommandLine) {
    auto c = ok({"--object", "iothread,id=io0,poll-max-ns=0",
                 "--object", "iothread,id=io1",
                 "--blockdev", "driver=file,node-name=file0,filename=/var/lib/images/vm,,1.qcow2,cache.direct=on,"
                               "aio=native",
                 "--blockdev", "qcow2,node-name=disk0,file=file0,read-only=off",
                 "--blockdev", R"({"driver":"raw","node-name":"disk1","file":{"driver":"file","node-name":"file1",)"
                               R"("filename":"/var/lib/images/data.raw"}})",
                 "--nbd-server", "addr.type=inet,addr.host=0.0.0.0,addr.port=10809,max-connections=16",
                 "--export", "type=nbd,id=e0,node-name=disk0,name=vm1,description=VM one,writable=on,iothread=io0,"
                             "fixed-iothread=on,allocation-depth=on",
                 "--export", "nbd,id=e1,node-name=disk1,iothread=io1",
                 "--chardev", "socket,id=qmp,path=/run/qsd.sock,server=on,wait=off",
                 "--monitor", "qmp,pretty=on",
                 "--pidfile", "/run/qsd.pid",
                 "--daemonize"});
    ASSERT_EQ(c.iothreads.size(), 2u);
    EXPECT_EQ(c.iothreads[0].id, "io0");
    EXPECT_EQ(c.iothreads[0].poll_max_ns, 0);
    EXPECT_EQ(c.iothreads[1].id, "io1");
    EXPECT_EQ(c.iothreads[1].poll_max_ns, 32768);
    ASSERT_EQ(c.blockdevs.size(), 3u);
    EXPECT_EQ(c.blockdevs[0].options.root["filename"], "/var/lib/images/vm,1.qcow2");
    EXPECT_EQ(c.blockdevs[0].options.root["cache"]["direct"], "on");
    EXPECT_EQ(c.blockdevs[1].driver, "qcow2");  // implied key
    EXPECT_EQ(c.blockdevs[2].options.syntax, OptionSyntax::json);
    EXPECT_EQ(c.blockdevs[2].options.root["file"]["filename"], "/var/lib/images/data.raw");
    EXPECT_EQ(blockdev_node_names(c.blockdevs[2]), (std::vector<std::string>{"disk1", "file1"}));
    ASSERT_TRUE(c.nbd_server.has_value());
    EXPECT_EQ(c.nbd_server->addr.type, SocketAddress::Type::inet);
    EXPECT_EQ(c.nbd_server->addr.host, "0.0.0.0");
    EXPECT_EQ(c.nbd_server->addr.port, "10809");
    EXPECT_EQ(c.nbd_server->max_connections, 16u);
    ASSERT_EQ(c.exports.size(), 2u);
    EXPECT_EQ(c.exports[0].nbd->name, "vm1");
    EXPECT_EQ(c.exports[0].nbd->description, "VM one");
    EXPECT_TRUE(c.exports[0].nbd->allocation_depth);
    EXPECT_EQ(c.exports[0].iothread, "io0");
    EXPECT_TRUE(c.exports[0].fixed_iothread);
    EXPECT_TRUE(c.exports[0].writable);
    EXPECT_EQ(c.exports[1].type, "nbd");
    EXPECT_EQ(c.exports[1].nbd->name, "disk1");
    EXPECT_FALSE(c.exports[1].writable);
    EXPECT_EQ(c.monitors.at(0).chardev, "qmp");
    EXPECT_TRUE(c.monitors.at(0).pretty);
    EXPECT_EQ(c.pidfile, "/run/qsd.pid");
    EXPECT_TRUE(c.daemonize);
    EXPECT_FALSE(c.help);
    EXPECT_FALSE(c.version);
    EXPECT_TRUE(c.warnings.empty());
}

// ---------------------------------------------------------------- --blockdev

TEST(Blockdev, JsonForm) {
    auto c = ok({"--blockdev",
                 R"({"driver":"raw","node-name":"d","file":{"driver":"file","filename":"x"},"read-only":true})"});
    ASSERT_EQ(c.blockdevs.size(), 1u);
    EXPECT_EQ(c.blockdevs[0].driver, "raw");
    EXPECT_EQ(c.blockdevs[0].node_name, "d");
    EXPECT_EQ(c.blockdevs[0].options.syntax, OptionSyntax::json);
    EXPECT_EQ(c.blockdevs[0].options.root["read-only"], true);
    OptionReader r(c.blockdevs[0].options);
    EXPECT_EQ(r.get_bool("read-only").value(), true);
}

TEST(Blockdev, NestedKeyvalNodes) {
    auto c = ok({"--blockdev", "driver=raw,node-name=d,file.driver=file,file.node-name=f,file.filename=x"});
    ASSERT_EQ(c.blockdevs.size(), 1u);
    EXPECT_EQ(c.blockdevs[0].options.root["file"], json({{"driver", "file"}, {"node-name", "f"}, {"filename", "x"}}));
    EXPECT_EQ(blockdev_node_names(c.blockdevs[0]), (std::vector<std::string>{"d", "f"}));
}

TEST(Blockdev, SyntaxErrorsQuoteTheArgument) {
    EXPECT_EQ(error({"--blockdev", "driver=file,filename"}),
              "--blockdev 'driver=file,filename': expected '=' after parameter 'filename'");
    EXPECT_EQ(error({"--blockdev", "driver=file,node-name=a,node-name=b"}),
              "--blockdev 'driver=file,node-name=a,node-name=b': parameter 'node-name' is given twice");
    EXPECT_EQ(error({"--blockdev", R"({"driver":"file","driver":"raw"})"}),
              R"(--blockdev '{"driver":"file","driver":"raw"}': invalid JSON: duplicate key 'driver')");
    EXPECT_EQ(error({"--blockdev", "help"}), "--blockdev 'help': help is not available for this option");
}

TEST(Blockdev, RequiredKeys) {
    EXPECT_EQ(error({"--blockdev", "node-name=d"}), "--blockdev 'node-name=d': missing 'driver'");
    EXPECT_EQ(error({"--blockdev", "driver=file,filename=x"}), "--blockdev 'driver=file,filename=x': missing 'node-name'");
    EXPECT_EQ(error({"--blockdev", R"({"driver":1,"node-name":"d"})"}),
              R"(--blockdev '{"driver":1,"node-name":"d"}': parameter 'driver': expected a string, got a number)");
}

TEST(Blockdev, NodeNamesAreChecked) {
    EXPECT_EQ(error({"--blockdev", "file,node-name=1disk"}),
              "--blockdev 'file,node-name=1disk': parameter 'node-name': expected an identifier (a letter, then "
              "letters, digits, '-', '.' or '_'), got '1disk'");
    EXPECT_EQ(error({"--blockdev", "file,node-name=d,file.node-name=#x"}),
              "--blockdev 'file,node-name=d,file.node-name=#x': parameter 'file.node-name': expected an identifier "
              "(a letter, then letters, digits, '-', '.' or '_'), got '#x'");
    const std::string longest = std::string(31, 'n');
    EXPECT_TRUE(parse({"--blockdev", ("file,node-name=" + longest).c_str()}).has_value());
    const std::string too_long = "file,node-name=" + std::string(32, 'n');
    EXPECT_EQ(error({"--blockdev", too_long.c_str()}),
              "--blockdev '" + too_long + "': parameter 'node-name': '" + std::string(32, 'n') +
                  "' is longer than 31 characters");
}

TEST(Blockdev, DuplicateNodeNames) {
    EXPECT_EQ(error({"--blockdev", "file,node-name=disk,filename=a", "--blockdev", "file,node-name=disk,filename=b"}),
              "--blockdev 'file,node-name=disk,filename=b': duplicate node name 'disk'");
    // Nested nodes share the namespace.
    EXPECT_EQ(error({"--blockdev", "raw,node-name=d,file.driver=file,file.node-name=f,file.filename=x", "--blockdev",
                     "file,node-name=f,filename=y"}),
              "--blockdev 'file,node-name=f,filename=y': duplicate node name 'f'");
    EXPECT_EQ(error({"--blockdev", "raw,node-name=d,file.driver=file,file.node-name=d,file.filename=x"}),
              "--blockdev 'raw,node-name=d,file.driver=file,file.node-name=d,file.filename=x': duplicate node name "
              "'d'");
}

// ---------------------------------------------------------------- --object

TEST(Object, IOThreadKeyval) {
    auto c = ok({"--object", "iothread,id=io0,poll-max-ns=100000,poll-grow=2,poll-shrink=0x4"});
    ASSERT_EQ(c.iothreads.size(), 1u);
    EXPECT_EQ(c.iothreads[0].id, "io0");
    EXPECT_EQ(c.iothreads[0].poll_max_ns, 100000);
    EXPECT_EQ(c.iothreads[0].poll_grow, 2);
    EXPECT_EQ(c.iothreads[0].poll_shrink, 4);
    c = ok({"--object", "qom-type=iothread,id=io1"});
    ASSERT_EQ(c.iothreads.size(), 1u);
    EXPECT_EQ(c.iothreads[0].poll_max_ns, 32768);
    EXPECT_EQ(c.iothreads[0].poll_grow, 0);
    EXPECT_EQ(c.iothreads[0].poll_shrink, 0);
}

TEST(Object, IOThreadJson) {
    auto c = ok({"--object", R"({"qom-type":"iothread","id":"io0","poll-max-ns":0,"poll-grow":3})"});
    ASSERT_EQ(c.iothreads.size(), 1u);
    EXPECT_EQ(c.iothreads[0].poll_max_ns, 0);
    EXPECT_EQ(c.iothreads[0].poll_grow, 3);
    EXPECT_EQ(error({"--object", R"({"qom-type":"iothread","id":"io0","poll-max-ns":"0"})"}),
              R"(--object '{"qom-type":"iothread","id":"io0","poll-max-ns":"0"}': parameter 'poll-max-ns': expected )"
              "an integer, got a string");
}

TEST(Object, BadNumbers) {
    EXPECT_EQ(error({"--object", "iothread,id=io0,poll-max-ns=fast"}),
              "--object 'iothread,id=io0,poll-max-ns=fast': parameter 'poll-max-ns': expected an integer, got 'fast'");
    EXPECT_EQ(error({"--object", "iothread,id=io0,poll-grow=-1"}),
              "--object 'iothread,id=io0,poll-grow=-1': parameter 'poll-grow': must be in range [0, "
              "9223372036854775807]");
    EXPECT_EQ(error({"--object", "iothread,id=io0,poll-max-ns=99999999999999999999"}),
              "--object 'iothread,id=io0,poll-max-ns=99999999999999999999': parameter 'poll-max-ns': "
              "'99999999999999999999' is out of range");
    EXPECT_EQ(error({"--object", "iothread,id=io0,poll-max-ns=010"}),
              "--object 'iothread,id=io0,poll-max-ns=010': parameter 'poll-max-ns': '010' has a leading zero, which "
              "QEMU would read as octal; write it in decimal or as 0x hex");
}

TEST(Object, Errors) {
    EXPECT_EQ(error({"--object", "secret,id=s0,data=x"}, ENOTSUP),
              "--object 'secret,id=s0,data=x': object type 'secret' is not supported (ioplane supports 'iothread' and 'throttle-group')");
    EXPECT_EQ(error({"--object", "iothread"}), "--object 'iothread': missing 'id'");
    EXPECT_EQ(error({"--object", "id=io0"}), "--object 'id=io0': missing 'qom-type'");
    EXPECT_EQ(error({"--object", "iothread,id=io0,poll=1"}), "--object 'iothread,id=io0,poll=1': unexpected parameter 'poll'");
    EXPECT_EQ(error({"--object", "iothread,id=io0", "--object", "iothread,id=io0"}),
              "--object 'iothread,id=io0': duplicate object id 'io0'");
    EXPECT_EQ(error({"--object", "iothread,id=io 0"}),
              "--object 'iothread,id=io 0': parameter 'id': expected an identifier (a letter, then letters, digits, "
              "'-', '.' or '_'), got 'io 0'");
}

TEST(Object, TuningPropertiesAreIgnoredWithAWarning) {
    auto c = ok({"--object", "iothread,id=io0,aio-max-batch=32,thread-pool-max=8"});
    ASSERT_EQ(c.iothreads.size(), 1u);
    EXPECT_EQ(c.warnings, (std::vector<std::string>{
                              "--object 'iothread,id=io0,aio-max-batch=32,thread-pool-max=8': parameter "
                              "'aio-max-batch' ignored: ioplane does not implement it",
                              "--object 'iothread,id=io0,aio-max-batch=32,thread-pool-max=8': parameter "
                              "'thread-pool-max' ignored: ioplane does not implement it"}));
}

TEST(Object, Help) {
    auto c = ok({"--object", "help", "never-reached-by-the-second-pass"});
    ASSERT_TRUE(c.option_help.has_value());
    EXPECT_NE(c.option_help->find("iothread"), std::string::npos);
    c = ok({"--object", "iothread,help"});
    ASSERT_TRUE(c.option_help.has_value());
    EXPECT_NE(c.option_help->find("poll-max-ns"), std::string::npos);
    // Parsing stops at the help request, as QEMU exits there.
    c = ok({"--object", "iothread,id=a", "--object", "help", "--object", "bad"});
    EXPECT_TRUE(c.option_help.has_value());
    EXPECT_EQ(c.iothreads.size(), 1u);
    EXPECT_EQ(error({"--object", "secret,help"}, ENOTSUP), "--object 'secret,help': object type 'secret' is not supported");
}

// ---------------------------------------------------------------- --nbd-server

TEST(NbdServer, Forms) {
    auto c = ok({"--nbd-server", "addr.type=inet,addr.host=localhost,addr.port=nbd"});
    ASSERT_TRUE(c.nbd_server.has_value());
    EXPECT_EQ(c.nbd_server->addr.type, SocketAddress::Type::inet);
    EXPECT_EQ(c.nbd_server->addr.host, "localhost");
    EXPECT_EQ(c.nbd_server->addr.port, "nbd");
    c = ok({"--nbd-server", R"({"addr":{"type":"unix","path":"/run/nbd.sock"},"max-connections":4})"});
    ASSERT_TRUE(c.nbd_server.has_value());
    EXPECT_EQ(c.nbd_server->addr.type, SocketAddress::Type::unix_socket);
    EXPECT_EQ(c.nbd_server->addr.path, "/run/nbd.sock");
    EXPECT_EQ(c.nbd_server->max_connections, 4u);
    c = ok({"--nbd-server", "addr.type=unix,addr.path=s,max-connections=4294967295"});
    EXPECT_EQ(c.nbd_server->max_connections, 4294967295u);
    c = ok({"--nbd-server", "addr.type=fd,addr.str=7"});  // a socket passed by whoever starts the daemon
    EXPECT_EQ(c.nbd_server->addr.type, SocketAddress::Type::fd);
    EXPECT_EQ(c.nbd_server->addr.fd, 7);
}

TEST(NbdServer, Errors) {
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=s,max-connections=4294967296"}),
              "--nbd-server 'addr.type=unix,addr.path=s,max-connections=4294967296': parameter 'max-connections': "
              "4294967296 is out of range (at most 4294967295)");
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=s,max-connections=many"}),
              "--nbd-server 'addr.type=unix,addr.path=s,max-connections=many': parameter 'max-connections': expected "
              "an integer, got 'many'");
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=s,tls-creds=tls0"}, ENOTSUP),
              "--nbd-server 'addr.type=unix,addr.path=s,tls-creds=tls0': parameter 'tls-creds' is not supported");
    EXPECT_EQ(error({"--nbd-server", "addr.type=fd,addr.str=nbdfd"}, ENOTSUP),
              "--nbd-server 'addr.type=fd,addr.str=nbdfd': parameter 'addr.str': 'nbdfd' is not an fd number (fd "
              "names from the monitor's getfd are not supported)");
    EXPECT_EQ(error({"--nbd-server", "addr.type=fd,addr.str=1"}),
              "--nbd-server 'addr.type=fd,addr.str=1': parameter 'addr.str': fd 1 is standard input, output or error");
    EXPECT_EQ(error({"--nbd-server", "addr.type=fd"}), "--nbd-server 'addr.type=fd': missing 'addr.str'");
    EXPECT_EQ(error({"--nbd-server", "max-connections=1"}), "--nbd-server 'max-connections=1': missing 'addr'");
    EXPECT_EQ(error({"--nbd-server", "addr.path=s"}), "--nbd-server 'addr.path=s': missing 'addr.type'");
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix"}), "--nbd-server 'addr.type=unix': missing 'addr.path'");
    EXPECT_EQ(error({"--nbd-server", "addr.type=inet,addr.host=h"}),
              "--nbd-server 'addr.type=inet,addr.host=h': missing 'addr.port'");
    EXPECT_EQ(error({"--nbd-server", "addr.type=tcp,addr.host=h"}),
              "--nbd-server 'addr.type=tcp,addr.host=h': parameter 'addr.type': expected 'unix', 'inet' or 'fd', got 'tcp'");
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=s,addr.host=h"}),
              "--nbd-server 'addr.type=unix,addr.path=s,addr.host=h': unexpected parameter 'addr.host'");
    EXPECT_EQ(error({"--nbd-server", "addr=s"}), "--nbd-server 'addr=s': parameter 'addr': expected an object, got a string");
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=a", "--nbd-server", "addr.type=unix,addr.path=b"}),
              "--nbd-server 'addr.type=unix,addr.path=b': an NBD server is already configured");
    // In JSON, the port is a string, as in QEMU's schema.
    EXPECT_EQ(error({"--nbd-server", R"({"addr":{"type":"inet","host":"h","port":10809}})"}),
              R"(--nbd-server '{"addr":{"type":"inet","host":"h","port":10809}}': parameter 'addr.port': expected a )"
              "string, got a number");
}

// ---------------------------------------------------------------- --export

TEST(Export, MissingRequiredKeys) {
    EXPECT_EQ(error({NBD_SETUP, "--export", "type=nbd,id=e0"}), "--export 'type=nbd,id=e0': missing 'node-name'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "type=nbd,node-name=disk"}),
              "--export 'type=nbd,node-name=disk': missing 'id'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "id=e0,node-name=disk"}), "--export 'id=e0,node-name=disk': missing 'type'");
}

TEST(Export, JsonForm) {
    auto c = ok({NBD_SETUP, "--export",
                 R"({"type":"nbd","id":"e0","node-name":"disk","name":"n","writable":true,"allocation-depth":false})"});
    ASSERT_EQ(c.exports.size(), 1u);
    EXPECT_EQ(c.exports[0].nbd->name, "n");
    EXPECT_TRUE(c.exports[0].writable);
    EXPECT_EQ(error({NBD_SETUP, "--export", R"({"type":"nbd","id":"e0","node-name":"disk","writable":"on"})"}),
              R"(--export '{"type":"nbd","id":"e0","node-name":"disk","writable":"on"}': parameter 'writable': )"
              "expected a boolean, got a string");
}

TEST(Export, NbdBitmaps) {
    auto c = ok({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,bitmaps.0=b0,bitmaps.1.node=n1,bitmaps.1.name=b1"});
    const auto& b = c.exports[0].nbd->bitmaps;
    ASSERT_EQ(b.size(), 2u);
    EXPECT_FALSE(b[0].node.has_value());
    EXPECT_EQ(b[0].name, "b0");
    EXPECT_EQ(b[1].node, "n1");
    EXPECT_EQ(b[1].name, "b1");
    auto j = ok({NBD_SETUP, "--export",
                 R"({"type":"nbd","id":"e0","node-name":"disk","bitmaps":["b0",{"node":"n1","name":"b1"}]})"});
    EXPECT_EQ(j.exports[0].nbd->bitmaps.size(), 2u);
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,bitmaps=b0"}),
              "--export 'nbd,id=e0,node-name=disk,bitmaps=b0': parameter 'bitmaps': expected a list");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,bitmaps.0.node=n"}),
              "--export 'nbd,id=e0,node-name=disk,bitmaps.0.node=n': missing 'bitmaps.0.name'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.0.x=1"}),
              "--export 'nbd,id=e0,node-name=disk,bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.0.x=1': "
              "unexpected parameter 'bitmaps.0.x'");
    EXPECT_EQ(error({NBD_SETUP, "--export", R"({"type":"nbd","id":"e0","node-name":"disk","bitmaps":[5]})"}),
              R"(--export '{"type":"nbd","id":"e0","node-name":"disk","bitmaps":[5]}': parameter 'bitmaps[0]': )"
              "expected a bitmap name or an object with 'node' and 'name'");
}

TEST(Export, NbdRejectsUnknownAndUnsupportedKeys) {
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,mountpoint=x"}),
              "--export 'nbd,id=e0,node-name=disk,mountpoint=x': unexpected parameter 'mountpoint'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,bitmap=b"}),
              "--export 'nbd,id=e0,node-name=disk,bitmap=b': unexpected parameter 'bitmap'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,writethrough=on"}, ENOTSUP),
              "--export 'nbd,id=e0,node-name=disk,writethrough=on': parameter 'writethrough' is not supported");
    EXPECT_TRUE(parse({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,writethrough=off"}).has_value());
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,writable=maybe"}),
              "--export 'nbd,id=e0,node-name=disk,writable=maybe': parameter 'writable': expected 'on' or 'off', got "
              "'maybe'");
    const std::string long_name = "nbd,id=e0,node-name=disk,name=" + std::string(4097, 'x');
    EXPECT_EQ(error({NBD_SETUP, "--export", long_name.c_str()}),
              "--export '" + long_name + "': parameter 'name': longer than 4096 bytes");
}

TEST(Export, Types) {
    EXPECT_EQ(error({NBD_SETUP, "--export", "type=vduse-blk,id=e0,node-name=disk,name=v"}, ENOTSUP),
              "--export 'type=vduse-blk,id=e0,node-name=disk,name=v': export type 'vduse-blk' is not supported");
    EXPECT_EQ(error({NBD_SETUP, "--export", "type=iscsi,id=e0,node-name=disk"}),
              "--export 'type=iscsi,id=e0,node-name=disk': parameter 'type': expected 'nbd', 'vhost-user-blk', 'fuse' "
              "or '9p', got 'iscsi'");
    // JSON syntax works for the vhost-user-blk keys too.
    auto c = ok({NBD_SETUP, "--export",
                 R"({"type":"vhost-user-blk","id":"v0","node-name":"disk","logical-block-size":4096,)"
                 R"("addr":{"type":"unix","path":"vhost.sock"}})"});
    ASSERT_EQ(c.exports.size(), 1u);
    ASSERT_TRUE(c.exports[0].vhost_user_blk.has_value());
    EXPECT_EQ(c.exports[0].vhost_user_blk->logical_block_size, 4096u);
    EXPECT_EQ(c.exports[0].vhost_user_blk->addr.path, "vhost.sock");
    // fuse keeps its own keys, in the syntax they were written in.
    auto f = ok({NBD_SETUP, "--export", R"({"type":"fuse","id":"f0","node-name":"disk","mountpoint":"/mnt/x"})"});
    EXPECT_EQ(f.exports[0].type_options.syntax, OptionSyntax::json);
    OptionReader r(f.exports[0].type_options);
    EXPECT_EQ(r.get_string("mountpoint").value(), "/mnt/x");
}

TEST(Export, References) {
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=nope"}),
              "--export 'nbd,id=e0,node-name=nope': node 'nope' not found (define it with an earlier --blockdev)");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk,iothread=io0"}),
              "--export 'nbd,id=e0,node-name=disk,iothread=io0': iothread 'io0' not found (define it with an earlier "
              "--object iothread)");
    // In order, as QEMU processes them: the node must come first.
    EXPECT_EQ(error({"--nbd-server", "addr.type=unix,addr.path=s", "--export", "nbd,id=e0,node-name=disk",
                     "--blockdev", "file,node-name=disk,filename=x"}),
              "--export 'nbd,id=e0,node-name=disk': node 'disk' not found (define it with an earlier --blockdev)");
    EXPECT_EQ(error({"--blockdev", "file,node-name=disk,filename=x", "--export", "nbd,id=e0,node-name=disk"}),
              "--export 'nbd,id=e0,node-name=disk': NBD server not running (give --nbd-server before --export)");
    // A nested node can be exported.
    EXPECT_TRUE(parse({"--blockdev", "raw,node-name=d,file.driver=file,file.node-name=f,file.filename=x",
                       "--nbd-server", "addr.type=unix,addr.path=s", "--export", "nbd,id=e0,node-name=f"})
                    .has_value());
    // Other export types need no NBD server.
    EXPECT_TRUE(parse({"--blockdev", "file,node-name=disk,filename=x", "--export",
                       "fuse,id=e0,node-name=disk,mountpoint=m"})
                    .has_value());
}

TEST(Export, Duplicates) {
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk", "--export", "nbd,id=e0,node-name=disk,name=b"}),
              "--export 'nbd,id=e0,node-name=disk,name=b': duplicate export id 'e0'");
    EXPECT_EQ(error({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk", "--export", "nbd,id=e1,node-name=disk"}),
              "--export 'nbd,id=e1,node-name=disk': duplicate NBD export name 'disk'");
    auto c = ok({NBD_SETUP, "--export", "nbd,id=e0,node-name=disk", "--export", "nbd,id=e1,node-name=disk,name=b"});
    EXPECT_EQ(c.exports.size(), 2u);
}

// ---------------------------------------------------------------- --chardev / --monitor

TEST(Chardev, Forms) {
    auto c = ok({"--chardev", "socket,id=c0,host=127.0.0.1,port=4444,server=on", "--chardev", "stdio,id=c1"});
    ASSERT_EQ(c.chardevs.size(), 2u);
    EXPECT_EQ(c.chardevs[0].addr.type, SocketAddress::Type::inet);
    EXPECT_EQ(c.chardevs[0].addr.host, "127.0.0.1");
    EXPECT_EQ(c.chardevs[0].addr.port, "4444");
    EXPECT_TRUE(c.chardevs[0].server);
    EXPECT_TRUE(c.chardevs[0].wait);  // QEMU's default
    EXPECT_EQ(c.chardevs[1].backend, ChardevOptions::Backend::stdio);
    c = ok({"--chardev", "socket,id=c0,path=p"});
    EXPECT_FALSE(c.chardevs.at(0).server);
    c = ok({"--chardev", "socket,id=c0,fd=5,server=on"});
    EXPECT_EQ(c.chardevs.at(0).addr.type, SocketAddress::Type::fd);
    EXPECT_EQ(c.chardevs.at(0).addr.fd, 5);
}

// What iotests' QemuStorageDaemon(qmp=True) passes: a chardev without
// server=on connects to the harness's listening socket, and the monitor
// serves QMP over that connection.
TEST(Chardev, ClientModeForAQmpMonitor) {
    auto c = ok({"--chardev", "socket,id=qmp-sock,path=/tmp/t/qsd-a.sock", "--monitor", "qmp-sock", "--pidfile",
                 "/tmp/t/qsd-a-pid"});
    ASSERT_EQ(c.chardevs.size(), 1u);
    EXPECT_EQ(c.chardevs[0].id, "qmp-sock");
    EXPECT_EQ(c.chardevs[0].backend, ChardevOptions::Backend::socket);
    EXPECT_FALSE(c.chardevs[0].server);
    EXPECT_EQ(c.chardevs[0].addr.type, SocketAddress::Type::unix_socket);
    EXPECT_EQ(c.chardevs[0].addr.path, "/tmp/t/qsd-a.sock");
    ASSERT_EQ(c.monitors.size(), 1u);
    EXPECT_EQ(c.monitors[0].chardev, "qmp-sock");
    EXPECT_EQ(c.pidfile, "/tmp/t/qsd-a-pid");
    // chardev= spelled out, server=off explicit, and the other addresses.
    c = ok({"--chardev", "socket,id=x,path=p,server=off", "--monitor", "chardev=x"});
    EXPECT_FALSE(c.chardevs.at(0).server);
    EXPECT_EQ(c.monitors.at(0).chardev, "x");
    c = ok({"--chardev", "socket,id=x,host=localhost,port=4444", "--monitor", "chardev=x,pretty=on"});
    EXPECT_FALSE(c.chardevs.at(0).server);
    EXPECT_EQ(c.chardevs.at(0).addr.type, SocketAddress::Type::inet);
    EXPECT_EQ(c.chardevs.at(0).addr.host, "localhost");
    EXPECT_EQ(c.chardevs.at(0).addr.port, "4444");
    c = ok({"--chardev", "socket,id=x,fd=7", "--monitor", "x"});  // an inherited, connected socket
    EXPECT_FALSE(c.chardevs.at(0).server);
    EXPECT_EQ(c.chardevs.at(0).addr.type, SocketAddress::Type::fd);
    EXPECT_EQ(c.chardevs.at(0).addr.fd, 7);
    // QEMU's client-mode errors and what ioplane leaves out: wait= is for
    // servers; reconnect= (remaking the connection) is not implemented, so
    // it is refused rather than ignored.
    EXPECT_EQ(error({"--chardev", "socket,id=x,path=p,wait=on"}),
              "--chardev 'socket,id=x,path=p,wait=on': 'wait' option is incompatible with socket in client connect "
              "mode");
    EXPECT_EQ(error({"--chardev", "socket,id=x,path=p,reconnect=1"}, ENOTSUP),
              "--chardev 'socket,id=x,path=p,reconnect=1': parameter 'reconnect' is not supported");
    EXPECT_EQ(error({"--chardev", "socket,id=x,fd=2"}), "--chardev 'socket,id=x,fd=2': parameter 'fd': fd 2 is "
                                                        "standard input, output or error");
}

TEST(Pidfile, TheLastOneWinsAsGiven) {
    auto c = ok({"--pidfile", "a.pid", "--pidfile", "rel/b.pid"});
    EXPECT_EQ(c.pidfile, "rel/b.pid");  // resolved by the daemon when it writes the file
    EXPECT_EQ(ok({"--pidfile=/run/x.pid", "--daemonize"}).pidfile, "/run/x.pid");
}

TEST(Chardev, LegacyFlagsWarn) {
    auto c = ok({"--chardev", "socket,id=c0,path=p,server,nowait"});
    ASSERT_EQ(c.chardevs.size(), 1u);
    EXPECT_TRUE(c.chardevs[0].server);
    EXPECT_FALSE(c.chardevs[0].wait);
    EXPECT_EQ(c.warnings,
              (std::vector<std::string>{"--chardev 'socket,id=c0,path=p,server,nowait': short-form boolean option "
                                        "'server' is deprecated; use server=on instead",
                                        "--chardev 'socket,id=c0,path=p,server,nowait': short-form boolean option "
                                        "'nowait' is deprecated; use wait=off instead"}));
}

TEST(Chardev, Errors) {
    EXPECT_EQ(error({"--chardev", "socket,path=p"}), "--chardev 'socket,path=p': missing 'id'");
    EXPECT_EQ(error({"--chardev", "socket,id=c0,path=p,wait=off"}),
              "--chardev 'socket,id=c0,path=p,wait=off': 'wait' option is incompatible with socket in client connect "
              "mode");
    EXPECT_EQ(error({"--chardev", "socket,id=c0"}),
              "--chardev 'socket,id=c0': missing 'path' (UNIX socket) or 'host' and 'port' (TCP)");
    EXPECT_EQ(error({"--chardev", "socket,id=c0,fd=3,path=p,server=on"}),
              "--chardev 'socket,id=c0,fd=3,path=p,server=on': 'fd' cannot be combined with 'path', 'host' or 'port'");
    EXPECT_EQ(error({"--chardev", "pty,id=c0"}, ENOTSUP),
              "--chardev 'pty,id=c0': chardev backend 'pty' is not supported (ioplane supports 'socket' and 'stdio')");
    EXPECT_EQ(error({"--chardev", "socket,id=c0,path=p,color=blue"}),
              "--chardev 'socket,id=c0,path=p,color=blue': unexpected parameter 'color'");
    EXPECT_EQ(error({"--chardev", "stdio,id=c0", "--chardev", "stdio,id=c0"}),
              "--chardev 'stdio,id=c0': duplicate chardev id 'c0'");
    auto c = ok({"--chardev", "help"});
    ASSERT_TRUE(c.option_help.has_value());
    EXPECT_NE(c.option_help->find("socket"), std::string::npos);
}

TEST(Monitor, Forms) {
    auto c = ok({"--chardev", "stdio,id=c0", "--monitor", "c0,id=mon0,mode=control,pretty=on"});
    ASSERT_EQ(c.monitors.size(), 1u);
    EXPECT_EQ(c.monitors[0].chardev, "c0");
    EXPECT_EQ(c.monitors[0].id, "mon0");
    EXPECT_TRUE(c.monitors[0].pretty);
    c = ok({"--chardev", "stdio,id=c0", "--monitor", R"({"chardev":"c0","pretty":false})"});
    ASSERT_EQ(c.monitors.size(), 1u);
    EXPECT_FALSE(c.monitors[0].pretty);
}

TEST(Monitor, Errors) {
    EXPECT_EQ(error({"--monitor", "chardev=c0"}),
              "--monitor 'chardev=c0': chardev 'c0' not found (define it with an earlier --chardev)");
    EXPECT_EQ(error({"--chardev", "stdio,id=c0", "--monitor", "c0,mode=readline"}, ENOTSUP),
              "--monitor 'c0,mode=readline': parameter 'mode': 'readline' (HMP) is not supported, only QMP "
              "(mode=control)");
    EXPECT_EQ(error({"--chardev", "stdio,id=c0", "--monitor", "c0", "--monitor", "c0"}),
              "--monitor 'c0': chardev 'c0' is already used by another monitor");
    EXPECT_EQ(error({"--chardev", "stdio,id=c0", "--monitor", "c0,pretty=yes,x=1"}),
              "--monitor 'c0,pretty=yes,x=1': unexpected parameter 'x'");
    EXPECT_EQ(error({"--monitor", "id=m"}), "--monitor 'id=m': missing 'chardev'");
}

// ---------------------------------------------------------------- argv

TEST(Argv, EqualsAndSeparateArgumentAreTheSame) {
    auto a = ok({"--blockdev=driver=file,node-name=d,filename=x", "--nbd-server=addr.type=unix,addr.path=s",
                 "--export=nbd,id=e,node-name=d", "--pidfile=/run/p"});
    auto b = ok({"--blockdev", "driver=file,node-name=d,filename=x", "--nbd-server", "addr.type=unix,addr.path=s",
                 "--export", "nbd,id=e,node-name=d", "--pidfile", "/run/p"});
    ASSERT_EQ(a.blockdevs.size(), 1u);
    ASSERT_EQ(b.blockdevs.size(), 1u);
    EXPECT_EQ(a.blockdevs[0].options.root, b.blockdevs[0].options.root);
    EXPECT_EQ(a.blockdevs[0].options.root["filename"], "x");
    EXPECT_EQ(a.exports.at(0).id, b.exports.at(0).id);
    EXPECT_EQ(a.nbd_server->addr.path, b.nbd_server->addr.path);
    EXPECT_EQ(a.pidfile, "/run/p");
    EXPECT_EQ(b.pidfile, "/run/p");
}

TEST(Argv, SeparateArgumentIsTakenEvenIfItLooksLikeAnOption) {
    // getopt takes the next word as the argument, whatever it is.
    auto c = ok({"--pidfile", "--daemonize"});
    EXPECT_EQ(c.pidfile, "--daemonize");
    EXPECT_FALSE(c.daemonize);
    EXPECT_EQ(error({"--blockdev", "--export"}), "--blockdev '--export': missing 'node-name'");
}

TEST(Argv, UnambiguousPrefixesAsInGetoptLong) {
    auto c = ok({"--block", "file,node-name=d,filename=x", "--daemon", "--pid", "p"});
    EXPECT_EQ(c.blockdevs.size(), 1u);
    EXPECT_TRUE(c.daemonize);
    EXPECT_EQ(c.pidfile, "p");
}

TEST(Argv, Errors) {
    EXPECT_EQ(error({"--foo"}), "unknown option '--foo'");
    EXPECT_EQ(error({"--foo=bar"}), "unknown option '--foo'");
    EXPECT_EQ(error({"-x"}), "unknown option '-x'");
    EXPECT_EQ(error({"--blockdev"}), "option '--blockdev' requires an argument");
    EXPECT_EQ(error({"-T"}), "option '-T' requires an argument");
    EXPECT_EQ(error({"--daemonize=yes"}), "option '--daemonize' doesn't allow an argument");
    EXPECT_EQ(error({"--help=me"}), "option '--help' doesn't allow an argument");
    EXPECT_EQ(error({"disk.img"}), "unexpected argument 'disk.img'");
    EXPECT_EQ(error({"--", "--daemonize"}), "unexpected argument '--daemonize'");
    EXPECT_EQ(error({"--pidfile", ""}), "--pidfile '': must not be empty");
    // Syntax errors are found before anything else, as in QEMU's first pass.
    EXPECT_EQ(error({"--blockdev", "bad", "--foo"}), "unknown option '--foo'");
}

TEST(Argv, HelpAndVersionEndTheFirstPass) {
    auto c = ok({"-h"});
    EXPECT_TRUE(c.help);
    c = ok({"--help", "--foo", "--blockdev", "bad"});
    EXPECT_TRUE(c.help);
    EXPECT_TRUE(c.blockdevs.empty());
    c = ok({"--blockdev", "bad", "--version"});
    EXPECT_TRUE(c.version);
    EXPECT_FALSE(c.help);
    c = ok({"-V"});
    EXPECT_TRUE(c.version);
    c = ok({"-hV"});
    EXPECT_TRUE(c.help);
    EXPECT_FALSE(c.version);
    EXPECT_EQ(error({"--foo", "--help"}), "unknown option '--foo'");
}

TEST(Argv, TraceIsIgnoredWithAWarning) {
    auto c = ok({"-T", "nbd_*", "-Tfile=x", "--trace=enable=foo", "--daemonize"});
    EXPECT_TRUE(c.daemonize);
    EXPECT_EQ(c.warnings, (std::vector<std::string>{
                              "-T 'nbd_*': ignored: ioplane has no QEMU trace events",
                              "-T 'file=x': ignored: ioplane has no QEMU trace events",
                              "--trace 'enable=foo': ignored: ioplane has no QEMU trace events"}));
}

TEST(Argv, EmptyCommandLine) {
    auto c = ok({});
    EXPECT_TRUE(c.blockdevs.empty());
    EXPECT_FALSE(c.nbd_server.has_value());
    EXPECT_FALSE(c.help);
    EXPECT_FALSE(c.daemonize);
    EXPECT_EQ(c.pidfile, std::nullopt);
}

TEST(Usage, ListsTheSupportedOptions) {
    const std::string usage = usage_text();
    for (const char* opt : {"--help", "--version", "--trace", "--blockdev", "--chardev", "--daemonize", "--export",
                            "--monitor", "--nbd-server", "--object", "--pidfile"}) {
        EXPECT_NE(usage.find(opt), std::string::npos) << opt;
    }
    EXPECT_TRUE(usage.starts_with("Usage: ioplane-storage-daemon [options]\n"));
}

}  // namespace
}  // namespace ioplane::daemon
