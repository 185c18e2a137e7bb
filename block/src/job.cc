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

Result<Job*> JobManager::create(std::unique_ptr<Job> job) {
    assert_in_main_thread();
    if (auto r = check_job_id(job->id_); !r) return std::unexpected(r.error());
    if (find(job->id_)) return fail(EEXIST, "Job ID '" + job->id_ + "' already in use");
    Job& j = *job;
    j.manager_ = this;
    jobs_.push_back(std::move(job));
    transition(j, JobStatus::created);
    if (auto r = j.setup(); !r) {
        remove(j);  // QEMU's job_early_fail: straight to null
        return std::unexpected(r.error());
    }
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
    job.ret_ = -ECANCELED;
    job.error_ = std::strerror(ECANCELED);
    transition(job, JobStatus::aborting);
    abort_job(job);
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

// QEMU's job_completed: a failed or cancelled job aborts; one that succeeded
// waits to be finalized (at once with auto-finalize).
void JobManager::completed(Job& job) {
    if (job.ret_ == 0 && job.cancelled()) job.ret_ = -ECANCELED;
    if (job.ret_ != 0) {
        if (!job.error_) job.error_ = std::strerror(-job.ret_);
        transition(job, JobStatus::aborting);
        abort_job(job);
        return;
    }
    transition(job, JobStatus::waiting);
    transition(job, JobStatus::pending);
    if (!job.auto_finalize_) {
        job.emit_pending(*this);
        return;
    }
    do_finalize(job);
}

void JobManager::do_finalize(Job& job) {
    if (auto r = job.prepare(); !r) {
        job.ret_ = -r.error().code;
        job.error_ = r.error().message;
        transition(job, JobStatus::aborting);
        abort_job(job);
        return;
    }
    job.commit();
    job.clean();
    job.emit_completed(*this);
    conclude(job);
}

void JobManager::abort_job(Job& job) {
    job.abort();
    job.clean();
    if (job.cancelled()) job.emit_cancelled(*this);
    else job.emit_completed(*this);
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
// running job is woken to see the cancel; one waiting to be finalized runs
// no more, so it aborts now.
void JobManager::cancel_job(Job& job, bool force) {
    force = job.on_cancel(force);
    if (job.user_paused_) {
        job.user_paused_ = false;
        job.pause_count_--;
    }
    if (force || !job.completed_) {
        job.cancel_requested_ = true;
        if (force) job.cancelled_.store(true, std::memory_order_release);
    }
    if (!job.completed_) {
        job.kick();
        return;
    }
    if (!job.cancel_requested_) return;
    job.cancelled_.store(true, std::memory_order_release);
    job.ret_ = -ECANCELED;
    job.error_ = std::strerror(ECANCELED);
    transition(job, JobStatus::aborting);
    abort_job(job);
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
    std::vector<Job*> all;
    for (const auto& j : jobs_) all.push_back(j.get());
    for (Job* j : all) {
        if (j->status_ == JobStatus::concluded) {
            remove(*j);
            continue;
        }
        cancel_job(*j, true);
    }
    aio_wait_while(*main_context(), [this] { return running_ > 0; });
}

}  // namespace ioplane::block
