#include "nbd/connection.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "ioplane/block/chain.h"
#include "ioplane/block/node.h"
#include "ioplane/core/buffered_reader.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/io_buffer.h"
#include "ioplane/core/log.h"
#include "ioplane/core/stream_io.h"
#include "nbd/nbd_export.h"
#include "nbd/server.h"

namespace ioplane::nbd {

namespace {

std::optional<ExportOp> export_op(uint16_t type) {
    switch (type) {
        case NBD_CMD_READ: return ExportOp::read;
        case NBD_CMD_WRITE: return ExportOp::write;
        case NBD_CMD_FLUSH: return ExportOp::flush;
        case NBD_CMD_TRIM: return ExportOp::discard;
        case NBD_CMD_WRITE_ZEROES: return ExportOp::write_zeroes;
        case NBD_CMD_BLOCK_STATUS: return ExportOp::block_status;
        default: return std::nullopt;  // CACHE (a no-op), unknown commands
    }
}

constexpr unsigned kMaxRequestsInFlight = 256;
constexpr uint64_t kMaxBytesInFlight = 256ull << 20;
// Room for a full batch of small writes (QD 64 x 4 KiB), taken in one read().
constexpr size_t kRecvBufferSize = 256 * 1024;
// Extents per block status chunk: QEMU sends up to 128 Ki (1 MiB); a
// client asks again for the rest, and our replies stay small.
constexpr size_t kMaxExtentsPerReply = 1024;

}  // namespace

Connection::Connection(NbdServer& server, int fd, std::string peer, BudgetCharge socket)
    : server_(server),
      fd_(fd),
      socket_charge_(std::move(socket)),
      peer_(std::move(peer)),
      memory_(server.memory_budget(), kMaxBytesInFlight) {}

Connection::~Connection() { ::close(fd_); }

void Connection::start(int64_t handshake_timeout_ns) {
    auto afd = AsyncFd::create(server_.main_ctx(), fd_);
    if (!afd) {
        LOG_ERROR("nbd client %s: %s", peer_.c_str(), afd.error().describe().c_str());
        server_.main_ctx().schedule_oneshot([self = shared_from_this()] { self->server_.connection_closed(self); });
        return;
    }
    afd_ = std::move(*afd);
    recv_ = std::make_unique<BufferedReader>(*afd_, kRecvBufferSize);
    writer_ = std::make_unique<BatchedWriter>(*afd_);
    // A client that never finishes negotiating is disconnected.
    handshake_timer_ = std::make_unique<Timer>(server_.main_ctx(), [this] {
        LOG_WARN("nbd client %s: negotiation timed out", peer_.c_str());
        shutdown_socket();
    });
    handshake_timer_->arm_in(handshake_timeout_ns);
    spawn(server_.main_ctx(), run());
}

void Connection::shutdown_socket() { ::shutdown(fd_, SHUT_RDWR); }

// A connection that is closing has dropped its fd already: nothing to move.
void Connection::detach_aio_context() {
    if (afd_) afd_->detach();
}

void Connection::attach_aio_context(AioContext& ctx) {
    if (!afd_) return;
    if (auto r = afd_->attach(ctx); !r) {
        LOG_ERROR("nbd client %s: moving to '%s': %s", peer_.c_str(), ctx.name().c_str(), r.error().describe().c_str());
        shutdown_socket();
        afd_->wake_all_closed();  // no loop watches the fd: its waiters see it closed
    }
}

void Connection::disconnect_if_not_reading(int64_t now, int64_t limit_ns) {
    if (!afd_ || afd_->context() != AioContext::current()) return;  // closing, or joining
    const int64_t since = afd_->write_stalled_since_ns();
    if (since == 0 || now - since < limit_ns) return;
    LOG_WARN("nbd client %s: has not read its replies for %lld s while its export's node is drained; disconnecting",
             peer_.c_str(), (long long)((now - since) / 1'000'000'000));
    broken_ = true;
    shutdown_socket();
    afd_->wake_all_closed();  // the blocked sender fails, and its request ends
}

Task<void> Connection::run() {
    auto self = shared_from_this();  // alive until this coroutine ends
    auto chosen = co_await negotiate();
    handshake_timer_->cancel();
    if (chosen && *chosen != nullptr) {
        const std::shared_ptr<NbdExport> exp_ref = *chosen;  // alive while we serve it, even if it is removed
        NbdExport& exp = *exp_ref;
        // A drained node may be moving: join once it has settled, so that the
        // fd goes to the node's final context and the move's list of
        // connections does not change under it.
        co_await exp.wait_until_settled();
        exp.add_connection(self);
        // Removed while we negotiated or waited: its removal did not see us.
        if (!server_.serves(&exp)) broken_ = true;
        LOG_INFO("nbd client %s: connected to export '%s'", peer_.c_str(), exp.name().c_str());
        // Continue in the export's context, with the fd. The node may move
        // while we hop (a move attaches our fd for us then), and the context
        // it left may be deleted right after: wait for a move to end back in
        // the main loop, never in the context the node is leaving. Not
        // drained first, then the context: a move sets the context between
        // its drain and its end.
        if (&exp.blk().ctx() != &server_.main_ctx()) {
            afd_->detach();
            for (;;) {
                co_await schedule_on(exp.blk().ctx());
                if (!exp.blk().node().quiesced() && AioContext::current() == &exp.blk().ctx()) break;
                co_await schedule_on(server_.main_ctx());
                co_await exp.wait_until_settled();
            }
            if (afd_->context() == nullptr) {
                if (auto r = afd_->attach(*AioContext::current()); !r) broken_ = true;
            }
        }
        if (!broken_) co_await transmission(exp);
        afd_.reset();  // in the context it is attached to
        co_await schedule_on(server_.main_ctx());
        exp.remove_connection(self);
        LOG_INFO("nbd client %s: disconnected", peer_.c_str());
    } else {
        if (!chosen) LOG_WARN("nbd client %s: negotiation failed: %s", peer_.c_str(), chosen.error().describe().c_str());
        afd_.reset();
    }
    server_.connection_closed(self);
}

// ---------------------------------------------------------------------------
// Option haggling (fixed newstyle).

Task<Result<std::shared_ptr<NbdExport>>> Connection::negotiate() {
    uint8_t greeting[kHandshakeSize];
    put_handshake(greeting, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    iovec iov{greeting, sizeof greeting};
    if (auto r = co_await write_all(*afd_, std::span(&iov, 1)); !r) co_return std::unexpected(r.error());
    uint8_t cflags[kClientFlagsSize];
    if (auto r = co_await recv_->read_exact(cflags, sizeof cflags); !r) co_return std::unexpected(r.error());
    auto client_flags = parse_client_flags(cflags, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    if (!client_flags) co_return std::unexpected(client_flags.error());
    no_zeroes_ = *client_flags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint8_t hdr[kOptionHeaderSize];
        if (auto r = co_await recv_->read_exact(hdr, sizeof hdr); !r) co_return std::unexpected(r.error());
        auto opt = parse_option_header(hdr);
        if (!opt) co_return std::unexpected(opt.error());
        if (opt->length > kMaxOptionPayload) {
            // Skipping megabytes of junk is no better than disconnecting.
            if (opt->option == NBD_OPT_EXPORT_NAME)
                co_return fail(EINVAL, "export name too long");
            if (auto r = co_await recv_->skip(opt->length); !r) co_return std::unexpected(r.error());
            std::vector<uint8_t> reply;
            put_option_error(reply, opt->option, NBD_REP_ERR_TOO_BIG, "option payload too large");
            if (auto r = co_await send_option_reply(reply); !r) co_return std::unexpected(r.error());
            continue;
        }
        std::vector<uint8_t> payload(opt->length);
        if (auto r = co_await recv_->read_exact(payload.data(), payload.size()); !r)
            co_return std::unexpected(r.error());
        std::shared_ptr<NbdExport> chosen;
        auto done = co_await handle_option(opt->option, payload, chosen);
        if (!done) co_return std::unexpected(done.error());
        if (*done) co_return chosen;  // null: the client aborted
    }
}

Task<Result<void>> Connection::send_option_reply(std::vector<uint8_t>& bytes) {
    iovec iov{bytes.data(), bytes.size()};
    co_return co_await write_all(*afd_, std::span(&iov, 1));
}

// Returns true when negotiation ends (chosen set, or null for ABORT).
Task<Result<bool>> Connection::handle_option(uint32_t option, std::vector<uint8_t>& payload,
                                             std::shared_ptr<NbdExport>& chosen) {
    std::vector<uint8_t> reply;
    auto error = [&](uint32_t err, const std::string& msg) -> Task<Result<bool>> {
        reply.clear();
        put_option_error(reply, option, err, msg);
        auto r = co_await send_option_reply(reply);
        if (!r) co_return std::unexpected(r.error());
        co_return false;
    };

    switch (option) {
        case NBD_OPT_EXPORT_NAME: {
            auto name = parse_export_name(payload);
            if (!name) co_return std::unexpected(name.error());
            std::shared_ptr<NbdExport> exp = server_.find_export(*name);
            // This option has no error reply: the spec says disconnect.
            if (exp == nullptr) co_return fail(ENOENT, "no export named '" + *name + "'");
            put_export_name_reply(reply, exp->blk().length(), exp->transmission_flags(structured_), no_zeroes_);
            if (auto r = co_await send_option_reply(reply); !r) co_return std::unexpected(r.error());
            limits_ = exp->limits(structured_, meta_contexts_selected_for(exp));
            chosen = exp;
            co_return true;
        }
        case NBD_OPT_ABORT:
            put_option_reply(reply, option, NBD_REP_ACK);
            (void)co_await send_option_reply(reply);
            co_return true;
        case NBD_OPT_LIST:
            if (!payload.empty()) co_return co_await error(NBD_REP_ERR_INVALID, "LIST takes no data");
            for (NbdExport* exp : server_.exports()) put_rep_server(reply, option, exp->name());
            put_option_reply(reply, option, NBD_REP_ACK);
            break;
        case NBD_OPT_STARTTLS:
            co_return co_await error(NBD_REP_ERR_POLICY, "TLS is not configured on this server");
        case NBD_OPT_STRUCTURED_REPLY:
            if (!payload.empty()) co_return co_await error(NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
            structured_ = true;
            put_option_reply(reply, option, NBD_REP_ACK);
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
            auto req = parse_info_request(payload);
            if (!req) co_return co_await error(NBD_REP_ERR_INVALID, req.error().message);
            std::shared_ptr<NbdExport> exp = server_.find_export(req->name);
            if (exp == nullptr) co_return co_await error(NBD_REP_ERR_UNKNOWN, "no export named '" + req->name + "'");
            put_info_export(reply, option, exp->blk().length(), exp->transmission_flags(structured_));
            // Block sizes always: clients that ignore them still get sane I/O.
            put_info_block_size(reply, option, exp->min_block(), exp->preferred_block(), kDefaultMaxPayload);
            for (uint16_t t : req->info_types) {
                if (t == NBD_INFO_NAME) put_info_name(reply, option, exp->name());
                if (t == NBD_INFO_DESCRIPTION && !exp->description().empty())
                    put_info_description(reply, option, exp->description());
            }
            put_option_reply(reply, option, NBD_REP_ACK);
            if (auto r = co_await send_option_reply(reply); !r) co_return std::unexpected(r.error());
            if (option == NBD_OPT_INFO) co_return false;
            limits_ = exp->limits(structured_, meta_contexts_selected_for(exp));
            chosen = exp;
            co_return true;
        }
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT: {
            const bool set = option == NBD_OPT_SET_META_CONTEXT;
            if (!structured_) co_return co_await error(NBD_REP_ERR_INVALID, "structured replies not negotiated");
            if (set) forget_meta_contexts();  // a SET replaces what an earlier one chose, even if it fails
            auto req = parse_meta_context_request(payload);
            if (!req) co_return co_await error(NBD_REP_ERR_INVALID, req.error().message);
            std::shared_ptr<NbdExport> exp = server_.find_export(req->export_name);
            if (exp == nullptr)
                co_return co_await error(NBD_REP_ERR_UNKNOWN, "no export named '" + req->export_name + "'");
            const MetaContextOffer& offer = exp->meta_contexts();
            MetaContextSelection sel = select_meta_contexts(offer, req->queries, !set);
            // LIST's replies carry id 0, as QEMU's do (nothing is selected);
            // SET's the ids that block status chunks will carry.
            auto id = [set](uint32_t context_id) { return set ? context_id : 0u; };
            if (sel.base_allocation) put_rep_meta_context(reply, option, id(kMetaIdBaseAllocation), kBaseAllocation);
            if (sel.allocation_depth)
                put_rep_meta_context(reply, option, id(kMetaIdAllocationDepth), kQemuAllocationDepth);
            for (size_t i = 0; i < sel.bitmaps.size(); i++)
                if (sel.bitmaps[i])
                    put_rep_meta_context(reply, option, id(kMetaIdFirstBitmap + uint32_t(i)),
                                         dirty_bitmap_context(offer.bitmaps[i]));
            put_option_reply(reply, option, NBD_REP_ACK);
            if (set) {
                meta_ = std::move(sel);
                meta_export_ = exp;
            }
            break;
        }
        default:
            co_return co_await error(NBD_REP_ERR_UNSUP, std::string("option ") + option_name(option) + " not supported");
    }
    if (auto r = co_await send_option_reply(reply); !r) co_return std::unexpected(r.error());
    co_return false;
}

// ---------------------------------------------------------------------------
// Transmission phase.

Task<void> Connection::transmission(NbdExport& exp) {
    block::BlockBackend& blk = exp.blk();
    bool clean_end = false;
    for (;;) {
        while (requests_in_flight_ >= kMaxRequestsInFlight) co_await wait_for_a_request(blk);
        if (broken_) break;
        uint8_t hdr[kRequestSize];
        if (auto r = co_await recv_->read_exact(hdr, sizeof hdr); !r) {
            if (r.error().code == ECONNRESET) {
                clean_end = true;  // the client closed its side: answer what it asked
            } else {
                LOG_WARN("nbd client %s: %s", peer_.c_str(), r.error().describe().c_str());
            }
            break;
        }
        auto req = parse_request(hdr);
        if (!req) {
            LOG_WARN("nbd client %s: %s; disconnecting", peer_.c_str(), req.error().message.c_str());
            break;
        }
        const Verdict v = validate_request(*req, limits_);
        if (v.no_reply) {  // NBD_CMD_DISC: finish what is in flight, then close
            clean_end = true;
            break;
        }
        // The data it will hold (a write's payload, a read's reply), charged
        // before it is read or allocated: while it does not fit, nothing more
        // is read from the socket.
        const bool moves_data = (req->type == NBD_CMD_READ || req->type == NBD_CMD_WRITE) && v.nbd_error == 0;
        const uint64_t charge = moves_data && !v.disconnect ? req->length : 0;
        while (!broken_ && !memory_.try_charge(charge)) co_await wait_for_a_request(blk);
        if (broken_) break;
        IoBuffer payload;
        bool payload_read = true;
        if (req->type == NBD_CMD_WRITE && !v.disconnect && (v.nbd_error == 0 || v.consume_payload)) {
            if (v.nbd_error == 0) {
                payload = IoBuffer::allocate(req->length);
                payload_read = payload && co_await recv_->read_exact(payload.get(), req->length);
            } else {
                payload_read = bool(co_await recv_->skip(req->length));
            }
        }
        if (v.disconnect || !payload_read) {
            memory_.release(charge);
            if (v.disconnect)
                LOG_WARN("nbd client %s: invalid %s request (length %u); disconnecting", peer_.c_str(),
                         command_name(req->type), req->length);
            break;
        }
        // Admitted: counted until its reply is out (a drained section waits for
        // it, and parks us here while it lasts).
        co_await blk.co_begin_request();
        requests_in_flight_++;
        if (v.nbd_error != 0)  // charged nothing
            spawn_now([](Connection& c, Request r, uint32_t err, NbdExport& exp) -> Task<void> {
                block::BlockBackend& blk = exp.blk();
                if (auto op = export_op(r.type)) exp.stats().record(*op, 0, false, 0);
                co_await c.send_error(r, err, "invalid request");
                c.request_done();  // before end_request: its wake-ups are queued ahead of a drain's next step
                blk.end_request();
            }(*this, *req, v.nbd_error, exp));
        else
            spawn_now(handle_request(exp, *req, std::move(payload), charge));
    }
    // A clean end lets the replies of requests in flight go out (the spec's
    // SHOULD); a protocol error ends the connection at once.
    if (!clean_end) {
        shutdown_socket();
        afd_->wake_all_closed();
    }
    while (requests_in_flight_ > 0) {
        co_await idle_.wait();
        if (AioContext::current() != &blk.ctx()) co_await schedule_on(blk.ctx());
    }
}

Task<void> Connection::wait_for_a_request(block::BlockBackend& blk) {
    co_await slot_free_.wait();
    // Woken by a request that finished; the node may have moved since.
    if (AioContext::current() != &blk.ctx()) co_await schedule_on(blk.ctx());
}

void Connection::request_done() {
    requests_in_flight_--;
    slot_free_.next();
    if (requests_in_flight_ == 0) idle_.restart_all();
}

Task<void> Connection::handle_request(NbdExport& exp, Request req, IoBuffer payload, uint64_t charged) {
    block::BlockBackend& blk = exp.blk();
    const int64_t start_ns = now_ns();
    Result<void> r;
    bool replied = false;
    switch (req.type) {
        case NBD_CMD_READ:
            r = co_await handle_read(exp, req);
            replied = true;  // handle_read replies, also on errors
            break;
        case NBD_CMD_WRITE: {
            iovec iov{payload.get(), req.length};
            r = co_await blk.co_pwritev(req.offset, req.length, std::span(&iov, 1),
                                        (req.flags & NBD_CMD_FLAG_FUA) ? uint32_t(block::kWriteFua) : 0u);
            break;
        }
        case NBD_CMD_FLUSH:
            r = co_await blk.co_flush();
            break;
        case NBD_CMD_TRIM:
            r = co_await blk.co_pdiscard(req.offset, req.length);
            if (r && (req.flags & NBD_CMD_FLAG_FUA)) r = co_await blk.co_flush();
            break;
        case NBD_CMD_WRITE_ZEROES: {
            uint32_t flags = 0;
            if (!(req.flags & NBD_CMD_FLAG_NO_HOLE)) flags |= block::kMayUnmap;
            if (req.flags & NBD_CMD_FLAG_FAST_ZERO) flags |= block::kNoFallback;
            if (req.flags & NBD_CMD_FLAG_FUA) flags |= block::kWriteFua;
            r = co_await blk.co_pwrite_zeroes(req.offset, req.length, flags);
            break;
        }
        case NBD_CMD_CACHE:
            break;  // advisory; nothing to prefetch into
        case NBD_CMD_BLOCK_STATUS:
            r = co_await handle_block_status(exp, req);
            replied = true;
            break;
        default:
            r = fail(EINVAL, "unsupported command");
            break;
    }
    if (!replied) {
        if (r) {
            uint8_t reply[kSimpleReplySize];
            put_simple_reply(reply, 0, req.cookie);
            iovec iov{reply, sizeof reply};
            (void)co_await send(std::span(&iov, 1));
        } else {
            co_await send_error(req, errno_to_nbd(r.error().code), r.error().message);
        }
    }
    if (!r && r.error().code != ENOTSUP)
        LOG_WARN("nbd client %s: %s at %llu+%u: %s", peer_.c_str(), command_name(req.type),
                 (unsigned long long)req.offset, req.length, r.error().describe().c_str());
    if (auto op = export_op(req.type)) {
        const bool moves_data = req.type == NBD_CMD_READ || req.type == NBD_CMD_WRITE;
        exp.stats().record(*op, moves_data ? req.length : 0, bool(r), now_ns() - start_ns);
    }
    payload.reset();
    memory_.release(charged);
    // Wake-ups of the receive loop are queued in this context before the last
    // end_request() lets a drain proceed to move the connection.
    request_done();
    blk.end_request();
}

// Structured replies send zero ranges as holes (unless DF), data ranges as
// data; simple replies send the header and all data.
Task<Result<void>> Connection::handle_read(NbdExport& exp, const Request& req) {
    block::BlockBackend& blk = exp.blk();
    struct Piece {
        uint64_t offset;
        uint32_t length;
        bool hole;
    };
    std::vector<Piece> pieces;
    const bool sparse = structured_ && !(req.flags & NBD_CMD_FLAG_DF) && blk.node().driver().caps().can_block_status;
    if (sparse) {
        uint64_t off = req.offset;
        const uint64_t end = req.offset + req.length;
        while (off < end) {
            auto st = co_await blk.co_block_status(off, end - off, block::StatusQuery::quick);
            if (!st || st->bytes == 0 || pieces.size() == 64) {
                pieces.push_back({off, uint32_t(end - off), false});  // the rest as data
                break;
            }
            const uint32_t len = uint32_t(std::min<uint64_t>(st->bytes, end - off));
            const bool hole = st->zero;
            if (!pieces.empty() && pieces.back().hole == hole)
                pieces.back().length += len;
            else
                pieces.push_back({off, len, hole});
            off += len;
        }
    } else {
        pieces.push_back({req.offset, req.length, false});
    }
    // Read the data pieces (a reply of holes only needs no buffer).
    IoBuffer data;
    if (std::any_of(pieces.begin(), pieces.end(), [](const Piece& p) { return !p.hole; })) {
        data = IoBuffer::allocate(req.length);
        if (!data) {
            co_await send_error(req, NBD_ENOMEM, "out of memory");
            co_return fail(ENOMEM, "read buffer");
        }
    }
    Result<void> r;
    for (const Piece& p : pieces) {
        if (p.hole) continue;
        iovec iov{data.get() + (p.offset - req.offset), p.length};
        r = co_await blk.co_preadv(p.offset, p.length, std::span(&iov, 1));
        if (!r) break;
    }
    if (!r) {
        co_await send_error(req, errno_to_nbd(r.error().code), r.error().message);
        co_return r;
    }
    if (!structured_) {
        uint8_t hdr[kSimpleReplySize];
        put_simple_reply(hdr, 0, req.cookie);
        iovec iov[2] = {{hdr, sizeof hdr}, {data.get(), req.length}};
        (void)co_await send(std::span(iov, req.length ? 2 : 1));
        co_return r;
    }
    // One chunk per piece; the last one says DONE. All chunks of the reply
    // go out in one send, so they stay together.
    std::vector<uint8_t> headers(pieces.size() * kOffsetHoleSize);
    std::vector<iovec> iov;
    iov.reserve(pieces.size() * 2);
    for (size_t i = 0; i < pieces.size(); i++) {
        const Piece& p = pieces[i];
        const uint16_t flags = i + 1 == pieces.size() ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t* h = headers.data() + i * kOffsetHoleSize;
        if (p.hole) {
            put_chunk_offset_hole(h, flags, req.cookie, p.offset, p.length);
            iov.push_back({h, kOffsetHoleSize});
        } else {
            put_chunk_offset_data_header(h, flags, req.cookie, p.offset, p.length);
            iov.push_back({h, kOffsetDataHeaderSize});
            iov.push_back({data.get() + (p.offset - req.offset), p.length});
        }
    }
    if (req.length == 0) {  // no piece: a lone NONE chunk ends the reply
        headers.resize(kStructuredReplyHeaderSize);
        put_structured_header(headers.data(), NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, req.cookie, 0);
        iov.push_back({headers.data(), kStructuredReplyHeaderSize});
    }
    (void)co_await send(iov);
    co_return r;
}

bool Connection::meta_contexts_selected_for(const std::shared_ptr<NbdExport>& exp) const {
    return structured_ && meta_.count() > 0 && meta_export_.lock() == exp;
}

void Connection::forget_meta_contexts() {
    meta_ = {};
    meta_export_.reset();
}

// Extents of base:allocation (hole, zero) or qemu:allocation-depth (the
// allocating layer's depth), merged while their flags agree. Both answer
// for the whole backing chain, as QEMU's do: what the image reads as, not
// what its top layer holds.
Task<Result<void>> Connection::allocation_extents(NbdExport& exp, const Request& req, bool depth, ExtentList& out) {
    block::BlockBackend& blk = exp.blk();
    const uint64_t end = std::min<uint64_t>(blk.length(), req.offset + req.length);
    for (uint64_t off = req.offset; off < end && !out.full();) {
        unsigned layer = 0;
        auto st = co_await block::co_block_status_above(blk.root_edge(), nullptr, off, end - off, &layer);
        if (!st) co_return std::unexpected(st.error());
        const uint32_t flags = depth ? layer : (st->data ? 0 : NBD_STATE_HOLE) | (st->zero ? NBD_STATE_ZERO : 0);
        const uint64_t len = std::max<uint64_t>(1, std::min(st->bytes, end - off));
        out.add(len, flags);
        off += len;
    }
    co_return Result<void>{};
}

// One chunk per selected meta context, in the order of their ids, the last
// one flagged DONE (QEMU's order too). Each context answers as far as its
// extents reach: the spec lets them cover different lengths.
Task<Result<void>> Connection::handle_block_status(NbdExport& exp, const Request& req) {
    const size_t max_extents = (req.flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : kMaxExtentsPerReply;
    size_t remaining = meta_.count();
    std::vector<uint8_t> bytes;
    auto chunk = [&](uint32_t id, const ExtentList& extents) {
        put_chunk_block_status(bytes, --remaining == 0 ? NBD_REPLY_FLAG_DONE : 0, req.cookie, id, extents.extents());
    };
    Result<void> r;
    if (meta_.base_allocation) {
        ExtentList extents(max_extents);
        r = co_await allocation_extents(exp, req, false, extents);
        if (r) chunk(kMetaIdBaseAllocation, extents);
    }
    if (r && meta_.allocation_depth) {
        ExtentList extents(max_extents);
        r = co_await allocation_extents(exp, req, true, extents);
        if (r) chunk(kMetaIdAllocationDepth, extents);
    }
    for (size_t i = 0; r && i < meta_.bitmaps.size(); i++) {
        if (!meta_.bitmaps[i]) continue;
        ExtentList extents(max_extents);
        r = exp.bitmap_extents(i, req.offset, req.length, extents);
        if (r) chunk(kMetaIdFirstBitmap + uint32_t(i), extents);
    }
    if (!r) {
        // Nothing sent yet: the error alone is the whole reply.
        co_await send_error(req, errno_to_nbd(r.error().code), r.error().message);
        co_return r;
    }
    iovec iov{bytes.data(), bytes.size()};
    (void)co_await send(std::span(&iov, 1));
    co_return r;
}

Task<void> Connection::send_error(const Request& req, uint32_t nbd_error, const std::string& message) {
    if (structured_) {
        std::vector<uint8_t> bytes;
        put_chunk_error(bytes, NBD_REPLY_FLAG_DONE, req.cookie, nbd_error, message);
        iovec iov{bytes.data(), bytes.size()};
        (void)co_await send(std::span(&iov, 1));
    } else {
        uint8_t reply[kSimpleReplySize];
        put_simple_reply(reply, nbd_error, req.cookie);
        iovec iov{reply, sizeof reply};
        (void)co_await send(std::span(&iov, 1));
    }
}

Task<Result<void>> Connection::send(std::span<iovec> iov) {
    if (broken_) co_return fail(EPIPE, "connection broken");
    auto r = co_await writer_->write(iov);
    if (!r && !broken_) {
        broken_ = true;  // the receive loop sees it and stops
        shutdown_socket();
    }
    co_return r;
}

}  // namespace ioplane::nbd
