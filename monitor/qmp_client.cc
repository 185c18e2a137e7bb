#include "qmp_client.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/stream_io.h"

namespace ioplane::monitor {

using nlohmann::json;

namespace {

void set_nonblocking(int fd, bool on) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

}  // namespace

QmpClient::QmpClient(QmpMonitor& monitor, QmpDispatcher& dispatcher, int in_fd, int out_fd, bool owns_fds,
                     std::string peer, bool pretty)
    : monitor_(monitor),
      dispatcher_(dispatcher),
      in_fd_(in_fd),
      out_fd_(out_fd),
      owns_fds_(owns_fds),
      peer_(std::move(peer)),
      pretty_(pretty) {}

QmpClient::~QmpClient() {
    in_.reset();
    out_afd_.reset();
    if (owns_fds_) {
        ::close(in_fd_);
        if (out_fd_ != in_fd_) ::close(out_fd_);
    } else {
        set_nonblocking(in_fd_, false);
        set_nonblocking(out_fd_, false);
    }
}

Result<void> QmpClient::start(AioContext& ctx) {
    set_nonblocking(in_fd_, true);
    set_nonblocking(out_fd_, true);
    auto in = AsyncFd::create(ctx, in_fd_);
    if (!in) return std::unexpected(in.error());
    in_ = std::move(*in);
    if (out_fd_ != in_fd_) {
        auto out = AsyncFd::create(ctx, out_fd_);
        if (!out) return std::unexpected(out.error());
        out_afd_ = std::move(*out);
    }
    dispatcher_.add_client(this);
    send(format_greeting(pretty_));
    ++coroutines_;
    spawn(ctx, read_loop());
    return {};
}

void QmpClient::send(std::string text) {
    if (closing_) return;
    if (pending_.size() + text.size() > kMaxPendingOutput) {
        LOG_WARN("monitor %s: client %s does not read its responses; disconnecting it",
                 monitor_.options().name.c_str(), peer_.c_str());
        close();
        return;
    }
    pending_ += text;
    if (!writing_) {
        writing_ = true;
        ++coroutines_;
        spawn(*in_->context(), write_loop());
    }
}

Task<void> QmpClient::write_loop() {
    AsyncFd& out = out_afd_ ? *out_afd_ : *in_;
    while (!closing_ && !pending_.empty()) {
        if (write_some_now()) continue;
        if (closing_ || !co_await out.writable()) break;
    }
    writing_ = false;
    coroutine_ended();
}

// The queue is only ever written from its front, here, in the main thread:
// the writer and a last flush cannot interleave bytes.
bool QmpClient::write_some_now() {
    ssize_t n = ::send(out_fd_, pending_.data(), pending_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(out_fd_, pending_.data(), pending_.size());
    if (n >= 0) {
        pending_.erase(0, size_t(n));
        return n > 0;
    }
    if (errno != EAGAIN && errno != EINTR) close();
    return false;
}

void QmpClient::flush_without_waiting() {
    while (!closing_ && !pending_.empty() && write_some_now()) {
    }
}

void QmpClient::close() {
    if (closing_) return;
    closing_ = true;
    pending_.clear();
    in_->wake_all_closed();
    if (out_afd_) out_afd_->wake_all_closed();
}

Task<void> QmpClient::read_loop() {
    std::unique_ptr<char[]> buf(new char[64 * 1024]);
    std::vector<JsonPiece> pieces;
    while (!closing_) {
        auto n = co_await read_some(*in_, buf.get(), 64 * 1024);
        if (!n) break;  // EOF, error, or close()
        splitter_.feed({buf.get(), *n}, pieces);
        for (JsonPiece& piece : pieces) {
            if (closing_) break;
            // The daemon is shutting down: like QEMU, answer nothing more.
            if (dispatcher_.commands_stopped()) continue;
            if (!piece.error.empty()) {
                send(format_error(generic_error(piece.error), std::nullopt, pretty_));
                continue;
            }
            co_await handle(piece.text);
        }
        pieces.clear();
    }
    coroutine_ended();
}

Task<void> QmpClient::handle(std::string_view text) {
    auto request = parse_request(text);
    if (!request) {
        send(format_error(request.error().error, request.error().id, pretty_));
        co_return;
    }
    QmpResult result;
    if (request->execute == "qmp_capabilities" || !command_mode_) {
        result = negotiate(*request);
    } else if (request->oob) {
        result = std::unexpected(generic_error("QMP input member 'exec-oob' is unexpected: ioplane has no "
                                               "out-of-band execution"));
    } else {
        auto dispatched = co_await dispatcher_.co_dispatch(*request);
        if (!dispatched) co_return;  // the daemon is shutting down: no response, as in QEMU
        result = std::move(*dispatched);
    }
    if (result)
        send(format_return(*result, request->id, pretty_));
    else
        send(format_error(result.error(), request->id, pretty_));
}

// Capabilities negotiation mode: only qmp_capabilities (spec 2.2, and QEMU's
// messages for the other cases).
QmpResult QmpClient::negotiate(const QmpRequest& request) {
    if (request.execute != "qmp_capabilities")
        return std::unexpected(QmpError{"CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"});
    if (command_mode_)
        return std::unexpected(QmpError{"CommandNotFound", "Capabilities negotiation is already complete, command ignored"});
    for (auto& [key, value] : request.arguments.items()) {
        if (key != "enable") return std::unexpected(generic_error("Parameter '" + key + "' is unexpected"));
        if (!value.is_array()) return std::unexpected(generic_error("Invalid parameter type for 'enable', expected: array"));
        for (const json& cap : value) {
            if (!cap.is_string()) return std::unexpected(generic_error("Invalid parameter type for 'enable', expected: string"));
            if (cap.get<std::string>() == "oob")
                return std::unexpected(generic_error("This monitor does not support Out-Of-Band (OOB)"));
            return std::unexpected(generic_error("Parameter 'enable' does not accept value '" + cap.get<std::string>() + "'"));
        }
    }
    command_mode_ = true;
    return json::object();
}

void QmpClient::coroutine_ended() {
    if (--coroutines_ > 0) return;
    dispatcher_.remove_client(this);
    monitor_.client_finished(this);
}

}  // namespace ioplane::monitor
