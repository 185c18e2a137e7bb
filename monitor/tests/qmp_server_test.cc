// The QMP server over real unix sockets, with the main loop stepped by the
// test: negotiation, dispatch, events, bad input, and commands from several
// clients running one at a time.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "../../core/tests/harness.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/timer.h"
#include "qmp_server.h"

namespace ioplane::monitor {
namespace {

using nlohmann::json;

class QmpServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/qmp-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
        bql_lock();
        dispatcher_.add_command("echo", [](const json& args) -> QmpResult { return args; });
        dispatcher_.add_command("fail", [](const json&) -> QmpResult {
            return std::unexpected(QmpError{"DeviceNotFound", "no such thing"});
        });
        dispatcher_.add_command("emit", [this](const json&) -> QmpResult {
            dispatcher_.emit_event("EMITTED", {{"n", 1}});
            return json::object();
        });
        MonitorOptions o;
        o.name = "c0";
        o.endpoint.addr.path = dir_ + "/qmp.sock";
        auto m = QmpMonitor::start(loop_->ctx(), dispatcher_, o);
        ASSERT_TRUE(m) << m.error().describe();
        monitor_ = std::move(*m);
    }
    void TearDown() override {
        for (int fd : fds_) ::close(fd);
        monitor_.reset();
        bql_unlock();
        loop_.reset();
        std::filesystem::remove_all(dir_);
    }

    int connect_client(bool negotiate = true) {
        int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un sun{};
        sun.sun_family = AF_UNIX;
        std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s/qmp.sock", dir_.c_str());
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
        fds_.push_back(fd);
        json greeting = next(fd);
        EXPECT_TRUE(greeting.contains("QMP")) << greeting;
        if (negotiate) {
            put(fd, R"({"execute": "qmp_capabilities"})");
            EXPECT_EQ(next(fd), json({{"return", json::object()}}));
        }
        return fd;
    }
    void put(int fd, std::string_view text) { ASSERT_EQ(::send(fd, text.data(), text.size(), MSG_NOSIGNAL), ssize_t(text.size())); }
    // The next message from the server as text, up to and with `last` (a
    // compact message is one line; a pretty one ends with a line "}"),
    // stepping the main loop meanwhile. Empty if none comes.
    std::string next_text(int fd, std::string_view last = "\r\n") {
        std::string& buf = inbox_[fd];
        size_t end;
        bool ok = test::poll_until(loop_->ctx(), [&] {
            char tmp[65536];
            ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
            if (n > 0) buf.append(tmp, size_t(n));
            end = buf.find(last);
            return end != std::string::npos;
        });
        if (!ok) {
            ADD_FAILURE() << "no message from the server";
            return {};
        }
        std::string text = buf.substr(0, end + last.size());
        buf.erase(0, end + last.size());
        return text;
    }
    json next(int fd) {
        std::string text = next_text(fd);
        return text.empty() ? json(nullptr) : json::parse(text);
    }
    // Whether anything more came from the server within `ns`.
    bool more_within(int fd, int64_t ns) {
        test::poll_until(loop_->ctx(), [] { return false; }, ns);
        char tmp[4096];
        ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        if (n > 0) inbox_[fd].append(tmp, size_t(n));
        return !inbox_[fd].empty();
    }

    std::string dir_;
    std::unique_ptr<MainLoop> loop_;
    QmpDispatcher dispatcher_;
    std::unique_ptr<QmpMonitor> monitor_;
    std::vector<int> fds_;
    std::map<int, std::string> inbox_;
};

TEST_F(QmpServerTest, NegotiationComesFirstAndOnlyOnce) {
    int fd = connect_client(false);
    put(fd, R"({"execute": "echo", "id": 1})");
    json r = next(fd);
    EXPECT_EQ(r["error"]["class"], "CommandNotFound");
    EXPECT_EQ(r["id"], 1);
    put(fd, R"({"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}})");
    EXPECT_EQ(next(fd)["error"]["class"], "GenericError");
    put(fd, R"({"execute": "qmp_capabilities"})");
    EXPECT_EQ(next(fd), json({{"return", json::object()}}));
    put(fd, R"({"execute": "qmp_capabilities"})");
    EXPECT_EQ(next(fd)["error"]["class"], "CommandNotFound");
}

