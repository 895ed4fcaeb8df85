#!/usr/bin/env bash
# Installs dependencies and the default model, builds tetra and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-default-model.sh
scripts/build.sh
# Tests that need the default model fail (rather than skip) when it is absent.
export TETRA_REQUIRE_DEFAULT_MODEL=1
# A short libFuzzer run of both parsers (longer: scripts/fuzz.sh 600).
scripts/fuzz.sh 20
cd build
ctest -j"$(nproc 2>/dev/null || echo 2)" --output-on-failure
