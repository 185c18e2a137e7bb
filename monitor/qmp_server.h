// The QMP server: monitors (qemu-storage-daemon's --chardev + --monitor),
// their clients, and the dispatcher that runs commands and sends events.
//
// Every client is a coroutine in the main loop that reads JSON texts
// (JsonSplitter), answers capabilities negotiation itself, and passes
// commands to the QmpDispatcher. The dispatcher runs one command at a time,
// daemon-wide, under the BQL: a command may wait for other threads (a drained
// section, a node moving between IOThreads) by running nested main-loop
// iterations, and a command from another client waits meanwhile instead of
// running inside it. Responses and events go out through a per-client queue
// that a writer coroutine empties, so a client that does not read stalls
// only itself — and is disconnected once its queue passes kMaxPendingOutput.
//
// A monitor either listens (server=on: clients connect to it) or, like
// QEMU's client-mode socket chardev (server=off), connects once to a
// listening management tool at start and serves QMP over that connection;
// when the peer goes, that monitor stays closed (no reconnect) and the
// daemon goes on, as qemu-storage-daemon does.
//
// Differences from QEMU, each documented in docs/QMP.md: one monitor socket
// serves several clients at once (QEMU serves one, leaving the next in the
// listen backlog), and there is no out-of-band execution.
//
// Thread contract: main thread, under the BQL, for every member.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ioplane/core/aio_context.h"
#include "ioplane/core/co_queue.h"
#include "ioplane/core/listen_socket.h"
#include "ioplane/core/listener.h"
#include "ioplane/core/task.h"
#include "qmp_message.h"

namespace ioplane::monitor {

class QmpClient;

// A command: runs in the main thread under the BQL, alone (see above).
// Arguments are the request's "arguments" object (empty if absent).
using QmpCommand = std::function<QmpResult(const nlohmann::json& arguments)>;

class QmpDispatcher {
public:
    QmpDispatcher() = default;
    QmpDispatcher(const QmpDispatcher&) = delete;
    QmpDispatcher& operator=(const QmpDispatcher&) = delete;

    void add_command(std::string name, QmpCommand command);
    std::vector<std::string> command_names() const;

    // Sends the event to every client past capabilities negotiation, stamped
    // with the current wall-clock time. `data` may be null (no "data" member).
    void emit_event(std::string_view name, const nlohmann::json& data = nullptr);

    // Runs one command: waits for the configuration turn (main_loop.h), then
    // runs it. Nothing (no response at all) once commands are stopped.
    Task<std::optional<QmpResult>> co_dispatch(const QmpRequest& request);

    // Shutdown, as qemu-storage-daemon's exit orders it (docs/QMP.md):
    //
    // Called by a running command (quit): its response waits for
    // send_deferred_responses(), so that it follows the events of the
    // shutdown the command starts.
    void defer_response_to_shutdown();
    // No command starts any more, and requests get no response: QEMU's
    // dispatcher takes no request once the daemon exits. Events still go out.
    void stop_commands();
    bool commands_stopped() const { return stopped_; }
    // Once the shutdown's events are sent: the deferred responses are queued
    // by the time this returns, and later ones are not held. Idempotent.
    void send_deferred_responses();

    // Called by clients as they come and go.
    void add_client(QmpClient* client);
    void remove_client(QmpClient* client);

private:
    std::map<std::string, QmpCommand> commands_;
    std::vector<QmpClient*> clients_;
    bool stopped_ = false;       // stop_commands()
    bool defer_ = false;         // the running command called defer_response_to_shutdown()
    bool release_ = false;       // send_deferred_responses()
    int deferred_ = 0;           // responses waiting in deferred_queue_
    CoQueue deferred_queue_;
};

// The part of --chardev that a monitor uses.
struct MonitorEndpoint {
    enum class Kind { socket, stdio };
    Kind kind = Kind::socket;
    ListenAddress addr;  // socket
    // socket: connect to `addr` (a unix path or host:port; type fd: a
    // socket the daemon inherited, already connected) instead of listening
    // on it. One connection, made before start() returns; not remade.
    bool connect = false;
    bool wait = false;   // listening socket: wait for the first client before start() returns
    // While waiting: true when the daemon is told to stop (a signal), which
    // ends the wait.
    std::function<bool()> stop_requested = [] { return false; };
};

struct MonitorOptions {
    std::string name;  // for log lines: the chardev id
    MonitorEndpoint endpoint;
    bool pretty = false;
    size_t max_clients = 16;  // per socket; more are refused
};

// One --monitor.
class QmpMonitor {
public:
    static Result<std::unique_ptr<QmpMonitor>> start(AioContext& main_ctx, QmpDispatcher& dispatcher,
                                                     MonitorOptions options);
    // Stops listening, sends what is queued if the socket takes it at once,
    // disconnects the clients and waits for their coroutines to end.
    ~QmpMonitor();

    size_t client_count() const { return clients_.size(); }
    const MonitorOptions& options() const { return options_; }

    // Called by a client when its coroutines have ended.
    void client_finished(QmpClient* client);

private:
    QmpMonitor(AioContext& main_ctx, QmpDispatcher& dispatcher, MonitorOptions options);
    Result<void> open();
    void on_client(int fd, std::string peer);
    Result<void> add_client(int in_fd, int out_fd, std::string peer);

    AioContext& main_ctx_;
    QmpDispatcher& dispatcher_;
    const MonitorOptions options_;
    std::unique_ptr<Listener> listener_;
    std::vector<std::unique_ptr<QmpClient>> clients_;
    bool closing_ = false;  // the destructor runs
};

}  // namespace ioplane::monitor