TEST_F(QmpServerTest, CommandsGetTheirIdAndErrorClassBack) {
    int fd = connect_client();
    put(fd, R"({"execute": "echo", "arguments": {"a": [1, "b"]}, "id": "x1"})");
    EXPECT_EQ(next(fd), json({{"return", {{"a", {1, "b"}}}}, {"id", "x1"}}));
    put(fd, R"({"execute": "fail", "id": 2})");
    EXPECT_EQ(next(fd), json({{"error", {{"class", "DeviceNotFound"}, {"desc", "no such thing"}}}, {"id", 2}}));
    put(fd, R"({"execute": "no-such-command", "id": 3})");
    EXPECT_EQ(next(fd)["error"]["class"], "CommandNotFound");
}

TEST_F(QmpServerTest, RequestsSplitOrJoinedAcrossReads) {
    int fd = connect_client();
    put(fd, R"({"execute": "echo", "arguments": {"n": 1}}{"execute": "echo", "arg)");
    EXPECT_EQ(next(fd)["return"]["n"], 1);
    put(fd, R"(uments": {"n": 2}})");
    EXPECT_EQ(next(fd)["return"]["n"], 2);
}

TEST_F(QmpServerTest, BadInputGetsAnErrorAndTheClientIsStillServed) {
    int fd = connect_client();
    put(fd, "{\"execute\": nonsense}");
    EXPECT_NE(next(fd)["error"]["desc"].get<std::string>().find("JSON parse error"), std::string::npos);
    put(fd, "[]");
    EXPECT_EQ(next(fd)["error"]["desc"], "QMP input must be a JSON object");
    std::string huge = "{\"execute\": \"echo\", \"arguments\": {\"s\": \"" + std::string(10 << 20, 'x') + "\"}}";
    // Sent while the loop runs: the socket buffer is far smaller than 10 MB.
    size_t sent = 0;
    ASSERT_TRUE(test::poll_until(loop_->ctx(), [&] {
        ssize_t n = ::send(fd, huge.data() + sent, huge.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) sent += size_t(n);
        return sent == huge.size();
    }));
    EXPECT_NE(next(fd)["error"]["desc"].get<std::string>().find("longer than"), std::string::npos);
    put(fd, R"({"execute": "echo", "id": 9})");
    EXPECT_EQ(next(fd)["id"], 9);
}

// An event a command sends comes before its response, as QEMU's
// BLOCK_EXPORT_DELETED before block-export-del's.
TEST_F(QmpServerTest, EventsReachNegotiatedClients) {
    int negotiating = connect_client(false);
    int a = connect_client(), b = connect_client();
    put(a, R"({"execute": "emit", "id": 1})");
    json event = next(a);
    EXPECT_EQ(event["event"], "EMITTED");
    EXPECT_EQ(event["data"]["n"], 1);
    EXPECT_TRUE(event["timestamp"]["seconds"].is_number_integer());
    EXPECT_EQ(next(a)["id"], 1);
    EXPECT_EQ(next(b)["event"], "EMITTED");
    // The client still negotiating got nothing: its next message is the reply.
    put(negotiating, R"({"execute": "qmp_capabilities", "id": 7})");
    EXPECT_EQ(next(negotiating)["id"], 7);
}

TEST_F(QmpServerTest, CommandsOfSeveralClientsRunOneAtATime) {
    bool in_slow = false, overlapped = false;
    int a = -1, b = -1;
    dispatcher_.add_command("slow", [&](const json&) -> QmpResult {
        in_slow = true;
        put(b, R"({"execute": "check", "id": "b"})");  // arrives while this command waits
        bool done = false;
        Timer t(loop_->ctx(), [&] { done = true; });
        t.arm_in(50'000'000);
        aio_wait_while(loop_->ctx(), [&] { return !done; });  // nested loop iterations, as a drain runs
        in_slow = false;
        return json::object();
    });
    dispatcher_.add_command("check", [&](const json&) -> QmpResult {
        overlapped |= in_slow;
        return json::object();
    });
    a = connect_client();
    b = connect_client();
    put(a, R"({"execute": "slow", "id": "a"})");
    EXPECT_EQ(next(a)["id"], "a");
    EXPECT_EQ(next(b)["id"], "b");
    EXPECT_FALSE(overlapped);
}

TEST_F(QmpServerTest, ClientLeavingMidCommandHarmsNoOne) {
    bool ran = false;
    dispatcher_.add_command("slow", [&](const json&) -> QmpResult {
        bool done = false;
        Timer t(loop_->ctx(), [&] { done = true; });
        t.arm_in(20'000'000);
        aio_wait_while(loop_->ctx(), [&] { return !done; });
        ran = true;
        return json::object();
    });
    int a = connect_client();
    put(a, R"({"execute": "slow"})");
    ::shutdown(a, SHUT_RDWR);
    int b = connect_client();
    put(b, R"({"execute": "echo", "id": 2})");
    EXPECT_EQ(next(b)["id"], 2);
    EXPECT_TRUE(test::poll_until(loop_->ctx(), [&] { return ran && monitor_->client_count() == 1; }));
}

