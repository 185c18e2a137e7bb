// QMP `transaction` (QEMU 7.2's qmp_transaction): several actions applied
// all or none. Every action is prepared in order; if one prepare fails,
// those prepared before it are aborted in reverse order and the command
// fails with that action's error; otherwise all commit. Then all clean,
// and only then do the drained sections the actions asked for end, so that
// no request reaches a node an action touched between the first prepare
// and the last commit: what every action did happens, for the nodes'
// users, at one point (a bitmap added "exactly when" an overlay is
// installed).
//
// The standalone commands of the same operations (block-dirty-bitmap-*,
// blockdev-snapshot, blockdev-snapshot-sync) run as a transaction of one
// action, as QEMU's blockdev_do_action did, so each operation has one
// implementation: its action.
//
// Adding an action kind takes three things (blockdev-backup's BackupAction
// in job_commands.cc is one):
//  1. a class deriving from TransactionAction, next to the command's other
//     code (job_commands.cc for a backup): prepare() checks and does the
//     work in a way abort() can undo (a backup creates its job, not yet
//     started), commit() makes it final (starts the job), abort() undoes
//     prepare (cancels and drops the job), clean() frees what is left;
//  2. a parser (an ActionParser, declared in transaction_actions.h) that
//     reads the arguments and changes nothing: every action of a
//     transaction is parsed before any is prepared, as QEMU's input
//     visitor does;
//  3. its parser in the kind's row of the table of action kinds
//     (transaction.cc),
//     and, for the standalone command, `action_command(daemon, "kind")`
//     as its QMP handler.
// A backup's job does not run before commit, nor outlive an abort; with
// completion-mode=grouped (completion_mode()) the jobs of one transaction
// are one job group (job_group(): they end together, block::JobTxn).
//
// Thread contract: main thread, under the BQL, for everything here
// (asserted where a transaction runs).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/storage_daemon.h"
#include "ioplane/block/job.h"

namespace ioplane::daemon {

// QEMU's ActionCompletionMode: what happens to the jobs a transaction
// starts when one of them fails later (grouped: all are cancelled). Only
// job-starting actions (backups) support `grouped`; the others refuse it.
enum class CompletionMode { individual, grouped };

class Transaction;

// One action of a transaction. Its lifetime is the transaction's: made by
// its parser, then prepare(), then commit() or abort() (only if prepare
// succeeded), then clean() (whether or not prepare was reached or
// succeeded), then destroyed.
class TransactionAction {
public:
    virtual ~TransactionAction() = default;

    // Checks the action and does it, keeping what abort() needs to undo it.
    // On an error it leaves nothing behind (abort() is not called for it).
    // Nodes it reads or changes are drained first with txn.drain(), which
    // keeps them drained until the transaction ends.
    virtual Result<void> prepare(Transaction& txn) = 0;
    // Makes the prepared action final. Cannot fail: everything that can
    // fail belongs in prepare().
    virtual void commit() {}
    // Undoes prepare() exactly (a later action failed). Cannot fail.
    virtual void abort() {}
    // Frees what the action still holds, after commit() or abort().
    virtual void clean() {}
};

// Reads an action's arguments (`data`: a JSON value, an object if valid);
// `path` prefixes its keys in messages ("actions[1].data.", or "" for a
// standalone command). Changes nothing.
using ActionParser = Result<std::unique_ptr<TransactionAction>> (*)(const nlohmann::json& data,
                                                                    const std::string& path);

// A row of the table of action kinds.
struct ActionKind {
    std::string_view name;  // QAPI's TransactionActionKind
    ActionParser parse;     // null: ioplane has no such command (refused)
};
// The kind named `name`, or null for a name QEMU 7.2 does not know.
const ActionKind* find_action_kind(std::string_view name);

// What an action sees of the transaction it runs in.
class Transaction {
public:
    Transaction(StorageDaemon& daemon, CompletionMode mode) : daemon_(daemon), mode_(mode) {}
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    // Ends the drained sections, newest first.
    ~Transaction();

    StorageDaemon& daemon() const { return daemon_; }
    CompletionMode completion_mode() const { return mode_; }
    // The group the transaction's jobs join: one for all with `grouped`,
    // none (each job alone) with `individual`.
    std::shared_ptr<block::JobTxn> job_group();

    // QEMU's action_check_completion_mode, for the action being prepared:
    // refuses `grouped` with QEMU's message ("Action 'X' does not support
    // Transaction property completion-mode = grouped").
    Result<void> require_individual() const;

    // Drains `node` (its whole component, as a DrainedSection) until the
    // transaction ends, once per node. A node that an action brings into a
    // drained component (an overlay) must be drained too: users that a
    // graph change moves onto it must find it drained.
    void drain(block::BlockNode& node);

    // Runs the actions (each with its kind, for messages) as one
    // transaction: the error is the first failed prepare's. Once.
    struct Entry {
        const ActionKind* kind;
        std::unique_ptr<TransactionAction> action;
    };
    Result<void> run(std::vector<Entry> actions);

private:
    struct Drained {
        std::shared_ptr<block::BlockNode> node;  // alive while drained
        std::unique_ptr<block::DrainedSection> section;
    };
    StorageDaemon& daemon_;
    const CompletionMode mode_;
    const ActionKind* preparing_ = nullptr;  // the action in prepare()
    std::vector<Drained> drained_;
    std::shared_ptr<block::JobTxn> group_;  // made by the first job_group() with `grouped`
};


// A QMP handler for a standalone command that is the action `kind`: its
// arguments parsed as that action's data, then a transaction of one.
monitor::QmpCommand action_command(StorageDaemon& daemon, std::string_view kind);

// Registers `transaction`. Main thread, at startup.
void register_transaction_command(StorageDaemon& daemon);

}  // namespace ioplane::daemon
