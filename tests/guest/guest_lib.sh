# Sourced by the guest tests (`. "$(dirname "$0")/guest_lib.sh" "$@"`):
# DAEMON (their first argument), GUEST (the second, default build/guest),
# top (the source tree), the integration helpers of tests/integration/lib.sh
# (TMP, start_daemon, stop_daemon, fail, pass), and a current guest built by
# scripts/guest/make-guest.sh.
DAEMON=$1
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
GUEST=${2:-$top/build/guest}
. "$top/tests/integration/lib.sh"

"$top/scripts/guest/make-guest.sh" "$GUEST" >"$TMP/make-guest.log" 2>&1 || { cat "$TMP/make-guest.log"; fail "make-guest.sh"; }
