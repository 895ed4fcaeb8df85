#!/usr/bin/env bash
# Installs what tetra needs to build and test on Debian 12 (bookworm) or later.
# Idempotent: apt runs only when a package is missing. Needs root (or sudo).
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache git
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libpcre2-dev libutf8proc-dev
  libxxhash-dev  # the KV transport's payload hashes
  libgtest-dev libgmock-dev libbenchmark-dev
  libboost-dev  # Boost.Beast/Asio: the HTTP server
  python3 python3-pip python3-venv unzip
  clang libclang-rt-dev  # libFuzzer targets (scripts/fuzz.sh)
  chromium chromium-driver fonts-dejavu-core  # the chat page's test in a headless browser
  etcd-server iproute2  # the disaggregation tests: discovery through etcd, a partition between network namespaces
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
