#include "frontend.h"

#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ioplane::vublk {

namespace {

std::string hex(uint64_t v) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
    return buf;
}

// The device features this front end can drive. Not CONFIG_WCE unless asked
// (the workloads never write the config), nor ring layouts or transports it
// does not implement (packed ring, IOMMU platform, notification data,
// in-order).
constexpr uint64_t kWantedBlkFeatures = bit(kBlkFSizeMax) | bit(kBlkFSegMax) | bit(kBlkFGeometry) | bit(kBlkFRo) |
                                        bit(kBlkFBlkSize) | bit(kBlkFFlush) | bit(kBlkFTopology) | bit(kBlkFMq) |
                                        bit(kBlkFDiscard) | bit(kBlkFWriteZeroes);

std::string names(uint64_t mask, const std::pair<unsigned, const char*>* table, size_t n) {
    std::string out;
    for (unsigned b = 0; b < 64; b++) {
        if (!(mask & bit(b))) continue;
        const char* name = nullptr;
        for (size_t i = 0; i < n; i++)
            if (table[i].first == b) name = table[i].second;
        if (!out.empty()) out += ' ';
        out += name ? name : "bit" + std::to_string(b);
    }
    return out;
}

}  // namespace

std::string feature_names(uint64_t features) {
    static constexpr std::pair<unsigned, const char*> kNames[] = {
        {kBlkFSizeMax, "SIZE_MAX"},   {kBlkFSegMax, "SEG_MAX"},     {kBlkFGeometry, "GEOMETRY"},
        {kBlkFRo, "RO"},              {kBlkFBlkSize, "BLK_SIZE"},   {kBlkFFlush, "FLUSH"},
        {kBlkFTopology, "TOPOLOGY"},  {kBlkFConfigWce, "CONFIG_WCE"}, {kBlkFMq, "MQ"},
        {kBlkFDiscard, "DISCARD"},    {kBlkFWriteZeroes, "WRITE_ZEROES"}, {27, "ANY_LAYOUT"},
        {kFIndirectDesc, "INDIRECT_DESC"}, {kFEventIdx, "EVENT_IDX"}, {kFProtocolFeatures, "PROTOCOL_FEATURES"},
        {kFVersion1, "VERSION_1"},    {33, "ACCESS_PLATFORM"},      {34, "RING_PACKED"},
        {35, "IN_ORDER"},             {36, "ORDER_PLATFORM"},       {37, "SR_IOV"},
        {38, "NOTIFICATION_DATA"},    {26, "LOG_ALL"},              {24, "NOTIFY_ON_EMPTY"},
    };
    return names(features, kNames, std::size(kNames));
}

std::string protocol_feature_names(uint64_t features) {
    static constexpr std::pair<unsigned, const char*> kNames[] = {
        {kPfMq, "MQ"},
        {kPfLogShmfd, "LOG_SHMFD"},
        {2, "RARP"},
        {kPfReplyAck, "REPLY_ACK"},
        {4, "MTU"},
        {kPfBackendReq, "BACKEND_REQ"},
        {6, "CROSS_ENDIAN"},
        {7, "CRYPTO_SESSION"},
        {8, "PAGEFAULT"},
        {kPfConfig, "CONFIG"},
        {10, "BACKEND_SEND_FD"},
        {kPfHostNotifier, "HOST_NOTIFIER"},
        {kPfInflightShmfd, "INFLIGHT_SHMFD"},
        {kPfResetDevice, "RESET_DEVICE"},
        {kPfInbandNotifications, "INBAND_NOTIFICATIONS"},
        {kPfConfigureMemSlots, "CONFIGURE_MEM_SLOTS"},
        {kPfStatus, "STATUS"},
        {17, "XEN_MMAP"},
        {18, "SHARED_OBJECT"},
        {19, "DEVICE_STATE"},
        {20, "GET_VRING_BASE_INFLIGHT"},
    };
    return names(features, kNames, std::size(kNames));
}

void Queue::kick() const {
    const uint64_t one = 1;
    // An eventfd write only fails if the counter would overflow: it cannot
    // here (the back end reads it), so the result is not checked.
    [[maybe_unused]] ssize_t n = ::write(kick_fd, &one, sizeof one);
}

Queue::~Queue() {
    if (kick_fd >= 0) ::close(kick_fd);
    if (call_fd >= 0) ::close(call_fd);
}

std::expected<std::unique_ptr<Frontend>, std::string> Frontend::connect(const FrontendOptions& o) {
    auto c = Channel::connect(o.socket);
    if (!c) return std::unexpected(c.error());
    c->set_timeout(o.timeout);
    return std::unique_ptr<Frontend>(new Frontend(o, std::move(*c)));
}

Frontend::~Frontend() {
    if (inflight_base_) munmap(inflight_base_, inflight_desc_.mmap_size);
    if (inflight_fd_ >= 0) ::close(inflight_fd_);
}

