// Jobs: QEMU's status machine and its events, verbs refused by status,
// pauses at pause points, sleeps a cancel cuts short, setup and prepare
// failures.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ioplane/block/job.h"
#include "ioplane/core/aio_wait.h"
#include "ioplane/core/clock.h"
#include "ioplane/core/main_loop.h"

namespace ioplane::block {
namespace {

// Runs until told to finish, passing a pause point (or a long sleep) each
// round.
class TestJob final : public Job {
public:
    TestJob(std::string id, bool auto_finalize = true, bool auto_dismiss = true)
        : Job(std::move(id), "test", auto_finalize, auto_dismiss) {}
    bool finish = false;
    bool sleep_long = false;
    int rounds = 0;
    Result<void> setup_result{};
    Result<void> prepare_result{};
    std::vector<std::string> calls;

private:
    Result<void> setup() override { return setup_result; }
    Task<Result<void>> run() override {
        while (!finish && !cancelled()) {
            rounds++;
            if (sleep_long) co_await sleep_ns(10'000'000'000);
            else co_await sleep_ns(1'000'000);
        }
        co_return Result<void>{};
    }
    Result<void> prepare() override {
        calls.push_back("prepare");
        return prepare_result;
    }
    void commit() override { calls.push_back("commit"); }
    void abort() override { calls.push_back("abort"); }
    void clean() override { calls.push_back("clean"); }
};

class JobTest : public ::testing::Test {
protected:
    void SetUp() override {
        auto loop = MainLoop::create();
        ASSERT_TRUE(loop);
        loop_ = std::move(*loop);
    }
    // Runs the main loop until `pred` holds (at most 10 s).
    template <class Pred>
    bool run_until(Pred pred) {
        const int64_t deadline = now_ns() + 10'000'000'000;
        while (!pred() && now_ns() < deadline) main_context()->poll(false);
        return pred();
    }
    std::vector<std::string> statuses(const std::string& id) const {
        std::vector<std::string> out;
        for (const auto& [name, data] : events_)
            if (name == "JOB_STATUS_CHANGE" && data["id"] == id) out.push_back(data["status"]);
        return out;
    }

