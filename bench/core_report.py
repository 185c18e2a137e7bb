#!/usr/bin/env python3
"""Runs core_bench with repetitions and prints medians beside their physical
references, as ratios, with the targets of the core runtime issue.

Usage: bench/core_report.py BUILD/bench/core_bench [repetitions]
"""
import json
import subprocess
import sys

bench = sys.argv[1]
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 7
out = subprocess.run(
    [bench, f"--benchmark_repetitions={reps}", "--benchmark_format=json",
     "--benchmark_report_aggregates_only=true"],
    check=True, capture_output=True, text=True).stdout
median = {}
for b in json.loads(out)["benchmarks"]:
    if b.get("aggregate_name") == "median":
        median[b["run_name"]] = b["real_time"]  # ns (CPU benchmarks: real == CPU here)


def ns(name):
    return median[name]


rows = [
    # (what, benchmark, reference, target ratio or absolute limit in ns)
    ("BH schedule+dispatch (one thread)", "BM_BhScheduleDispatch", None, "< 50 ns"),
    ("one-shot BH schedule+dispatch", "BM_OneshotScheduleDispatch", "BM_Ref_MallocFree64", ""),
    ("cross-thread round trip A->B->A, no polling", "BM_CrossThreadRoundTrip/0/real_time",
     "BM_Ref_EventfdPingPong/real_time", "<= 1.5x"),
    ("cross-thread round trip, poll-max-ns=32768", "BM_CrossThreadRoundTrip/32768/real_time",
     "BM_Ref_EventfdPingPong/real_time", "<= 1.5x"),
    ("coroutine create+run+destroy", "BM_CoroutineCreateRunDestroy", "BM_Ref_MallocFree64", ""),
    ("await a ready Task", "BM_AwaitReadyTask", "BM_Ref_MallocFree64", ""),
    ("coroutine suspend+resume pair", "BM_CoroutineSuspendResumePair", "BM_Ref_PlainFunctionCall", "<= 10 ns"),
    ("run_in_worker round trip, no polling", "BM_RunInWorkerRoundTrip/0/real_time",
     "BM_Ref_EventfdPingPong/real_time", ""),
    ("run_in_worker round trip, poll-max-ns=32768", "BM_RunInWorkerRoundTrip/32768/real_time",
     "BM_Ref_EventfdPingPong/real_time", ""),
    ("thread pool submit->completion, no polling", "BM_ThreadPoolSubmitComplete/0/real_time",
     "BM_Ref_EventfdPingPong/real_time", ""),
    ("thread pool submit->completion, poll-max-ns=32768", "BM_ThreadPoolSubmitComplete/32768/real_time",
     "BM_Ref_EventfdPingPong/real_time", ""),
]

print(f"median of {reps} repetitions; references measured in the same run\n")
print("| operation | median | reference | reference median | ratio | target |")
print("|---|---|---|---|---|---|")
for what, name, ref, target in rows:
    if name not in median:
        continue
    v = ns(name)
    if ref:
        r = ns(ref)
        print(f"| {what} | {v:.1f} ns | {ref.removeprefix('BM_Ref_').split('/')[0]} | {r:.1f} ns | {v / r:.2f}x | {target} |")
    else:
        print(f"| {what} | {v:.1f} ns | | | | {target} |")
