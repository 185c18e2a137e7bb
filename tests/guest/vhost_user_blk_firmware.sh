#!/usr/bin/env bash
# VMs reach an ioplane vhost-user-blk disk through their firmware, as real
# VMs do (QEMU, TCG, memfd RAM shared with the daemon). Each boot path runs
# with one queue, two queues in one IOThread, and two queues in two:
#   seabios-bzimage  SeaBIOS, -kernel vmlinuz: the kernel's real-mode setup
#                    asks the BIOS about its disks (EDD) and reads their MBR
#                    through SeaBIOS's virtio-blk driver;
#   seabios-disk     SeaBIOS boots the ioplane disk (bootindex=1): syslinux's
#                    boot sector and ldlinux, the kernel and initrd are all
#                    read through the firmware's driver (a FAT file system
#                    from sector 0: an MBR chaining to a partition's boot
#                    sector hangs under TCG with any vhost-user back end,
#                    docs/VHOST-USER-BLK.md);
#   ovmf-disk        OVMF (UEFI, q35) boots systemd-boot from an EFI system
#                    partition on the disk, which loads the kernel and
#                    initrd; the device is transitional (OVMF drives it as a
#                    legacy virtio device);
#   ovmf-modern      the same with disable-legacy=on (a virtio 1.0 driver).
# The booted Linux then writes 8 MiB with O_DIRECT to the disk's data area
# and reads it back; the image on the host must hold it.
# Usage: vhost_user_blk_firmware.sh DAEMON [GUEST_DIR]
set -euo pipefail
. "$(dirname "$0")/guest_lib.sh" "$@"
SOCK=$TMP/vub.sock
IMG=$TMP/disk.img
MIB=1048576

# The guest's check: 8 MiB at 49 MiB of /dev/vda, the data area of the boot
# disks (make-boot-disk.py: after the 48 MiB boot file system or partition).
DATA_OFFSET=$((49 * MIB))
cat >"$TMP/check.sh" <<'EOF'
set -e
echo "cmdline: $(cat /proc/cmdline)"
echo "queues: $(ls /sys/block/vda/mq | wc -l)"
if insmod /lib/modules/edd.ko 2>/dev/null; then
    echo "edd mbr signature: $(cat /sys/firmware/edd/int13_dev80/mbr_signature 2>/dev/null || echo none)"
fi
head -c 8388608 /dev/urandom >/tmp/data
dd if=/tmp/data of=/dev/vda bs=64k seek=784 oflag=direct 2>/dev/null
dd if=/dev/vda of=/tmp/back bs=64k skip=784 count=128 iflag=direct 2>/dev/null
echo "written: $(md5sum </tmp/data | cut -d' ' -f1)"
echo "read: $(md5sum </tmp/back | cut -d' ' -f1)"
EOF
for fw in bios uefi; do
    "$top/scripts/guest/make-boot-disk.py" --guest "$GUEST" --script "$TMP/check.sh" --firmware "$fw" \
        "$TMP/boot-$fw.img" || fail "make-boot-disk.py --firmware $fw"
done
# For the -kernel boot: a blank disk of the same size whose MBR has a disk
# signature (which the EDD probe reads).
truncate -s "$(stat -c %s "$TMP/boot-bios.img")" "$TMP/blank.img"
printf '\x6c\x70\x6f\x69' | dd of="$TMP/blank.img" bs=1 seek=440 conv=notrunc 2>/dev/null  # 0x696f706c
printf '\x55\xaa' | dd of="$TMP/blank.img" bs=1 seek=510 conv=notrunc 2>/dev/null

# host_md5 OFFSET LEN: of the image range.
host_md5() { python3 -c "import hashlib,sys; f=open(sys.argv[1],'rb'); f.seek($1); print(hashlib.md5(f.read($2)).hexdigest())" "$IMG"; }
# mbr_signature: the disk signature in the image's MBR, as Linux's edd prints it.
mbr_signature() { python3 -c "import sys; f=open(sys.argv[1],'rb'); f.seek(440); print('0x%08x' % int.from_bytes(f.read(4), 'little'))" "$IMG"; }

