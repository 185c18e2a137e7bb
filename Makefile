# ioplane — top-level entry points. Each target installs what it needs
# (Debian packages, as root) before building.
#
#   make run     build (Release) and run the daemon on its default setup
#   make test    build and run every test: checked build, ASan+UBSan, TSan
#   make fuzz    build the libFuzzer targets (clang-16) and run each briefly
#   make bench   build (Release) and run the benchmarks
#   make build   build Release only

JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST := ctest --output-on-failure -j $(JOBS)

FUZZ_SECONDS ?= 20

.PHONY: all deps deps-test build run test test-checked test-asan test-tsan fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh build

deps-test:
	@scripts/install-deps.sh test

# configure-and-build DIR BUILD_TYPE EXTRA_FLAGS
define cmake_build
	cmake -S . -B $(1) -G Ninja -DCMAKE_BUILD_TYPE=$(2) $(3) $(CMAKE_FLAGS) >/dev/null
	ninja -C $(1) -j $(JOBS)
endef

build: deps
	$(call cmake_build,build/release,Release,)

run: build
	build/release/daemon/ioplane-storage-daemon

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
