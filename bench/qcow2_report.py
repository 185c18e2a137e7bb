#!/usr/bin/env python3
"""Report of bench/qcow2_bench.sh: medians per (row, server), the ratios of
ioplane to qemu-storage-daemon and to the raw floor, and the issue's targets
with PASS/FAIL.

    qcow2_report.py DIR          # DIR/runs.tsv -> markdown on stdout, DIR/summary.json
    qcow2_report.py --one TSV    # one line about the last run of TSV (progress output)
    qcow2_report.py --ok TSV     # exit status 0 when the last run of TSV is complete

runs.tsv columns: row server rep rc server_ticks machine_busy_ticks
machine_total_ticks window_s clk_tck fio_json server_end cpu_end_source
export image_check server_cpu_total_s pass_ios.
"""
import json
import os
import statistics
import sys

SERVERS = ["ioplane", "qsd", "raw"]
ROWS = ["rr4k-qd1", "rr4k-qd16", "rw4k-qd1", "rw4k-qd16", "alloc4k-qd16", "alloc64k-qd16",
        "alloc4k-qd16-backed", "alloc64k-qd16-backed", "chain-rr4k-qd16"]
# The rows on a fully allocated image: the raw floor's target applies.
ALLOCATED_ROWS = ["rr4k-qd1", "rr4k-qd16", "rw4k-qd1", "rw4k-qd16"]
# CPUs used by other processes during a run above which it is flagged
# (qcow2_bench.sh --disturbed passes it in QCOW2_BENCH_DISTURBED).
DISTURBED = float(os.environ.get("QCOW2_BENCH_DISTURBED", "0.25"))
# The issue's targets.
IOPS_VS_QSD = 1.0   # ioplane IOPS >= 1.0x qsd's, every row
CPU_VS_QSD = 0.75   # ioplane CPU per I/O <= 0.75x qsd's, every row
CPU_VS_RAW = 1.15   # ioplane CPU per I/O <= 1.15x raw's, the allocated rows


def floor_row(row):
    """The raw server's row that is ROW's floor: raw has no backing file and no chain."""
    if row.endswith("-backed"):
        return row[: -len("-backed")]
    if row.startswith("chain-"):
        return row[len("chain-"):]
    return row


