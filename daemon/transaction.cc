#include "daemon/transaction.h"

#include <algorithm>

#include "daemon/qmp_results.h"
#include "daemon/transaction_actions.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/thread_contract.h"

namespace ioplane::daemon {
namespace {

using monitor::QmpResult;
using nlohmann::json;

// QEMU 7.2's TransactionActionKind, in its order. A kind without a parser
// is one whose command ioplane does not have: refused before anything runs.
constexpr ActionKind kKinds[] = {
    {"abort", parse_abort_action},
    {"block-dirty-bitmap-add", parse_bitmap_add_action},
    {"block-dirty-bitmap-remove", parse_bitmap_remove_action},
    {"block-dirty-bitmap-clear", parse_bitmap_clear_action},
    {"block-dirty-bitmap-enable", parse_bitmap_enable_action},
    {"block-dirty-bitmap-disable", parse_bitmap_disable_action},
    {"block-dirty-bitmap-merge", parse_bitmap_merge_action},
    {"blockdev-backup", parse_backup_action},
    {"blockdev-snapshot", parse_snapshot_action},
    {"blockdev-snapshot-internal-sync", parse_internal_snapshot_action},
    {"blockdev-snapshot-sync", parse_snapshot_sync_action},
    {"drive-backup", nullptr},
};

// The messages of QEMU's QAPI input visitor, for the transaction's own
// members (an action's data is read by its parser).
std::unexpected<Error> missing(const std::string& name) {
    return fail(EINVAL, "Parameter '" + name + "' is missing");
}
std::unexpected<Error> wrong_type(const std::string& name, const char* expected) {
    return fail(EINVAL, "Invalid parameter type for '" + name + "', expected: " + expected);
}
// QEMU names an enum member without its path.
std::unexpected<Error> bad_value(const char* member, const std::string& value) {
    return fail(EINVAL, "Parameter '" + std::string(member) + "' does not accept value '" + value + "'");
}
// The first member (in key order) of `object` not in `known`.
Result<void> only_members(const json& object, const std::string& path, std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : object.items())
        if (std::ranges::find(known, key) == known.end())
            return fail(EINVAL, "Parameter '" + path + key + "' is unexpected");
    return {};
}

// `abort` (QEMU's abort_prepare): fails, so that what came before it is
// aborted.
class AbortAction final : public TransactionAction {
    Result<void> prepare(Transaction&) override { return fail(ECANCELED, "Transaction aborted using Abort action"); }
};

// One element of `actions`: {"type": kind, "data": {...}}, as QEMU's
// visitor reads the union: type, then data (the kind's members), then
// what is left over.
Result<Transaction::Entry> parse_action(const json& element, size_t index) {
    const std::string path = "actions[" + std::to_string(index) + "]";
    if (!element.is_object()) return wrong_type(path, "object");
    const auto type = element.find("type");
    if (type == element.end()) return missing(path + ".type");
    if (!type->is_string()) return wrong_type(path + ".type", "string");
    const ActionKind* kind = find_action_kind(type->get<std::string>());
    if (kind == nullptr) return bad_value("type", type->get<std::string>());
    const auto data = element.find("data");
    if (data == element.end()) return missing(path + ".data");
    if (!data->is_object()) return wrong_type(path + ".data", "object");
    if (kind->parse == nullptr)
        return fail(ENOTSUP, "Action '" + std::string(kind->name) + "' is not supported: ioplane has no " +
                                 std::string(kind->name) + " command");
    auto action = kind->parse(*data, path + ".data.");
    if (!action) return std::unexpected(action.error());
    if (auto r = only_members(element, path + ".", {"type", "data"}); !r) return std::unexpected(r.error());
    return Transaction::Entry{kind, std::move(*action)};
}

// TransactionProperties: {"completion-mode": "individual" | "grouped"}.
Result<CompletionMode> parse_properties(const json& properties) {
    if (!properties.is_object()) return wrong_type("properties", "object");
    CompletionMode mode = CompletionMode::individual;
    if (const auto m = properties.find("completion-mode"); m != properties.end()) {
        if (!m->is_string()) return wrong_type("properties.completion-mode", "string");
        if (*m == "grouped") mode = CompletionMode::grouped;
        else if (*m != "individual") return bad_value("completion-mode", m->get<std::string>());
    }
    if (auto r = only_members(properties, "properties.", {"completion-mode"}); !r) return std::unexpected(r.error());
    return mode;
}

struct TransactionArgs {
    std::vector<Transaction::Entry> actions;
    CompletionMode mode = CompletionMode::individual;
};

// Every action is read before any runs: a bad argument anywhere changes
// nothing.
Result<TransactionArgs> parse_transaction(const json& args) {
    TransactionArgs out;
    const json empty = json::object();
    const json& a = args.is_object() ? args : empty;
    const auto actions = a.find("actions");
    if (actions == a.end()) return missing("actions");
    if (!actions->is_array()) return wrong_type("actions", "array");
    for (size_t i = 0; i < actions->size(); i++) {
        auto entry = parse_action((*actions)[i], i);
        if (!entry) return std::unexpected(entry.error());
        out.actions.push_back(std::move(*entry));
    }
    if (const auto p = a.find("properties"); p != a.end()) {
        auto mode = parse_properties(*p);
        if (!mode) return std::unexpected(mode.error());
        out.mode = *mode;
    }
    if (auto r = only_members(a, "", {"actions", "properties"}); !r) return std::unexpected(r.error());
    return out;
}

}  // namespace

