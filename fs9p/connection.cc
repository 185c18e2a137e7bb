#include "connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fs9p_export.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "session_reply.h"

namespace ioplane::fs9p {

namespace {

// Tags are 16 bits; the Linux client keeps far fewer in flight. Past these,
// or past the daemon's memory budget, the receive loop stops reading until
// requests finish (back pressure, not an error).
constexpr size_t kMaxRequestsInFlight = 256;
constexpr uint64_t kMaxBytesInFlight = 64ull << 20;
constexpr size_t kRecvBufferSize = 256 * 1024;

// The most a request's reply may hold beyond its header: the data of a
// read or a directory read (at most msize, checked by the session); other
// replies are small and fixed.
uint64_t reply_bytes(const Request& req, uint32_t msize) {
    if (const auto* r = std::get_if<Read>(&req.body)) return std::min(r->count, msize);
    if (const auto* r = std::get_if<Readdir>(&req.body)) return std::min(r->count, msize);
    return 0;
}

}  // namespace

Connection::Connection(Fs9pExport& exp, int fd, std::string peer, BudgetCharge socket)
    : export_(exp),
      fd_(fd),
      socket_charge_(std::move(socket)),
      peer_(std::move(peer)),
      session_(exp.share()),
      memory_(exp.memory_budget(), kMaxBytesInFlight) {}

Connection::~Connection() { ::close(fd_); }

void Connection::start() { spawn(export_.context(), run()); }

void Connection::shutdown_socket() { ::shutdown(fd_, SHUT_RDWR); }

Task<void> Connection::run() {
    auto self = shared_from_this();  // alive until this coroutine ends
    if (auto afd = AsyncFd::create(export_.context(), fd_); afd) {
        afd_ = std::move(*afd);
        recv_ = std::make_unique<BufferedReader>(*afd_, kRecvBufferSize);
        writer_ = std::make_unique<BatchedWriter>(*afd_);
        LOG_INFO("9p export '%s': client %s connected", export_.id().c_str(), peer_.c_str());
        co_await receive_loop();
        shutdown_socket();
        afd_->wake_all_closed();
        co_await wait_idle();
        session_.reset();  // closes every fid's fds here, not in the main loop
        writer_.reset();
        recv_.reset();
        afd_.reset();
        LOG_INFO("9p export '%s': client %s disconnected", export_.id().c_str(), peer_.c_str());
    } else {
        LOG_ERROR("9p export '%s': client %s: %s", export_.id().c_str(), peer_.c_str(),
                  afd.error().describe().c_str());
    }
    export_.main_context().schedule_oneshot([self] { self->export_.connection_closed(self); });
}

Task<void> Connection::receive_loop() {
    for (;;) {
        while (active_ >= kMaxRequestsInFlight) co_await slot_free_.wait();
        if (broken_) co_return;
        uint8_t size_field[4];
        if (auto r = co_await recv_->read_exact(size_field, sizeof size_field); !r) {
            if (r.error().code != ECONNRESET)
                LOG_WARN("9p client %s: %s", peer_.c_str(), r.error().describe().c_str());
            co_return;
        }
        const uint32_t size = uint32_t(size_field[0]) | uint32_t(size_field[1]) << 8 |
                              uint32_t(size_field[2]) << 16 | uint32_t(size_field[3]) << 24;
        if (size < kHeaderSize || size > session_.msize()) {
            LOG_WARN("9p client %s: message size %u outside [%zu, msize %u]; disconnecting", peer_.c_str(), size,
                     kHeaderSize, session_.msize());
            co_return;
        }
        IoBuffer msg = IoBuffer::allocate(size);
        if (!msg) co_return;
        std::memcpy(msg.get(), size_field, sizeof size_field);
        if (auto r = co_await recv_->read_exact(msg.get() + 4, size - 4); !r) co_return;
        const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(msg.get()), size);
        uint16_t tag = kNoTag;
        auto req = decode_request(bytes, &tag);
        if (!req && req.error().code == EOPNOTSUPP && !in_flight_.contains(tag)) {
            Reply r = error_reply(tag, EOPNOTSUPP);
            co_await send(r);
            continue;
        }
        if (!req) {
            LOG_WARN("9p client %s: %s; disconnecting", peer_.c_str(), req.error().message.c_str());
            co_return;
        }
        if (in_flight_.contains(tag)) {
            LOG_WARN("9p client %s: tag %u is already in flight; disconnecting", peer_.c_str(), tag);
            co_return;
        }
        if (req->type == Tversion) {
            // A new session: what is in flight is abandoned (its replies
            // dropped), as version(5) says, once it has ended.
            for (auto& [t, f] : in_flight_) f->dropped = true;
            co_await wait_idle();
            Reply r = session_.version(tag, std::get<Version>(req->body));
            co_await send(r);
            continue;
        }
        if (req->type == Tflush) {
            spawn_now(flush(tag, std::get<Flush>(req->body).oldtag));  // holds nothing
            continue;
        }
        // Its message and its reply, charged before it runs: while they do
        // not fit, nothing more is read (the message read meanwhile is the
        // one request's worth a connection may always hold).
        const uint64_t charge = size + reply_bytes(*req, session_.msize());
        while (!memory_.try_charge(charge)) {
            co_await slot_free_.wait();
            if (broken_) co_return;
        }
        spawn_now(serve(std::move(*req), std::move(msg), charge));
    }
}

Task<void> Connection::serve(Request req, IoBuffer msg, uint64_t charged) {
    InFlight me;
    active_++;
    in_flight_[req.tag] = &me;
    Reply r = co_await session_.handle(req);
    // The tag is free once its reply is on its way: the client may reuse it
    // the moment it reads the reply, before this coroutine runs again.
    in_flight_.erase(req.tag);
    if (!me.dropped) co_await send(r);
    me.done.restart_all();
    msg.reset();
    request_done(charged);
}

Task<void> Connection::flush(uint16_t tag, uint16_t oldtag) {
    InFlight me;
    active_++;
    in_flight_[tag] = &me;
    if (oldtag != tag) {
        if (auto it = in_flight_.find(oldtag); it != in_flight_.end()) {
            InFlight* old = it->second;
            old->dropped = true;  // unless its reply is already on its way: then it goes first
            co_await old->done.wait();
        }
    }
    in_flight_.erase(tag);
    if (!me.dropped) {
        Reply r = detail::empty_reply(Rflush, tag);
        co_await send(r);
    }
    me.done.restart_all();
    request_done(0);
}

Task<void> Connection::send(Reply& r) {
    if (broken_) co_return;
    iovec iov[2] = {{r.head.data(), r.head.size()}, {r.data.get(), r.data_len}};
    if (auto w = co_await writer_->write(std::span<const iovec>(iov, r.data_len > 0 ? 2 : 1)); !w) {
        broken_ = true;  // the client is gone: stop reading too
        shutdown_socket();
    }
}

Task<void> Connection::wait_idle() {
    while (active_ > 0) co_await idle_.wait();
}

void Connection::request_done(uint64_t charged) {
    memory_.release(charged);
    active_--;
    slot_free_.next();
    if (active_ == 0) idle_.restart_all();
}

}  // namespace ioplane::fs9p
