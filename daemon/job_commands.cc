// The block job commands of the monitor: block-stream, block-commit,
// blockdev-mirror, blockdev-backup, query-block-jobs and block-job-*, with QEMU 7.2's checks in QEMU's order
// and its messages (blockdev.c, blockjob.c).
#include "daemon/qmp_commands.h"
#include "daemon/qmp_results.h"
#include "daemon/transaction_actions.h"
#include "ioplane/block/block_jobs.h"
#include "ioplane/block/graph.h"

namespace ioplane::daemon {
namespace {

using monitor::QmpError;
using monitor::QmpResult;
using nlohmann::json;

Result<block::OnError> read_on_error(OptionReader& r, std::string_view key) {
    auto name = r.get_string(key);
    if (!name) return std::unexpected(name.error());
    if (!*name) return block::OnError::report;
    auto policy = block::parse_on_error(**name);
    if (!policy) return fail(EINVAL, "Parameter '" + std::string(key) + "' does not accept value '" + **name + "'");
    return *policy;
}

// The options every block job command takes; a mirror names its error
// policies for each side.
Result<block::BlockJobOptions> read_job_options(OptionReader& r, bool mirror = false) {
    block::BlockJobOptions o;
    auto job_id = r.get_string("job-id");
    if (!job_id) return std::unexpected(job_id.error());
    auto speed = r.get_int64("speed");
    if (!speed) return std::unexpected(speed.error());
    auto on_error = read_on_error(r, mirror ? "on-source-error" : "on-error");
    if (!on_error) return std::unexpected(on_error.error());
    auto on_target_error = mirror ? read_on_error(r, "on-target-error") : on_error;
    if (!on_target_error) return std::unexpected(on_target_error.error());
    auto auto_finalize = r.get_bool("auto-finalize");
    if (!auto_finalize) return std::unexpected(auto_finalize.error());
    auto auto_dismiss = r.get_bool("auto-dismiss");
    if (!auto_dismiss) return std::unexpected(auto_dismiss.error());
    // A storage daemon's nodes have no device name: without a job-id the
    // id is empty, which QEMU refuses ("Invalid job ID ''").
    o.id = job_id->value_or("");
    o.speed = speed->value_or(0);
    o.on_error = *on_error;
    o.on_target_error = *on_target_error;
    o.auto_finalize = auto_finalize->value_or(true);
    o.auto_dismiss = auto_dismiss->value_or(true);
    return o;
}

// QEMU's bdrv_find_backing_image: the node below `top` whose image file
// is `name`.
std::shared_ptr<block::BlockNode> find_backing_image(const block::BlockNode& top, const std::string& name) {
    for (auto n = block::chain_below(top); n; n = block::chain_below(*n))
        if (n->driver().filename() == name) return n;
    return nullptr;
}

// Every node from `top` down to `end` (excluded) is free for a job.
Result<void> check_chain_not_blocked(const std::shared_ptr<block::BlockNode>& top,
                                     const std::shared_ptr<block::BlockNode>& end) {
    for (auto n = top; n && n != end; n = block::chain_below(*n))
        if (auto r = n->check_not_blocked(); !r) return r;
    return {};
}

Result<void> start_stream(StorageDaemon& daemon, OptionReader& r) {
    auto device = r.require_string("device");
    if (!device) return std::unexpected(device.error());
    auto job = read_job_options(r);
    if (!job) return std::unexpected(job.error());
    auto base = r.get_string("base");
    if (!base) return std::unexpected(base.error());
    auto base_node = r.get_string("base-node");
    if (!base_node) return std::unexpected(base_node.error());
    auto bottom = r.get_string("bottom");
    if (!bottom) return std::unexpected(bottom.error());
    auto backing_file = r.get_string("backing-file");
    if (!backing_file) return std::unexpected(backing_file.error());
    auto filter_node_name = r.get_string("filter-node-name");
    if (!filter_node_name) return std::unexpected(filter_node_name.error());
    if (auto c = r.check_all_used(); !c) return c;

    if (*base && *base_node) return fail(EINVAL, "'base' and 'base-node' cannot be specified at the same time");
    if (*base && *bottom) return fail(EINVAL, "'base' and 'bottom' cannot be specified at the same time");
    if (*bottom && *base_node) return fail(EINVAL, "'bottom' and 'base-node' cannot be specified at the same time");
    auto top = daemon.graph().find(*device);
    if (!top) return fail(ENOENT, "Cannot find device='" + *device + "' nor node-name='" + *device + "'");
    std::shared_ptr<block::BlockNode> base_bs;
    if (*base) {
        base_bs = find_backing_image(*top, **base);
        if (!base_bs) return fail(ENOENT, "Can't find '" + **base + "' in the backing chain");
    }
    if (*base_node) {
        base_bs = daemon.graph().find(**base_node);
        if (!base_bs)
            return fail(ENOENT, "Cannot find device='' nor node-name='" + **base_node + "'");
        if (base_bs == top || !block::chain_contains(*top, *base_bs))
            return fail(EINVAL, "Node '" + **base_node + "' is not a backing image of '" + *device + "'");
    }
    if (*bottom) {
        auto bottom_bs = daemon.graph().find(**bottom);
        if (!bottom_bs) return fail(ENOENT, "Cannot find device='' nor node-name='" + **bottom + "'");
        if (bottom_bs->child(block::ChildRole::filtered))
            return fail(EINVAL, "Node '" + **bottom + "' is a filter, use a non-filter node as 'bottom'");
        if (bottom_bs != top && !block::chain_contains(*top, *bottom_bs))
            return fail(EINVAL, "Node '" + **bottom + "' is not in a chain starting from '" + *device + "'");
        base_bs = block::chain_below(*bottom_bs);
    }
    if (auto c = check_chain_not_blocked(top, base_bs); !c) return c;
    if (!base_bs && *backing_file) return fail(EINVAL, "backing file specified, but streaming the entire chain");
    if (*filter_node_name) return fail(ENOTSUP, "'filter-node-name' is not supported by this daemon");
    // A filter on top: the first node below it with a backing file gets the
    // data (QEMU streams into the first non-filter overlay).
    while (top->child(block::ChildRole::filtered)) top = block::chain_below(*top);
    block::StreamJobOptions o{.job = *job, .top = top, .base = base_bs, .backing_file = *backing_file};
    return daemon.jobs().start(block::make_stream_job(std::move(o)));
}

Result<void> start_commit(StorageDaemon& daemon, OptionReader& r) {
    auto device = r.require_string("device");
    if (!device) return std::unexpected(device.error());
    auto job = read_job_options(r);
    if (!job) return std::unexpected(job.error());
    auto base_node = r.get_string("base-node");
    if (!base_node) return std::unexpected(base_node.error());
    auto base = r.get_string("base");
    if (!base) return std::unexpected(base.error());
    auto top_node = r.get_string("top-node");
    if (!top_node) return std::unexpected(top_node.error());
    auto top = r.get_string("top");
    if (!top) return std::unexpected(top.error());
    auto backing_file = r.get_string("backing-file");
    if (!backing_file) return std::unexpected(backing_file.error());
    auto filter_node_name = r.get_string("filter-node-name");
    if (!filter_node_name) return std::unexpected(filter_node_name.error());
    if (auto c = r.check_all_used(); !c) return c;

    auto bs = daemon.graph().find(*device);
    if (!bs) return fail(ENODEV, "Device '" + *device + "' not found");
    if (bs->has_parent_nodes()) return fail(EINVAL, "Need a root block node");
    if (auto c = bs->check_not_blocked(); !c) return c;
    std::shared_ptr<block::BlockNode> top_bs = bs;
    if (*top_node && *top) return fail(EINVAL, "'top-node' and 'top' are mutually exclusive");
    if (*top_node) {
        top_bs = daemon.graph().find(**top_node);
        if (!top_bs) return fail(ENOENT, "Cannot find device='' nor node-name='" + **top_node + "'");
        if (top_bs != bs && !block::chain_contains(*bs, *top_bs))
            return fail(EINVAL, "'" + **top_node + "' is not in this backing file chain");
    } else if (*top && bs->driver().filename() != **top) {
        top_bs = find_backing_image(*bs, **top);
        if (!top_bs) return fail(ENOENT, "Top image file " + **top + " not found");
    }
    std::shared_ptr<block::BlockNode> base_bs;
    if (*base_node && *base) return fail(EINVAL, "'base-node' and 'base' are mutually exclusive");
    if (*base_node) {
        base_bs = daemon.graph().find(**base_node);
        if (!base_bs) return fail(ENOENT, "Cannot find device='' nor node-name='" + **base_node + "'");
        if (!block::chain_contains(*top_bs, *base_bs))
            return fail(EINVAL, "'" + **base_node + "' is not in this backing file chain");
    } else if (*base) {
        base_bs = find_backing_image(*top_bs, **base);
        if (!base_bs) return fail(ENOENT, "Can't find '" + **base + "' in the backing chain");
    } else {
        for (auto n = block::chain_below(*top_bs); n; n = block::chain_below(*n)) base_bs = n;
        if (!base_bs) return fail(EINVAL, "There is no backimg image");  // (sic, QEMU's message)
    }
    if (auto c = check_chain_not_blocked(top_bs, block::chain_below(*base_bs)); !c) return c;
    if (top_bs == base_bs) return fail(EINVAL, "cannot commit an image into itself");
    if (*filter_node_name) return fail(ENOTSUP, "'filter-node-name' is not supported by this daemon");
    // The overlay of top: the node in the chain whose backing child is top.
    std::shared_ptr<block::BlockNode> overlay;
    for (auto n = bs; n && n != top_bs; n = block::chain_below(*n))
        if (block::chain_below(*n) == top_bs) overlay = n;
    bool top_has_writer = false;
    for (const block::BlockEdge* e : top_bs->parents())
        if (e->perm() & block::kPermWrite) top_has_writer = true;
    if (top_bs == bs || top_has_writer) {
        if (*backing_file)
            return fail(EINVAL, top_bs == bs ? "'backing-file' specified, but 'top' is the active layer"
                                              : "'backing-file' specified, but 'top' has a writer on it");
        // QEMU's commit_active_start: a mirror of top into the base, which
        // then takes top's place.
        block::MirrorJobOptions m{.job = *job,
                                  .graph = &daemon.graph(),
                                  .commit = true,
                                  .source = top_bs,
                                  .target = base_bs,
                                  .sync = block::MirrorSync::top,
                                  .base = base_bs};
        return daemon.jobs().start(block::make_mirror_job(std::move(m)));
    }
    if (auto c = overlay->check_not_blocked(); !c) return c;
    block::CommitJobOptions o{
        .job = *job, .top = top_bs, .base = base_bs, .overlay = overlay, .backing_file = *backing_file};
    return daemon.jobs().start(block::make_commit_job(std::move(o)));
}

Result<void> start_mirror(StorageDaemon& daemon, OptionReader& r) {
    auto device = r.require_string("device");
    if (!device) return std::unexpected(device.error());
    auto target = r.require_string("target");
    if (!target) return std::unexpected(target.error());
    auto sync = r.require_string("sync");
    if (!sync) return std::unexpected(sync.error());
    auto job = read_job_options(r, true);
    if (!job) return std::unexpected(job.error());
    auto replaces = r.get_string("replaces");
    if (!replaces) return std::unexpected(replaces.error());
    auto granularity = r.get_int64("granularity");
    if (!granularity) return std::unexpected(granularity.error());
    auto buf_size = r.get_int64("buf-size");
    if (!buf_size) return std::unexpected(buf_size.error());
    auto filter_node_name = r.get_string("filter-node-name");
    if (!filter_node_name) return std::unexpected(filter_node_name.error());
    auto copy_mode = r.get_string("copy-mode");
    if (!copy_mode) return std::unexpected(copy_mode.error());
    if (auto c = r.check_all_used(); !c) return c;

    block::MirrorSync mode = block::MirrorSync::full;
    if (*sync == "full") mode = block::MirrorSync::full;
    else if (*sync == "top") mode = block::MirrorSync::top;
    else if (*sync == "none") mode = block::MirrorSync::none;
    else if (*sync != "incremental" && *sync != "bitmap")
        return fail(EINVAL, "Parameter 'sync' does not accept value '" + *sync + "'");
    if (*copy_mode && **copy_mode != "background" && **copy_mode != "write-blocking")
        return fail(EINVAL, "Parameter 'copy-mode' does not accept value '" + **copy_mode + "'");
    // qmp_blockdev_mirror
    auto bs = daemon.graph().find(*device);
    if (!bs) return fail(ENOENT, "Cannot find device='" + *device + "' nor node-name='" + *device + "'");
    if (bs->has_parent_nodes()) return fail(EINVAL, "Need a root block node");
    auto target_bs = daemon.graph().find(*target);
    if (!target_bs) return fail(ENOENT, "Cannot find device='" + *target + "' nor node-name='" + *target + "'");
    // blockdev_mirror_common
    const int64_t g = granularity->value_or(0);
    if (g != 0 && (g < 512 || g > 64 * 1048576))
        return fail(EINVAL, "Parameter 'granularity' expects a value in range [512B, 64MB]");
    if (g & (g - 1)) return fail(EINVAL, "Parameter 'granularity' expects a power of 2");
    if (auto c = bs->check_not_blocked(); !c) return c;
    if (auto c = target_bs->check_not_blocked(); !c) return c;
    if (mode == block::MirrorSync::top && !block::chain_below(*bs)) mode = block::MirrorSync::full;
    if (*replaces) {
        // check_to_replace_node, then the sizes
        auto to_replace = daemon.graph().find(**replaces);
        if (!to_replace) return fail(ENOENT, "Failed to find node with node-name='" + **replaces + "'");
        if (auto c = to_replace->check_not_blocked(); !c) return c;
        if (!block::can_replace(*bs, *to_replace))
            return fail(EINVAL, "Cannot replace '" + **replaces + "' by a node mirrored from '" + *device +
                                    "', because it cannot be guaranteed that doing so would not lead to an abrupt "
                                    "change of visible data");
        if (bs->length() != to_replace->length())
            return fail(EINVAL, "cannot replace image with a mirror image of different size");
    }
    // mirror_start, mirror_start_job
    if (*sync == "incremental" || *sync == "bitmap") return fail(EINVAL, "Sync mode '" + *sync + "' not supported");
    if (buf_size->value_or(0) < 0) return fail(EINVAL, "Invalid parameter 'buf-size'");
    if (block::skip_filters(bs) == block::skip_filters(target_bs)) return fail(EINVAL, "Can't mirror node into itself");
    if (*filter_node_name)
        if (auto c = daemon.graph().check_new_node_name(**filter_node_name); !c) return c;
    block::MirrorJobOptions m{.job = *job,
                              .graph = &daemon.graph(),
                              .source = bs,
                              .replaces = replaces->value_or(""),
                              .filter_node_name = filter_node_name->value_or(""),
                              .write_blocking = *copy_mode && **copy_mode == "write-blocking",
                              .target = target_bs,
                              .sync = mode,
                              .base = mode == block::MirrorSync::top ? block::chain_below(*bs) : nullptr,
                              .granularity = uint64_t(g),
                              .buf_size = uint64_t(buf_size->value_or(0))};
    return daemon.jobs().start(block::make_mirror_job(std::move(m)));
}

// blockdev-backup's arguments, read (and their enums checked) without
// looking anything up: every action of a transaction is parsed first.
struct BackupArgs {
    std::string device, target, sync_name;
    block::BackupSync sync = block::BackupSync::full;
    block::BlockJobOptions job;
    std::optional<std::string> bitmap, filter_node_name;
    std::optional<block::BitmapSyncMode> bitmap_mode;
    bool compress = false;
    std::optional<int64_t> max_workers, max_chunk;
};

Result<BackupArgs> parse_backup(const json& data, const std::string& path) {
    OptionReader r(data, OptionSyntax::json, path);
    BackupArgs a;
    auto device = r.require_string("device");
    if (!device) return std::unexpected(device.error());
    auto target = r.require_string("target");
    if (!target) return std::unexpected(target.error());
    auto sync = r.require_string("sync");
    if (!sync) return std::unexpected(sync.error());
    auto job = read_job_options(r, true);
    if (!job) return std::unexpected(job.error());
    auto bitmap = r.get_string("bitmap");
    if (!bitmap) return std::unexpected(bitmap.error());
    auto bitmap_mode = r.get_string("bitmap-mode");
    if (!bitmap_mode) return std::unexpected(bitmap_mode.error());
    auto compress = r.get_bool("compress");
    if (!compress) return std::unexpected(compress.error());
    auto filter_node_name = r.get_string("filter-node-name");
    if (!filter_node_name) return std::unexpected(filter_node_name.error());
    // x-perf tunes how QEMU's copies run in parallel; its values are checked
    // as QEMU checks them, and this daemon's copies do not need them.
    auto perf = r.get_object("x-perf");
    if (!perf) return std::unexpected(perf.error());
    if (*perf) {
        if (auto v = (*perf)->get_bool("use-copy-range"); !v) return std::unexpected(v.error());
        auto w = (*perf)->get_int64("max-workers");
        if (!w) return std::unexpected(w.error());
        auto c = (*perf)->get_int64("max-chunk");
        if (!c) return std::unexpected(c.error());
        if (auto u = (*perf)->check_all_used(); !u) return std::unexpected(u.error());
        a.max_workers = *w;
        a.max_chunk = *c;
    }
    if (auto c = r.check_all_used(); !c) return std::unexpected(c.error());
    a.device = std::move(*device);
    a.target = std::move(*target);
    a.sync_name = *sync;
    if (*sync == "full") a.sync = block::BackupSync::full;
    else if (*sync == "top") a.sync = block::BackupSync::top;
    else if (*sync == "none") a.sync = block::BackupSync::none;
    else if (*sync == "bitmap" || *sync == "incremental") a.sync = block::BackupSync::bitmap;
    else return fail(EINVAL, "Parameter 'sync' does not accept value '" + *sync + "'");
    if (*bitmap_mode) {
        if (**bitmap_mode == "on-success") a.bitmap_mode = block::BitmapSyncMode::on_success;
        else if (**bitmap_mode == "never") a.bitmap_mode = block::BitmapSyncMode::never;
        else if (**bitmap_mode == "always") a.bitmap_mode = block::BitmapSyncMode::always;
        else return fail(EINVAL, "Parameter 'bitmap-mode' does not accept value '" + **bitmap_mode + "'");
    }
    a.job = *job;
    a.bitmap = std::move(*bitmap);
    a.filter_node_name = std::move(*filter_node_name);
    a.compress = compress->value_or(false);
    return a;
}

// QEMU's blockdev_backup_prepare and do_backup_common, in their order: the
// nodes, then the checks of the arguments against them.
Result<block::BackupJobOptions> resolve_backup(StorageDaemon& daemon, BackupArgs a) {
    auto bs = daemon.graph().find(a.device);
    if (!bs) return fail(ENOENT, "Cannot find device='" + a.device + "' nor node-name='" + a.device + "'");
    auto target_bs = daemon.graph().find(a.target);
    if (!target_bs) return fail(ENOENT, "Cannot find device='" + a.target + "' nor node-name='" + a.target + "'");
    if (a.sync == block::BackupSync::bitmap && !a.bitmap)
        return fail(EINVAL, "must provide a valid bitmap name for '" + a.sync_name + "' sync mode");
    if (a.sync_name == "incremental") {
        if (a.bitmap_mode && *a.bitmap_mode != block::BitmapSyncMode::on_success)
            return fail(EINVAL, "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
        a.bitmap_mode = block::BitmapSyncMode::on_success;
    }
    block::DirtyBitmap* bitmap = nullptr;
    if (a.bitmap) {
        bitmap = bs->dirty_bitmaps().find(*a.bitmap);
        if (!bitmap) return fail(ENOENT, "Bitmap '" + *a.bitmap + "' could not be found");
        if (!a.bitmap_mode) return fail(EINVAL, "Bitmap sync mode must be given when providing a bitmap");
        if (auto c = bitmap->check(block::kBitmapAllowReadOnly); !c) return std::unexpected(c.error());
        if (a.sync == block::BackupSync::none)
            return fail(EINVAL, "sync mode 'none' does not produce meaningful bitmap outputs");
        if (*a.bitmap_mode == block::BitmapSyncMode::never && a.sync != block::BackupSync::bitmap)
            return fail(EINVAL, "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '" +
                                    a.sync_name + "'");
    }
    if (!bitmap && a.bitmap_mode) return fail(EINVAL, "Cannot specify bitmap sync mode without a bitmap");
    if (a.compress) return fail(ENOTSUP, "Compression is not supported for this drive ");
    if (auto c = bs->check_not_blocked(); !c) return std::unexpected(c.error());
    if (auto c = target_bs->check_not_blocked(); !c) return std::unexpected(c.error());
    if (a.max_workers && (*a.max_workers < 1 || *a.max_workers > INT32_MAX))
        return fail(EINVAL, "max-workers must be between 1 and " + std::to_string(INT32_MAX));
    if (a.max_chunk && *a.max_chunk < 0)
        return fail(EINVAL, "max-chunk must be zero (which means no limit) or positive");
    return block::BackupJobOptions{.job = a.job,
                                   .graph = &daemon.graph(),
                                   .source = bs,
                                   .target = target_bs,
                                   .sync = a.sync,
                                   .bitmap = bitmap,
                                   .bitmap_mode = a.bitmap_mode.value_or(block::BitmapSyncMode::on_success),
                                   .filter_node_name = a.filter_node_name.value_or("")};
}

// blockdev-backup as a transaction action (QEMU's blockdev_backup_prepare,
// _commit, _abort): the job is made, set up (its filter inserted) and left
// in status created at prepare, started at commit, cancelled unrun at
// abort. The filter joins the drained component, so it is drained too.
class BackupAction final : public TransactionAction {
public:
    explicit BackupAction(BackupArgs args) : args_(std::move(args)) {}
    Result<void> prepare(Transaction& txn) override {
        auto options = resolve_backup(txn.daemon(), std::move(args_));
        if (!options) return std::unexpected(options.error());
        txn.drain(*options->source);
        jobs_ = &txn.daemon().jobs();
        auto job = jobs_->create(block::make_backup_job(std::move(*options)), txn.job_group());
        if (!job) return std::unexpected(job.error());
        job_ = static_cast<block::BlockJob*>(*job);
        txn.drain(job_->main_node());
        return {};
    }
    void commit() override { jobs_->start_created(*job_); }
    void abort() override { jobs_->cancel_created(*job_); }

private:
    BackupArgs args_;
    block::JobManager* jobs_ = nullptr;
    block::BlockJob* job_ = nullptr;
};

// QEMU's find_block_job_locked: block jobs only, and its error class.
Result<block::BlockJob*> find_block_job(StorageDaemon& daemon, const std::string& id) {
    auto* job = dynamic_cast<block::BlockJob*>(daemon.jobs().find(id));
    if (!job) return fail(ENODEV, "Block job '" + id + "' not found");
    return job;
}

std::unexpected<QmpError> not_active(const Error& e) { return std::unexpected(QmpError{"DeviceNotActive", e.message}); }

}  // namespace

ParsedAction parse_backup_action(const json& data, const std::string& path) {
    auto args = parse_backup(data, path);
    if (!args) return std::unexpected(args.error());
    return std::make_unique<BackupAction>(std::move(*args));
}

void register_job_commands(StorageDaemon& daemon) {
    monitor::QmpDispatcher& qmp = daemon.dispatcher();
    qmp.add_command("block-stream", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        return done(start_stream(daemon, r));
    });
    qmp.add_command("block-commit", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto started = start_commit(daemon, r);
        if (!started && started.error().code == ENODEV)
            return std::unexpected(QmpError{"DeviceNotFound", started.error().message});
        return done(started);
    });
    qmp.add_command("blockdev-mirror", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        return done(start_mirror(daemon, r));
    });
    qmp.add_command("blockdev-backup", action_command(daemon, "blockdev-backup"));
    qmp.add_command("query-block-jobs", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        if (auto c = OptionReader(tree).check_all_used(); !c) return error_of(c);
        json list = json::array();
        for (const auto& job : daemon.jobs().jobs())
            if (auto* b = dynamic_cast<const block::BlockJob*>(job.get())) list.push_back(b->block_info());
        return list;
    });
    // block-job-* name the job "device" (its old name), except the two
    // QEMU added later.
    struct Verb {
        const char* command;
        const char* key;
        block::JobVerb verb;
    };
    for (Verb v : {Verb{"block-job-pause", "device", block::JobVerb::pause},
                   Verb{"block-job-resume", "device", block::JobVerb::resume},
                   Verb{"block-job-complete", "device", block::JobVerb::complete},
                   Verb{"block-job-finalize", "id", block::JobVerb::finalize},
                   Verb{"block-job-dismiss", "id", block::JobVerb::dismiss}}) {
        qmp.add_command(v.command, [&daemon, v](const json& args) -> QmpResult {
            OptionTree tree = arguments(args);
            OptionReader r(tree);
            auto id = r.require_string(v.key);
            if (!id) return error_of(id);
            if (auto c = r.check_all_used(); !c) return error_of(c);
            auto job = find_block_job(daemon, *id);
            if (!job) return not_active(job.error());
            block::JobManager& jobs = daemon.jobs();
            switch (v.verb) {
                case block::JobVerb::pause: return done(jobs.pause(*id));
                case block::JobVerb::resume: return done(jobs.resume(*id));
                case block::JobVerb::complete: return done(jobs.complete(*id));
                case block::JobVerb::finalize: return done(jobs.finalize(*id));
                default: return done(jobs.dismiss(*id));
            }
        });
    }
    qmp.add_command("block-job-cancel", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto id = r.require_string("device");
        if (!id) return error_of(id);
        auto force = r.get_bool("force");
        if (!force) return error_of(force);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        auto job = find_block_job(daemon, *id);
        if (!job) return not_active(job.error());
        if ((*job)->user_paused() && !force->value_or(false))
            return refuse("The block job for device '" + *id + "' is currently paused");
        return done(daemon.jobs().cancel(*id, force->value_or(false)));
    });
    qmp.add_command("block-job-set-speed", [&daemon](const json& args) -> QmpResult {
        OptionTree tree = arguments(args);
        OptionReader r(tree);
        auto id = r.require_string("device");
        if (!id) return error_of(id);
        auto speed = r.get_int64("speed");
        if (!speed) return error_of(speed);
        if (auto c = r.check_all_used(); !c) return error_of(c);
        if (!*speed) return refuse("Parameter 'speed' is missing");
        auto job = find_block_job(daemon, *id);
        if (!job) return not_active(job.error());
        if (auto v = daemon.jobs().find_for(*id, block::JobVerb::set_speed); !v) return error_of(v);
        return done((*job)->set_speed(**speed));
    });
}

}  // namespace ioplane::daemon
