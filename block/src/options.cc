#include "options.h"

#include <algorithm>
#include <cctype>

namespace ioplane::block::opts {

const Json* Reader::find(const std::string& key) {
    used_.push_back(key);
    auto it = tree_.find(key);
    return it == tree_.end() ? nullptr : &*it;
}

Error Reader::error(const std::string& key, const std::string& problem) const {
    return Error{EINVAL, what_ + ": option '" + key + "' " + problem};
}

Result<std::optional<std::string>> Reader::string(const std::string& key) {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (!v->is_string()) return std::unexpected(error(key, "must be a string"));
    return v->get<std::string>();
}

Result<std::string> Reader::required_string(const std::string& key) {
    auto v = string(key);
    if (!v) return std::unexpected(v.error());
    if (!*v) return std::unexpected(error(key, "is required"));
    return **v;
}

Result<std::optional<bool>> Reader::boolean(const std::string& key) {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    if (v->is_string()) {
        const std::string s = v->get<std::string>();
        if (s == "on" || s == "true" || s == "yes") return true;
        if (s == "off" || s == "false" || s == "no") return false;
    }
    return std::unexpected(error(key, "must be on or off"));
}

Result<std::optional<uint64_t>> Reader::size(const std::string& key) {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_unsigned()) return v->get<uint64_t>();
    if (!v->is_string()) return std::unexpected(error(key, "must be a size"));
    const std::string s = v->get<std::string>();
    size_t pos = 0;
    uint64_t n = 0;
    while (pos < s.size() && std::isdigit(static_cast<unsigned char>(s[pos]))) {
        if (n > (UINT64_MAX - 9) / 10) return std::unexpected(error(key, "is too large"));
        n = n * 10 + (s[pos++] - '0');
    }
    if (pos == 0) return std::unexpected(error(key, "must be a size"));
    unsigned shift = 0;
    if (pos < s.size()) {
        switch (std::tolower(static_cast<unsigned char>(s[pos++]))) {
            case 'b': shift = 0; break;
            case 'k': shift = 10; break;
            case 'm': shift = 20; break;
            case 'g': shift = 30; break;
            case 't': shift = 40; break;
            default: return std::unexpected(error(key, "has an unknown size suffix"));
        }
        if (pos != s.size()) return std::unexpected(error(key, "must be a size"));
    }
    if (shift > 0 && n > (UINT64_MAX >> shift)) return std::unexpected(error(key, "is too large"));
    return n << shift;
}

std::optional<Json> Reader::child(const std::string& key) {
    const Json* v = find(key);
    if (v == nullptr) return std::nullopt;
    return *v;
}

Result<void> Reader::check_all_used() const {
    for (auto it = tree_.begin(); it != tree_.end(); ++it)
        if (std::find(used_.begin(), used_.end(), it.key()) == used_.end())
            return std::unexpected(error(it.key(), "is not supported"));
    return {};
}

}  // namespace ioplane::block::opts
