// libFuzzer target for the 9P2000.L message decoder. The input is one message
// as the server's reader hands it over; the size field is also forced to
// the input's length, so that the fuzzer spends its time in the bodies rather
// than guessing the size. Whatever decodes must only point inside the input
// and respect the protocol's limits (checked with __builtin_trap()).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <variant>
#include <vector>

#include "messages.h"

using namespace ioplane::fs9p;

namespace {

void check(bool ok) {
    if (!ok) __builtin_trap();
}

struct InsideInput {
    std::span<const uint8_t> in;
    bool contains(const void* p, size_t n) const {
        auto* b = static_cast<const uint8_t*>(p);
        return n == 0 || (b >= in.data() && b + n <= in.data() + in.size());
    }
    void operator()(std::string_view s) const { check(contains(s.data(), s.size())); }
    void operator()(std::span<const uint8_t> s) const { check(contains(s.data(), s.size())); }
};

void check_request(const Request& req, std::span<const uint8_t> in) {
    const InsideInput inside{in};
    std::visit(
        [&](const auto& m) {
            using M = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<M, Walk>) {
                check(m.names.size() <= kMaxWalkNames);
                for (auto n : m.names) inside(n);
            } else if constexpr (std::is_same_v<M, Write>) {
                inside(m.data);
            } else if constexpr (std::is_same_v<M, Attach> || std::is_same_v<M, Auth>) {
                inside(m.uname);
                inside(m.aname);
            } else if constexpr (std::is_same_v<M, Symlink>) {
                inside(m.name);
                inside(m.target);
            } else if constexpr (std::is_same_v<M, Renameat>) {
                inside(m.oldname);
                inside(m.newname);
            }
        },
        req.body);
    check(decode_header(in.first<kHeaderSize>()).type == req.type);
}

void run(std::span<const uint8_t> in) {
    uint16_t tag = 0;
    auto req = decode_request(in, &tag);
    if (req) {
        check(req->tag == tag);
        check_request(*req, in);
    }
    (void)message_name(in.empty() ? 0 : in[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    run({data, size});
    if (size >= kHeaderSize) {
        std::vector<uint8_t> fixed(data, data + size);
        const uint32_t n = uint32_t(size);
        std::memcpy(fixed.data(), &n, 4);  // little-endian hosts only, as the server
        run(fixed);
    }
    return 0;
}
