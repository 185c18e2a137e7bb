#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR for SECONDS each, starting from its
# seed corpus (SOURCE/<dir>/fuzz/corpus/<target>/ if present). Fails on the
# first crash, leak or timeout, leaving the reproducer in BUILD_DIR/crashes/.
set -euo pipefail
build=$1
seconds=${2:-20}
top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$build/crashes"
found=0
while IFS= read -r fuzzer; do
    found=$((found + 1))
    name=$(basename "$fuzzer")
    corpus="$build/corpus/$name"
    mkdir -p "$corpus"
    seeds=$(find "$top" -path "*/fuzz/corpus/$name" -type d -not -path "$top/build/*" | head -1)
    [ -n "$seeds" ] && cp -n "$seeds"/* "$corpus"/ 2>/dev/null || true
    echo "fuzz: $name for ${seconds}s"
    # The fuzzer's own status decides (with pipefail, a "|| true" here would
    # replace it with true's).
    set +e
    "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$build/crashes/$name-" -print_final_stats=1 "$corpus" >"$build/$name.log" 2>&1
    status=$?
    set -e
    grep -E "^(stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)" "$build/$name.log" || true
    [ "$status" -eq 0 ] || { tail -40 "$build/$name.log"; echo "fuzz: $name FAILED (artifacts in $build/crashes)"; exit 1; }
done < <(find "$build" -maxdepth 4 -type f -name 'fuzz_*' -perm -u+x | sort)
[ "$found" -gt 0 ] || { echo "fuzz: no fuzz targets in $build"; exit 1; }
echo "fuzz: $found targets ok"
