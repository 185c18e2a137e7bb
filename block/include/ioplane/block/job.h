// Jobs (QEMU's Job, job.c): long-running operations the monitor starts and
// steers by id, with QEMU's status machine, verbs and JOB_STATUS_CHANGE
// events.
//
//   created -> running <-> paused          (job-pause, job-resume)
//                 |  \-> ready <-> standby  (jobs that wait for job-complete)
//                 v
//              waiting -> pending -> concluded -> null
//                 \-> aborting -> concluded (error or cancelled)
//
// pending -> concluded happens at once with auto-finalize (the default),
// else on job-finalize; concluded -> null (the job is gone) at once with
// auto-dismiss, else on job-dismiss.
//
// A job's work (run()) is a coroutine. It starts in the main context; a block
// job's requests carry it into its nodes' context, where it stays between
// requests, and it follows them when they move to another IOThread. The
// job's status, its pauses and its sleeps live in the main thread: the
// coroutine visits the main context to pause, to sleep and to end.
//
// Thread contract: main thread, every member, except where a member says
// otherwise.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioplane/core/co_queue.h"
#include "ioplane/core/error.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

enum class JobStatus { undefined, created, running, paused, ready, standby, waiting, pending, aborting, concluded, null };
enum class JobVerb { cancel, pause, resume, set_speed, complete, finalize, dismiss };
// Any thread.
const char* job_status_name(JobStatus status);
const char* job_verb_name(JobVerb verb);

class Job;
class JobManager;

// QEMU's JobTxn: jobs that end together (a transaction's
// completion-mode=grouped). A job done first waits (status waiting) for the
// others; when all are done, all go pending and are finalized together;
// when one fails or is cancelled, the others are cancelled (forced) and
// all abort. A job started alone is the only member of a group of its own.
// Main thread.
struct JobTxn {
    std::vector<Job*> jobs;  // newest first, as QEMU's list
    bool aborting = false;
};

// Any thread: QEMU's id_wellformed (a letter, then letters, digits, '-',
// '.', '_'), else "Invalid job ID '...'".
Result<void> check_job_id(const std::string& id);

class Job {
public:
    // `type`: QEMU's JobType ("create", "stream", "commit", ...).
    Job(std::string id, std::string type, bool auto_finalize, bool auto_dismiss);
    virtual ~Job() = default;
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

    // Any thread (constant).
    const std::string& id() const { return id_; }
    const std::string& type() const { return type_; }
    JobStatus status() const { return status_; }
    bool auto_finalize() const { return auto_finalize_; }
    bool auto_dismiss() const { return auto_dismiss_; }
    // QEMU's JobInfo.
    nlohmann::json info() const;
    // Whether a pause was asked for (job-pause) and not yet resumed.
    bool user_paused() const { return user_paused_; }
    // A pause was asked for (by the user or the job), even if the job has
    // not reached its next pause point yet.
    bool paused() const { return pause_count_.load(std::memory_order_relaxed) > 0; }
    // Not in a sleep or a pause: between two pause points (QEMU's busy).
    bool busy() const { return busy_; }
    // The error the job ended with, once it ended with one.
    const std::optional<std::string>& error() const { return error_; }
    // Any thread: progress (QEMU's current-progress and total-progress).
    uint64_t progress_current() const { return progress_current_.load(std::memory_order_relaxed); }
    uint64_t progress_total() const { return progress_total_.load(std::memory_order_relaxed); }
    // Any thread: cancelled for good (a forced cancel, or any cancel of a job
    // whose cancel is not soft): the work should stop at once.
    bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }

protected:
    // Main thread, in JobManager::start before the job runs: takes what the
    // job needs (nodes, permissions). A failure ends the job before it ran
    // (status null) and is start()'s error.
    virtual Result<void> setup() { return {}; }
    // The work: a coroutine started in the main context. A cancelled job
    // should stop soon; what it returns then does not matter.
    virtual Task<Result<void>> run() = 0;
    // Main thread, after run() succeeded and the job is finalized: the graph
    // changes that make the result visible (a stream's new backing file). A
    // failure aborts the job instead.
    virtual Result<void> prepare() { return {}; }
    // Main thread: after a successful prepare(), or instead of it when the
    // job failed or was cancelled; clean() then in either case.
    virtual void commit() {}
    virtual void abort() {}
    virtual void clean() {}
    // Main thread: job-cancel with `force`. Returns whether the cancel is
    // forced after all (a job without a soft cancel: always).
    virtual bool on_cancel(bool force) {
        (void)force;
        return true;
    }
    // Main thread: job-complete, accepted in the ready status.
    virtual Result<void> on_complete();
    // Main thread: job-resume (a block job forgets its I/O error status).
    virtual void on_resume() {}
    // Main thread: the events a block job adds (BLOCK_JOB_* with its
    // BlockJobInfo); nothing for other jobs.
    virtual void emit_completed(JobManager&) {}
    virtual void emit_cancelled(JobManager&) {}
    virtual void emit_pending(JobManager&) {}
    virtual void emit_ready(JobManager&) {}

    // Coroutine, any context: where a job may pause (job-pause). Returns
    // at once unless a pause was asked for; then the coroutine waits in the
    // main context (status paused, or standby when ready) until resumed or
    // cancelled, and continues there.
    Task<void> pause_point();
    // Coroutine, any context: waits `ns` (continuing in the main context);
    // a cancel, a resume or a speed change ends the wait early.
    Task<void> sleep_ns(int64_t ns);
    // Coroutine, any context: continues in the main context, in an
    // iteration of its own loop (a BH) even when already there: what the job
    // does in the main thread may poll (a drained section), which it must
    // not do inside another callback — resumed by an I/O completion of a
    // node in the main context, a drain would wait for completions that the
    // callback it runs in holds back (QEMU runs job_exit from a BH too).
    static Task<void> co_to_main();
    // Coroutine, any context: running -> ready (with the job's event);
    // continues in the main context.
    Task<void> co_transition_to_ready();
    // Any thread.
    void progress_update(uint64_t done) { progress_current_.fetch_add(done, std::memory_order_relaxed); }
    void progress_set_remaining(uint64_t remaining) {
        progress_total_.store(progress_current() + remaining, std::memory_order_relaxed);
    }
    void progress_increase_remaining(uint64_t more) { progress_total_.fetch_add(more, std::memory_order_relaxed); }
    void set_progress(uint64_t current, uint64_t total) {
        progress_current_.store(current, std::memory_order_relaxed);
        progress_total_.store(total, std::memory_order_relaxed);
    }
    // Main thread: ends an early sleep or a pause (cancel, resume, speed).
    void kick();
    // Main thread: pauses the job as job-pause would (an I/O error with
    // on-error=stop): it stays paused until job-resume.
    void pause_for_error();
    JobManager& manager() const { return *manager_; }
    // Whether a cancel was asked for, forced or soft.
    bool cancel_requested() const { return cancel_requested_; }

