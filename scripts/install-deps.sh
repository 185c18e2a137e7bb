#!/usr/bin/env bash
# Installs the Debian packages ioplane needs to build and test, if missing.
# Runs apt-get update once, only when something has to be installed.
# Usage: scripts/install-deps.sh [build|run|test]
#   build: compilers and libraries; run: + the NBD clients the daemon suggests;
#   test: + fuzzing toolchain and every client the tests drive.
set -euo pipefail

build_packages=(cmake ninja-build g++ make pkg-config libgtest-dev libgmock-dev libbenchmark-dev
                nlohmann-json3-dev liburing-dev zlib1g-dev libzstd-dev)
client_packages=(qemu-utils libnbd-bin)
# Fuzzing (clang-16 + libFuzzer), the real clients the tests drive, and
# qemu-storage-daemon (qemu-system-common), the peer the QMP tests compare with;
# firmware and boot loaders for the guests that boot from an ioplane disk
# (OVMF, syslinux, systemd-boot) and the tools that make their disks;
# dpkg-dev for `apt-get source qemu` (tests/iotests/run.sh: QEMU's iotests).
test_packages=(python3 clang-16 libclang-rt-16-dev fio qemu-system-common qemu-system-x86 cpio xz-utils diod
               ovmf syslinux syslinux-common systemd-boot-efi fdisk dosfstools mtools python3-libnbd dpkg-dev
               "${client_packages[@]}")

want=("${build_packages[@]}")
case "${1:-build}" in
    run) want+=("${client_packages[@]}") ;;
    test) want+=("${test_packages[@]}") ;;
esac

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