// As qemu-storage-daemon's quit: the response waits for the events of the
// shutdown, and no request is answered once the shutdown began.
TEST_F(QmpServerTest, ADeferredResponseFollowsTheShutdownsEventsAndLaterRequestsGetNone) {
    bool ran = false;
    dispatcher_.add_command("stop", [&](const json&) -> QmpResult {
        dispatcher_.defer_response_to_shutdown();
        dispatcher_.stop_commands();
        ran = true;
        return json::object();
    });
    int a = connect_client(), b = connect_client();
    put(a, R"({"execute": "stop", "id": 1}{"execute": "echo", "id": 2})");
    ASSERT_TRUE(test::poll_until(loop_->ctx(), [&] { return ran; }));
    put(b, R"({"execute": "echo", "id": 3}{"execute": "no-such-command"}{"execute": })");
    EXPECT_FALSE(more_within(a, 50'000'000));
    EXPECT_FALSE(more_within(b, 0));
    dispatcher_.emit_event("GONE");
    dispatcher_.send_deferred_responses();
    EXPECT_EQ(next(a)["event"], "GONE");
    EXPECT_EQ(next(a), json({{"return", json::object()}, {"id", 1}}));
    EXPECT_EQ(next(b)["event"], "GONE");
    EXPECT_FALSE(more_within(a, 50'000'000));
    EXPECT_FALSE(more_within(b, 0));
}

// QEMU prints a monitor's events in its form too.
TEST_F(QmpServerTest, APrettyMonitorSendsEventsPretty) {
    MonitorOptions o;
    o.name = "c1";
    o.endpoint.addr.path = dir_ + "/pretty.sock";
    o.pretty = true;
    auto m = QmpMonitor::start(loop_->ctx(), dispatcher_, o);
    ASSERT_TRUE(m) << m.error().describe();
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fds_.push_back(fd);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", o.endpoint.addr.path.c_str());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
    EXPECT_TRUE(next_text(fd, "\n}\r\n").starts_with("{\r\n    \"QMP\": {\r\n        \"version\": {\r\n"));
    put(fd, R"({"execute": "qmp_capabilities"})");
    EXPECT_EQ(next_text(fd, "\n}\r\n"), "{\r\n    \"return\": {\r\n    }\r\n}\r\n");
    const int a = connect_client();
    put(a, R"({"execute": "emit"})");
    EXPECT_TRUE(next_text(a).starts_with("{\"timestamp\": {\"seconds\": "));
    EXPECT_EQ(next(a), json({{"return", json::object()}}));
    const std::string event = next_text(fd, "\n}\r\n");
    EXPECT_TRUE(event.starts_with("{\r\n    \"timestamp\": {\r\n        \"seconds\": ")) << event;
    EXPECT_TRUE(event.ends_with("\r\n    },\r\n    \"event\": \"EMITTED\",\r\n    \"data\": {\r\n        \"n\": 1\r\n    }\r\n}\r\n"))
        << event;
    m->reset();
}

// --- client mode: --chardev socket,path=P without server=on ---

// A listening unix socket at `path`, as a management tool (or iotests'
// QEMUMonitorProtocol(server=True)) opens before it starts the daemon.
int listen_unix(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    std::snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path.c_str());
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun), 0);
    EXPECT_EQ(::listen(fd, 1), 0);
    return fd;
}

MonitorOptions client_mode(ListenAddress addr) {
    MonitorOptions o;
    o.name = "mgmt";
    o.endpoint.addr = std::move(addr);
    o.endpoint.connect = true;
    return o;
}