private:
    friend class JobManager;
    bool should_pause() const { return pause_count_.load(std::memory_order_acquire) > 0; }

    const std::string id_;
    const std::string type_;
    const bool auto_finalize_;
    const bool auto_dismiss_;
    JobManager* manager_ = nullptr;
    std::shared_ptr<JobTxn> txn_;  // while the job is in one (until it concludes)
    JobStatus status_ = JobStatus::undefined;
    bool started_ = false;     // run() was started
    bool completed_ = false;   // run() returned
    bool busy_ = true;
    bool cancel_requested_ = false;
    std::atomic<bool> cancelled_{false};
    bool user_paused_ = false;              // job-pause, or an error with on-error=stop
    std::atomic<unsigned> pause_count_{0};  // the user's pause and the job's own
    bool kicked_ = false;                   // ends the current sleep or pause
    CoQueue wake_;                          // the sleeping or paused coroutine
    std::atomic<uint64_t> progress_current_{0}, progress_total_{0};
    int ret_ = 0;  // negative errno once failed
    std::optional<std::string> error_;
};

class JobManager {
public:
    // Receives each event: its name and data.
    using EventSink = std::function<void(const std::string& name, nlohmann::json data)>;
    explicit JobManager(EventSink events) : events_(std::move(events)) {}
    ~JobManager();

    // Starts `job`: status created, then its setup(), then running. Refused
    // if its id is malformed or in use; a setup() error ends it at once
    // (status null).
    Result<void> start(std::unique_ptr<Job> job);
    // start() in two steps, for a transaction (QEMU's job_create, then
    // job_start once every action is prepared): create() keeps the job in
    // status created after its setup(), in `group` if given (else in a group
    // of its own); start_created() runs it; cancel_created() ends one that
    // never ran (aborting: its abort() and clean(), then null, no event).
    Result<Job*> create(std::unique_ptr<Job> job, std::shared_ptr<JobTxn> group = nullptr);
    void start_created(Job& job);
    void cancel_created(Job& job);
    // QEMU's job-* commands; a verb the job's status does not accept is
    // refused with QEMU's message.
    Result<void> cancel(const std::string& id, bool force = false);
    Result<void> pause(const std::string& id);
    Result<void> resume(const std::string& id);
    Result<void> complete(const std::string& id);
    Result<void> finalize(const std::string& id);
    Result<void> dismiss(const std::string& id);
    // The job `id` if it accepts `verb`, else QEMU's message.
    Result<Job*> find_for(const std::string& id, JobVerb verb) const;
    Job* find(const std::string& id) const;
    // Newest first, as QEMU lists them.
    const std::vector<std::unique_ptr<Job>>& jobs() const { return jobs_; }
    nlohmann::json query() const;
    // Cancels every job (forced) and waits until each has ended (shutdown).
    void cancel_all_and_wait();
    // Sends an event (the jobs' own BLOCK_JOB_* events).
    void emit(const std::string& name, nlohmann::json data) { events_(name, std::move(data)); }

private:
    friend class Job;
    // QEMU's job.c, by the same names.
    void transition(Job& job, JobStatus to);
    void update_rc(Job& job);
    void completed(Job& job);
    void txn_success(Job& job);
    void txn_abort(Job& job);
    void do_finalize(Job& job);
    void finalize_single(Job& job);
    void conclude(Job& job);
    void remove(Job& job);
    void cancel_async(Job& job, bool force);
    void cancel_job(Job& job, bool force);
    Task<void> co_run(Job& job);

    EventSink events_;
    std::vector<std::unique_ptr<Job>> jobs_;  // newest first, as QEMU lists them
    unsigned running_ = 0;
};

}  // namespace ioplane::block
