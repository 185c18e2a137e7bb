#!/usr/bin/env bash
# Runs QEMU 7.2's own qemu-iotests that start qemu-storage-daemon, once with
# Debian's qemu-storage-daemon and once with ioplane-storage-daemon as
# QSD_PROG, and prints the results side by side.
#
# The tests are not part of this repository: QEMU's source package is fetched
# at run time with `apt-get source qemu` (the version of the installed
# qemu-storage-daemon) into a cache directory outside the tree, after adding a
# deb-src entry derived from the machine's own Debian sources if it has none.
# QEMU_IMG_PROG, QEMU_IO_PROG and QEMU_NBD_PROG are Debian's binaries;
# QEMU_PROG is Debian's qemu-system through bin/qemu-system-x86_64, which
# swaps iotests' "-accel qtest" (not built into Debian's QEMU) for TCG.
#
# Usage: tests/iotests/run.sh [options] [TEST[:FMT[:PROTO]]...]
#   TEST       a numbered test (108) or a tests/ one (graph-changes-while-io);
#              FMT defaults to qcow2, PROTO to file. Default: every iotest of
#              QEMU 7.2 that uses qemu-storage-daemon (see DEFAULT_TESTS).
#   --only qsd|ioplane   run one side only
#   --expect-pass        fail unless ioplane passes every test run (CI)
#   --no-install         do not run scripts/install-deps.sh
#   --no-preflight       skip daemon_features.py (client chardev, pidfile)
# Environment:
#   IOPLANE_QSD           ioplane's daemon (default build/checked/daemon/ioplane-storage-daemon)
#   QEMU_QSD              QEMU's (default /usr/bin/qemu-storage-daemon)
#   IOTESTS_CACHE         where QEMU's source and the results go (default /var/cache/ioplane-iotests)
#   IOTESTS_TIMEOUT       seconds per test and side (default 600)
#   IOPLANE_LOG           ioplane's log level for the run (default warn: QSD prints nothing
#                         at startup, and bash iotests compare stderr too)
# Exit status: 0 when ioplane passes every test QEMU's daemon passes (with
# --expect-pass: every test).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# Every iotest of QEMU 7.2 that starts qemu-storage-daemon ($QSD in bash
# tests, iotests.QemuStorageDaemon in Python ones): all are qcow2-only, on
# the file protocol except qsd-jobs ("generic"). The -fuse protocol would run
# every test through QSD's FUSE export, which ioplane does not have; -raw and
# -nbd select none of these tests' QSD paths.
DEFAULT_TESTS=(108 185 281 graph-changes-while-io qsd-jobs)

only=
expect_pass=0
install=1
preflight=1
specs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only=$2; shift 2 ;;
        --expect-pass) expect_pass=1; shift ;;
        --no-install) install=0; shift ;;
        --no-preflight) preflight=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
        *) specs+=("$1"); shift ;;
    esac
done
[ ${#specs[@]} -gt 0 ] || specs=("${DEFAULT_TESTS[@]}")

IOPLANE_QSD=${IOPLANE_QSD:-$repo/build/checked/daemon/ioplane-storage-daemon}
QEMU_QSD=${QEMU_QSD:-/usr/bin/qemu-storage-daemon}
CACHE=${IOTESTS_CACHE:-/var/cache/ioplane-iotests}
TIMEOUT=${IOTESTS_TIMEOUT:-600}
export IOPLANE_LOG=${IOPLANE_LOG:-warn}

sides=()
case "$only" in
    "") sides=(qsd ioplane) ;;
    qsd|ioplane) sides=("$only") ;;
    *) echo "run.sh: --only takes qsd or ioplane" >&2; exit 2 ;;
esac
prog_of() { if [ "$1" = qsd ]; then echo "$QEMU_QSD"; else echo "$IOPLANE_QSD"; fi; }

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# ---------------------------------------------------------------- packages

if [ $install = 1 ]; then
    "$repo/scripts/install-deps.sh" test  # qemu-system-x86, qemu-utils, python3, dpkg-dev (apt-get source)
