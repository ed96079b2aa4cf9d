#!/usr/bin/env bash
# Installs the Debian packages mica's build and tests need. Idempotent: quiet and quick when
# everything is already there.
set -euo pipefail

packages=(build-essential cmake pkg-config libcmocka-dev clang libclang-rt-14-dev
  libmicrohttpd-dev libjansson-dev libcurl4-gnutls-dev prometheus)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
