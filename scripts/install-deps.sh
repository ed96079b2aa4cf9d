#!/usr/bin/env bash
# Installs the Debian packages mica's build and tests need. Idempotent: quiet and quick when
# everything is already there.
set -euo pipefail

packages=(build-essential cmake pkg-config libcmocka-dev clang libclang-rt-14-dev
  libmicrohttpd-dev libjansson-dev libcurl4-gnutls-dev libgnutls28-dev gnutls-bin prometheus)
packages+=(libsqlite3-dev) # the gateway's request log (src/store)
# The aarch64 cross build and its tests under qemu (make aarch64-test) on x86-64 machines;
# cmocka and the libc that qemu runs the tests with come from Debian multiarch.
if [ "$(dpkg --print-architecture)" = amd64 ]; then
  packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libc6:arm64 libcmocka-dev:arm64)
fi
# Node.js runs the official openai npm client in the gateway's tests.
command -v node >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  case " ${missing[*]} " in
  *:arm64\ *) dpkg --print-foreign-architectures | grep -qx arm64 || $sudo dpkg --add-architecture arm64 ;;
  esac
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The official openai npm client (version pinned by its package-lock.json).
client="$(dirname "$0")/../tests/server/openai"
if [ ! -d "$client/node_modules/openai" ]; then
  echo "install-deps: installing the openai npm client"
  npm ci --prefix "$client" --no-audit --no-fund --loglevel=error >/dev/null
fi