TEST_F(QmpServerTest, ClientModeConnectsOutServesQmpAndStaysClosedWhenThePeerLeaves) {
    const std::string path = dir_ + "/mgmt.sock";
    const int listener = listen_unix(path);
    fds_.push_back(listener);
    // The connection is made before start() returns: the peer has not even
    // called accept() yet (the kernel's backlog holds it).
    auto m = QmpMonitor::start(loop_->ctx(), dispatcher_, client_mode({.path = path}));
    ASSERT_TRUE(m) << m.error().describe();
    EXPECT_EQ((*m)->client_count(), 1u);
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    fds_.push_back(fd);
    EXPECT_TRUE(next(fd).contains("QMP"));
    put(fd, R"({"execute": "qmp_capabilities"})");
    EXPECT_EQ(next(fd), json({{"return", json::object()}}));
    put(fd, R"({"execute": "echo", "arguments": {"x": 1}, "id": 5})");
    EXPECT_EQ(next(fd), json({{"return", {{"x", 1}}}, {"id", 5}}));
    // Events reach it like any client's.
    put(fd, R"({"execute": "emit", "id": 6})");
    EXPECT_EQ(next(fd)["event"], "EMITTED");
    EXPECT_EQ(next(fd)["id"], 6);

    // The peer goes: the connection ends, and (reconnect unset, as QEMU's
    // default) nothing connects again; the monitor object and the daemon's
    // other monitors are unaffected.
    ::shutdown(fd, SHUT_RDWR);
    EXPECT_TRUE(test::poll_until(loop_->ctx(), [&] { return (*m)->client_count() == 0; }));
    test::poll_until(loop_->ctx(), [] { return false; }, 100'000'000);
    pollfd p{listener, POLLIN, 0};
    EXPECT_EQ(::poll(&p, 1, 0), 0) << "the monitor connected again";
    const int other = connect_client();
    put(other, R"({"execute": "echo", "id": 7})");
    EXPECT_EQ(next(other)["id"], 7);
    m->reset();
}

TEST_F(QmpServerTest, ClientModeConnectFailureIsAnErrorNamingThePath) {
    const std::string missing = dir_ + "/nobody.sock";
    auto m = QmpMonitor::start(loop_->ctx(), dispatcher_, client_mode({.path = missing}));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ENOENT);
    EXPECT_EQ(m.error().message, "chardev 'mgmt': Failed to connect to '" + missing + "': No such file or directory");
    // A socket file whose server is gone.
    const std::string stale = dir_ + "/stale.sock";
    ::close(listen_unix(stale));
    m = QmpMonitor::start(loop_->ctx(), dispatcher_, client_mode({.path = stale}));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().code, ECONNREFUSED);
    // TCP: a port nobody listens on (one the kernel just gave and took back).
    int probe = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(probe, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    socklen_t len = sizeof sin;
    ::getsockname(probe, reinterpret_cast<sockaddr*>(&sin), &len);
    ::close(probe);
    const std::string port = std::to_string(ntohs(sin.sin_port));
    m = QmpMonitor::start(loop_->ctx(), dispatcher_,
                          client_mode({.type = ListenAddress::Type::inet, .host = "127.0.0.1", .port = port}));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().message, "chardev 'mgmt': Failed to connect to '127.0.0.1:" + port + "': Connection refused");
}

TEST_F(QmpServerTest, ClientModeOverTcp) {
    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    fds_.push_back(listener);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    ASSERT_EQ(::listen(listener, 1), 0);
    socklen_t len = sizeof sin;
    ::getsockname(listener, reinterpret_cast<sockaddr*>(&sin), &len);
    auto m = QmpMonitor::start(
        loop_->ctx(), dispatcher_,
        client_mode({.type = ListenAddress::Type::inet, .host = "127.0.0.1", .port = std::to_string(ntohs(sin.sin_port))}));
    ASSERT_TRUE(m) << m.error().describe();
    const int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    ASSERT_GE(fd, 0);
    fds_.push_back(fd);
    EXPECT_TRUE(next(fd).contains("QMP"));
    put(fd, R"({"execute": "qmp_capabilities", "id": 1})");
    EXPECT_EQ(next(fd)["id"], 1);
    m->reset();
}

TEST_F(QmpServerTest, ClientModeTakesAnInheritedConnectedSocket) {
    int sp[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    fds_.push_back(sp[0]);  // sp[1] belongs to the monitor from now on
    auto m = QmpMonitor::start(loop_->ctx(), dispatcher_, client_mode({.type = ListenAddress::Type::fd, .fd = sp[1]}));
    ASSERT_TRUE(m) << m.error().describe();
    EXPECT_TRUE(next(sp[0]).contains("QMP"));
    m->reset();
    // A listening socket is for server=on.
    const int listener = listen_unix(dir_ + "/l.sock");
    fds_.push_back(listener);
    m = QmpMonitor::start(loop_->ctx(), dispatcher_, client_mode({.type = ListenAddress::Type::fd, .fd = listener}));
    ASSERT_FALSE(m);
    EXPECT_EQ(m.error().message, "chardev 'mgmt': fd " + std::to_string(listener) +
                                     " is not a connected stream socket (a listening one needs server=on)");
}

}  // namespace
}  // namespace ioplane::monitor
