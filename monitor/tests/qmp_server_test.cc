// The QMP server over real unix sockets, with the main loop stepped by the
// test: negotiation, dispatch, events, bad input, and commands from several
// clients running one at a time.
#include <gtest/gtest.h>
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
            dispatcher_.emit_event_after_response("LATER", {{"n", 1}});
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
    // The next message from the server, stepping the main loop meanwhile.
    json next(int fd) {
        std::string& buf = inbox_[fd];
        size_t end;
        bool ok = test::poll_until(loop_->ctx(), [&] {
            char tmp[65536];
            ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
            if (n > 0) buf.append(tmp, size_t(n));
            end = buf.find("\r\n");
            return end != std::string::npos;
        });
        if (!ok) {
            ADD_FAILURE() << "no message from the server";
            return nullptr;
        }
        json message = json::parse(buf.substr(0, end));
        buf.erase(0, end + 2);
        return message;
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

TEST_F(QmpServerTest, EventsReachNegotiatedClientsAfterTheResponse) {
    int negotiating = connect_client(false);
    int a = connect_client(), b = connect_client();
    put(a, R"({"execute": "emit", "id": 1})");
    EXPECT_EQ(next(a)["id"], 1);
    json event = next(a);
    EXPECT_EQ(event["event"], "LATER");
    EXPECT_EQ(event["data"]["n"], 1);
    EXPECT_TRUE(event["timestamp"]["seconds"].is_number_integer());
    EXPECT_EQ(next(b)["event"], "LATER");
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

}  // namespace
}  // namespace ioplane::monitor
