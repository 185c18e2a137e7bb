#include "session.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "ioplane/core/coroutine.h"
#include "ioplane/core/log.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::vhost_user {

namespace {

constexpr uint64_t kProtocolFeatures = kPfMq | kPfReplyAck | kPfConfig | kPfInflightShmfd | kPfResetDevice;
constexpr size_t kConfigSpace = 256;  // what GET_CONFIG may address

// A kick, call or error fd must be an eventfd: the queue's thread reads or
// writes 8 bytes on it and must never block (a pipe or socket could). It is
// made non-blocking for the same reason.
Result<void> check_eventfd(const UniqueFd& fd, const char* what) {
    char link[64] = {};
    const std::string path = "/proc/self/fd/" + std::to_string(fd.get());
    const ssize_t n = readlink(path.c_str(), link, sizeof link - 1);
    if (n < 0 || std::string_view(link, size_t(n)) != "anon_inode:[eventfd]")
        return fail(EPROTO, std::string(what) + " fd is not an eventfd");
    const int flags = fcntl(fd.get(), F_GETFL);
    if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) return fail_errno(std::string(what) + " fd");
    return {};
}

bool has_own_reply(Request r) {
    return r == Request::get_features || r == Request::get_protocol_features || r == Request::get_vring_base ||
           r == Request::get_queue_num || r == Request::get_config || r == Request::get_max_mem_slots ||
           r == Request::get_inflight_fd;
}

Request type_of(uint32_t request) { return static_cast<Request>(request); }

// "bits 1, 12" of a feature mask, for errors.
std::string feature_bits(uint64_t mask) {
    std::string out = "bits";
    for (int b = 0; b < 64; b++)
        if (mask & (1ull << b)) out += (out.size() == 4 ? " " : ", ") + std::to_string(b);
    return out;
}

// The requests Session::handle() acts on; the others are not offered.
bool handled(Request r) {
    switch (r) {
    case Request::set_log_base:
    case Request::set_log_fd:
    case Request::get_max_mem_slots:
        return false;
    default:
        return request_name(uint32_t(r)) != std::string_view("unknown request");
    }
}

}  // namespace

Result<std::shared_ptr<Session>> Session::create(AioContext& main_ctx, Device device, UniqueFd fd) {
    auto afd = AsyncFd::create(main_ctx, fd.get());
    if (!afd) return std::unexpected(afd.error());
    return std::shared_ptr<Session>(new Session(std::move(device), std::move(fd), std::move(*afd)));
}

Session::Session(Device device, UniqueFd fd, std::unique_ptr<AsyncFd> afd)
    : device_(std::move(device)), fd_(std::move(fd)), afd_(std::move(afd)) {
    for (uint32_t i = 0; i < device_.config.num_queues; i++) {
        AioContext& ctx = *device_.queue_contexts[i];
        queues_.push_back(std::make_unique<BlkQueue>(i, device_.blk, device_.config, ctx,
                                                     device_.name + " queue " + std::to_string(i)));
    }
}

Session::~Session() {
    close();
    afd_.reset();  // before fd_ closes
}

Task<void> Session::run(std::function<void()> on_end) {
    for (uint64_t n = 1; !closed_; n++) {
        // A message already buffered completes receive_message() without
        // suspending, and g++ 12 does not make Task's symmetric transfer a
        // tail call under ASan or at -O0: every such message would nest a
        // frame, and a burst of thousands overflows the stack. Resuming
        // from the loop now and then unwinds it.
        if (n % 256 == 0) co_await schedule_on(*afd_->context());
        auto m = co_await receive_message(*afd_);
        std::vector<uint8_t> reply;
        bool end = false;
        {
            auto turn = co_await configuration_turn().scoped_lock();
            if (closed_) break;  // closed by the export while this waited
            if (!m) {
                if (m.error().code == ECONNRESET)
                    LOG_INFO("%s: front end disconnected", device_.name.c_str());
                else
                    LOG_ERROR("%s: %s; disconnecting the front end", device_.name.c_str(), m.error().describe().c_str());
                break;
            }
            const uint32_t request = m->header.request;
            const bool need_reply = m->header.flags & kFlagNeedReply;
            auto handled = handle(*m);
            if (handled) {
                reply = std::move(*handled);
                if (reply.empty() && need_reply) reply = encode_reply_u64(request, 0);
            } else {
                LOG_ERROR("%s: %s: %s; disconnecting the front end", device_.name.c_str(), request_name(request),
                          handled.error().describe().c_str());
                // A nack tells it why, if it listens; a request with a reply
                // of its own (a GET_*) gets none, as a u64 would be read as
                // that reply.
                if (need_reply && !has_own_reply(type_of(request))) reply = encode_reply_u64(request, 1);
                end = true;
            }
        }
        // Sent without the turn: a front end that does not read its replies
        // stalls only itself, never the monitor or the other exports.
        UniqueFd reply_fd = std::move(reply_fd_);
        if (!reply.empty()) {
            if (auto r = co_await send_reply(*afd_, reply, reply_fd.get()); !r && !end) {
                LOG_ERROR("%s: sending a reply: %s", device_.name.c_str(), r.error().describe().c_str());
                end = true;
            }
        }
        if (end) break;
    }
    if (!closed_) {
        auto turn = co_await configuration_turn().scoped_lock();
        if (!closed_) {
            close();
            on_end();
        }
    }
}

