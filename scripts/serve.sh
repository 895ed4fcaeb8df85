#!/usr/bin/env bash
# The main job on a fresh machine: installs dependencies and the default
# model, builds tetra, and starts `tetra serve` on it (the chat page and an
# OpenAI-compatible API at http://127.0.0.1:8080/; Ctrl-C stops it).
# Arguments go to `tetra serve` (e.g. --port 9000, -m MODEL.gguf).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-default-model.sh
scripts/build.sh
exec build/tetra serve "$@"
