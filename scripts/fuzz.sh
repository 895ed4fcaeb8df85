#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for
# SECONDS (default 60), seeded with the format fixtures. Findings land in
# build-fuzz/findings/. Does nothing (exit 0) when clang is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found, fuzzers skipped"
  exit 0
fi
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
CC=clang CXX=clang++ cmake -S . -B build-fuzz -DTETRA_BUILD_FUZZERS=ON -DTETRA_BUILD_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" --target gguf_fuzzer safetensors_fuzzer
mkdir -p build-fuzz/findings
for fuzzer in gguf_fuzzer safetensors_fuzzer; do
  corpus="build-fuzz/corpus-${fuzzer}"
  mkdir -p "$corpus"
  find tests/fixtures/format -type f \( -name '*.gguf' -o -name '*.safetensors' \) -exec cp {} "$corpus/" \;
  echo "fuzz: ${fuzzer} for ${seconds}s"
  "build-fuzz/fuzz/${fuzzer}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/findings/ -print_final_stats=1 "$corpus" 2>&1 | tail -n 3
done
