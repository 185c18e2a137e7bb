#include "qmp_server.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"
#include "qmp_client.h"

namespace ioplane::monitor {

using nlohmann::json;

// --- QmpDispatcher ---

void QmpDispatcher::add_command(std::string name, QmpCommand command) { commands_[std::move(name)] = std::move(command); }

std::vector<std::string> QmpDispatcher::command_names() const {
    std::vector<std::string> names{"qmp_capabilities"};
    for (auto& [name, command] : commands_) names.push_back(name);
    return names;
}

void QmpDispatcher::emit_event(std::string_view name, const json& data) {
    assert_in_main_thread();
    timeval tv;
    ::gettimeofday(&tv, nullptr);
    const int64_t micros = int64_t(tv.tv_sec) * 1'000'000 + tv.tv_usec;
    for (QmpClient* c : clients_)
        if (c->in_command_mode()) c->send(format_event(name, data, micros, false));
}

void QmpDispatcher::emit_event_after_response(std::string name, json data) {
    // The response is queued when the command's coroutine continues, which
    // is before the main loop runs this BH.
    main_context()->schedule_oneshot(
        [this, name = std::move(name), data = std::move(data)] { emit_event(name, data); });
}

Task<QmpResult> QmpDispatcher::co_dispatch(const QmpRequest& request) {
    auto it = commands_.find(request.execute);
    if (it == commands_.end()) co_return std::unexpected(command_not_found(request.execute));
    auto turn = co_await configuration_turn().scoped_lock();
    try {
        co_return it->second(request.arguments);
    } catch (const json::exception& e) {
        // A command read an argument with the wrong JSON type without checking.
        co_return std::unexpected(generic_error(std::string("Invalid parameter: ") + e.what()));
    }
}

void QmpDispatcher::add_client(QmpClient* client) { clients_.push_back(client); }

void QmpDispatcher::remove_client(QmpClient* client) { std::erase(clients_, client); }

// --- QmpMonitor ---

Result<std::unique_ptr<QmpMonitor>> QmpMonitor::start(AioContext& main_ctx, QmpDispatcher& dispatcher,
                                                      MonitorOptions options) {
    std::unique_ptr<QmpMonitor> m(new QmpMonitor(main_ctx, dispatcher, std::move(options)));
    if (auto r = m->open(); !r) return std::unexpected(r.error());
    return m;
}

QmpMonitor::QmpMonitor(AioContext& main_ctx, QmpDispatcher& dispatcher, MonitorOptions options)
    : main_ctx_(main_ctx), dispatcher_(dispatcher), options_(std::move(options)) {}

Result<void> QmpMonitor::open() {
    if (options_.endpoint.kind == MonitorEndpoint::Kind::stdio) {
        if (auto r = add_client(STDIN_FILENO, STDOUT_FILENO, "stdio"); !r)
            return fail(r.error().code, "monitor '" + options_.name +
                                            "': stdin and stdout must be pipes, sockets or terminals: " +
                                            r.error().message);
        return {};
    }
    auto listener = Listener::start(main_ctx_, options_.endpoint.addr, "monitor '" + options_.name + "'",
                                    [this](int fd, std::string peer) { on_client(fd, std::move(peer)); });
    if (!listener) return std::unexpected(listener.error());
    listener_ = std::move(*listener);
    LOG_INFO("monitor '%s': QMP on %s", options_.name.c_str(), describe(options_.endpoint.addr).c_str());
    if (options_.endpoint.addr.type == ListenAddress::Type::unix_socket)
        LOG_INFO("  try: ioplane-qmp -s %s top", options_.endpoint.addr.path.c_str());
    if (options_.endpoint.wait) {
        // qemu-storage-daemon's wait=on: startup goes on once a client is there.
        LOG_INFO("monitor '%s': waiting for a client (wait=on)", options_.name.c_str());
        aio_wait_while(main_ctx_, [this] { return clients_.empty() && !options_.endpoint.stop_requested(); });
    }
    return {};
}

QmpMonitor::~QmpMonitor() {
    listener_.reset();
    for (auto& c : clients_) {
        c->flush_without_waiting();
        c->close();
    }
    aio_wait_while(main_ctx_, [this] { return !clients_.empty(); });
}

void QmpMonitor::on_client(int fd, std::string peer) {
    if (clients_.size() >= options_.max_clients) {
        LOG_WARN("monitor '%s': refusing client %s: %zu clients connected", options_.name.c_str(), peer.c_str(),
                 clients_.size());
        ::close(fd);
        return;
    }
    if (auto r = add_client(fd, fd, std::move(peer)); !r)
        LOG_WARN("monitor '%s': %s", options_.name.c_str(), r.error().describe().c_str());
}

Result<void> QmpMonitor::add_client(int in_fd, int out_fd, std::string peer) {
    const bool is_socket = options_.endpoint.kind == MonitorEndpoint::Kind::socket;
    auto client = std::make_unique<QmpClient>(*this, dispatcher_, in_fd, out_fd, is_socket, std::move(peer),
                                              options_.pretty);
    if (auto r = client->start(main_ctx_); !r) return r;
    clients_.push_back(std::move(client));
    return {};
}

void QmpMonitor::client_finished(QmpClient* client) {
    // Destroyed from a BH: the client's last coroutine is still on the stack.
    main_ctx_.schedule_oneshot([this, client] {
        std::erase_if(clients_, [client](auto& c) { return c.get() == client; });
    });
}

}  // namespace ioplane::monitor