    std::unique_ptr<MainLoop> loop_;
    std::vector<std::pair<std::string, nlohmann::json>> events_;
    JobManager jobs_{[this](const std::string& name, nlohmann::json data) { events_.emplace_back(name, data); }};
};

TEST_F(JobTest, SuccessGoesThroughQemusStatusesAndCommits) {
    auto job = std::make_unique<TestJob>("j1");
    TestJob* j = job.get();
    ASSERT_TRUE(jobs_.start(std::move(job)));
    ASSERT_TRUE(run_until([&] { return j->rounds > 2; }));
    EXPECT_EQ(jobs_.query()[0]["status"], "running");
    j->finish = true;
    ASSERT_TRUE(run_until([&] { return jobs_.jobs().empty(); }));
    EXPECT_EQ(statuses("j1"),
              (std::vector<std::string>{"created", "running", "waiting", "pending", "concluded", "null"}));
}

TEST_F(JobTest, ManualFinalizeAndDismissWaitForTheirVerbs) {
    auto job = std::make_unique<TestJob>("j2", false, false);
    TestJob* j = job.get();
    ASSERT_TRUE(jobs_.start(std::move(job)));
    EXPECT_EQ(jobs_.dismiss("j2").error().message, "Job 'j2' in state 'running' cannot accept command verb 'dismiss'");
    j->finish = true;
    ASSERT_TRUE(run_until([&] { return j->status() == JobStatus::pending; }));
    EXPECT_TRUE(j->calls.empty());
    ASSERT_TRUE(jobs_.finalize("j2"));
    EXPECT_EQ(j->calls, (std::vector<std::string>{"prepare", "commit", "clean"}));
    EXPECT_EQ(j->status(), JobStatus::concluded);
    ASSERT_TRUE(jobs_.dismiss("j2"));
    EXPECT_TRUE(jobs_.jobs().empty());
}

TEST_F(JobTest, PauseTakesEffectAtThePausePointAndResumeContinues) {
    auto job = std::make_unique<TestJob>("j3");
    TestJob* j = job.get();
    ASSERT_TRUE(jobs_.start(std::move(job)));
    ASSERT_TRUE(jobs_.pause("j3"));
    EXPECT_EQ(jobs_.pause("j3").error().message, "Job is already paused");
    ASSERT_TRUE(run_until([&] { return j->status() == JobStatus::paused; }));
    const int rounds = j->rounds;
    for (int i = 0; i < 20; i++) main_context()->poll(false);
    EXPECT_EQ(j->rounds, rounds) << "a paused job does not run";
    EXPECT_TRUE(j->paused() && !j->busy());
    ASSERT_TRUE(jobs_.resume("j3"));
    EXPECT_EQ(jobs_.resume("j3").error().message, "Can't resume a job that was not paused");
    ASSERT_TRUE(run_until([&] { return j->rounds > rounds; }));
    EXPECT_EQ(j->status(), JobStatus::running);
    j->finish = true;
    ASSERT_TRUE(run_until([&] { return jobs_.jobs().empty(); }));
}

TEST_F(JobTest, CancelCutsASleepShortAndAborts) {
    auto job = std::make_unique<TestJob>("j4", true, false);
    TestJob* j = job.get();
    j->sleep_long = true;
    ASSERT_TRUE(jobs_.start(std::move(job)));
    ASSERT_TRUE(run_until([&] { return j->rounds == 1 && !j->busy(); }));
    const int64_t start = now_ns();
    ASSERT_TRUE(jobs_.cancel("j4"));
    ASSERT_TRUE(run_until([&] { return j->status() == JobStatus::concluded; }));
    EXPECT_LT(now_ns() - start, 5'000'000'000) << "the 10 s sleep ended early";
    EXPECT_EQ(j->calls, (std::vector<std::string>{"abort", "clean"}));
    EXPECT_EQ(*j->error(), "Operation canceled");
    EXPECT_EQ(statuses("j4"),
              (std::vector<std::string>{"created", "running", "aborting", "concluded"}));
    ASSERT_TRUE(jobs_.dismiss("j4"));
}

TEST_F(JobTest, SetupFailureEndsTheJobBeforeItRuns) {
    auto job = std::make_unique<TestJob>("j5");
    job->setup_result = fail(EPERM, "no");
    EXPECT_EQ(jobs_.start(std::move(job)).error().message, "no");
    EXPECT_EQ(statuses("j5"), (std::vector<std::string>{"created", "null"}));
    EXPECT_TRUE(jobs_.jobs().empty());
}

// A transaction's jobs: made and set up first, then started, or cancelled
// without ever running when another action fails.
TEST_F(JobTest, CreatedJobStartsLaterOrIsCancelledUnrun) {
    auto job = std::make_unique<TestJob>("t1");
    TestJob* j = job.get();
    auto created = jobs_.create(std::move(job));
    ASSERT_TRUE(created);
    EXPECT_EQ(j->status(), JobStatus::created);
    jobs_.start_created(**created);
    j->finish = true;
    ASSERT_TRUE(run_until([&] { return jobs_.jobs().empty(); }));
    EXPECT_EQ(statuses("t1"),
              (std::vector<std::string>{"created", "running", "waiting", "pending", "concluded", "null"}));

    auto unrun = std::make_unique<TestJob>("t2");
    TestJob* u = unrun.get();
    auto made = jobs_.create(std::move(unrun));
    ASSERT_TRUE(made);
    EXPECT_TRUE(u->calls.empty());
    jobs_.cancel_created(**made);  // the job is gone with it
    EXPECT_EQ(statuses("t2"), (std::vector<std::string>{"created", "aborting", "concluded", "null"}));
    EXPECT_TRUE(jobs_.jobs().empty());
}

TEST_F(JobTest, PrepareFailureAborts) {
    auto job = std::make_unique<TestJob>("j6", true, false);
    TestJob* j = job.get();
    j->prepare_result = fail(EIO, "the graph change failed");
    j->finish = true;
    ASSERT_TRUE(jobs_.start(std::move(job)));
    ASSERT_TRUE(run_until([&] { return j->status() == JobStatus::concluded; }));
    EXPECT_EQ(j->calls, (std::vector<std::string>{"prepare", "abort", "clean"}));
    EXPECT_EQ(*j->error(), "the graph change failed");
    EXPECT_EQ(jobs_.query()[0]["error"], "the graph change failed");
}

TEST_F(JobTest, IdsAreCheckedAsQemuChecksThem) {
    EXPECT_EQ(jobs_.start(std::make_unique<TestJob>("")).error().message, "Invalid job ID ''");
    EXPECT_EQ(jobs_.start(std::make_unique<TestJob>("1a")).error().message, "Invalid job ID '1a'");
    EXPECT_EQ(jobs_.start(std::make_unique<TestJob>("a b")).error().message, "Invalid job ID 'a b'");
    EXPECT_TRUE(events_.empty()) << "no job was created";
    auto job = std::make_unique<TestJob>("a-1.b_2");
    TestJob* j = job.get();
    ASSERT_TRUE(jobs_.start(std::move(job)));
    EXPECT_EQ(jobs_.start(std::make_unique<TestJob>("a-1.b_2")).error().message, "Job ID 'a-1.b_2' already in use");
    j->finish = true;
    ASSERT_TRUE(run_until([&] { return jobs_.jobs().empty(); }));
}

TEST_F(JobTest, ShutdownCancelsEveryJobAndWaits) {
    auto a = std::make_unique<TestJob>("a");
    auto b = std::make_unique<TestJob>("b", false, false);
    a->sleep_long = true;
    TestJob* pb = b.get();
    ASSERT_TRUE(jobs_.start(std::move(a)));
    ASSERT_TRUE(jobs_.start(std::move(b)));
    pb->finish = true;
    ASSERT_TRUE(run_until([&] { return pb->status() == JobStatus::pending; }));
    jobs_.cancel_all_and_wait();
    EXPECT_EQ(statuses("a").back(), "null");
    EXPECT_EQ(statuses("b"), (std::vector<std::string>{"created", "running", "waiting", "pending", "aborting",
                                                       "concluded"}));
}

// A group (a grouped transaction's jobs): the job done first waits for the
// other; both prepare, then both commit.
TEST_F(JobTest, GroupEndsTogether) {
    auto group = std::make_shared<JobTxn>();
    auto a = std::make_unique<TestJob>("a");
    auto b = std::make_unique<TestJob>("b");
    TestJob *pa = a.get(), *pb = b.get();
    auto ca = jobs_.create(std::move(a), group);
    auto cb = jobs_.create(std::move(b), group);
    ASSERT_TRUE(ca && cb);
    jobs_.start_created(**ca);
    jobs_.start_created(**cb);
    pa->finish = true;
    ASSERT_TRUE(run_until([&] { return pa->status() == JobStatus::waiting; }));
    ASSERT_TRUE(run_until([&] { return pb->rounds > 3; }));
    EXPECT_EQ(pa->status(), JobStatus::waiting) << "waits while b runs";
    EXPECT_TRUE(pa->calls.empty());
    pb->finish = true;
    ASSERT_TRUE(run_until([&] { return jobs_.jobs().empty(); }));
    for (const char* id : {"a", "b"})
        EXPECT_EQ(statuses(id), (std::vector<std::string>{"created", "running", "waiting", "pending", "concluded",
                                                          "null"}))
            << id;
}

// One job's prepare fails: the whole group aborts; the other job, prepared
// already, is aborted (not committed) as cancelled.
TEST_F(JobTest, GroupPrepareFailureAbortsEveryJob) {
    auto group = std::make_shared<JobTxn>();
    auto a = std::make_unique<TestJob>("a", true, false);
    auto b = std::make_unique<TestJob>("b", true, false);
    TestJob *pa = a.get(), *pb = b.get();
    pa->prepare_result = fail(EIO, "a's graph change failed");
    pa->finish = pb->finish = true;
    auto ca = jobs_.create(std::move(a), group);
    auto cb = jobs_.create(std::move(b), group);
    ASSERT_TRUE(ca && cb);
    jobs_.start_created(**ca);
    jobs_.start_created(**cb);
    ASSERT_TRUE(run_until([&] { return pa->status() == JobStatus::concluded && pb->status() == JobStatus::concluded; }));
    EXPECT_EQ(pb->calls, (std::vector<std::string>{"prepare", "abort", "clean"})) << "b prepares first (newest)";
    EXPECT_EQ(pa->calls, (std::vector<std::string>{"prepare", "abort", "clean"}));
    EXPECT_EQ(*pa->error(), "a's graph change failed");
    EXPECT_EQ(*pb->error(), "Operation canceled");
    EXPECT_TRUE(pb->cancelled());
}

// One job fails while the other runs: the other is cancelled (forced) and
// waited for, and both abort.
TEST_F(JobTest, GroupFailureCancelsTheRunningJob) {
    class FailingJob final : public Job {
    public:
        FailingJob() : Job("f", "test", true, false) {}

    private:
        Task<Result<void>> run() override { co_return fail(EIO, "read failed"); }
    };
    auto group = std::make_shared<JobTxn>();
    auto slow = std::make_unique<TestJob>("s", true, false);
    slow->sleep_long = true;
    TestJob* ps = slow.get();
    auto cs = jobs_.create(std::move(slow), group);
    auto cf = jobs_.create(std::make_unique<FailingJob>(), group);
    ASSERT_TRUE(cs && cf);
    Job* f = *cf;
    jobs_.start_created(**cs);
    jobs_.start_created(*f);
    ASSERT_TRUE(run_until([&] { return ps->status() == JobStatus::concluded && f->status() == JobStatus::concluded; }));
    EXPECT_EQ(ps->calls, (std::vector<std::string>{"abort", "clean"}));
    EXPECT_EQ(*f->error(), "read failed");
    EXPECT_EQ(*ps->error(), "Operation canceled");
    EXPECT_EQ(statuses("s"), (std::vector<std::string>{"created", "running", "aborting", "concluded"}));
}

}  // namespace
}  // namespace ioplane::block