summary=()
# boot NAME QUEUES IOTHREADS: serves $IMG over vhost-user-blk with QUEUES
# queues in IOTHREADS IOThreads, boots the guest the way NAME says, and
# checks what it wrote.
boot() {
    local name=$1 queues=$2 iothreads=$3 case="$1 ${2}q/${3}io"
    local placement=iothread=io0 objects=(--object iothread,id=io0)
    if [ "$iothreads" -eq 2 ]; then
        placement=iothread.0=io0,iothread.1=io1
        objects+=(--object iothread,id=io1)
    fi
    local run=(--memfd --memory 256 --timeout 180 --firmware-log "$TMP/firmware.log")
    local device=vhost-user-blk-pci,chardev=vu,num-queues=$queues machine=()
    # Linux uses a queue per vCPU at most.
    [ "$queues" -eq 1 ] || machine+=(-smp "$queues")
    case $name in
    seabios-bzimage)
        cp --sparse=always "$TMP/blank.img" "$IMG"
        run+=(--boot bzimage --script "$TMP/check.sh") ;;
    seabios-disk)
        cp --sparse=always "$TMP/boot-bios.img" "$IMG"
        run+=(--boot disk)
        device+=,bootindex=1 ;;
    ovmf-disk | ovmf-modern)
        cp --sparse=always "$TMP/boot-uefi.img" "$IMG"
        run+=(--boot disk --firmware ovmf)
        device+=,bootindex=1
        [ "$name" = ovmf-modern ] && device+=,disable-legacy=on
        machine+=(-M q35) ;;
    esac
    : >"$TMP/daemon.log"
    start_daemon "${objects[@]}" --blockdev driver=file,node-name=d0,filename="$IMG" \
        --export type=vhost-user-blk,id=vdisk0,node-name=d0,writable=on,addr.type=unix,addr.path="$SOCK,num-queues=$queues,$placement"
    local started=$SECONDS status=0
    "$top/scripts/guest/run-guest.py" --guest "$GUEST" "${run[@]}" -- "${machine[@]}" \
        -chardev socket,id=vu,path="$SOCK" -device "$device" >"$TMP/console.out" 2>&1 || status=$?
    local took=$((SECONDS - started))
    if [ "$status" -ne 0 ]; then
        echo "--- guest console (tail):"
        tail -25 "$TMP/console.out"
        echo "--- firmware log (tail):"
        tail -15 "$TMP/firmware.log"
        fail "$case: guest status $status after ${took}s"
    fi
    local written read_back
    written=$(sed -n 's/^written: //p' "$TMP/console.out" | tr -d '\r')
    read_back=$(sed -n 's/^read: //p' "$TMP/console.out" | tr -d '\r')
    [ -n "$written" ] && [ "$written" = "$read_back" ] || fail "$case: the guest read back $read_back, wrote $written"
    [ "$(host_md5 "$DATA_OFFSET" 8388608)" = "$written" ] || fail "$case: the image does not hold what the guest wrote"
    grep -q "^queues: $queues" "$TMP/console.out" || fail "$case: the guest does not see $queues queues"
    case $name in
    seabios-*)
        # The kernel's setup read the MBR through SeaBIOS's driver.
        grep -q "^edd mbr signature: $(mbr_signature)" "$TMP/console.out" ||
            fail "$case: EDD did not report the disk's MBR signature $(mbr_signature)"
        ;;
    esac
    case $name in
    seabios-disk) grep -q "cmdline: BOOT_IMAGE=/vmlinuz" "$TMP/console.out" || fail "$case: not booted by syslinux" ;;
    ovmf-*) grep -q 'cmdline: initrd=\\initrd' "$TMP/console.out" || fail "$case: not booted by systemd-boot" ;;
    esac
    # OVMF drives a transitional device as a legacy one; Linux drives it as virtio 1.
    case $name in
    ovmf-disk) grep -q "features of a legacy driver" "$TMP/daemon.log" || fail "$case: no legacy driver (OVMF) seen" ;;
    *) ! grep -q "features of a legacy driver" "$TMP/daemon.log" || fail "$case: a legacy driver negotiated" ;;
    esac
    grep -q "features of a virtio 1 driver" "$TMP/daemon.log" || fail "$case: no virtio 1 driver (Linux) seen"
    if [ "$iothreads" -eq 2 ]; then
        grep -q "queue 1: started in 'io1'" "$TMP/daemon.log" || fail "$case: queue 1 never ran in io1"
    fi
    stop_daemon
    pass "$case: booted, 8 MiB O_DIRECT written and read back, in the image (${took}s)"
    summary+=("$case ${took}s")
}

for path in seabios-bzimage seabios-disk ovmf-disk ovmf-modern; do
    boot "$path" 1 1
    boot "$path" 2 1
    boot "$path" 2 2
done
echo "boot times: ${summary[*]}"
