# cmake/aarch64-linux-gnu.cmake - CMake toolchain file for a cross build to 64-bit Arm Linux
# (Raspberry Pi 4B: Cortex-A72, ARMv8.0-A) with Debian's gcc-aarch64-linux-gnu. ctest runs the
# tests under qemu user mode (qemu-user), as the CPU named by MICA_QEMU_CPU.
#
# Used by `make aarch64-test` (Makefile) and CI (.ci/run):
#   cmake -S . -B build-aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# Libraries come from Debian multiarch (/usr/lib/aarch64-linux-gnu: libcmocka-dev:arm64) and
# libc from libc6-dev-arm64-cross (/usr/aarch64-linux-gnu); scripts/install-deps.sh installs
# them. The gateway's libraries are not installed for arm64, so MICA_SERVER defaults to OFF
# here (-DMICA_SERVER=ON where they are).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(MICA_CROSS_TRIPLE aarch64-linux-gnu)
set(CMAKE_C_COMPILER ${MICA_CROSS_TRIPLE}-gcc)
# Plain ARMv8.0-A code scheduled for the Pi 4B's core; the sdot kernels (dot_neon.c) carry
# their own target attribute and run only where getauxval says the CPU has sdot.
set(CMAKE_C_FLAGS_INIT "-mtune=cortex-a72")
set(MICA_SERVER OFF CACHE BOOL "build the gateway (mica serve)")

# Find the target's libraries and headers, never the build machine's; programs (pkg-config)
# come from the build machine.
set(CMAKE_FIND_ROOT_PATH /usr/${MICA_CROSS_TRIPLE})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# pkg-config reads only the arm64 multiarch .pc files.
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/${MICA_CROSS_TRIPLE}/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# The CPU qemu emulates: cortex-a72 (the Pi 4B, no sdot) by default; cortex-a76 (the Pi 5,
# ARMv8.2 with sdot) or max exercise the dot-product kernels. Changing it needs only a
# re-run of cmake, no rebuild.
set(MICA_QEMU_CPU cortex-a72 CACHE STRING "CPU that qemu-aarch64 emulates for ctest")
# -L /: the loader and libc of Debian's libc6:arm64 (multiarch, which libcmocka0:arm64 pulls
# in), one matched pair. With -L /usr/aarch64-linux-gnu the cross package's loader would load
# the multiarch libc.so.6 of another build, and pthread_create and fork hang.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L / -cpu ${MICA_QEMU_CPU})