void Session::close() {
    if (closed_) return;
    closed_ = true;
    stop_all_queues();
    queues_.clear();
    memory_.reset();
    inflight_.reset();
    afd_->wake_all_closed();
    shutdown(fd_.get(), SHUT_RDWR);  // the front end sees the end at once
}

void Session::move_queues(AioContext& ctx) {
    for (auto& q : queues_) q->move_to(ctx);
}

void Session::stop_all_queues() {
    for (auto& q : queues_) q->stop(true);
}

void Session::reset_device() {
    stop_all_queues();
    for (uint32_t i = 0; i < queues_.size(); i++) {
        AioContext& ctx = queues_[i]->context();
        queues_[i] = std::make_unique<BlkQueue>(i, device_.blk, device_.config, ctx,
                                                device_.name + " queue " + std::to_string(i));
    }
    features_ = 0;
    protocol_features_ = 0;
    inflight_.reset();  // QEMU gets a new area after a reset
}

QueueFeatures Session::queue_features() const {
    return {.event_idx = (features_ & kFRingEventIdx) != 0,
            .indirect = (features_ & kFRingIndirectDesc) != 0,
            .writethrough = !(features_ & kBlkFFlush) || !device_.writeback};
}

Result<BlkQueue*> Session::queue(uint32_t index) {
    if (index >= queues_.size())
        return fail(EPROTO, "queue " + std::to_string(index) + " does not exist (" + std::to_string(queues_.size()) +
                                " queues)");
    return queues_[index].get();
}

Result<void> Session::maybe_start(BlkQueue& q) {
    if (q.running() || !q.startable() || !memory_) return {};
    return q.start(memory_, queue_features(), inflight_);
}

Result<void> Session::set_features(uint64_t features) {
    const uint64_t offered = device_features(device_.config);
    if (features & ~offered) return fail(EPROTO, "features the device did not offer: " + feature_bits(features & ~offered));
    // Which driver it is shows here: firmware drivers negotiate a few bits,
    // legacy ones (OVMF's for a transitional device) no VERSION_1.
    if (features != features_)
        LOG_INFO("%s: features of a %s driver: %s", device_.name.c_str(),
                 features & kFVersion1 ? "virtio 1" : "legacy", feature_bits(features).c_str());
    features_ = features;
    // The spec: a driver that can switch the cache but cannot flush starts
    // with a writethrough one.
    if ((features & kBlkFConfigWce) && !(features & kBlkFFlush)) device_.writeback = false;
    // Without protocol features there is no SET_VRING_ENABLE: rings are enabled.
    if (!(features & kFProtocolFeatures)) {
        for (auto& q : queues_) {
            q->setup().enabled = true;
            if (auto r = maybe_start(*q); !r) return r;
        }
    }
    return {};
}

Result<void> Session::set_mem_table(Message& m) {
    auto regions = decode_mem_table(m.payload, m.fds.size());
    if (!regions) return std::unexpected(regions.error());
    auto mem = GuestMemory::map(*regions, m.fds);
    if (!mem) return std::unexpected(mem.error());
    // Running rings point into the old table.
    return restart_running_queues([&] { memory_ = std::move(*mem); });
}

Result<void> Session::restart_running_queues(const std::function<void()>& change) {
    std::vector<BlkQueue*> restart;
    for (auto& q : queues_) {
        if (q->running()) restart.push_back(q.get());
        q->stop(true);
    }
    change();
    for (BlkQueue* q : restart)
        if (auto r = maybe_start(*q); !r) return r;
    return {};
}

// GET_INFLIGHT_FD's and SET_INFLIGHT_FD's description, checked against the
// negotiated features and the device: at most its queues, each of 1 to
// kMaxQueueSize descriptors.
Result<InflightDescription> Session::decode_inflight_for_device(const Message& m) const {
    if (!(protocol_features_ & kPfInflightShmfd)) return fail(EPROTO, "INFLIGHT_SHMFD was not negotiated");
    auto d = decode_inflight(m.payload);
    if (!d) return std::unexpected(d.error());
    if (auto r = InflightArea::check_shape(d->num_queues, d->queue_size); !r) return std::unexpected(r.error());
    if (d->num_queues > queues_.size())
        return fail(EPROTO, "inflight area for " + std::to_string(d->num_queues) + " queues (the device has " +
                                std::to_string(queues_.size()) + ")");
    return d;
}