fi
for p in "${sides[@]}"; do
    prog=$(prog_of "$p")
    [ -x "$prog" ] || { echo "run.sh: $prog is missing (build it first: ninja -C build/checked ioplane-storage-daemon, or set IOPLANE_QSD)" >&2; exit 1; }
done

# ---------------------------------------------------------------- QEMU's source

# A deb-src twin of the machine's Debian entries, unless some deb-src entry
# exists already.
have_deb_src() {
    grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list && return 0
    grep -qsiE '^Types:.*[[:space:]]deb-src([[:space:]]|$)' /etc/apt/sources.list.d/*.sources && return 0
    return 1
}
ensure_deb_src() {
    have_deb_src && return 0
    local tmp
    tmp=$(mktemp)
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed -E 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$tmp"
        echo "run.sh: adding /etc/apt/sources.list.d/ioplane-iotests-deb-src.sources (from debian.sources)"
        "${sudo[@]}" install -m 0644 "$tmp" /etc/apt/sources.list.d/ioplane-iotests-deb-src.sources
    elif grep -qsE '^[[:space:]]*deb[[:space:]]' /etc/apt/sources.list; then
        sed -n -E 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' /etc/apt/sources.list >"$tmp"
        echo "run.sh: adding /etc/apt/sources.list.d/ioplane-iotests-deb-src.list (from sources.list)"
        "${sudo[@]}" install -m 0644 "$tmp" /etc/apt/sources.list.d/ioplane-iotests-deb-src.list
    else
        rm -f "$tmp"
        echo "run.sh: no Debian apt sources found to derive a deb-src entry from" >&2
        exit 1
    fi
    rm -f "$tmp"
}

# The source version of the installed qemu-storage-daemon's package (the
# tests must match the binaries), e.g. 1:7.2+dfsg-7+deb12u18.
qsd_pkg=$(dpkg -S "$(readlink -f "$QEMU_QSD")" 2>/dev/null | head -1 | cut -d: -f1)
src_version=$(dpkg-query -W -f='${source:Version}' "${qsd_pkg:-qemu-system-common}")
upstream=${src_version#*:}
upstream=${upstream%-*}
case "$upstream" in
    7.2*) ;;
    *) echo "run.sh: installed QEMU is $src_version; these tests are QEMU 7.2's" >&2; exit 1 ;;
esac
src="$CACHE/qemu-$upstream"
iotests="$src/tests/qemu-iotests"

"${sudo[@]}" mkdir -p "$CACHE"
"${sudo[@]}" chown "$(id -u):$(id -g)" "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # one run at a time per cache

if [ ! -x "$iotests/check" ] || [ ! -d "$src/python/qemu" ] || [ "$(cat "$src/.ioplane-version" 2>/dev/null)" != "$src_version" ]; then
    ensure_deb_src
    # apt-get source needs current source indexes: update once per fetch.
    "${sudo[@]}" apt-get update -qq
    rm -rf "$src"
    (cd "$CACHE" && { apt-get source -qq "qemu=$src_version" || apt-get source -qq qemu; } >"$CACHE/apt-get-source.log" 2>&1) || {
        echo "run.sh: apt-get source qemu failed:" >&2
        tail -20 "$CACHE/apt-get-source.log" >&2
        exit 1
    }
    [ -x "$iotests/check" ] || { echo "run.sh: $iotests/check missing after apt-get source" >&2; exit 1; }
    echo "$src_version" >"$src/.ioplane-version"
fi
echo "run.sh: qemu-iotests from QEMU $src_version in $iotests"

# A copy of ioplane's daemon, so that a rebuild while the tests run (others
# building in the same tree) does not pull the binary from under them.
if [ -n "$IOPLANE_QSD" ] && [[ " ${sides[*]} " == *" ioplane "* ]]; then
    mkdir -p "$CACHE/bin"
    cp "$IOPLANE_QSD" "$CACHE/bin/ioplane-storage-daemon.new"
    mv -f "$CACHE/bin/ioplane-storage-daemon.new" "$CACHE/bin/ioplane-storage-daemon"
    echo "run.sh: ioplane: $IOPLANE_QSD (copied to $CACHE/bin/, built $(date -r "$IOPLANE_QSD" '+%F %T'))"
    IOPLANE_QSD="$CACHE/bin/ioplane-storage-daemon"
fi

# ---------------------------------------------------------------- preflight

if [ $preflight = 1 ]; then
    progs=()
    for p in "${sides[@]}"; do progs+=("$(prog_of "$p")"); done
    echo "run.sh: daemon features the iotests rely on (tests/iotests/daemon_features.py):"
    python3 "$here/daemon_features.py" "${progs[@]}" | sed 's/^/  /' || true
fi

# ---------------------------------------------------------------- the tests

results="$CACHE/results"
rm -rf "$results"
mkdir -p "$results"

export QEMU_PROG="$here/bin/qemu-system-x86_64"
export QEMU_IMG_PROG=/usr/bin/qemu-img
export QEMU_IO_PROG=/usr/bin/qemu-io
export QEMU_NBD_PROG=/usr/bin/qemu-nbd
export PYTHONPATH="$src/python${PYTHONPATH:+:$PYTHONPATH}"
python=/usr/bin/python3

# Daemons a test left running (daemonized, so outside the test's process
# group): the pids in its pidfiles, if they still run one of our binaries.
reap_daemons() {
    local dir=$1 f pid exe
    for f in $(find "$dir" -maxdepth 2 -name '*pid*' -type f 2>/dev/null); do
        pid=$(tr -dc 0-9 <"$f" 2>/dev/null | head -c 10)
        [ -n "$pid" ] && [ -d "/proc/$pid" ] || continue
        exe=$(readlink -f "/proc/$pid/exe" 2>/dev/null || true)
        case "$exe" in
            "$(readlink -f "$QEMU_QSD")"|"$(readlink -f "$IOPLANE_QSD")") kill -KILL "$pid" 2>/dev/null || true ;;
        esac
    done
}

# Runs one test on one side; prints its status (pass, fail, not run, timeout).
run_one() {
    local side=$1 test=$2 fmt=$3 proto=$4
    local work="$results/$side/${test}-${fmt}-${proto}"
    local log="$work.log"
    mkdir -p "$work/scratch" "$work/sock"
    local pid status=0 t=0
    (
        cd "$iotests"
        export QSD_PROG
        QSD_PROG=$(prog_of "$side")
        export TEST_DIR="$work/scratch" SOCK_DIR="$work/sock"
        exec setsid "$python" ./check --color off "-$fmt" "-$proto" "$test"
    ) >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ $t -ge $((TIMEOUT * 10)) ]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            sleep 2
            kill -KILL -- "-$pid" 2>/dev/null || true
            echo "run.sh: timed out after ${TIMEOUT}s" >>"$log"
            status=timeout
            break
        fi
        sleep 0.1
        t=$((t + 1))
    done
    wait "$pid" 2>/dev/null || true
    reap_daemons "$work/scratch"
    local name=$test
    [[ $test =~ ^[0-9]+$ ]] && name=$(printf '%03d' "$((10#$test))")
    if [ "$status" != timeout ]; then
        status=$(tr '\r' '\n' <"$log" |
                 sed -n -E "s/^${name}[[:space:]]+(pass|fail|not run)([[:space:]].*)?\$/\1/p" | tail -1)
        [ -n "$status" ] || status=error
    fi
    # What the test printed, next to the log: its .out.bad, or for a pass
    # the reference output it matched.
    local f ref
    for f in "$work"/scratch/*.out.bad; do [ -f "$f" ] && cp "$f" "$work.out"; done
    if [ ! -f "$work.out" ] && [ "$status" = pass ]; then
        ref=$iotests/$name.out
        [ -f "$ref" ] || ref=$iotests/tests/$name.out
        [ -f "$ref" ] && cp "$ref" "$work.out"
    fi
    echo "$status"
}

declare -A result
rows=()
for spec in "${specs[@]}"; do
    IFS=: read -r test fmt proto <<<"$spec"
    fmt=${fmt:-qcow2}
    proto=${proto:-file}
    row="$test -$fmt -$proto"
    rows+=("$row")
    for side in "${sides[@]}"; do
        printf 'run.sh: %-40s %-8s ... ' "$row" "$side"
        result["$row|$side"]=$(run_one "$side" "$test" "$fmt" "$proto")
        echo "${result["$row|$side"]}"
    done
done

# ---------------------------------------------------------------- the table

# A cell's output with what differs between any two runs taken out: the
# per-side result paths and QSD_PROG's path, pids in socket names.
normalized() {
    local side=$1 row=$2 f
    f="$results/$side/$row.out"
    [ -f "$f" ] || return 0
    sed -e "s|$results/$side/|RESULTS/|g" -e "s|$(prog_of "$side")|QSD_PROG|g" \
        -e 's/qemutgt-[0-9]*/qemutgt-PID/g; s/qemu-[0-9]*-[0-9]*/qemu-PID/g' "$f"
}
# Unittest cases that failed in a Python test's output.
failed_cases() {
    tr '\r' '\n' <"$results/$1/$2.log" 2>/dev/null |
        sed -n -E 's/^\+(ERROR|FAIL): ([A-Za-z0-9_]+) \([^.]*\.([A-Za-z0-9_]+)\..*/\3.\2/p' | sort -u | tr '\n' ' ' || true
}

