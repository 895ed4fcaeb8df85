#!/usr/bin/env bash
# Writes the benchmark MoE model (Qwen3-30B-A3B-shaped, 8 layers, random 4-bit
# weights, SmolLM2 tokenizer) with tools/make_bench_model.py, by default to
# ~/.cache/tetra/models/bench-qwen3moe-a3b-8l.gguf (~2.8 GB; see doc/bench-model.md).
#
#   scripts/make-bench-model.sh                 # default model; does nothing if it exists
#   scripts/make-bench-model.sh --verify        # any arguments go to the tool (always writes)
#   scripts/make-bench-model.sh -o small.gguf --layers 2 --experts 16 --hidden 512
#
# Needs python3 with venv; creates .venv-tools/ in the repo with only the tool's
# PyPI packages (gguf, numpy and their dependencies). Installs the SmolLM2 model
# (the tokenizer source) first when it is missing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv="${repo}/.venv-tools"
default_output="${HOME}/.cache/tetra/models/bench-qwen3moe-a3b-8l.gguf"
tokenizer_source="${HOME}/.cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf"

if [ $# -eq 0 ] && [ -f "$default_output" ]; then
  echo "make-bench-model: $default_output already exists (pass arguments, e.g. --verify, to rewrite it)"
  exit 0
fi

if [ ! -x "${venv}/bin/python" ]; then
  echo "make-bench-model: creating ${venv}"
  python3 -m venv "$venv"
fi
if ! "${venv}/bin/python" -c 'import gguf, numpy' 2>/dev/null; then
  "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -r "${repo}/tools/requirements-bench.txt"
fi

if [ ! -f "$tokenizer_source" ]; then
  "${repo}/scripts/install-default-model.sh"
fi

exec "${venv}/bin/python" "${repo}/tools/make_bench_model.py" "$@"