// A new area for as many queues as the front end says it has, each region
// for `queue_size` descriptors.
Result<std::vector<uint8_t>> Session::get_inflight_fd(const Message& m) {
    auto d = decode_inflight_for_device(m);
    if (!d) return std::unexpected(d.error());
    InflightDescription out;
    if (auto r = InflightArea::create(d->num_queues, d->queue_size, out, reply_fd_); !r) return std::unexpected(r.error());
    return encode_reply_inflight(m.header.request, out);
}

// The area the requests in flight are recorded in: the one GET_INFLIGHT_FD
// made, or, after the daemon restarted, the one its predecessor used.
Result<void> Session::set_inflight_fd(const Message& m) {
    if (m.fds.size() != 1) return fail(EPROTO, "SET_INFLIGHT_FD with " + std::to_string(m.fds.size()) + " fds");
    auto d = decode_inflight_for_device(m);
    if (!d) return std::unexpected(d.error());
    auto area = InflightArea::map(*d, m.fds[0]);
    if (!area) return std::unexpected(area.error());
    LOG_INFO("%s: in-flight tracking for %u queues of %u descriptors", device_.name.c_str(), d->num_queues,
             d->queue_size);
    return restart_running_queues([&] { inflight_ = std::move(*area); });
}

// Only `writeback` is writable in virtio-blk, and only once the driver
// negotiated CONFIG_WCE (QEMU forwards the guest's write of that one byte).
// It switches the cache mode of every queue, for the requests that follow.
Result<void> Session::set_config(const ConfigAccess& access) {
    if (!(features_ & kBlkFConfigWce)) return fail(EPERM, "the config space is read-only without CONFIG_WCE");
    if (access.offset != kBlkConfigWritebackOffset || access.size != 1)
        return fail(EPERM, "only the writeback byte (offset " + std::to_string(kBlkConfigWritebackOffset) +
                               ") is writable");
    if (access.data[0] > 1) return fail(EINVAL, "writeback must be 0 or 1");
    device_.writeback = access.data[0] == 1;
    const bool writethrough = queue_features().writethrough;
    for (auto& q : queues_) q->set_writethrough(writethrough);
    LOG_INFO("%s: the driver chose a %s cache%s", device_.name.c_str(),
             device_.writeback ? "writeback" : "writethrough",
             writethrough ? ": every write is durable when it completes" : "");
    return {};
}

std::vector<uint8_t> Session::get_config(const ConfigAccess& access) const {
    const uint32_t request = uint32_t(Request::get_config);
    if (access.offset > kConfigSpace || access.size > kConfigSpace - access.offset)
        return encode_reply(request, {});  // an empty payload is the error reply
    std::array<uint8_t, kConfigSpace> space{};
    const auto config = encode_config(device_.config, device_.writeback);
    std::copy(config.begin(), config.end(), space.begin());
    return encode_reply_config(request, access, std::span(space).subspan(access.offset, access.size));
}

Result<std::vector<uint8_t>> Session::handle(Message& m) {
    const uint32_t request = m.header.request;
    const auto type = static_cast<Request>(request);
    const bool takes_fds = type == Request::set_mem_table || type == Request::set_vring_kick ||
                           type == Request::set_vring_call || type == Request::set_vring_err ||
                           type == Request::set_inflight_fd;
    // (Requests not handled below are nacked whatever they carry.)
    if (!takes_fds && !m.fds.empty() && handled(type)) return fail(EPROTO, "unexpected file descriptors");
    switch (type) {
    case Request::get_features:
        return encode_reply_u64(request, device_features(device_.config));
    case Request::set_features: {
        auto f = decode_u64(m.payload);
        if (!f) return std::unexpected(f.error());
        if (auto r = set_features(*f); !r) return std::unexpected(r.error());
        return std::vector<uint8_t>{};
    }
    case Request::get_protocol_features:
        return encode_reply_u64(request, kProtocolFeatures);
    case Request::set_protocol_features: {
        auto f = decode_u64(m.payload);
        if (!f) return std::unexpected(f.error());
        if (*f & ~kProtocolFeatures)
            return fail(EPROTO, "protocol features the device did not offer: " + feature_bits(*f & ~kProtocolFeatures));
        protocol_features_ = *f;
        return std::vector<uint8_t>{};
    }
    case Request::set_owner:
        return std::vector<uint8_t>{};
    case Request::reset_owner:  // deprecated; the spec suggests disabling the rings
    case Request::reset_device:
        reset_device();
        return std::vector<uint8_t>{};
    case Request::get_queue_num:
        return encode_reply_u64(request, device_.config.num_queues);
    case Request::set_mem_table:
        if (auto r = set_mem_table(m); !r) return std::unexpected(r.error());
        return std::vector<uint8_t>{};
    case Request::get_inflight_fd:
        return get_inflight_fd(m);
    case Request::set_inflight_fd:
        if (auto r = set_inflight_fd(m); !r) return std::unexpected(r.error());
        return std::vector<uint8_t>{};
    case Request::get_config: {
        auto a = decode_config(m.payload);
        if (!a) return std::unexpected(a.error());
        return get_config(*a);
    }
    case Request::set_config: {
        auto a = decode_config(m.payload);
        if (!a) return std::unexpected(a.error());
        // A refused write leaves the device as it was; the session goes on.
        const auto r = set_config(*a);
        if (!r) LOG_WARN("%s: SET_CONFIG of %u bytes at %u refused: %s", device_.name.c_str(), a->size, a->offset,
                         r.error().message.c_str());
        if (!(m.header.flags & kFlagNeedReply)) return std::vector<uint8_t>{};
        return encode_reply_u64(request, r ? 0 : 1);
    }
    case Request::set_vring_num:
    case Request::set_vring_addr:
    case Request::set_vring_base:
    case Request::get_vring_base:
    case Request::set_vring_kick:
    case Request::set_vring_call:
    case Request::set_vring_err:
    case Request::set_vring_enable:
        return handle_queue_message(m);
    default:
        break;
    }
    // Not offered, so a front end that negotiated properly does not send it.
    LOG_WARN("%s: %s (%u) not supported", device_.name.c_str(), request_name(request), request);
    return (m.header.flags & kFlagNeedReply) ? encode_reply_u64(request, 1) : std::vector<uint8_t>{};
}