std::expected<void, std::string> Frontend::share_inflight_area(uint16_t queue_size) {
    InflightDescription want{0, 0, o_.queues, queue_size, 0};
    auto reply = channel_.call(Message::with(Request::kGetInflightFd, want), sizeof(InflightDescription));
    if (!reply) return std::unexpected(reply.error());
    if (reply->fds.size() != 1) {
        for (int fd : reply->fds) ::close(fd);
        return std::unexpected("GET_INFLIGHT_FD answered with " + std::to_string(reply->fds.size()) + " fds");
    }
    inflight_fd_ = reply->fds[0];
    std::memcpy(&inflight_desc_, reply->payload.data(), sizeof inflight_desc_);
    if (inflight_desc_.num_queues != want.num_queues || inflight_desc_.queue_size != queue_size ||
        inflight_desc_.mmap_size == 0 || inflight_desc_.mmap_size > (1ull << 32))
        return std::unexpected("GET_INFLIGHT_FD answered another area");
    void* p = mmap(nullptr, inflight_desc_.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, inflight_fd_,
                   off_t(inflight_desc_.mmap_offset));
    if (p == MAP_FAILED) return std::unexpected(std::string("mmap of the inflight area: ") + std::strerror(errno));
    inflight_base_ = static_cast<uint8_t*>(p);
    Message set = Message::with(Request::kSetInflightFd, inflight_desc_);
    set.fds.push_back(inflight_fd_);
    return channel_.command(std::move(set));
}

std::expected<uint64_t, std::string> Frontend::get_u64(Request r) {
    auto reply = channel_.call(Message::empty(r), sizeof(uint64_t));
    if (!reply) return std::unexpected(reply.error());
    uint64_t v;
    std::memcpy(&v, reply->payload.data(), sizeof v);
    return v;
}

std::expected<void, std::string> Frontend::negotiate() {
    auto f = get_u64(Request::kGetFeatures);
    if (!f) return std::unexpected(f.error());
    n_.offered_features = *f;
    if (!(*f & bit(kFVersion1)))
        return std::unexpected("the back end does not offer VIRTIO_F_VERSION_1 (features " + hex(*f) +
                               "): legacy devices are not supported");

    if (*f & bit(kFProtocolFeatures)) {
        auto pf = get_u64(Request::kGetProtocolFeatures);
        if (!pf) return std::unexpected(pf.error());
        n_.offered_protocol_features = *pf;
        uint64_t want = bit(kPfMq) | bit(kPfConfig) | bit(kPfResetDevice);
        if (o_.reply_ack) want |= bit(kPfReplyAck);
        if (o_.inflight) want |= bit(kPfInflightShmfd);
        n_.protocol_features = *pf & want;
        // Not acked itself: REPLY_ACK is not in force until this is taken.
        if (auto r = channel_.command(Message::with(Request::kSetProtocolFeatures, n_.protocol_features)); !r)
            return std::unexpected(r.error());
        channel_.set_reply_ack(n_.has_protocol(kPfReplyAck));
        if (n_.has_protocol(kPfMq)) {
            auto q = get_u64(Request::kGetQueueNum);
            if (!q) return std::unexpected(q.error());
            n_.queue_num = *q;
        }
    }

    if (auto r = channel_.command(Message::empty(Request::kSetOwner)); !r) return std::unexpected(r.error());

    if (n_.has_protocol(kPfConfig)) {
        // Request: offset 0, size, flags 0, then `size` bytes (ignored).
        struct {
            ConfigHeader h;
            BlkConfig body;
        } __attribute__((packed)) req{{0, sizeof(BlkConfig), 0}, {}};
        auto reply = channel_.call(Message::with(Request::kGetConfig, req), SIZE_MAX);
        if (!reply) return std::unexpected(reply.error());
        // The spec: the back end answers with the same size, or an empty
        // payload for an error.
        if (reply->payload.size() != sizeof req)
            return std::unexpected("GET_CONFIG: reply payload of " + std::to_string(reply->payload.size()) +
                                   " bytes, expected " + std::to_string(sizeof req) +
                                   (reply->payload.empty() ? " (the back end reports an error)" : ""));
        BlkConfig cfg;
        std::memcpy(&cfg, reply->payload.data() + sizeof(ConfigHeader), sizeof cfg);
        n_.config = cfg;
    }

    uint64_t want = bit(kFVersion1) | bit(kFProtocolFeatures) | kWantedBlkFeatures;
    if (o_.indirect) want |= bit(kFIndirectDesc);
    if (o_.event_idx) want |= bit(kFEventIdx);
    if (o_.config_wce) want |= bit(kBlkFConfigWce);
    n_.features = n_.offered_features & want;

    // Queues: at most what GET_QUEUE_NUM and the config allow; more than one
    // needs VIRTIO_BLK_F_MQ.
    if (o_.queues > 1 && !n_.has(kBlkFMq))
        return std::unexpected(std::to_string(o_.queues) + " queues asked for, but the back end does not offer "
                               "VIRTIO_BLK_F_MQ");
    if (n_.queue_num && o_.queues > *n_.queue_num)
        return std::unexpected(std::to_string(o_.queues) + " queues asked for, but GET_QUEUE_NUM answered " +
                               std::to_string(*n_.queue_num));
    if (n_.has(kBlkFMq) && n_.config && o_.queues > n_.config->num_queues)
        return std::unexpected(std::to_string(o_.queues) + " queues asked for, but the config's num_queues is " +
                               std::to_string(n_.config->num_queues));

    if (auto r = channel_.command(Message::with(Request::kSetFeatures, n_.features)); !r)
        return std::unexpected(r.error());
    return {};
}

