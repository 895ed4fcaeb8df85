#!/usr/bin/env bash
# Installs what the transport comparison (bench/transport_compare.py) runs
# beside tetra: iperf3 (Debian) and Mooncake's transfer engine (PyPI
# mooncake-transfer-engine, into .venv-bench/, with the CUDA runtime its
# binaries link and the rdma-core libraries they load). Not needed to build
# or test tetra. Idempotent; apt needs root (or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iperf3 libibverbs1 ibverbs-providers python3-venv)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-bench-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
fi
.venv-bench/bin/pip install --quiet --disable-pip-version-check mooncake-transfer-engine nvidia-cuda-runtime-cu12
echo "install-bench-deps: done (Mooncake's binaries also load libcuda.so.1: the NVIDIA driver's, or the CUDA toolkit's stub)"