Result<std::vector<uint8_t>> Session::handle_queue_message(Message& m) {
    const auto request = static_cast<Request>(m.header.request);
    const std::vector<uint8_t> none;
    if (request == Request::set_vring_kick || request == Request::set_vring_call || request == Request::set_vring_err) {
        auto v = decode_vring_fd(m.payload, m.fds.size());
        if (!v) return std::unexpected(v.error());
        auto q = queue(v->index);
        if (!q) return std::unexpected(q.error());
        UniqueFd fd = v->no_fd ? UniqueFd() : std::move(m.fds[0]);
        const char* what = request == Request::set_vring_kick ? "kick" : request == Request::set_vring_call ? "call" : "error";
        if (fd)
            if (auto r = check_eventfd(fd, what); !r) return std::unexpected(r.error());
        if (request == Request::set_vring_call) {
            (*q)->set_call_fd(std::move(fd));
        } else if (request == Request::set_vring_err) {
            (*q)->set_err_fd(std::move(fd));
        } else {
            (*q)->stop(false);  // the notifier borrows the old fd
            (*q)->setup().kick = std::move(fd);
            (*q)->setup().kick_given = true;
            if (auto r = maybe_start(**q); !r) return std::unexpected(r.error());
        }
        return none;
    }
    if (request == Request::set_vring_addr) {
        auto a = decode_vring_addr(m.payload);
        if (!a) return std::unexpected(a.error());
        auto q = queue(a->index);
        if (!q) return std::unexpected(q.error());
        (*q)->stop(true);
        (*q)->setup().addr = *a;
        return none;
    }
    auto s = decode_vring_state(m.payload);
    if (!s) return std::unexpected(s.error());
    auto q = queue(s->index);
    if (!q) return std::unexpected(q.error());
    QueueSetup& setup = (*q)->setup();
    switch (request) {
    case Request::set_vring_num:
        if (s->num == 0 || s->num > kMaxQueueSize || (s->num & (s->num - 1)))
            return fail(EPROTO, "queue size " + std::to_string(s->num) + " (a power of 2 up to 32768 expected)");
        (*q)->stop(true);
        setup.num = s->num;
        return none;
    case Request::set_vring_base:
        if (s->num > 0xffff) return fail(EPROTO, "vring base " + std::to_string(s->num) + " above 65535");
        (*q)->stop(true);
        setup.base = uint16_t(s->num);
        return none;
    case Request::get_vring_base: {
        const uint16_t base = (*q)->stop(true);
        // The ring is stopped; the front end starts it again with a new kick fd.
        setup.kick_given = false;
        setup.kick.reset();
        return encode_reply_vring_state(m.header.request, {s->index, base});
    }
    case Request::set_vring_enable:
        if (s->num > 1) return fail(EPROTO, "SET_VRING_ENABLE with " + std::to_string(s->num));
        setup.enabled = s->num == 1;
        if (!setup.enabled) (*q)->stop(false);
        if (auto r = maybe_start(**q); !r) return std::unexpected(r.error());
        return none;
    default:
        return fail(EPROTO, "not a queue message");
    }
}

}  // namespace ioplane::vhost_user
