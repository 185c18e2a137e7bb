#!/usr/bin/env bash
# Every ioplane-9pload workload against a 9P export in an IOThread, 16
# requests in flight, for a second each: concurrent creates, unlinks,
# readdirs, reads and writes on one connection (under TSan in CI). Each must
# complete operations without an error and leave the export as it was.
# Usage: fs9p_load.sh DAEMON IOPLANE_9PLOAD
set -euo pipefail
DAEMON=$1
LOAD=$2
. "$(dirname "$0")/lib.sh"
share=$TMP/share
mkdir "$share"
start_daemon --object iothread,id=io0 \
    --export type=9p,id=s0,path="$share",addr.type=unix,addr.path="$TMP/9p.sock",iothread=io0
for w in getattr read4k read1m write4k write1m create-unlink readdir open; do
    out=$("$LOAD" --unix "$TMP/9p.sock" --workload "$w" --concurrency 16 --duration 1 \
          --file-size 8M --entries 200 --quiet 2>"$TMP/load.err") || { cat "$TMP/load.err"; fail "$w"; }
    ops=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ops"])' "$out")
    [ "$ops" -gt 0 ] || fail "$w: no operations completed"
    pass "$w: $ops ops"
done
[ -z "$(ls -A "$share")" ] || fail "the load generator left files behind: $(ls -A "$share" | head -3)"
daemon_alive || fail "daemon died"
stop_daemon
