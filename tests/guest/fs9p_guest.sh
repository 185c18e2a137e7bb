#!/usr/bin/env bash
# The 9P export to the Linux kernel's v9fs client, in a guest booted under
# QEMU (TCG, user networking: the host's loopback is 10.0.2.2 in the guest).
# The guest creates, appends, truncates, renames, links, makes directories,
# changes modes and lists a directory of 10,000 entries through the mount;
# the host then checks the tree it sees. (Special files are not tried here:
# the guest kernel opens a fifo or device node it sees on a 9P mount itself,
# without asking the server; fs9p_protocol.py checks the server refuses them.)
# Usage: fs9p_guest.sh DAEMON [GUEST_DIR]
set -euo pipefail
. "$(dirname "$0")/guest_lib.sh" "$@"

share=$TMP/share
mkdir -p "$share/many" "$TMP/outside"
secret="host-secret-$RANDOM$RANDOM"
echo "$secret" >"$TMP/outside/secret"
ln -s ../outside/secret "$share/rel_escape"      # relative, out of the export
ln -s "$TMP/outside/secret" "$share/abs_escape"  # absolute host path
ln -s /etc "$share/etc_link"
(cd "$share/many" && seq -f 'e%05g' 0 9999 | xargs touch)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_daemon --object iothread,id=io0 \
    --export type=9p,id=share0,path="$share",addr.type=inet,addr.host=127.0.0.1,addr.port="$PORT",iothread=io0

cat >"$TMP/guest.sh" <<EOF
set -e
mount -t 9p -o trans=tcp,port=$PORT,aname=$share,version=9p2000.L,uname=root,access=user,msize=65536 10.0.2.2 /mnt
cd /mnt
echo one >f
echo two >>f
[ "\$(cat f)" = "one
two" ]
head -c 300000 /dev/urandom >big          # several times msize
md5sum big | cut -d' ' -f1 >big.md5
mv f g
truncate -s 4 g
ln g hard
ln -s g soft
[ "\$(readlink soft)" = g ]
mkdir -p d/e
rmdir d/e
chmod 600 g
set -- many/*                              # readdir only: ls would stat every entry
echo "entries: \$#"
# Links the host made that point out of the export resolve in the guest's
# namespace (where nothing is there), never on the host.
for l in rel_escape abs_escape; do
    if cat \$l 2>/dev/null; then echo "\$l: read"; else echo "\$l: refused"; fi
done
[ "\$(readlink etc_link)" = /etc ]
cd /
umount /mnt
echo guest-done
EOF
status=0
"$top/scripts/guest/run-guest.py" --guest "$GUEST" --net --timeout 240 --script "$TMP/guest.sh" >"$TMP/console" 2>&1 || status=$?
tr -d '\r' <"$TMP/console" >"$TMP/out"
show() { echo "--- guest console (tail):"; tail -30 "$TMP/out"; }
[ "$status" -eq 0 ] || { show; fail "guest script: status $status"; }
grep -qx guest-done "$TMP/out" || { show; fail "guest script did not finish"; }
pass "guest mounted the export and ran its file operations"

[ "$(cat "$share/g")" = one ] || fail "g: truncated content"
[ ! -e "$share/f" ] || fail "f still exists after mv"
[ "$(stat -c %h "$share/g")" = 2 ] && [ "$share/g" -ef "$share/hard" ] || fail "hard link"
[ "$(readlink "$share/soft")" = g ] || fail "symlink target"
[ -d "$share/d" ] && [ ! -e "$share/d/e" ] || fail "mkdir/rmdir"
[ "$(stat -c %a "$share/g")" = 600 ] || fail "chmod"
[ "$(md5sum <"$share/big" | cut -d' ' -f1)" = "$(cat "$share/big.md5")" ] || fail "big file checksum"
[ "$(stat -c %s "$share/big")" = 300000 ] || fail "big file size"
pass "the host sees the tree and contents the guest made"

grep -q "$secret" "$TMP/out" && { show; fail "the guest read a file outside the export"; }
grep -qx "rel_escape: refused" "$TMP/out" && grep -qx "abs_escape: refused" "$TMP/out" || { show; fail "escaping symlinks"; }
pass "symlinks out of the export do not reach the host's files"
grep -qx "entries: 10000" "$TMP/out" || { show; fail "readdir of 10,000 entries"; }
pass "readdir of 10,000 entries"
daemon_alive || fail "daemon died"
stop_daemon
