// BlockJob (QEMU's BlockJob, blockjob.c): a job that works on block nodes.
// It reaches its main node through a BlockBackend of its own, counted like
// an export's requests (a drained section waits for the job's request in
// flight and holds the next one back), and its other nodes through edges
// that take and share what the job needs. It adds to Job the rate limit
// (`speed`), the I/O error policy (on-error), the nodes' op blockers (one
// job per node), query-block-jobs' BlockJobInfo and the BLOCK_JOB_* events.
//
// Thread contract: main thread, except the co_* members (the job's
// coroutine, any context).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ioplane/block/backend.h"
#include "ioplane/block/job.h"
#include "ioplane/block/node.h"

namespace ioplane::block {

// QEMU's BlockdevOnError.
enum class OnError { report, ignore, enospc, stop, auto_ };
// Any thread: parses "report", "ignore", ...; nullopt for anything else.
std::optional<OnError> parse_on_error(const std::string& name);

struct BlockJobOptions {
    std::string id;
    bool auto_finalize = true;
    bool auto_dismiss = true;
    int64_t speed = 0;  // bytes per second, 0: unlimited (negative: refused by setup)
    OnError on_error = OnError::report;         // a read failed (a mirror's on-source-error)
    OnError on_target_error = OnError::report;  // a write failed (on-target-error)
};

class BlockJob : public Job {
public:
    BlockJob(std::string type, const BlockJobOptions& options);
    ~BlockJob() override;

    // QEMU's BlockJobInfo (query-block-jobs).
    nlohmann::json block_info() const;
    // block-job-set-speed.
    Result<void> set_speed(int64_t speed);
    // Any thread.
    uint64_t speed() const { return speed_.load(std::memory_order_relaxed); }
    // Main thread, after setup: the node the job works through (a backup's
    // filter, a mirror's source).
    BlockNode& main_node() const { return blk_->node(); }

    // A step of co_walk() that failed: why, and whether a read failed.
    struct StepFailure {
        Error error;
        bool read = false;
    };
    // The job's context, inside a request of the job: copies what
    // [offset, offset + bytes) needs; may run again after a failure.
    using WalkStep = std::function<Task<std::optional<StepFailure>>(uint64_t offset, uint64_t bytes)>;

protected:
    // Checks the options (QEMU's block_job_create), then setup_nodes().
    Result<void> setup() final;
    // setup(): takes the job's nodes with attach_main() and attach_node().
    virtual Result<void> setup_nodes() = 0;
    // setup(): the job's user of `node` ("<type> job '<id>'"), with `perm`
    // and sharing `shared`; refused naming the user it conflicts with, or
    // when the node serves another job.
    Result<void> attach_main(std::shared_ptr<BlockNode> node, uint32_t perm, uint32_t shared);
    // setup(): an edge to `node` (named `child_name` in messages: "base",
    // "intermediate node"), taking `perm` and sharing `shared`. The job may
    // send requests through it inside a request of its main backend when the
    // node is in the main node's component.
    Result<BlockEdge*> attach_node(std::shared_ptr<BlockNode> node, const char* child_name, uint32_t perm,
                                   uint32_t shared);
    BlockBackend& blk() const { return *blk_; }
    // setup(): marks `node` as this job's (its op blocker), refused if it
    // serves another job; release_nodes() frees it.
    Result<void> block_node(BlockNode& node);
    // setup(): `node` is writable for the job's length (QEMU reopens a
    // read-only stream top or commit base): read-only again when the job
    // ends or its setup fails, unless keep_writable() says otherwise (an
    // active commit's base that took the active layer's place).
    Result<void> reopen_writable(const std::shared_ptr<BlockNode>& node);
    void keep_writable() { reopened_.reset(); }
    // Drops the backend and the edges (permissions and op blockers go with
    // them). clean() does it; a job that changes the graph in prepare()
    // does it first, so that its own permissions are not in the way.
    void release_nodes();
    // Releases the nodes and makes a node reopened for the job read-only
    // again.
    void clean() override;

    // Coroutine: QEMU's block_job_ratelimit_sleep — a pause point, and a
    // sleep as long as the work done so far exceeds `speed`.
    Task<void> co_ratelimit_sleep();
    // Any thread: `bytes` of work done, for the rate limit.
    void ratelimit_processed(uint64_t bytes);

    // What the job does about an I/O error (QEMU's block_job_error_action):
    // report (the job fails), ignore, or stop (the job pauses until
    // job-resume, then retries); BLOCK_JOB_ERROR tells the monitor.
    enum class ErrorAction { report, ignore, stop };
    Task<ErrorAction> co_error_action(bool read, int error);
    // Any thread: what a job that reports an I/O error fails with: the
    // errno's text, as QEMU's job_update_rc words it ("Input/output error").
    static Error io_error(int error);

    // Coroutine: [0, len) in steps of `step` bytes, up to `max_in_flight`
    // of them side by side (each inside a request of the job), with a pause
    // point and the rate limit before each. After a failure the error policy
    // decides about the first failed step by offset, and the walk goes on
    // from there. Ends at a cancel, at the end, or with the error reported.
    Task<Result<void>> co_walk(uint64_t len, uint64_t step, uint64_t max_in_flight, WalkStep fn);

    void emit_completed(JobManager& manager) override;
    void emit_cancelled(JobManager& manager) override;
    void emit_pending(JobManager& manager) override;
    void emit_ready(JobManager& manager) override;
    void on_resume() override { io_status_ = "ok"; }

    // "stream job 'job0'": what permission messages call this job.
    std::string description() const { return type() + " job '" + id() + "'"; }

private:
    nlohmann::json event_data() const;

    const OnError on_error_, on_target_error_;
    std::atomic<uint64_t> speed_;  // written in the main thread, read by the job
    const int64_t initial_speed_;
    std::string io_status_ = "ok";  // ok, failed, nospace
    std::unique_ptr<BlockBackend> blk_;
    std::vector<std::unique_ptr<BlockEdge>> edges_;
    std::vector<std::shared_ptr<BlockNode>> blocked_;  // nodes whose op blocker is this job
    std::shared_ptr<BlockNode> reopened_;              // made writable by reopen_writable()

    // QEMU's RateLimit (100 ms slices), in the job's coroutine.
    struct RateLimit {
        int64_t slice_start = 0, slice_end = 0;
        uint64_t dispatched = 0;
    } limit_;
    std::atomic<uint64_t> unaccounted_{0};  // ratelimit_processed since the last sleep
};

}  // namespace ioplane::block