echo
echo "Command per cell: cd $iotests && QSD_PROG=<daemon> ./check -<fmt> -<proto> <test>"
echo "  (QEMU_PROG=$QEMU_PROG, QEMU_IMG_PROG=$QEMU_IMG_PROG, QEMU_IO_PROG=$QEMU_IO_PROG, QEMU_NBD_PROG=$QEMU_NBD_PROG)"
echo "Logs and outputs: $results/<qsd|ioplane>/<test>-<fmt>-<proto>.{log,out}"
echo
printf '%-36s %-10s %-10s %s\n' "test" "QSD 7.2" "ioplane" "ioplane's output vs QSD's"
printf '%-36s %-10s %-10s %s\n' "----" "-------" "-------" "-------------------------"
regressions=0
for row in "${rows[@]}"; do
    q=${result["$row|qsd"]:--}
    i=${result["$row|ioplane"]:--}
    cmp=-
    if [ ${#sides[@]} -eq 2 ]; then
        key=${row// -/-}
        if [ "$q" = "$i" ] && cmp -s <(normalized qsd "$key") <(normalized ioplane "$key"); then
            cmp=same
        else
            cmp=differs
        fi
    fi
    printf '%-36s %-10s %-10s %s\n' "$row" "$q" "$i" "$cmp"
    if [ "$q" = pass ] && [ "$i" != pass ] && [ "$i" != - ]; then regressions=$((regressions + 1)); fi
    if [ $expect_pass = 1 ] && [ "$i" != pass ]; then regressions=$((regressions + 1)); fi
done

if [ ${#sides[@]} -eq 2 ]; then
    for row in "${rows[@]}"; do
        key=${row// -/-}
        i=${result["$row|ioplane"]}
        [ "$i" = pass ] && continue
        echo
        echo "--- $row: QSD ${result["$row|qsd"]}, ioplane $i"
        qc=$(failed_cases qsd "$key")
        ic=$(failed_cases ioplane "$key")
        [ -z "$qc$ic" ] || printf '  failed cases: QSD: %s\n                ioplane: %s\n' "${qc:-none}" "${ic:-none}"
        if [ "$i" = "not run" ]; then
            cat "$results/ioplane/$key/scratch/"*.notrun 2>/dev/null | sed 's/^/  reason: /' || true
        else
            echo "  ioplane's output against QSD's (first lines):"
            { diff -u <(normalized qsd "$key") <(normalized ioplane "$key") || true; } |
                sed -n '3,$p' | grep -E '^[-+]' | head -12 | cut -c1-200 | sed 's/^/    /' || true
        fi
    done
fi
echo
echo "$regressions test(s) that QEMU's daemon passes and ioplane does not"
[ $regressions -eq 0 ]
