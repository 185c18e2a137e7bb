// The parsers of the transaction's action kinds (transaction.h says what a
// parser does), by the file that implements the action. The table of kinds
// in transaction.cc names them.
//
// Thread contract: any thread (parsers are pure), though only the main
// thread calls them.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "daemon/transaction.h"

namespace ioplane::daemon {

using ParsedAction = Result<std::unique_ptr<TransactionAction>>;

// transaction.cc: `abort`, which always fails (to test transactions).
ParsedAction parse_abort_action(const nlohmann::json& data, const std::string& path);

// bitmap_commands.cc: block-dirty-bitmap-add, -remove, -clear, -enable,
// -disable, -merge.
ParsedAction parse_bitmap_add_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_bitmap_remove_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_bitmap_clear_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_bitmap_enable_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_bitmap_disable_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_bitmap_merge_action(const nlohmann::json& data, const std::string& path);

// image_commands.cc: blockdev-snapshot, blockdev-snapshot-sync, and
// blockdev-snapshot-internal-sync (always refused: no internal snapshots).
ParsedAction parse_snapshot_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_snapshot_sync_action(const nlohmann::json& data, const std::string& path);
ParsedAction parse_internal_snapshot_action(const nlohmann::json& data, const std::string& path);

// job_commands.cc: blockdev-backup.
ParsedAction parse_backup_action(const nlohmann::json& data, const std::string& path);

}  // namespace ioplane::daemon
