#!/usr/bin/env bash
# A disaggregated tetra on loopback, for trying it out: N prefill instances,
# M decode instances and `tetra router` in front of them (doc/disaggregation.md).
# Clients talk to the router as to any OpenAI server; Ctrl-C stops everything.
#
#   scripts/cluster.sh                       # 1 prefill + 1 decode, router on 8000
#   scripts/cluster.sh --prefill 2 --decode 2 --port 9000 -- -m MODEL.gguf -t 1
#
# Arguments after -- go to every `tetra serve`. Instance ports start at
# router port + 1. Expects a built tetra (scripts/build.sh); with no -m the
# embedded default model (scripts/install-default-model.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
prefill=1 decode=1 port=8000
while [ $# -gt 0 ]; do
  case "$1" in
    --prefill) prefill="$2"; shift 2 ;;
    --decode) decode="$2"; shift 2 ;;
    --port) port="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "cluster: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -x build/tetra ] || { echo "cluster: build/tetra is missing: run scripts/build.sh" >&2; exit 1; }

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

next=$((port + 1)) prefill_urls=() decode_urls=()
for _ in $(seq "$prefill"); do
  build/tetra serve --role prefill --port "$next" "$@" & pids+=($!)
  prefill_urls+=(--prefill "http://127.0.0.1:$next"); next=$((next + 1))
done
for _ in $(seq "$decode"); do
  build/tetra serve --role decode --port "$next" "$@" & pids+=($!)
  decode_urls+=(--decode "http://127.0.0.1:$next"); next=$((next + 1))
done
build/tetra router --port "$port" "${prefill_urls[@]}" "${decode_urls[@]}" & pids+=($!)
echo "cluster: router on http://127.0.0.1:$port/v1 ($prefill prefill, $decode decode); Ctrl-C stops it" >&2
wait -n "${pids[@]}"
