#!/usr/bin/env bash
# Builds a tiny Linux guest for integration tests from Debian packages:
# OUTDIR/vmlinuz (the kernel linux-image-amd64 depends on), OUTDIR/vmlinux
# (the same, uncompressed, when it can boot that way) and
# OUTDIR/initramfs.cpio.gz (static busybox, the virtio/9P modules, an /init
# that runs /test.sh from a cpio archive run-guest.py appends at run time).
# Does nothing when OUTDIR was built by this same script from the same
# package versions.  Usage: scripts/guest/make-guest.sh OUTDIR
set -euo pipefail
OUT=${1:?usage: make-guest.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Tests run in parallel may all call this first: one builds, the others wait
# and then find the result current.
exec 9>"$OUT/.lock"
flock 9

# Load order matters: insmod does not resolve dependencies.  Any of these the
# kernel has built in is simply absent from the package and skipped.
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
         failover net_failover virtio_net netfs fscache 9pnet 9pnet_fd 9p)
# Copied to /lib/modules but not loaded: a test script insmods what it needs
# (edd: what the BIOS reported of its disks at boot, in /sys/firmware/edd).
ON_DEMAND_MODULES=(edd)

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
export DEBIAN_FRONTEND=noninteractive

# Host tools, installed only if missing, as scripts/install-deps.sh does.
missing=()
for p in cpio xz-utils gzip qemu-system-x86; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=
apt_update() { [ -n "$updated" ] || "${as_root[@]}" apt-get update -qq; updated=1; }
if [ ${#missing[@]} -gt 0 ]; then
    echo "make-guest: installing ${missing[*]}"
    apt_update
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Only the package lists are read here, so an up-to-date guest costs no download.
# Prints e.g. "linux-image-6.1.0-56-amd64 (= 6.1.192-2); busybox-static 1:1.35.0-4+deb12u1+b1".
versions() {
    apt-cache show --no-all-versions linux-image-amd64 busybox-static 2>/dev/null | awk '
        /^Package:/ { p = $2 }
        p == "linux-image-amd64" && sub(/^Depends: /, "") { k = $0 }
        p == "busybox-static" && /^Version:/ { b = $2 }
        END { if (k != "" && b != "") print k "; busybox-static " b }'
}
pkgs=$(versions)
[ -n "$pkgs" ] || { apt_update; pkgs=$(versions); }
kpkg=${pkgs%% *}
[[ $kpkg == linux-image-*-amd64 ]] || { echo "make-guest: unexpected package versions: $pkgs" >&2; exit 1; }
stamp="$pkgs; $(sha256sum <"$0" | cut -c1-16)"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$stamp" ] && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ]; then
    echo "make-guest: $OUT is current ($kpkg)"
    exit 0
fi

work=$(mktemp -d /tmp/ioplane-guest-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "make-guest: downloading $kpkg busybox-static"
# The Sandbox option only silences apt's warning that _apt cannot write to a
# root-owned mktemp directory.  A stale list may name a version the mirror has
# dropped: refresh once and retry.
download() { apt-get download -qq -o APT::Sandbox::User=root "$kpkg" busybox-static; }
download || { updated=; apt_update; download; }
dpkg -x linux-image-*.deb kernel
dpkg -x busybox-static_*.deb bb

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,mnt,root,etc,lib/modules}
cp bb/bin/busybox "$root/bin/busybox"
# Applet links made here rather than with --install at boot: nothing to run on
# each boot under TCG, and /init itself needs /bin/sh.
for a in $("$root/bin/busybox" --list-full); do
    [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done

# copy_module NAME: into /lib/modules; false if the kernel has it built in.
copy_module() {
    local f
    f=$(find kernel/lib/modules \( -name "$1.ko" -o -name "$1.ko.xz" \) -print -quit)
    [ -n "$f" ] || return 1
    case $f in
        # Debian's busybox insmod reads .ko.xz too (FEATURE_SEAMLESS_XZ), but
        # that is a build option of theirs; decompressing here does not care.
        *.xz) xz -dc "$f" >"$root/lib/modules/$1.ko" ;;
        *) cp "$f" "$root/lib/modules/$1.ko" ;;
    esac
}
loaded=()
for m in "${MODULES[@]}"; do
    copy_module "$m" && loaded+=("$m")
done
for m in "${ON_DEMAND_MODULES[@]}"; do copy_module "$m" || true; done

cat >"$root/init" <<EOF
#!/bin/sh
# Modules found in $kpkg; the others are built in.
MODULES="${loaded[*]}"
EOF
cat >>"$root/init" <<'EOF'
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
# The initramfs has no /dev/console node (creating one needs root at build
# time), so the kernel started us without stdio: take the console now.
exec </dev/console >/dev/console 2>&1
for m in $MODULES; do insmod /lib/modules/$m.ko || echo "init: insmod $m failed"; done
if [ -e /sys/class/net/eth0 ]; then
    # QEMU user networking: the host is 10.0.2.2.
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi
cd /root
if [ -f /test.sh ]; then
    /bin/sh /test.sh
    rc=$?
else
    echo "init: no /test.sh in the initramfs"
    rc=127
fi
sync
echo "GUEST-EXIT-STATUS=$rc"
poweroff -f
EOF
chmod 755 "$root/init"

kver=${kpkg#linux-image-}
rm -f "$OUT/stamp"                     # a half-written result is never current
cp "kernel/boot/vmlinuz-$kver" "$OUT/vmlinuz"
# Under TCG the bzImage spends ~5 s of an ~8 s boot in BIOS real-mode setup
# and xz-decompressing itself.  QEMU boots the uncompressed ELF inside it
# directly through its PVH entry point, where the kernel has one.
rm -f "$OUT/vmlinux"
if grep -qx CONFIG_PVH=y "kernel/boot/config-$kver"; then
    off=$(LC_ALL=C grep -obUaP -m1 '\xfd7zXZ\x00' "$OUT/vmlinuz" | cut -d: -f1 || true)
    off=${off%%$'\n'*}
    if [ -n "$off" ]; then
        tail -c +$((off + 1)) "$OUT/vmlinuz" >payload.xz
        xz -dcq --single-stream payload.xz >"$OUT/vmlinux"
        [ "$(head -c4 "$OUT/vmlinux")" = $'\x7fELF' ] || rm -f "$OUT/vmlinux"
    fi
fi
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6n) >"$OUT/initramfs.cpio.gz"
echo "$stamp" >"$OUT/stamp"
echo "make-guest: built $OUT (kernel $kver; modules: ${loaded[*]:-none})"
