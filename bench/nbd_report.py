#!/usr/bin/env python3
"""Report of bench/nbd_bench.sh: medians per (back end, server, workload),
ratios against qemu-storage-daemon and the reference responder, and the
issue's targets.

    nbd_report.py DIR          # DIR/runs.tsv -> markdown on stdout, DIR/summary.json
    nbd_report.py --one TSV    # one line about the last run of TSV (progress output)

runs.tsv columns: backend server workload rep rc server_ticks machine_busy_ticks
machine_total_ticks window_s clk_tck fio_json.
"""
import json
import os
import statistics
import sys

SERVERS = ["ioplane", "ioplane-poll", "ioplane-main", "qsd", "nbdkit", "ref"]
WORKLOADS = ["rr4k-qd1", "rr4k-qd16", "rr4k-qd64", "rw4k-qd1", "rw4k-qd16", "rw4k-qd64", "sr64k-qd16", "rr4k-qd16x2"]
BACKENDS = ["null", "file"]
# CPUs used by other processes during a run above which it is flagged
# (nbd_bench.sh --disturbed passes it in NBD_BENCH_DISTURBED).
DISTURBED = float(os.environ.get("NBD_BENCH_DISTURBED", "0.25"))
NCPU = os.cpu_count() or 1


def parse_run(cols):
    backend, server, workload, rep, rc, sticks, mbusy, mtotal, window, hz, path = cols
    run = {"backend": backend, "server": server, "workload": workload, "rep": int(rep), "rc": int(rc)}
    hz = float(hz)
    window = float(window)
    try:
        with open(path) as f:
            text = f.read()
        # fio may print notices before the JSON document.
        d = json.loads(text[text.index("{"):])
        job = d["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        run["ok"] = False
        return run
    rd, wr = job["read"], job["write"]
    ios = rd["total_ios"] + wr["total_ios"]
    main = rd if rd["total_ios"] >= wr["total_ios"] else wr
    pct = main["clat_ns"].get("percentile", {})
    numjobs = int(job.get("job options", {}).get("numjobs", 1) or 1)
    server_s = int(sticks) / hz
    busy_cores = int(mbusy) / hz / window if window > 0 else 0.0
    server_cores = server_s / window if window > 0 else 0.0
    fio_cores = (job["usr_cpu"] + job["sys_cpu"]) / 100.0 * numjobs
    run.update(
        ok=ios > 0 and int(rc) == 0 and int(sticks) >= 0,
        iops=rd["iops"] + wr["iops"],
        ios=ios,
        p50_us=pct.get("50.000000", 0) / 1000.0,
        p99_us=pct.get("99.000000", 0) / 1000.0,
        cpu_us_per_io=server_s * 1e6 / ios if ios else float("nan"),
        server_cores=server_cores,
        fio_cores=fio_cores,
        other_cores=max(0.0, busy_cores - server_cores - fio_cores),
    )
    return run


def read_runs(tsv):
    runs = []
    with open(tsv) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 11:
                runs.append(parse_run(cols))
    return runs


def one_line(run):
    if not run.get("ok"):
        return f"FAILED (rc={run['rc']}) other=0"
    s = (f"{run['iops']:9.0f} IOPS  p50 {run['p50_us']:7.1f} us  p99 {run['p99_us']:7.1f} us  "
         f"server {run['cpu_us_per_io']:5.2f} us CPU/IO ({run['server_cores']:.2f} CPUs)  "
         f"fio {run['fio_cores']:.2f} CPUs  other={run['other_cores']:.2f} CPUs")
    if run["other_cores"] > DISTURBED:
        s += "  [disturbed]"
    return s


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["backend"], r["server"], r["workload"]), []).append(r)
    out = []
    for (b, s, w), rs in groups.items():
        ok = [r for r in rs if r.get("ok")]
        e = {"backend": b, "server": s, "workload": w, "runs": len(rs), "ok_runs": len(ok)}
        if ok:
            for k in ("iops", "p50_us", "p99_us", "cpu_us_per_io", "server_cores", "fio_cores", "other_cores"):
                e[k] = median([r[k] for r in ok])
            e["iops_min"] = min(r["iops"] for r in ok)
            e["iops_max"] = max(r["iops"] for r in ok)
            e["cpu_min"] = min(r["cpu_us_per_io"] for r in ok)
            e["cpu_max"] = max(r["cpu_us_per_io"] for r in ok)
            e["disturbed_runs"] = sum(1 for r in ok if r["other_cores"] > DISTURBED)
            # The same over the quiet runs only (other processes used at most
            # DISTURBED CPUs): chosen by the machine's load, not by the result.
            quiet = [r for r in ok if r["other_cores"] <= DISTURBED]
            e["quiet_runs"] = len(quiet)
            for k in ("iops", "p50_us", "p99_us", "cpu_us_per_io"):
                e[k + "_quiet"] = median([r[k] for r in quiet]) if quiet else None
        out.append(e)
    key = lambda e: (BACKENDS.index(e["backend"]) if e["backend"] in BACKENDS else 9,
                     WORKLOADS.index(e["workload"]) if e["workload"] in WORKLOADS else 99,
                     SERVERS.index(e["server"]) if e["server"] in SERVERS else 9)
    return sorted(out, key=key)


