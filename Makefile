# Builds everything into build/ (CLI at build/mica); `make test` runs the suite.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build test asan asan-test bench clean format

all: build

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# The same suite under AddressSanitizer + UndefinedBehaviorSanitizer, built with clang.
asan-test:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DMICA_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang"

# Benchmarks (bench/*.c): speed as ratios against a reference measured in the same run.
# Options go in BENCH_ARGS, e.g. make bench BENCH_ARGS="--type q4_0 -t 4".
BENCH_ARGS ?=
bench: build
	$(BUILD)/bench_moe $(BENCH_ARGS)

clean:
	rm -rf build build-asan

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
