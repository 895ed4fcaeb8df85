#!/usr/bin/env bash
# Installs dependencies and the default model, builds tetra and runs every
# test: the GoogleTest suites, a short fuzz run, and the end-to-end tests of
# `tetra serve` (official openai client, load, headless Chromium), whose
# Python packages go into .venv-test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-default-model.sh
if [ ! -x .venv-test/bin/python ]; then
  python3 -m venv .venv-test
fi
.venv-test/bin/pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
scripts/build.sh -DTETRA_E2E_PYTHON="$PWD/.venv-test/bin/python"
# Tests that need the default model fail (rather than skip) when it is absent.
export TETRA_REQUIRE_DEFAULT_MODEL=1
# A short libFuzzer run of each parser (longer: scripts/fuzz.sh 600).
scripts/fuzz.sh 20
cd build
ctest -j"$(nproc 2>/dev/null || echo 2)" --output-on-failure