def fmt(x, spec):
    return "n/a" if x is None or x != x else format(x, spec)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        runs = read_runs(sys.argv[2])
        print(one_line(runs[-1]) if runs else "(no runs)")
        return
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    d = sys.argv[1]
    runs = read_runs(os.path.join(d, "runs.tsv"))
    summary = summarize(runs)
    idx = {(e["backend"], e["server"], e["workload"]): e for e in summary}
    machine = open(os.path.join(d, "machine.txt")).read() if os.path.exists(os.path.join(d, "machine.txt")) else ""

    print("## Results (medians)\n")
    print("```")
    print(machine.rstrip())
    print("```\n")
    print("| back end | workload | server | IOPS | IOPS min–max | p50 µs | p99 µs | server CPU µs/IO | server CPUs | fio CPUs | other CPUs | runs |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in summary:
        if not e["ok_runs"]:
            print(f"| {e['backend']} | {e['workload']} | {e['server']} | failed | | | | | | | | 0/{e['runs']} |")
            continue
        dist = f" ({e['disturbed_runs']} disturbed)" if e["disturbed_runs"] else ""
        print(f"| {e['backend']} | {e['workload']} | {e['server']} | {e['iops']:.0f} | "
              f"{e['iops_min']:.0f}–{e['iops_max']:.0f} | {e['p50_us']:.1f} | {e['p99_us']:.1f} | "
              f"{e['cpu_us_per_io']:.2f} | {e['server_cores']:.2f} | {e['fio_cores']:.2f} | "
              f"{e['other_cores']:.2f} | {e['ok_runs']}/{e['runs']}{dist} |")

    def get(b, s, w, k):
        e = idx.get((b, s, w))
        return e.get(k) if e and e.get("ok_runs") else None

    def ratio(a, b):
        return a / b if a is not None and b not in (None, 0) else None

    def ratios_for(sfx):
        """Ratios of medians; sfx "" for all runs, "_quiet" for quiet runs only."""
        out = []
        for b in BACKENDS:
            for w in WORKLOADS:
                if get(b, "ioplane", w, "iops") is None:
                    continue
                iops = lambda s: get(b, s, w, "iops" + sfx)
                cpu = lambda s: get(b, s, w, "cpu_us_per_io" + sfx)
                out.append({
                    "backend": b, "workload": w,
                    "iops_vs_qsd": ratio(iops("ioplane"), iops("qsd")),
                    "cpu_vs_qsd": ratio(cpu("ioplane"), cpu("qsd")),
                    "cpu_vs_ref": ratio(cpu("ioplane"), cpu("ref")),
                    "iops_vs_nbdkit": ratio(iops("ioplane"), iops("nbdkit")),
                    "poll_iops_vs_qsd": ratio(iops("ioplane-poll"), iops("qsd")),
                    "main_iops_vs_qsd": ratio(iops("ioplane-main"), iops("qsd")),
                })
        return out

    ratios = ratios_for("")
    ratios_quiet = ratios_for("_quiet")
    print("\n## Ratios (of medians; in brackets: medians of the quiet runs only)\n")
    print("| back end | workload | ioplane/qsd IOPS | ioplane/qsd CPU per I/O | ioplane/ref CPU per I/O | ioplane/nbdkit IOPS | ioplane-poll/qsd IOPS | ioplane-main/qsd IOPS |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    cols = ("iops_vs_qsd", "cpu_vs_qsd", "cpu_vs_ref", "iops_vs_nbdkit", "poll_iops_vs_qsd", "main_iops_vs_qsd")
    for r, q in zip(ratios, ratios_quiet):
        cells = []
        for c in cols:
            if r[c] is None:
                cells.append("")
            else:
                cells.append(f"{fmt(r[c], '.2f')} ({fmt(q[c], '.2f')})")
        print(f"| {r['backend']} | {r['workload']} | " + " | ".join(cells) + " |")

    # The issue's targets.
    def targets_for(rs):
        targets = []

        def check(name, value, limit, ge):
            met = None if value is None else (value >= limit if ge else value <= limit)
            targets.append({"target": name, "value": value, "limit": limit, "met": met})

        rq = {(r["backend"], r["workload"]): r for r in rs}
        for w in ("rr4k-qd16", "rr4k-qd64", "rw4k-qd16", "rw4k-qd64", "rr4k-qd16x2"):
            r = rq.get(("null", w))
            if not r:
                continue
            check(f"null {w}: IOPS >= 1.1x qsd", r["iops_vs_qsd"], 1.1, True)
            check(f"null {w}: CPU/IO <= 0.75x qsd", r["cpu_vs_qsd"], 0.75, False)
            check(f"null {w}: CPU/IO <= 1.2x reference", r["cpu_vs_ref"], 1.2, False)
        for w in ("rr4k-qd1", "rw4k-qd1"):
            r = rq.get(("null", w))
            if r:
                check(f"null {w}, ioplane-poll (IOThread, long poll-max-ns): IOPS >= 1.2x qsd",
                      r["poll_iops_vs_qsd"], 1.2, True)
        for w in WORKLOADS:
            r = rq.get(("file", w))
            if r:
                check(f"file {w}: IOPS >= 1.0x qsd", r["iops_vs_qsd"], 1.0, True)
        return targets

    targets = targets_for(ratios)
    targets_quiet = targets_for(ratios_quiet)
    met = lambda t: "n/a" if t["met"] is None else ("yes" if t["met"] else "**no**")
    print("\n## Targets\n")
    print("| target | ratio (all runs) | met | ratio (quiet runs) | met |")
    print("|---|---:|---|---:|---|")
    for t, q in zip(targets, targets_quiet):
        print(f"| {t['target']} | {fmt(t['value'], '.2f')} | {met(t)} | {fmt(q['value'], '.2f')} | {met(q)} |")
    for name, ts in (("all runs", targets), ("quiet runs", targets_quiet)):
        n_met = sum(1 for t in ts if t["met"])
        n = sum(1 for t in ts if t["met"] is not None)
        print(f"\n{name}: {n_met} of {n} targets met.", end="")
    print()

    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"machine": machine, "summary": summary, "ratios": ratios, "ratios_quiet": ratios_quiet,
                   "targets": targets, "targets_quiet": targets_quiet}, f, indent=1)


if __name__ == "__main__":
    main()