ParsedAction parse_abort_action(const json& data, const std::string& path) {
    if (auto r = only_members(data, path, {}); !r) return std::unexpected(r.error());
    return std::make_unique<AbortAction>();
}

const ActionKind* find_action_kind(std::string_view name) {
    for (const ActionKind& kind : kKinds)
        if (kind.name == name) return &kind;
    return nullptr;
}

Transaction::~Transaction() {
    assert_in_main_thread();
    while (!drained_.empty()) {
        drained_.back().section.reset();
        drained_.pop_back();
    }
}

Result<void> Transaction::require_individual() const {
    assert_in_main_thread();
    IOPLANE_ASSERT(preparing_ != nullptr);
    if (mode_ == CompletionMode::individual) return {};
    return fail(ENOTSUP, "Action '" + std::string(preparing_->name) +
                             "' does not support Transaction property completion-mode = grouped");
}

std::shared_ptr<block::JobTxn> Transaction::job_group() {
    assert_in_main_thread();
    if (mode_ == CompletionMode::individual) return nullptr;
    if (!group_) group_ = std::make_shared<block::JobTxn>();
    return group_;
}

void Transaction::drain(block::BlockNode& node) {
    assert_in_main_thread();
    if (std::ranges::any_of(drained_, [&node](const Drained& d) { return d.node.get() == &node; })) return;
    drained_.push_back({node.shared_from_this(), std::make_unique<block::DrainedSection>(node)});
}

Result<void> Transaction::run(std::vector<Entry> actions) {
    assert_in_main_thread();
    Result<void> result;
    size_t prepared = 0;  // actions whose prepare() succeeded
    for (; prepared < actions.size(); prepared++) {
        preparing_ = actions[prepared].kind;
        result = actions[prepared].action->prepare(*this);
        if (!result) break;
    }
    preparing_ = nullptr;
    if (result) {
        for (Entry& e : actions) e.action->commit();
    } else {
        for (size_t i = prepared; i-- > 0;) actions[i].action->abort();
    }
    // Every action whose prepare() ran, the failed one too (as QEMU).
    const size_t started = result ? actions.size() : prepared + 1;
    for (size_t i = 0; i < started; i++) actions[i].action->clean();
    return result;
}

monitor::QmpCommand action_command(StorageDaemon& daemon, std::string_view name) {
    const ActionKind* kind = find_action_kind(name);
    IOPLANE_ASSERT(kind != nullptr && kind->parse != nullptr);
    return [&daemon, kind](const json& args) -> QmpResult {
        auto action = kind->parse(args, "");
        if (!action) return error_of(action);
        std::vector<Transaction::Entry> one;
        one.push_back({kind, std::move(*action)});
        Transaction txn(daemon, CompletionMode::individual);
        return done(txn.run(std::move(one)));
    };
}

void register_transaction_command(StorageDaemon& daemon) {
    assert_in_main_thread();
    daemon.dispatcher().add_command("transaction", [&daemon](const json& args) -> QmpResult {
        auto parsed = parse_transaction(args);
        if (!parsed) return error_of(parsed);
        Transaction txn(daemon, parsed->mode);
        return done(txn.run(std::move(parsed->actions)));
    });
}

}  // namespace ioplane::daemon