std::optional<uint64_t> Frontend::capacity_bytes() const {
    if (!n_.config) return std::nullopt;
    return n_.config->capacity * kSectorSize;
}

std::expected<void, std::string> Frontend::start(uint16_t queue_size, uint64_t mem_size) {
    auto mem = GuestMemory::create(mem_size, o_.mem_regions);
    if (!mem) return std::unexpected(mem.error());
    memory_.emplace(std::move(*mem));
    if (memory_->regions().size() > kMaxMemRegions)
        return std::unexpected("at most " + std::to_string(kMaxMemRegions) + " memory regions");

    Message table = Message::empty(Request::kSetMemTable);
    const MemTableHeader h{uint32_t(memory_->regions().size()), 0};
    table.payload.resize(sizeof h + sizeof(MemRegion) * h.num_regions);
    std::memcpy(table.payload.data(), &h, sizeof h);
    size_t at = sizeof h;
    for (const GuestRegion& r : memory_->regions()) {
        const MemRegion d{r.gpa, r.size, reinterpret_cast<uint64_t>(r.host), 0};
        std::memcpy(table.payload.data() + at, &d, sizeof d);
        at += sizeof d;
        table.fds.push_back(r.fd);
    }
    if (auto r = channel_.command(std::move(table)); !r) return std::unexpected(r.error());
    if (n_.has_protocol(kPfInflightShmfd))
        if (auto r = share_inflight_area(queue_size); !r) return r;

    for (uint32_t i = 0; i < o_.queues; i++)
        if (auto r = start_queue(i, queue_size); !r) return r;
    if (n_.has(kFProtocolFeatures)) {
        for (uint32_t i = 0; i < o_.queues; i++)
            if (auto r = channel_.command(Message::with(Request::kSetVringEnable, VringState{i, 1})); !r)
                return std::unexpected(r.error() + " (queue " + std::to_string(i) + ")");
    }
    return {};
}

std::expected<void, std::string> Frontend::start_queue(uint32_t index, uint16_t size) {
    const std::string q = " (queue " + std::to_string(index) + ")";
    auto ring = memory_->allocate(RingLayout::for_size(size).total, RingLayout::kAlign);
    if (!ring) return std::unexpected(ring.error());
    const int kick = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    const int call = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (kick < 0 || call < 0) {
        if (kick >= 0) ::close(kick);
        if (call >= 0) ::close(call);
        return std::unexpected(std::string("eventfd: ") + std::strerror(errno));
    }
    queues_.push_back(std::make_unique<Queue>(Virtqueue(size, *ring, n_.has(kFEventIdx)), kick, call));
    const Virtqueue& vq = queues_.back()->vq;

    auto send = [&](Message m) -> std::expected<void, std::string> {
        if (auto r = channel_.command(std::move(m)); !r) return std::unexpected(r.error() + q);
        return {};
    };
    if (auto r = send(Message::with(Request::kSetVringNum, VringState{index, size})); !r) return r;
    if (auto r = send(Message::with(Request::kSetVringBase, VringState{index, 0})); !r) return r;
    // Ring addresses are in the front end's user address space (the spec:
    // "a user address" without VIRTIO_F_IOMMU_PLATFORM); descriptors carry GPAs.
    const VringAddr addr{index, 0, reinterpret_cast<uint64_t>(vq.desc_host()),
                         reinterpret_cast<uint64_t>(vq.used_host()), reinterpret_cast<uint64_t>(vq.avail_host()), 0};
    if (auto r = send(Message::with(Request::kSetVringAddr, addr)); !r) return r;
    Message m = Message::with(Request::kSetVringKick, uint64_t(index));
    m.fds = {kick};
    if (auto r = send(std::move(m)); !r) return r;
    m = Message::with(Request::kSetVringCall, uint64_t(index));
    m.fds = {call};
    return send(std::move(m));
}

std::expected<void, std::string> Frontend::stop() {
    for (uint32_t i = 0; i < queues_.size(); i++) {
        auto reply = channel_.call(Message::with(Request::kGetVringBase, VringState{i, 0}), sizeof(VringState));
        if (!reply) return std::unexpected(reply.error() + " (queue " + std::to_string(i) + ")");
        VringState s;
        std::memcpy(&s, reply->payload.data(), sizeof s);
        const uint16_t avail = queues_[i]->vq.avail_idx();
        if (s.index != i || s.num != avail)
            return std::unexpected("GET_VRING_BASE queue " + std::to_string(i) + ": answered index " +
                                   std::to_string(s.index) + " base " + std::to_string(s.num) +
                                   ", expected the avail idx " + std::to_string(avail) +
                                   " (every request made available was completed)");
    }
    if (n_.has_protocol(kPfResetDevice))
        if (auto r = channel_.command(Message::empty(Request::kResetDevice)); !r) return std::unexpected(r.error());
    return {};
}

}  // namespace ioplane::vublk
