// JsonSplitter: cuts a QMP byte stream into JSON texts, one per request, as
// QEMU's json-streamer does before anything is parsed. QMP does not frame
// messages (a request may span lines, several may share one), so the
// splitter tracks brackets and strings to find where each top-level value
// ends; the texts then go to the JSON parser.
//
// Untrusted input is bounded: a text longer than kMaxMessageBytes or nested
// deeper than kMaxDepth is not kept; it still ends where its brackets close,
// and is reported as an error there, so the stream stays in step and the
// client gets one error reply for it.
//
// Thread contract: a plain value; one thread at a time.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace ioplane::monitor {

struct JsonPiece {
    std::string text;   // the whole JSON text (when error is empty)
    std::string error;  // why the text was dropped (too long, too deep, stray bracket)
};

class JsonSplitter {
public:
    static constexpr size_t kMaxMessageBytes = 1 << 20;  // the server's limit for a request
    static constexpr int kMaxDepth = 1024;               // QEMU's MAX_NESTING

    explicit JsonSplitter(size_t max_message_bytes = kMaxMessageBytes) : max_bytes_(max_message_bytes) {}

    // Consumes `bytes`; appends each text that ends in them to `out`.
    void feed(std::string_view bytes, std::vector<JsonPiece>& out);
    // Whether a text has begun and not yet ended.
    bool in_message() const { return depth_ > 0 || in_scalar_; }

private:
    void end_piece(std::vector<JsonPiece>& out);
    void append(char c);

    size_t max_bytes_;
    std::string text_;
    int depth_ = 0;          // open brackets
    bool in_string_ = false;
    char quote_ = '"';       // QEMU also accepts single-quoted strings
    bool escaped_ = false;
    bool top_string_ = false;  // the text is a bare string
    bool in_scalar_ = false;  // a bare top-level token (a number, a keyword, garbage)
    bool too_long_ = false;
    bool too_deep_ = false;
};

}  // namespace ioplane::monitor
