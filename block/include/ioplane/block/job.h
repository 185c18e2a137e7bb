// Jobs (QEMU's Job, job.c): long-running operations the monitor starts and
// steers by id, with QEMU's status machine, verbs and JOB_STATUS_CHANGE
// events. A job's work is a coroutine in the main context; block jobs run
// their I/O in their nodes' contexts from there.
//
//   created -> running -> waiting -> pending -> concluded -> null
//                  \-> aborting -> concluded (error)
//
// pending -> concluded happens at once with auto-finalize (the default),
// else on job-finalize; concluded -> null (the job is gone) at once with
// auto-dismiss, else on job-dismiss.
//
// Thread contract: main thread, every member.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ioplane/core/error.h"
#include "ioplane/core/task.h"

namespace ioplane::block {

enum class JobStatus { undefined, created, running, paused, ready, standby, waiting, pending, aborting, concluded, null };
enum class JobVerb { cancel, pause, resume, set_speed, complete, finalize, dismiss };
const char* job_status_name(JobStatus status);
const char* job_verb_name(JobVerb verb);

class JobManager;

class Job {
public:
    // `type`: QEMU's JobType ("create", "mirror", ...).
    Job(std::string id, std::string type, bool auto_finalize, bool auto_dismiss);
    virtual ~Job() = default;
    Job(const Job&) = delete;
    Job& operator=(const Job&) = delete;

    const std::string& id() const { return id_; }
    const std::string& type() const { return type_; }
    JobStatus status() const { return status_; }
    // QEMU's JobInfo.
    nlohmann::json info() const;

protected:
    // The work, in the main context. A cancelled job (cancelled()) should
    // stop soon; what it returns then does not matter.
    virtual Task<Result<void>> run() = 0;
    bool cancelled() const { return cancelled_; }
    void set_progress(uint64_t current, uint64_t total) {
        current_progress_ = current;
        total_progress_ = total;
    }

private:
    friend class JobManager;
    const std::string id_;
    const std::string type_;
    const bool auto_finalize_;
    const bool auto_dismiss_;
    JobStatus status_ = JobStatus::undefined;
    bool cancelled_ = false;
    unsigned pauses_ = 0;  // user pauses (job-pause)
    uint64_t current_progress_ = 0, total_progress_ = 0;
    std::optional<std::string> error_;
};

class JobManager {
public:
    // Receives each event: its name and data.
    using EventSink = std::function<void(const std::string& name, nlohmann::json data)>;
    explicit JobManager(EventSink events) : events_(std::move(events)) {}
    ~JobManager();

    // Starts `job` (created, then running); refused if its id is in use.
    Result<void> start(std::unique_ptr<Job> job);
    // QEMU's job-* commands; a verb the job's status does not accept is
    // refused with QEMU's message.
    Result<void> cancel(const std::string& id);
    Result<void> pause(const std::string& id);
    Result<void> resume(const std::string& id);
    Result<void> complete(const std::string& id);
    Result<void> finalize(const std::string& id);
    Result<void> dismiss(const std::string& id);
    nlohmann::json query() const;
    // Cancels every running job and waits until none runs (shutdown).
    void cancel_all_and_wait();

private:
    Result<Job*> find_for(const std::string& id, JobVerb verb) const;
    void transition(Job& job, JobStatus to);
    void conclude(Job& job);
    void remove(Job& job);
    Task<void> co_run(Job& job);

    EventSink events_;
    std::vector<std::unique_ptr<Job>> jobs_;  // in creation order
    unsigned running_ = 0;
};

}  // namespace ioplane::block
