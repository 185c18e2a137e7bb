#include "json_stream.h"

namespace ioplane::monitor {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_delimiter(char c) { return is_space(c) || c == '{' || c == '}' || c == '[' || c == ']' || c == '"' || c == '\''; }

}  // namespace

void JsonSplitter::append(char c) {
    if (too_long_ || too_deep_) return;
    if (text_.size() >= max_bytes_) {
        too_long_ = true;
        text_.clear();
        text_.shrink_to_fit();
        return;
    }
    text_.push_back(c);
}

void JsonSplitter::end_piece(std::vector<JsonPiece>& out) {
    JsonPiece piece;
    if (too_long_) {
        piece.error = "JSON parse error, message longer than " + std::to_string(max_bytes_) + " bytes";
    } else if (too_deep_) {
        piece.error = "JSON parse error, nesting deeper than " + std::to_string(kMaxDepth) + " levels";
    } else {
        piece.text = std::move(text_);
    }
    out.push_back(std::move(piece));
    text_.clear();
    depth_ = 0;
    in_string_ = top_string_ = escaped_ = in_scalar_ = too_long_ = too_deep_ = false;
}

void JsonSplitter::feed(std::string_view bytes, std::vector<JsonPiece>& out) {
    for (char c : bytes) {
        if (in_scalar_) {
            if (!is_delimiter(c)) {
                append(c);
                continue;
            }
            end_piece(out);  // and c starts what follows
        }
        if (depth_ == 0) {
            if (is_space(c)) continue;
            if (c == '{' || c == '[') {
                depth_ = 1;
                append(c);
            } else if (c == '}' || c == ']') {
                out.push_back({.error = std::string("JSON parse error, stray '") + c + "'"});
            } else if (c == '"' || c == '\'') {
                // A top-level string: framed like a bracketed value.
                depth_ = 1;
                in_string_ = top_string_ = true;
                quote_ = c;
                append(c);
            } else {
                in_scalar_ = true;
                append(c);
            }
            continue;
        }
        append(c);
        if (in_string_) {
            if (escaped_) {
                escaped_ = false;
            } else if (c == '\\') {
                escaped_ = true;
            } else if (c == quote_) {
                in_string_ = false;
                if (top_string_) end_piece(out);
            }
            continue;
        }
        if (c == '"' || c == '\'') {
            in_string_ = true;
            quote_ = c;
        } else if (c == '{' || c == '[') {
            if (++depth_ > kMaxDepth) too_deep_ = true;
        } else if (c == '}' || c == ']') {
            if (--depth_ == 0) end_piece(out);
        }
    }
}

}  // namespace ioplane::monitor
