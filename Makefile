# Builds everything into build/ (CLI at build/mica); `make test` runs the suite.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build test asan asan-test aarch64-test bench default-model clean format

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, built with clang.
asan-test:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DMICA_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang"

# Cross build for 64-bit Arm (Raspberry Pi 4B) into build-aarch64, tested under qemu user
# mode (docs/arm.md): the suite as a Cortex-A72 (NEON, no sdot), then the tensor tests as
# qemu's "max" CPU (sdot); test_families checks that run-time detection picks each family.
# cli_test_cli stays out: it bounds the peak RSS of `mica run`, and under qemu that is qemu's.
AARCH64_BUILD ?= build-aarch64
AARCH64_CMAKE = cmake -S . -B $(AARCH64_BUILD) -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
aarch64-test:
	@$(AARCH64_CMAKE) -DCMAKE_BUILD_TYPE=Release -DMICA_QEMU_CPU=cortex-a72 >/dev/null
	@cmake --build $(AARCH64_BUILD) -j $(JOBS)
	cd $(AARCH64_BUILD) && MICA_EXPECT_SIMD=neon ctest --output-on-failure -j $(JOBS) -E '^cli_test_cli$$'
	@$(AARCH64_CMAKE) -DMICA_QEMU_CPU=max >/dev/null
	cd $(AARCH64_BUILD) && MICA_EXPECT_SIMD=neon-dotprod ctest --output-on-failure -j $(JOBS) -R '^tensor_'

# Benchmarks (bench/*.c): speed as ratios against a reference measured in the same run.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--type q4_0 -t 4".
BENCH_ARGS ?=
bench: build
	$(BUILD)/bench_moe $(BENCH_ARGS)

# The embedded default model and its site-b LoRA demo, trained from nothing (models/README.md;
# about an hour on 2 cores).
default-model: build
	scripts/make-default-model.sh $(BUILD)

clean:
	rm -rf build build-asan build-aarch64

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
