# ioplane — top-level entry points. Each target installs what it needs
# (Debian packages, as root) before building.
#
#   make run     build (Release) and serve build/run/disk.img over NBD (Ctrl-C stops)
#   make test    build and run every test: checked build, ASan+UBSan, TSan
#   make fuzz    build the libFuzzer targets (clang-16) and run each briefly
#   make bench   build (Release) and run the benchmarks
#   make build   build Release only

JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST := ctest --output-on-failure -j $(JOBS)

FUZZ_SECONDS ?= 20

.PHONY: all deps deps-run deps-test build run test test-checked test-asan test-tsan fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh build

deps-run:
	@scripts/install-deps.sh run

deps-test:
	@scripts/install-deps.sh test

# configure-and-build DIR BUILD_TYPE EXTRA_FLAGS
define cmake_build
	cmake -S . -B $(1) -G Ninja -DCMAKE_BUILD_TYPE=$(2) $(3) $(CMAKE_FLAGS) >/dev/null
	ninja -C $(1) -j $(JOBS)
endef

build: deps
	$(call cmake_build,build/release,Release,)

# The default job: a sparse 1 GiB image (created if missing) exported over NBD
# on a unix socket, from an IOThread, with a QMP monitor beside it. The daemon
# prints commands to try.
RUN_DIR ?= build/run
run: build deps-run
	@mkdir -p $(RUN_DIR)
	@[ -f $(RUN_DIR)/disk.img ] || truncate -s 1G $(RUN_DIR)/disk.img
	build/release/daemon/ioplane-storage-daemon \
	    --object iothread,id=io0 \
	    --blockdev driver=file,node-name=disk,filename=$(RUN_DIR)/disk.img \
	    --nbd-server addr.type=unix,addr.path=$(abspath $(RUN_DIR))/nbd.sock \
	    --export type=nbd,id=export0,node-name=disk,writable=on,iothread=io0 \
	    --chardev socket,id=qmp0,path=$(abspath $(RUN_DIR))/qmp.sock,server=on,wait=off --monitor chardev=qmp0

test: deps-test
	$(MAKE) --no-print-directory test-checked test-asan test-tsan fuzz

test-checked: deps-test
	$(call cmake_build,build/checked,Checked,-DIOPLANE_WERROR=ON)
	cd build/checked && $(CTEST)

test-asan: deps-test
	$(call cmake_build,build/asan,Checked,-DIOPLANE_WERROR=ON -DIOPLANE_SANITIZE=address -DIOPLANE_BENCH=OFF)
	cd build/asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 $(CTEST)

test-tsan: deps-test
	$(call cmake_build,build/tsan,Checked,-DIOPLANE_WERROR=ON -DIOPLANE_SANITIZE=thread -DIOPLANE_BENCH=OFF)
	cd build/tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 $(CTEST)

# Every libFuzzer target, FUZZ_SECONDS each, from its seed corpus.
fuzz: deps-test
	CC=clang-16 CXX=clang++-16 cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=Checked -DIOPLANE_FUZZ=ON >/dev/null
	ninja -C build/fuzz -j $(JOBS)
	scripts/run-fuzzers.sh build/fuzz $(FUZZ_SECONDS)

bench: build deps-test
	bench/core_report.py build/release/bench/core_bench

clean:
	rm -rf build
