#include "ioplane/block/job.h"

#include <algorithm>
#include <cstring>

#include "ioplane/core/aio_wait.h"
#include "ioplane/core/coroutine.h"
#include "ioplane/core/main_loop.h"

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

Job::Job(std::string id, std::string type, bool auto_finalize, bool auto_dismiss)
    : id_(std::move(id)), type_(std::move(type)), auto_finalize_(auto_finalize), auto_dismiss_(auto_dismiss) {}

nlohmann::json Job::info() const {
    nlohmann::json j = {{"id", id_},
                        {"type", type_},
                        {"status", job_status_name(status_)},
                        {"current-progress", current_progress_},
                        {"total-progress", total_progress_}};
    if (error_) j["error"] = *error_;
    return j;
}

JobManager::~JobManager() { cancel_all_and_wait(); }

void JobManager::transition(Job& job, JobStatus to) {
    job.status_ = to;
    events_("JOB_STATUS_CHANGE", {{"id", job.id_}, {"status", job_status_name(to)}});
}

Result<Job*> JobManager::find_for(const std::string& id, JobVerb verb) const {
    assert_in_main_thread();
    auto it = std::find_if(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->id_ == id; });
    if (it == jobs_.end()) return fail(ENOENT, "Job not found");
    Job& job = **it;
    if (!kVerbs[int(verb)][int(job.status_)])
        return fail(EPERM, "Job '" + id + "' in state '" + job_status_name(job.status_) +
                               "' cannot accept command verb '" + job_verb_name(verb) + "'");
    return &job;
}

Result<void> JobManager::start(std::unique_ptr<Job> job) {
    assert_in_main_thread();
    if (std::any_of(jobs_.begin(), jobs_.end(), [&](const auto& j) { return j->id_ == job->id_; }))
        return fail(EEXIST, "Job ID '" + job->id_ + "' already in use");
    Job& j = *job;
    jobs_.push_back(std::move(job));
    transition(j, JobStatus::created);
    transition(j, JobStatus::running);
    running_++;
    spawn(*main_context(), co_run(j));
    return {};
}

Task<void> JobManager::co_run(Job& job) {
    Result<void> r = co_await job.run();
    running_--;
    aio_wait_kick();
    if (job.cancelled_) r = fail(ECANCELED, std::strerror(ECANCELED));
    if (!r) {
        job.error_ = r.error().message;
        transition(job, JobStatus::aborting);
        conclude(job);
        co_return;
    }
    transition(job, JobStatus::waiting);
    transition(job, JobStatus::pending);
    if (job.auto_finalize_) conclude(job);
}

void JobManager::conclude(Job& job) {
    transition(job, JobStatus::concluded);
    if (job.auto_dismiss_) remove(job);
}

void JobManager::remove(Job& job) {
    transition(job, JobStatus::null);
    std::erase_if(jobs_, [&](const auto& j) { return j.get() == &job; });
}

Result<void> JobManager::cancel(const std::string& id) {
    auto job = find_for(id, JobVerb::cancel);
    if (!job) return std::unexpected(job.error());
    (*job)->cancelled_ = true;
    // Waiting to be finalized: nothing runs any more, the job ends now.
    if ((*job)->status_ == JobStatus::pending) {
        (*job)->error_ = std::strerror(ECANCELED);
        transition(**job, JobStatus::aborting);
        conclude(**job);
    }
    return {};
}

Result<void> JobManager::pause(const std::string& id) {
    auto job = find_for(id, JobVerb::pause);
    if (!job) return std::unexpected(job.error());
    (*job)->pauses_++;
    return {};
}

Result<void> JobManager::resume(const std::string& id) {
    auto job = find_for(id, JobVerb::resume);
    if (!job) return std::unexpected(job.error());
    if ((*job)->pauses_ == 0) return fail(EPERM, "Can't resume a job that was not paused");
    (*job)->pauses_--;
    return {};
}

Result<void> JobManager::complete(const std::string& id) {
    auto job = find_for(id, JobVerb::complete);
    if (!job) return std::unexpected(job.error());
    return fail(ENOTSUP, "The active block job '" + id + "' cannot be completed");
}

Result<void> JobManager::finalize(const std::string& id) {
    auto job = find_for(id, JobVerb::finalize);
    if (!job) return std::unexpected(job.error());
    conclude(**job);
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

void JobManager::cancel_all_and_wait() {
    assert_in_main_thread();
    for (const auto& j : jobs_) j->cancelled_ = true;
    aio_wait_while(*main_context(), [this] { return running_ > 0; });
}

}  // namespace ioplane::block
