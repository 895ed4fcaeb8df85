#!/usr/bin/env bash
# Builds the libFuzzer targets with clang into build-fuzz/ and runs each for
# SECONDS (default 60): the file parsers seeded with the format fixtures, the
# OpenAI request parser with the seeds written below. Findings land in
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
cmake --build build-fuzz -j"$(nproc 2>/dev/null || echo 2)" --target gguf_fuzzer safetensors_fuzzer openai_request_fuzzer kv_frame_fuzzer

# openai_request_fuzzer's seeds. The first byte is the mode: \x00 a
# completions body, \x01 a chat body, \x02/\x03 the same as raw HTTP bytes
# (\x0e/\x0f: fed to the parser 4 bytes at a time).
seed_openai() {
  local dir="$1"
  local completion='{"model":"m","prompt":"Hello","max_tokens":8,"temperature":0.7,"top_p":0.9,"n":2,"logprobs":2,"stop":["\n","END"],"seed":7,"echo":true,"stream":true,"stream_options":{"include_usage":true}}'
  local completion_ids='{"prompt":[[1,2,3],[4,5]],"top_k":40,"min_p":0.05,"repetition_penalty":1.1,"ignore_eos":true,"stop_token_ids":[2],"logit_bias":{"17":-100,"42":5.5},"best_of":1,"suffix":"","user":"u"}'
  local chat='{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"text","text":"there"}]},{"role":"assistant","content":null}],"max_completion_tokens":5,"logprobs":true,"top_logprobs":3,"continue_final_message":true,"add_generation_prompt":false,"response_format":{"type":"text"},"tools":[],"tool_choice":"none","presence_penalty":0.5,"frequency_penalty":-0.5,"priority":1,"skip_special_tokens":false,"include_stop_str_in_output":true}'
  printf '\x00%s' "$completion" >"$dir/seed-completion"
  printf '\x00%s' "$completion_ids" >"$dir/seed-completion-ids"
  printf '\x01%s' "$chat" >"$dir/seed-chat"
  printf '\x02POST /v1/completions?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAuthorization: Bearer k\r\nContent-Length: %d\r\n\r\n%s' \
    "${#completion}" "$completion" >"$dir/seed-http-completion"
  printf '\x0fPOST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nTrailer: x\r\n\r\n' \
    "${#chat}" "$chat" 2 '  ' >"$dir/seed-http-chunked-chat"
  printf '\x0eGET /v1/models HTTP/1.0\r\nExpect: 100-continue\r\n\r\n' >"$dir/seed-http-get"
  # Nested past ParseApiRequest's limit (a deep body would overflow the stack).
  printf '\x00{"prompt":%s1%s}' "$(printf '[%.0s' {1..70})" "$(printf ']%.0s' {1..70})" >"$dir/seed-deep"
}

mkdir -p build-fuzz/findings
for fuzzer in gguf_fuzzer safetensors_fuzzer openai_request_fuzzer kv_frame_fuzzer; do
  corpus="build-fuzz/corpus-${fuzzer}"
  mkdir -p "$corpus"
  if [[ "$fuzzer" == openai_request_fuzzer ]]; then
    seed_openai "$corpus"
  elif [[ "$fuzzer" == kv_frame_fuzzer ]]; then
    :  # no seeds: it builds valid headers from the bytes itself
  else
    find tests/fixtures/format -type f \( -name '*.gguf' -o -name '*.safetensors' \) -exec cp {} "$corpus/" \;
  fi
  echo "fuzz: ${fuzzer} for ${seconds}s"
  "build-fuzz/fuzz/${fuzzer}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix=build-fuzz/findings/ -print_final_stats=1 "$corpus" 2>&1 | tail -n 3
done
