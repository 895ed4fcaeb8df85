#!/usr/bin/env bash
# The main job on a fresh machine: installs dependencies and the default
# model, builds tetra, and generates text with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-default-model.sh
scripts/build.sh
build/tetra generate -p "${1:-The capital of France is}" -n "${2:-32}" --temperature 0
