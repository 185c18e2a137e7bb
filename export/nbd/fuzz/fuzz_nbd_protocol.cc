// libFuzzer target for the NBD wire codec. The whole input goes to every
// parser; what parses is re-encoded and must come back byte for byte (the
// parsers are strict, so an accepted message has exactly one encoding), and
// the invariants the server relies on are checked with __builtin_trap().
// Requests are also parsed with the magic forced right, so that the fuzzer
// spends its time in validate_request() rather than guessing the magic, and
// validated against fixed export limits and limits taken from the input.
// Parsed meta context queries go through the server's selection
// (meta_context.h) against fixed offers, and extents taken from the input
// through the reply's gathering (extent_list.h).
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nbd/extent_list.h"
#include "nbd/meta_context.h"
#include "nbd/protocol.h"

using namespace ioplane::nbd;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

using Bytes = std::span<const uint8_t>;

bool same(Bytes a, Bytes b) { return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin()); }

std::string_view as_chars(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// A string a parser returned obeys the spec's rules for strings.
void check_string(const std::string& s) {
    check(s.size() <= kMaxStringLength);
    check(s.find('\0') == std::string::npos);
}

template <class T>
void check_failure(const ioplane::Result<T>& r, bool e2big_allowed) {
    check(r.error().code == EINVAL || (e2big_allowed && r.error().code == E2BIG));
    check(!r.error().message.empty());
}

void fuzz_option_header(Bytes in) {
    if (in.size() < kOptionHeaderSize) {
        check(!parse_option_header(in).has_value());
        return;
    }
    const Bytes head = in.first(kOptionHeaderSize);
    auto h = parse_option_header(head);
    check(h.has_value() == (load_be64(head.data()) == IHAVEOPT));
    if (!h) return check_failure(h, false);
    std::vector<uint8_t> out;
    put_option_header(out, h->option, {});
    store_be32(out.data() + 12, h->length);  // the length of a payload we do not have
    check(same(out, head));
    check(option_name(h->option) != nullptr);
}

void fuzz_handshake(Bytes in) {
    if (in.size() < kClientFlagsSize) return;
    const uint16_t both = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
    for (uint16_t offered : {uint16_t{0}, NBD_FLAG_FIXED_NEWSTYLE, both}) {
        auto f = parse_client_flags(in.first(kClientFlagsSize), offered);
        if (!f) {
            check_failure(f, false);
            continue;
        }
        check((*f & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) == 0);
        check(!(*f & NBD_FLAG_C_NO_ZEROES) || (offered & NBD_FLAG_NO_ZEROES));
    }
}

void fuzz_export_name(Bytes in) {
    auto name = parse_export_name(in);
    if (!name) return check_failure(name, false);
    check_string(*name);
    check(same(Bytes(reinterpret_cast<const uint8_t*>(name->data()), name->size()), in));
    // What a server does with it: name it in NBD_REP_SERVER / NBD_INFO_NAME.
    std::vector<uint8_t> out;
    put_rep_server(out, NBD_OPT_LIST, *name);
    check(out.size() == kOptionReplyHeaderSize + 4 + name->size());
    check(load_be32(out.data() + 16) == 4 + name->size());
    out.clear();
    put_info_name(out, NBD_OPT_GO, *name);
    check(load_be32(out.data() + 16) == 2 + name->size());
}

void fuzz_info_request(Bytes in) {
    auto req = parse_info_request(in);
    if (!req) return check_failure(req, false);
    check_string(req->name);
    std::vector<uint16_t> sorted = req->info_types;
    std::sort(sorted.begin(), sorted.end());
    check(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    std::vector<uint8_t> again;
    put_info_request(again, *req);
    check(same(again, in));
}

// What the server selects for the queries: only what the export offers,
// each selected name one the client asked for exactly (or, for LIST, by a
// prefix it sent), and SET's selection also in LIST's.
void fuzz_meta_context_selection(const std::vector<std::string>& queries) {
    const MetaContextOffer offers[] = {
        MetaContextOffer{},
        MetaContextOffer{.allocation_depth = true, .bitmaps = {"b0", "", "b0", std::string(1023, 'x')}},
    };
    auto asked = [&](std::string_view name) {
        return std::find(queries.begin(), queries.end(), name) != queries.end();
    };
    for (const MetaContextOffer& offer : offers) {
        const MetaContextSelection set = select_meta_contexts(offer, queries, false);
        const MetaContextSelection list = select_meta_contexts(offer, queries, true);
        for (const MetaContextSelection* s : {&set, &list}) {
            check(s->bitmaps.size() == offer.bitmaps.size());
            check(!s->allocation_depth || offer.allocation_depth);
            check(s->count() <= 2 + offer.bitmaps.size());
        }
        check(!set.base_allocation || asked(kBaseAllocation));
        check(!set.allocation_depth || asked(kQemuAllocationDepth));
        check(!set.base_allocation || list.base_allocation);
        check(!set.allocation_depth || list.allocation_depth);
        for (size_t i = 0; i < offer.bitmaps.size(); i++) {
            const std::string name = dirty_bitmap_context(offer.bitmaps[i]);
            check(name.size() <= kMaxStringLength);
            check(!set.bitmaps[i] || asked(name));
            check(!set.bitmaps[i] || list.bitmaps[i]);
            check(!list.bitmaps[i] || queries.empty() || asked(name) || asked("qemu:") || asked(kQemuDirtyBitmapPrefix));
        }
    }
}

void fuzz_meta_context_request(Bytes in) {
    auto req = parse_meta_context_request(in);
    if (!req) return check_failure(req, true);
    check_string(req->export_name);
    check(req->queries.size() <= kMaxMetaContextQueries);
    std::vector<uint8_t> replies;
    for (const std::string& q : req->queries) {
        check_string(q);
        const size_t at = replies.size();
        put_rep_meta_context(replies, NBD_OPT_LIST_META_CONTEXT, 0, q);
        check(replies.size() - at == kOptionReplyHeaderSize + 4 + q.size());
    }
    std::vector<uint8_t> again;
    put_meta_context_request(again, *req);
    check(same(again, in));
    fuzz_meta_context_selection(req->queries);
}

bool is_nbd_error(uint32_t e) {
    switch (e) {
        case NBD_EPERM:
        case NBD_EIO:
        case NBD_ENOMEM:
        case NBD_EINVAL:
        case NBD_ENOSPC:
        case NBD_EOVERFLOW:
        case NBD_ENOTSUP:
        case NBD_ESHUTDOWN:
            return true;
        default:
            return false;
    }
}

// What the server relies on when it acts on a verdict, checked independently
// of how validate_request() reached it.
void check_verdict(const Request& r, const ExportLimits& l, const Verdict& v) {
    const uint16_t t = r.type;
    check(v.nbd_error == 0 || is_nbd_error(v.nbd_error));
    // Only DISC goes unanswered, and DISC always ends the connection.
    check(v.no_reply == (t == NBD_CMD_DISC));
    if (t == NBD_CMD_DISC) {
        check(v.disconnect && v.nbd_error == 0 && !v.consume_payload);
        return;
    }
    // A payload follows exactly the WRITEs, and is read unless we hang up.
    check(v.consume_payload == (t == NBD_CMD_WRITE && !v.disconnect));
    // Hanging up is reserved for a WRITE payload too large to skip.
    if (v.disconnect) {
        check(t == NBD_CMD_WRITE && v.nbd_error != 0);
        check(r.length > std::max(l.max_payload, kMaxDiscardPayload));
    }
    if (t == NBD_CMD_WRITE && r.length <= kMaxDiscardPayload) check(!v.disconnect);
    if (v.nbd_error != 0) return;

    // Accepted: everything the spec requires of the request holds.
    check(t <= NBD_CMD_BLOCK_STATUS);
    const uint16_t f = r.flags;
    check(!(f & NBD_CMD_FLAG_FUA) || l.can_fua);
    check(!(f & NBD_CMD_FLAG_NO_HOLE) || t == NBD_CMD_WRITE_ZEROES);
    check(!(f & NBD_CMD_FLAG_FAST_ZERO) || (t == NBD_CMD_WRITE_ZEROES && l.can_fast_zero));
    check(!(f & NBD_CMD_FLAG_DF) || (t == NBD_CMD_READ && l.structured_replies));
    check(!(f & NBD_CMD_FLAG_REQ_ONE) || t == NBD_CMD_BLOCK_STATUS);
    check((f & ~uint16_t{0x1f}) == 0);
    const bool modifies = t == NBD_CMD_WRITE || t == NBD_CMD_TRIM || t == NBD_CMD_WRITE_ZEROES;
    check(!modifies || !l.read_only);
    check(t != NBD_CMD_FLUSH || (l.can_flush && r.offset == 0 && r.length == 0));
    check(t != NBD_CMD_TRIM || l.can_trim);
    check(t != NBD_CMD_WRITE_ZEROES || l.can_write_zeroes);
    check(t != NBD_CMD_CACHE || l.can_cache);
    check(t != NBD_CMD_BLOCK_STATUS || (l.structured_replies && l.meta_context_selected));
    if (t == NBD_CMD_FLUSH) return;
    check(r.length != 0);
    uint64_t end;
    check(!__builtin_add_overflow(r.offset, uint64_t{r.length}, &end) && end <= l.size);
    if (t == NBD_CMD_READ || t == NBD_CMD_WRITE) check(r.length <= l.max_payload);
    const uint64_t block = l.min_block ? l.min_block : 1;
    check(r.offset % block == 0 && r.length % block == 0);
}

ExportLimits limits_from(Bytes b) {
    // 8 size, 4 max_payload, 1 min_block shift, 2 bool bits.
    ExportLimits l;
    if (b.size() < 15) return l;
    l.size = load_be64(b.data());
    l.max_payload = load_be32(b.data() + 8);
    l.min_block = b[12] & 0x20 ? 0 : 1u << (b[12] % 17);
    const uint16_t bits = load_be16(b.data() + 13);
    l.read_only = bits & 1;
    l.structured_replies = bits & 2;
    l.can_trim = bits & 4;
    l.can_write_zeroes = bits & 8;
    l.can_fast_zero = bits & 16;
    l.can_cache = bits & 32;
    l.can_flush = bits & 64;
    l.can_fua = bits & 128;
    l.meta_context_selected = bits & 256;
    return l;
}

ExportLimits full_limits(uint64_t size) {
    return ExportLimits{.size = size, .structured_replies = true, .can_trim = true, .can_write_zeroes = true,
                        .can_fast_zero = true, .can_cache = true, .can_flush = true, .can_fua = true,
                        .meta_context_selected = true};
}

void fuzz_request(Bytes in) {
    if (in.size() < kRequestSize) {
        check(!parse_request(in).has_value());
        return;
    }
    const Bytes head = in.first(kRequestSize);
    auto as_is = parse_request(head);
    check(as_is.has_value() == (load_be32(head.data()) == NBD_REQUEST_MAGIC));
    if (!as_is) check_failure(as_is, false);

    uint8_t fixed[kRequestSize];
    std::memcpy(fixed, head.data(), kRequestSize);
    store_be32(fixed, NBD_REQUEST_MAGIC);
    auto req = parse_request(Bytes(fixed, kRequestSize));
    check(req.has_value());
    uint8_t again[kRequestSize];
    put_request(again, *req);
    check(same(Bytes(again, kRequestSize), Bytes(fixed, kRequestSize)));
    check(command_name(req->type) != nullptr);

    ExportLimits variants[] = {
        ExportLimits{},            // nothing negotiated, empty export
        full_limits(1ull << 30),   // everything, 1 GiB
        full_limits(UINT64_MAX),   // everything, the largest size
        limits_from(in.subspan(kRequestSize)),
    };
    variants[1].min_block = 512;
    ExportLimits read_only = full_limits(1ull << 40);
    read_only.read_only = true;
    read_only.structured_replies = false;
    read_only.max_payload = 1 << 20;
    for (const ExportLimits& l : variants) check_verdict(*req, l, validate_request(*req, l));
    check_verdict(*req, read_only, validate_request(*req, read_only));
}

// Server-side encoders fed with client-influenced values.
void fuzz_encoders(Bytes in) {
    const std::string_view text = as_chars(in);
    std::vector<uint8_t> out;
    put_option_error(out, NBD_OPT_GO, NBD_REP_ERR_INVALID, text);
    const uint32_t len = load_be32(out.data() + 16);
    check(len <= kMaxStringLength && len == out.size() - kOptionReplyHeaderSize);
    check(same(Bytes(out).subspan(kOptionReplyHeaderSize), in.first(len)));

    out.clear();
    put_chunk_error(out, NBD_REPLY_FLAG_DONE, 7, NBD_EIO, text);
    const uint16_t mlen = load_be16(out.data() + kStructuredReplyHeaderSize + 4);
    check(mlen <= kMaxStringLength);
    check(load_be32(out.data() + 16) == 6u + mlen && out.size() == kStructuredReplyHeaderSize + 6 + mlen);

    const std::string_view cut = truncate_utf8(text, in.empty() ? 0 : in[0] % 64);
    const size_t max = in.empty() ? 0 : in[0] % 64;
    check(cut.size() <= max && text.substr(0, cut.size()) == cut);
    if (text.size() > max && cut.size() != max) {
        check(max - cut.size() <= 3);
        check((static_cast<uint8_t>(text[cut.size()]) & 0xC0) != 0x80);
    }

    std::vector<Extent> extents;
    for (size_t i = 0; i + 8 <= in.size() && extents.size() < 64; i += 8)
        extents.push_back(Extent{load_be32(in.data() + i) | 1, load_be32(in.data() + i + 4)});
    if (!extents.empty()) {
        // Gathered as a reply is: merged, never longer than asked, at most
        // `max` extents, and what is left out is at the end.
        const size_t max = 1 + in[0] % 8;
        ExtentList list(max);
        uint64_t offered = 0;
        bool refused = false;
        for (const Extent& e : extents) {
            const bool added = list.add(e.length, e.flags % 2);
            check(!(refused && added));
            refused = refused || !added;
            if (added) offered += e.length;
        }
        check(list.total() == offered && list.full() == refused);
        check(!list.extents().empty() && list.extents().size() <= max);
        for (size_t i = 1; i < list.extents().size(); i++)
            check(list.extents()[i].flags != list.extents()[i - 1].flags ||
                  uint64_t{list.extents()[i].length} + list.extents()[i - 1].length > UINT32_MAX);
        out.clear();
        put_chunk_block_status(out, NBD_REPLY_FLAG_DONE, 1, 1, extents);
        check(out.size() == kStructuredReplyHeaderSize + 4 + 8 * extents.size());
        check(load_be32(out.data() + 16) == 4 + 8 * extents.size());
    }

    if (in.size() >= 4) {
        int e;
        std::memcpy(&e, in.data(), sizeof e);
        const uint32_t nbd = errno_to_nbd(e);
        check(nbd == 0 ? e == 0 : is_nbd_error(nbd));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const Bytes in(data, size);
    fuzz_option_header(in);
    fuzz_handshake(in);
    fuzz_export_name(in);
    fuzz_info_request(in);
    fuzz_meta_context_request(in);
    fuzz_request(in);
    fuzz_encoders(in);
    return 0;
}