def parse_run(cols):
    (row, server, rep, rc, sticks, mbusy, mtotal, window, hz, path,
     end, src, export, check, total_cpu, pass_ios) = cols
    run = {"row": row, "server": server, "rep": int(rep), "rc": int(rc), "end": end, "cpu_src": src,
           "export": export, "check": check, "ok": False,
           "pass_ios": int(pass_ios) if pass_ios.isdigit() else None}
    hz = float(hz)
    window = float(window)
    sticks = float(sticks)
    try:
        with open(path) as f:
            text = f.read()
        # fio may print notices before the JSON document.
        d = json.loads(text[text.index("{"):])
        job = d["jobs"][0]
    except (OSError, ValueError, KeyError, IndexError):
        return run
    rd, wr = job["read"], job["write"]
    # The I/Os completed: fio's total_ios counts the I/Os issued, and fio
    # 3.33's nbd engine closes the connection at the end without waiting for
    # those still in flight (up to the QD).
    ios = rd["clat_ns"].get("N", 0) + wr["clat_ns"].get("N", 0)
    issued = rd["total_ios"] + wr["total_ios"]
    main = rd if rd["total_ios"] >= wr["total_ios"] else wr
    pct = main["clat_ns"].get("percentile", {})
    server_s = sticks / hz
    busy_cores = int(mbusy) / hz / window if window > 0 else 0.0
    server_cores = server_s / window if window > 0 else 0.0
    fio_cores = (job["usr_cpu"] + job["sys_cpu"]) / 100.0
    run.update(
        ok=ios > 0 and run["rc"] == 0 and sticks >= 0 and job.get("error", 0) == 0,
        fio_error=job.get("error", 0),
        iops=rd["iops"] + wr["iops"],
        ios=ios,
        issued=issued,
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
            if len(cols) == 16:
                runs.append(parse_run(cols))
    return runs


def one_line(run):
    if not run.get("ok"):
        return f"FAILED (rc={run['rc']}, server {run['end']}) other=0"
    ios = f"{run['ios']} I/Os"
    if run["pass_ios"]:
        ios += f" ({run['issued']} of {run['pass_ios']} issued)"
    s = (f"{run['iops']:9.0f} IOPS  p50 {run['p50_us']:7.1f} us  p99 {run['p99_us']:8.1f} us  "
         f"server {run['cpu_us_per_io']:6.2f} us CPU/IO ({run['server_cores']:.2f} CPUs)  {ios}  "
         f"server {run['end']}, cpu from {run['cpu_src']}")
    if run["check"] != "-":
        s += f", image {run['check']}"
    s += f"  fio {run['fio_cores']:.2f} CPUs  other={run['other_cores']:.2f} CPUs"
    if run["other_cores"] > DISTURBED:
        s += "  [disturbed]"
    return s


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(runs):
    groups = {}
    for r in runs:
        groups.setdefault((r["row"], r["server"]), []).append(r)
    out = []
    for (row, s), rs in groups.items():
        ok = [r for r in rs if r.get("ok")]
        e = {"row": row, "server": s, "runs": len(rs), "ok_runs": len(ok)}
        if ok:
            for k in ("iops", "p50_us", "p99_us", "cpu_us_per_io", "server_cores", "fio_cores", "other_cores", "ios"):
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
            for k in ("iops", "cpu_us_per_io"):
                e[k + "_quiet"] = median([r[k] for r in quiet]) if quiet else None
        out.append(e)
    key = lambda e: (ROWS.index(e["row"]) if e["row"] in ROWS else 99,
                     SERVERS.index(e["server"]) if e["server"] in SERVERS else 9)
    return sorted(out, key=key)


def fmt(x, spec):
    return "n/a" if x is None or x != x else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def main():
    if len(sys.argv) == 3 and sys.argv[1] in ("--one", "--ok"):
        runs = read_runs(sys.argv[2])
        if sys.argv[1] == "--ok":
            sys.exit(0 if runs and runs[-1].get("ok") else 1)
        print(one_line(runs[-1]) if runs else "(no runs)")
        return
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    d = sys.argv[1]
    runs = read_runs(os.path.join(d, "runs.tsv"))
    summary = summarize(runs)
    idx = {(e["row"], e["server"]): e for e in summary}

    def text(name):
        p = os.path.join(d, name)
        return open(p).read().rstrip() if os.path.exists(p) else ""

    def get(row, s, k):
        e = idx.get((row, s))
        return e.get(k) if e and e.get("ok_runs") else None

    rows = [r for r in ROWS if any(get(r, s, "iops") is not None for s in ("ioplane", "qsd"))]

    print("## qcow2 benchmark (medians)\n")
    print("```")
    print(text("machine.txt"))
    print()
    print(text("images.txt"))
    print("```\n")

    # Per row: IOPS and CPU per I/O of each server, and the ratios.
    print("| row | ioplane IOPS | qsd IOPS | raw IOPS | ioplane CPU µs/IO | qsd CPU µs/IO | raw CPU µs/IO "
          "| ioplane/qsd IOPS | ioplane/qsd CPU | ioplane/raw CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ratios = []
    for row in rows:
        fr = floor_row(row)
        mark = "" if fr == row else "¹"
        r = {"row": row, "raw_row": fr}
        for sfx in ("", "_quiet"):
            r["iops_vs_qsd" + sfx] = ratio(get(row, "ioplane", "iops" + sfx), get(row, "qsd", "iops" + sfx))
            r["cpu_vs_qsd" + sfx] = ratio(get(row, "ioplane", "cpu_us_per_io" + sfx), get(row, "qsd", "cpu_us_per_io" + sfx))
            r["cpu_vs_raw" + sfx] = ratio(get(row, "ioplane", "cpu_us_per_io" + sfx), get(fr, "raw", "cpu_us_per_io" + sfx))
        ratios.append(r)
        raw_iops = get(fr, "raw", "iops")
        raw_cpu = get(fr, "raw", "cpu_us_per_io")
        print(f"| {row} | {fmt(get(row, 'ioplane', 'iops'), '.0f')} | {fmt(get(row, 'qsd', 'iops'), '.0f')} | "
              f"{fmt(raw_iops, '.0f')}{mark if raw_iops is not None else ''} | "
              f"{fmt(get(row, 'ioplane', 'cpu_us_per_io'), '.2f')} | {fmt(get(row, 'qsd', 'cpu_us_per_io'), '.2f')} | "
              f"{fmt(raw_cpu, '.2f')}{mark if raw_cpu is not None else ''} | "
              f"{fmt(r['iops_vs_qsd'], '.2f')} | {fmt(r['cpu_vs_qsd'], '.2f')} | {fmt(r['cpu_vs_raw'], '.2f')} |")
    if any(floor_row(r) != r for r in rows):
        print("\n¹ raw has no backing file and no chain: the floor of alloc*-backed is the unbacked row's, "
              "that of chain-rr4k-qd16 is rr4k-qd16's.")
    if any(r.startswith("alloc") for r in rows):
        print("\nraw's alloc rows are the same writes into a preallocated raw file: there is no allocation, "
              "so they are for reference (no target).")

    # The targets.
    targets = []
    for r in ratios:
        row = r["row"]
        checks = [("IOPS >= %.2gx qsd" % IOPS_VS_QSD, "iops_vs_qsd", IOPS_VS_QSD, True),
                  ("CPU/IO <= %.2fx qsd" % CPU_VS_QSD, "cpu_vs_qsd", CPU_VS_QSD, False)]
        if row in ALLOCATED_ROWS:
            checks.append(("CPU/IO <= %.2fx raw" % CPU_VS_RAW, "cpu_vs_raw", CPU_VS_RAW, False))
        for name, k, limit, ge in checks:
            t = {"row": row, "target": name}
            for sfx in ("", "_quiet"):
                v = r[k + sfx]
                t["value" + sfx] = v
                t["met" + sfx] = None if v is None else (v >= limit if ge else v <= limit)
            targets.append(t)
    verdict = lambda m: "n/a" if m is None else ("PASS" if m else "**FAIL**")
    print("\n## Targets\n")
    print("ioplane against qsd on every row (IOPS >= qsd's, CPU per I/O <= 0.75x qsd's); against the raw floor "
          "on the rows on a fully allocated image (CPU per I/O <= 1.15x raw's). Ratios of medians; the last "
          "two columns use the quiet runs only (other processes used at most %.2f CPUs).\n" % DISTURBED)
    print("| row | target | ratio | result | ratio (quiet runs) | result (quiet runs) |")
    print("|---|---|---:|---|---:|---|")
    for t in targets:
        print(f"| {t['row']} | {t['target']} | {fmt(t['value'], '.2f')} | {verdict(t['met'])} | "
              f"{fmt(t['value_quiet'], '.2f')} | {verdict(t['met_quiet'])} |")
    for name, sfx in (("all runs", ""), ("quiet runs", "_quiet")):
        n_met = sum(1 for t in targets if t["met" + sfx])
        n = sum(1 for t in targets if t["met" + sfx] is not None)
        print(f"\n{name}: " + (f"{n_met} of {n} targets met (PASS)." if n else "no ratios (no such runs)."), end="")
    print()

    # Every (row, server) in detail.
    print("\n## Detail (medians)\n")
    print("| row | server | IOPS | IOPS min–max | p50 µs | p99 µs | server CPU µs/IO | CPU µs/IO min–max "
          "| server CPUs | fio CPUs | other CPUs | I/Os per run | runs |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for e in summary:
        if not e["ok_runs"]:
            print(f"| {e['row']} | {e['server']} | failed | | | | | | | | | | 0/{e['runs']} |")
            continue
        dist = f" ({e['disturbed_runs']} disturbed)" if e["disturbed_runs"] else ""
        print(f"| {e['row']} | {e['server']} | {e['iops']:.0f} | {e['iops_min']:.0f}–{e['iops_max']:.0f} | "
              f"{e['p50_us']:.1f} | {e['p99_us']:.1f} | {e['cpu_us_per_io']:.2f} | "
              f"{e['cpu_min']:.2f}–{e['cpu_max']:.2f} | {e['server_cores']:.2f} | {e['fio_cores']:.2f} | "
              f"{e['other_cores']:.2f} | {e['ios']:.0f} | {e['ok_runs']}/{e['runs']}{dist} |")

    # How the runs ended.
    print("\n## Runs\n")
    for s in SERVERS:
        rs = [r for r in runs if r["server"] == s]
        if not rs:
            continue
        ends, srcs, exports = {}, {}, {}
        for r in rs:
            ends[r["end"]] = ends.get(r["end"], 0) + 1
            srcs[r["cpu_src"]] = srcs.get(r["cpu_src"], 0) + 1
            exports[r["export"]] = exports.get(r["export"], 0) + 1
        ok = sum(1 for r in rs if r.get("ok"))
        line = (f"- {s}: {ok} of {len(rs)} runs complete; export in "
                + ", ".join(f"{k} ({v})" for k, v in exports.items())
                + "; the server ended: " + ", ".join(f"{k} ({v})" for k, v in sorted(ends.items()))
                + "; its CPU time at the end of the window read from "
                + ", ".join(f"{'/proc' if k == 'proc' else 'wait4() at its death'} ({v})" for k, v in srcs.items()))
        print(line + ".")
    qsd_aborts = [r for r in runs if r["server"] == "qsd" and r["end"] == "sig6"]
    if qsd_aborts:
        complete = sum(1 for r in qsd_aborts if r.get("ok"))
        print(f"- qsd aborted (SIGABRT: Debian 7.2's assertion in nbd_blockdev_client_closed when a client "
              f"leaves an export in an IOThread) at the end of {len(qsd_aborts)} runs; in {complete} of them "
              f"fio had completed its job without an error first: complete measurements.")
    short = [e for e in summary if e.get("ok_runs") and any(
        r.get("ok") and r["pass_ios"] and r["issued"] < r["pass_ios"]
        for r in runs if (r["row"], r["server"]) == (e["row"], e["server"]))]
    for e in short:
        rs = [r for r in runs if (r["row"], r["server"]) == (e["row"], e["server"]) and r.get("ok")]
        print(f"- {e['row']} {e['server']}: the pass did not finish within --runtime in "
              f"{sum(1 for r in rs if r['issued'] < r['pass_ios'])} of {len(rs)} runs "
              f"({min(r['issued'] for r in rs)} of {rs[0]['pass_ios']} writes at least): the rate is still "
              "measured, over fewer writes.")
    print("- I/Os are those fio saw complete: fio 3.33's nbd engine closes the connection at the end of a job "
          "without waiting for the requests still in flight (up to the QD), which fio counts as issued.")
    checks = [r for r in runs if r["check"] not in ("-", "")]
    if checks:
        # clean:N: N clusters allocated, one per write: at least the writes
        # fio saw complete, at most those it issued (it does not wait for the
        # last ones in flight when it closes the connection).
        def alloc_ok(r):
            if not r["check"].startswith("clean:"):
                return False
            n = int(r["check"].split(":")[1])
            return not r.get("ok") or r["ios"] <= n <= r["issued"]
        bad = [r for r in checks if not alloc_ok(r)]
        print(f"- qemu-img check of the images ioplane's alloc runs left: {len(checks) - len(bad)} of "
              f"{len(checks)} clean, with one cluster allocated per completed write"
              + (": " + ", ".join(f"{r['row']} rep {r['rep']}: {r['check']} ({r.get('ios')} writes completed, "
                                  f"{r.get('issued')} issued)" for r in bad)
                                        if bad else "") + ".")
    failed = [r for r in runs if not r.get("ok")]
    for r in failed:
        print(f"- FAILED: {r['row']} {r['server']} rep {r['rep']}: rc {r['rc']}, server {r['end']}"
              + (f", fio error {r['fio_error']}" if r.get("fio_error") else ""))

    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"machine": text("machine.txt"), "images": text("images.txt"), "summary": summary,
                   "ratios": ratios, "targets": targets}, f, indent=1)


if __name__ == "__main__":
    main()
