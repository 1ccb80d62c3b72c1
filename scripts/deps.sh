#!/usr/bin/env bash
# Installs the Debian packages helix builds with, when any is missing. Idempotent.
set -euo pipefail
PKGS=(cmake ninja-build g++ clang libclang-rt-14-dev clang-format pkg-config
      nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libopenblas-dev
      libopenmpi-dev openmpi-bin libomp-dev libgtest-dev libgmock-dev libbenchmark-dev
      libcpp-httplib-dev libpcre2-dev)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
