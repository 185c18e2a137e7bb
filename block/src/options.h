// Reading driver options from an option tree (qemu-storage-daemon's
// --blockdev, as JSON). Values given on the command line in keyval form are
// strings ("on", "1024"); JSON gives typed values. Both are accepted. Errors
// name the node and the option.
//
// Thread contract: any thread; pure.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "ioplane/core/error.h"

namespace ioplane::block::opts {

using Json = nlohmann::json;

// A present key that is not used by the driver is an error (catches typos).
class Reader {
public:
    Reader(const Json& tree, std::string what) : tree_(tree), what_(std::move(what)) {}

    Result<std::optional<std::string>> string(const std::string& key);
    Result<std::string> required_string(const std::string& key);
    Result<std::optional<bool>> boolean(const std::string& key);
    Result<std::optional<uint64_t>> size(const std::string& key);  // bytes; k/M/G/T suffixes
    // A child: a node-name reference (string) or a nested option tree.
    std::optional<Json> child(const std::string& key);
    // Marks keys that the generic layer handles (driver, node-name, ...).
    void ignore(const std::string& key) { used_.push_back(key); }
    // Error for the first key nobody asked for.
    Result<void> check_all_used() const;

    const std::string& what() const { return what_; }

private:
    const Json* find(const std::string& key);
    Error error(const std::string& key, const std::string& problem) const;

    const Json& tree_;
    std::string what_;
    std::vector<std::string> used_;
};

}  // namespace ioplane::block::opts
