#!/usr/bin/env python3
"""Chart of bench/nbd_bench.sh: for each back end, IOPS and server CPU time
per I/O of every server on every workload (bars: medians; whiskers: min–max
over the repetitions).

    nbd_chart.py DIR/summary.json OUT.png

Needs matplotlib (Debian: python3-matplotlib, for /usr/bin/python3).
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERVERS = ["ioplane", "ioplane-poll", "ioplane-main", "qsd", "nbdkit", "ref"]
LABELS = {
    "ioplane": "ioplane (IOThread, no busy-polling)",
    "ioplane-poll": "ioplane (IOThread, long polling)",
    "ioplane-main": "ioplane (main loop)",
    "qsd": "qemu-storage-daemon 7.2 (main loop)",
    "nbdkit": "nbdkit 1.32",
    "ref": "reference responder",
}
COLORS = {"ioplane": "#1f77b4", "ioplane-poll": "#6baed6", "ioplane-main": "#c6dbef", "qsd": "#d62728", "nbdkit": "#2ca02c", "ref": "#7f7f7f"}
WORKLOADS = ["rr4k-qd1", "rr4k-qd16", "rr4k-qd64", "rw4k-qd1", "rw4k-qd16", "rw4k-qd64", "sr64k-qd16", "rr4k-qd16x2"]
BACKENDS = ["null", "file"]


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    with open(sys.argv[1]) as f:
        data = json.load(f)
    entries = [e for e in data["summary"] if e.get("ok_runs")]
    backends = [b for b in BACKENDS if any(e["backend"] == b for e in entries)]
    if not backends:
        print("nbd_chart.py: nothing to plot", file=sys.stderr)
        sys.exit(1)
    fig, axes = plt.subplots(len(backends), 2, figsize=(15, 4.6 * len(backends)), squeeze=False)
    for row, b in enumerate(backends):
        es = {(e["server"], e["workload"]): e for e in entries if e["backend"] == b}
        wls = [w for w in WORKLOADS if any(k[1] == w for k in es)]
        servers = [s for s in SERVERS if any(k[0] == s for k in es)]
        width = 0.8 / len(servers)
        for col, (key, lo, hi, title) in enumerate([
            ("iops", "iops_min", "iops_max", "IOPS (higher is better)"),
            ("cpu_us_per_io", "cpu_min", "cpu_max", "server CPU µs per I/O (lower is better)"),
        ]):
            ax = axes[row][col]
            top = 0.0
            for i, s in enumerate(servers):
                xs, ys, errs = [], [], [[], []]
                for j, w in enumerate(wls):
                    e = es.get((s, w))
                    if not e:
                        continue
                    xs.append(j - 0.4 + width * (i + 0.5))
                    ys.append(e[key] / 1000.0 if key == "iops" else e[key])
                    scale = 1000.0 if key == "iops" else 1.0
                    errs[0].append(max(0.0, e[key] - e[lo]) / scale)
                    errs[1].append(max(0.0, e[hi] - e[key]) / scale)
                ax.bar(xs, ys, width, yerr=errs, capsize=2, label=LABELS.get(s, s), color=COLORS.get(s))
                top = max([top] + ys)
            # An outlier's whisker must not flatten the bars: clip at 1.8x the tallest median.
            ax.set_ylim(0, top * 1.8 if key != "iops" else None)
            ax.set_xticks(range(len(wls)))
            ax.set_xticklabels(wls, fontsize=8)
            ax.set_title(f"{b} back end: {title}", fontsize=10)
            ax.set_ylabel("k IOPS" if key == "iops" else "µs")
            ax.grid(axis="y", alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    first = data.get("machine", "").splitlines()
    cpu = next((l for l in first if l.startswith("cpu:")), "")
    run = next((l for l in first if l.startswith("runtime:")), "")
    fig.suptitle(f"NBD export over a unix socket, fio nbd engine — medians, whiskers min–max (clipped)\n{cpu}; {run}", fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
