// Fuzz target: bytes a QMP client sends, through framing and request parsing
// and into the responses built from them. The first byte chooses how the
// input is cut into reads, as a socket would deliver it.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "json_stream.h"
#include "qmp_message.h"

using namespace ioplane::monitor;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const size_t chunk = 1 + data[0] % 64;
    std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
    JsonSplitter splitter;
    std::vector<JsonPiece> pieces;
    for (size_t pos = 0; pos < input.size(); pos += chunk) splitter.feed(input.substr(pos, chunk), pieces);
    for (const JsonPiece& piece : pieces) {
        if (!piece.error.empty()) {
            (void)format_error(generic_error(piece.error), std::nullopt, false);
            continue;
        }
        auto request = parse_request(piece.text);
        if (request)
            (void)format_return(request->arguments, request->id, true);
        else
            (void)format_error(request.error().error, request.error().id, false);
    }
    return 0;
}
