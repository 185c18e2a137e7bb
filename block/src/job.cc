#include "ioplane/block/job.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"
#include "ioplane/core/timer.h"

namespace ioplane::block {
namespace {

// QEMU's JobVerbTable: which verbs each status accepts.
//                                 U  C  R  P  Y  S  W  D  X  E  N
constexpr bool kVerbs[7][11] = {
    /* cancel    */ {0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
    /* pause     */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* resume    */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* set-speed */ {0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0},
    /* complete  */ {0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0},
    /* finalize  */ {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0},
    /* dismiss   */ {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
};

// QEMU's job_is_completed: run() has returned (or the job never will run).
bool is_completed(JobStatus s) {
    return s == JobStatus::waiting || s == JobStatus::pending || s == JobStatus::aborting ||
           s == JobStatus::concluded || s == JobStatus::null;
}

}  // namespace

const char* job_status_name(JobStatus status) {
    static const char* const names[] = {"undefined", "created", "running", "paused",    "ready", "standby",
                                        "waiting",   "pending", "aborting", "concluded", "null"};
    return names[int(status)];
}

const char* job_verb_name(JobVerb verb) {
    static const char* const names[] = {"cancel", "pause", "resume", "set-speed", "complete", "finalize", "dismiss"};
    return names[int(verb)];
}

Result<void> check_job_id(const std::string& id) {
    bool ok = !id.empty() && std::isalpha(static_cast<unsigned char>(id[0]));
    for (char c : id)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') ok = false;
    if (!ok) return fail(EINVAL, "Invalid job ID '" + id + "'");
    return {};
}

Task<void> Job::co_to_main() { co_await schedule_on(*main_context()); }

Job::Job(std::string id, std::string type, bool auto_finalize, bool auto_dismiss)
    : id_(std::move(id)), type_(std::move(type)), auto_finalize_(auto_finalize), auto_dismiss_(auto_dismiss) {}

nlohmann::json Job::info() const {
    assert_in_main_thread();
    nlohmann::json j = {{"id", id_},
                        {"type", type_},
                        {"status", job_status_name(status_)},
                        {"current-progress", progress_current()},
                        {"total-progress", progress_total()}};
    if (error_) j["error"] = *error_;
    return j;
}

Result<void> Job::on_complete() { return fail(ENOTSUP, "The active block job '" + id_ + "' cannot be completed"); }

void Job::kick() {
    assert_in_main_thread();
    kicked_ = true;
    wake_.restart_all();
}

void Job::pause_for_error() {
    assert_in_main_thread();
    if (user_paused_) return;
    user_paused_ = true;
    pause_count_++;
}

// QEMU's job_pause_point: the pause is a wait in the main context, with the
// status paused (standby when ready) for its length.
Task<void> Job::pause_point() {
    if (!should_pause()) co_return;
    co_await co_to_main();
    while (should_pause() && !cancelled()) {
        const JobStatus was = status_;
        manager_->transition(*this, was == JobStatus::ready ? JobStatus::standby : JobStatus::paused);
        busy_ = false;
        kicked_ = false;
        co_await wake_.wait_while([this] { return !kicked_; });
        busy_ = true;
        manager_->transition(*this, was);
    }
}

Task<void> Job::sleep_ns(int64_t ns) {
    co_await co_to_main();
    if (ns > 0 && !cancelled()) {
        Timer timer(*main_context(), [this] { kick(); });
        busy_ = false;
        kicked_ = false;
        timer.arm_in(ns);
        co_await wake_.wait_while([this] { return !kicked_; });
        busy_ = true;
    }
    co_await pause_point();
}

Task<void> Job::co_transition_to_ready() {
    co_await co_to_main();
    manager_->transition(*this, JobStatus::ready);
    emit_ready(*manager_);
}

JobManager::~JobManager() { cancel_all_and_wait(); }

void JobManager::transition(Job& job, JobStatus to) {
    if (job.status_ == to) return;
    job.status_ = to;
    events_("JOB_STATUS_CHANGE", {{"id", job.id_}, {"status", job_status_name(to)}});
}

Job* JobManager::find(const std::string& id) const {
    assert_in_main_thread();
    auto it = std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->id_ == id; });
    return it == jobs_.end() ? nullptr : it->get();
}

Result<Job*> JobManager::find_for(const std::string& id, JobVerb verb) const {
    Job* job = find(id);
    if (!job) return fail(ENOENT, "Job not found");
    if (!kVerbs[int(verb)][int(job->status_)])
        return fail(EPERM, "Job '" + id + "' in state '" + job_status_name(job->status_) +
                               "' cannot accept command verb '" + job_verb_name(verb) + "'");
    return job;
}

Result<void> JobManager::start(std::unique_ptr<Job> job) {
    auto created = create(std::move(job));
    if (!created) return std::unexpected(created.error());
    start_created(**created);
    return {};
}

Result<Job*> JobManager::create(std::unique_ptr<Job> job, std::shared_ptr<JobTxn> group) {
    assert_in_main_thread();
    if (auto r = check_job_id(job->id_); !r) return std::unexpected(r.error());
    if (find(job->id_)) return fail(EEXIST, "Job ID '" + job->id_ + "' already in use");
    Job& j = *job;
    j.manager_ = this;
    jobs_.insert(jobs_.begin(), std::move(job));
    transition(j, JobStatus::created);
    if (auto r = j.setup(); !r) {
        remove(j);  // QEMU's job_early_fail: straight to null
        return std::unexpected(r.error());
    }
    j.txn_ = group ? std::move(group) : std::make_shared<JobTxn>();
    j.txn_->jobs.insert(j.txn_->jobs.begin(), &j);
    return &j;
}

void JobManager::start_created(Job& job) {
    assert_in_main_thread();
    IOPLANE_ASSERT(job.status_ == JobStatus::created && !job.started_);
    job.started_ = true;
    transition(job, JobStatus::running);
    running_++;
    spawn(*main_context(), co_run(job));
}

void JobManager::cancel_created(Job& job) {
    assert_in_main_thread();
    IOPLANE_ASSERT(job.status_ == JobStatus::created && !job.started_);
    job.cancel_requested_ = true;
    job.cancelled_.store(true, std::memory_order_release);
    finalize_single(job);
}

Task<void> JobManager::co_run(Job& job) {
    co_await job.pause_point();  // a job may be paused before it starts
    Result<void> r;
    if (!job.cancelled()) r = co_await job.run();
    co_await Job::co_to_main();
    running_--;
    aio_wait_kick();
    job.completed_ = true;
    job.busy_ = false;
    if (!r && job.ret_ == 0) {
        job.ret_ = -r.error().code;
        job.error_ = r.error().message;
    }
    completed(job);
}

// QEMU's job_update_rc: a cancelled job failed with ECANCELED; a failed
// one is aborting.
void JobManager::update_rc(Job& job) {
    if (job.ret_ == 0 && job.cancelled()) job.ret_ = -ECANCELED;
    if (job.ret_ == 0) return;
    if (!job.error_) job.error_ = std::strerror(-job.ret_);
    transition(job, JobStatus::aborting);
}

// QEMU's job_completed: run() returned; a failed or cancelled job aborts its
// group, one that succeeded waits for the rest of it.
void JobManager::completed(Job& job) {
    update_rc(job);
    if (job.ret_ != 0) txn_abort(job);
    else txn_success(job);
}

// QEMU's job_completed_txn_success: once every job of the group is done,
// all go pending, and are finalized at once unless one waits for
// job-finalize (auto-finalize off).
void JobManager::txn_success(Job& job) {
    transition(job, JobStatus::waiting);
    const auto& group = job.txn_->jobs;
    if (!std::all_of(group.begin(), group.end(), [](Job* j) { return is_completed(j->status_); })) return;
    for (Job* j : group) {
        IOPLANE_ASSERT(j->ret_ == 0);
        transition(*j, JobStatus::pending);
        if (!j->auto_finalize_) j->emit_pending(*this);
    }
    if (std::all_of(group.begin(), group.end(), [](Job* j) { return j->auto_finalize_; })) do_finalize(job);
}

// QEMU's job_completed_txn_abort: every other job of the group is cancelled
// (forced: no result matters now) and waited for, then each aborts. A job
// whose cancel this causes comes back here from its own completed() and
// leaves the work to this call.
void JobManager::txn_abort(Job& job) {
    const std::shared_ptr<JobTxn> group = job.txn_;  // outlives the jobs it holds
    if (group->aborting) return;
    group->aborting = true;
    for (Job* other : std::vector<Job*>(group->jobs))
        if (other != &job) cancel_async(*other, true);
    while (!group->jobs.empty()) {
        Job& other = *group->jobs.front();
        if (!is_completed(other.status_)) {
            IOPLANE_ASSERT(other.cancel_requested_);
            other.kick();
            // The main loop polls here: the job's coroutine ends in a BH.
            aio_wait_while(*main_context(), [&other] { return !is_completed(other.status_); });
        }
        finalize_single(other);  // may free it
    }
}

// QEMU's job_do_finalize: each job of the group prepares (graph changes that
// may fail); if one fails the group aborts, else each is finalized.
void JobManager::do_finalize(Job& job) {
    const std::vector<Job*> group = job.txn_->jobs;
    for (Job* j : group) {
        if (j->ret_ != 0) continue;
        if (auto r = j->prepare(); !r) {
            j->ret_ = -r.error().code;
            j->error_ = r.error().message;
            update_rc(*j);
            // QEMU passes `job` here, which leaves `job` itself to commit
            // when another job's prepare failed; the failed one's group
            // aborts whole.
            txn_abort(*j);
            return;
        }
    }
    for (Job* j : group) finalize_single(*j);
}

// QEMU's job_finalize_single: commit() or abort(), clean(), the job's event
// if it ever ran, and concluded (null at once with auto-dismiss or if it
// never ran: the job is freed).
void JobManager::finalize_single(Job& job) {
    IOPLANE_ASSERT(is_completed(job.status_) || !job.started_);
    update_rc(job);
    if (job.ret_ == 0) job.commit();
    else job.abort();
    job.clean();
    if (job.started_) {
        if (job.cancelled()) job.emit_cancelled(*this);
        else job.emit_completed(*this);
    }
    std::erase(job.txn_->jobs, &job);
    job.txn_.reset();
    conclude(job);
}

void JobManager::conclude(Job& job) {
    transition(job, JobStatus::concluded);
    if (job.auto_dismiss_ || !job.started_) remove(job);
}

void JobManager::remove(Job& job) {
    transition(job, JobStatus::null);
    std::erase_if(jobs_, [&](const auto& j) { return j.get() == &job; });
}

// QEMU's job_cancel_async: the job decides whether the cancel is forced (a
// ready mirror's soft cancel completes it instead); a user pause ends. A
// soft cancel of a job whose run() returned is ignored.
void JobManager::cancel_async(Job& job, bool force) {
    force = job.on_cancel(force);
    if (job.user_paused_) {
        job.user_paused_ = false;
        job.pause_count_--;
    }
    if (force || !job.completed_) {
        job.cancel_requested_ = true;
        if (force) job.cancelled_.store(true, std::memory_order_release);
    }
}

// QEMU's job_cancel: a running job is woken to see the cancel; one waiting
// (for its group, or to be finalized) runs no more, so its group aborts now.
void JobManager::cancel_job(Job& job, bool force) {
    cancel_async(job, force);
    if (!job.completed_) job.kick();
    else if (job.cancel_requested_) {
        job.cancelled_.store(true, std::memory_order_release);
        txn_abort(job);
    }
}

Result<void> JobManager::cancel(const std::string& id, bool force) {
    auto job = find_for(id, JobVerb::cancel);
    if (!job) return std::unexpected(job.error());
    cancel_job(**job, force);
    return {};
}

Result<void> JobManager::pause(const std::string& id) {
    auto job = find_for(id, JobVerb::pause);
    if (!job) return std::unexpected(job.error());
    if ((*job)->user_paused_) return fail(EPERM, "Job is already paused");
    (*job)->user_paused_ = true;
    (*job)->pause_count_++;
    return {};
}

Result<void> JobManager::resume(const std::string& id) {
    auto job = find_for(id, JobVerb::resume);
    if (!job) return std::unexpected(job.error());
    Job& j = **job;
    if (!j.user_paused_) return fail(EPERM, "Can't resume a job that was not paused");
    j.user_paused_ = false;
    j.pause_count_--;
    j.on_resume();
    j.kick();
    return {};
}

Result<void> JobManager::complete(const std::string& id) {
    auto job = find_for(id, JobVerb::complete);
    if (!job) return std::unexpected(job.error());
    if ((*job)->cancel_requested_)
        return fail(EPERM, "The active block job '" + id + "' cannot be completed");
    return (*job)->on_complete();
}

Result<void> JobManager::finalize(const std::string& id) {
    auto job = find_for(id, JobVerb::finalize);
    if (!job) return std::unexpected(job.error());
    do_finalize(**job);
    return {};
}

Result<void> JobManager::dismiss(const std::string& id) {
    auto job = find_for(id, JobVerb::dismiss);
    if (!job) return std::unexpected(job.error());
    remove(**job);
    return {};
}

nlohmann::json JobManager::query() const {
    assert_in_main_thread();
    nlohmann::json list = nlohmann::json::array();
    for (const auto& j : jobs_) list.push_back(j->info());
    return list;
}

// QEMU's job_cancel_sync_all: every job is cancelled (forced) and waited
// for; concluded jobs are dismissed, pending ones abort.
void JobManager::cancel_all_and_wait() {
    assert_in_main_thread();
    // By id: a job's cancel may end (and free) others of its group.
    std::vector<std::string> ids;
    for (const auto& j : jobs_) ids.push_back(j->id_);
    for (const std::string& id : ids) {
        Job* j = find(id);
        if (j == nullptr || j->status_ == JobStatus::aborting) continue;
        if (j->status_ == JobStatus::concluded) remove(*j);
        else cancel_job(*j, true);
    }
    aio_wait_while(*main_context(), [this] { return running_ > 0; });
}

}  // namespace ioplane::block
