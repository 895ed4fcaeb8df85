#!/usr/bin/env python3
"""tetra serve beside llama.cpp's server, same GGUF, same threads, same load.

Starts each server in turn on 127.0.0.1 (tetra serve, then llama-server given
with --llama-server, or llama-cpp-python's server with --llama-cpp-python),
and drives it with the same closed-loop load: C concurrent streams, each
sending streaming /v1/completions requests back to back (distinct prompts of
about --prompt-tokens tokens, --max-tokens new tokens, greedy, ignore_eos),
until --requests requests per level are done. Reported per server and level:

  output tok/s   all streamed tokens / wall time of the level
  TTFT p50/p99   request sent -> first token
  ITL p50/p99    gap between consecutive tokens of a stream

Rounds (-r) alternate the servers so that the VM's drift hits both alike;
figures are pooled over the rounds (tok/s: mean and range). Loopback only.

Example:
  .venv-test/bin/python bench/serve_bench.py -m ~/.cache/tetra/models/bench-qwen3moe-a3b-8l.gguf -t 2 \\
      --tetra build/tetra --llama-server /work/peers/llama.cpp/build/bin/llama-server -c 1,4,16
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time

import httpx

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or had "
         "not but have one all they we their there been has when who will more no if out so said what up its "
         "about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much "
         "your way well down should because each just those people how too little state good very make world "
         "still own see men work long get here between both life being under never day same another know while "
         "last might us great old year off come since against go came right used take three").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_prompts(count, tokens, seed):
    rng = random.Random(seed)
    # About 1.3 tokens a word for this text with the SmolLM2 / Qwen tokenizers.
    words = max(1, int(tokens / 1.3))
    return [f"Request {i}. " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(count)]


class Server:
    def __init__(self, name, cmd, port, log_path):
        self.name, self.port = name, port
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 600
        while time.time() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"serve_bench: {name} exited with {self.proc.returncode}; see {log_path}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        sys.exit(f"serve_bench: {name} did not become healthy; see {log_path}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def one_request(client, url, prompt, max_tokens):
    """Streams one completion: (ttft, [inter-token gaps], tokens)."""
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    last, ttft, gaps, tokens, counted = None, None, [], 0, None
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            usage = chunk.get("usage")
            if usage:
                counted = usage["completion_tokens"]  # the server's own count, when it sends one
            if not chunk.get("choices"):
                continue
            now = time.perf_counter()
            # About one chunk per token (a token that completes no character
            # yet may send none); the usage chunk gives the exact count.
            tokens += 1
            if ttft is None:
                ttft = now - start
            else:
                gaps.append(now - last)
            last = now
    return ttft, gaps, counted if counted is not None else tokens


async def run_level(base, prompts, concurrency, max_tokens):
    url = base + "/v1/completions"
    queue = list(prompts)
    ttfts, gaps, tokens, failures, retries = [], [], 0, [], []
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(1800.0)) as client:
        async def worker():
            nonlocal tokens
            while queue:
                prompt = queue.pop()
                try:
                    t, g, n = await one_request(client, url, prompt, max_tokens)
                except httpx.RemoteProtocolError:
                    # A kept-alive connection the server closed as we reused it: send again.
                    retries.append(prompt[:40])
                    t, g, n = await one_request(client, url, prompt, max_tokens)
                if t is None:
                    failures.append(prompt[:40])  # a stream without a token
                    continue
                ttfts.append(t)
                gaps.extend(g)
                tokens += n
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    if failures or retries:
        print(f"serve_bench: {len(failures)} stream(s) sent no token, {len(retries)} resent", file=sys.stderr)
    return {"tok_s": tokens / wall, "ttft": ttfts, "itl": gaps, "tokens": tokens, "wall": wall,
            "failures": len(failures)}


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--tetra", default="build/tetra")
    ap.add_argument("--tetra-args", default="", help="extra tetra serve flags")
    ap.add_argument("--llama-server", help="llama-server binary")
    ap.add_argument("--llama-cpp-python", action="store_true", help="use llama-cpp-python's server as the peer")
    ap.add_argument("-c", "--concurrency", default="1,4,16")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (default: 2 x C, at least 4)")
    ap.add_argument("--prompt-tokens", type=int, default=250)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--parallel", type=int, default=16, help="llama-server -np")
    ap.add_argument("-r", "--rounds", type=int, default=1)
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    def tetra_cmd(port):
        return [args.tetra, "serve", "-m", args.model, "-t", str(args.threads), "--port", str(port),
                *args.tetra_args.split()]

    def llama_cmd(port):
        ctx = args.parallel * (args.prompt_tokens * 2 + args.max_tokens + 64)
        if args.llama_server:
            return [args.llama_server, "-m", args.model, "-t", str(args.threads), "--port", str(port), "--host",
                    "127.0.0.1", "-np", str(args.parallel), "-c", str(ctx), "--no-webui"]
        return [sys.executable, "-m", "llama_cpp.server", "--model", args.model, "--n_threads", str(args.threads),
                "--port", str(port), "--host", "127.0.0.1", "--n_ctx", str(ctx)]

    servers = [("tetra", tetra_cmd)]
    if args.llama_server or args.llama_cpp_python:
        servers.append(("llama.cpp", llama_cmd))
    results = {name: {c: [] for c in levels} for name, _ in servers}
    for round_index in range(args.rounds):
        order = servers if round_index % 2 == 0 else servers[::-1]
        for name, cmd in order:
            port = free_port()
            server = Server(name, cmd(port), port, f"/tmp/serve_bench_{name}_{port}.log")
            try:
                asyncio.run(run_level(server.base, make_prompts(2, args.prompt_tokens, 999), 2, 8))  # warm-up
                for c in levels:
                    n = args.requests or max(4, 2 * c)
                    prompts = make_prompts(n, args.prompt_tokens, seed=1000 * round_index + c)
                    r = asyncio.run(run_level(server.base, prompts, c, args.max_tokens))
                    results[name][c].append(r)
                    print(f"round {round_index} {name:9s} C={c:3d}: {r['tok_s']:7.1f} output tok/s, "
                          f"TTFT p50 {percentile(r['ttft'], 50):6.2f} s, ITL p50 {1000 * percentile(r['itl'], 50):6.1f} ms "
                          f"p99 {1000 * percentile(r['itl'], 99):6.1f} ms", flush=True)
            finally:
                server.stop()

    print(f"\nmodel {args.model}, {args.threads} threads, prompts ~{args.prompt_tokens} tokens, "
          f"{args.max_tokens} new tokens, greedy\n")
    print("| server | streams | output tok/s | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, _ in servers:
        for c in levels:
            rs = results[name][c]
            tok = [r["tok_s"] for r in rs]
            ttft = [x for r in rs for x in r["ttft"]]
            itl = [x for r in rs for x in r["itl"]]
            summary[(name, c)] = statistics.mean(tok)
            spread = f" ({min(tok):.1f}-{max(tok):.1f})" if len(tok) > 1 else ""
            print(f"| {name} | {c} | {statistics.mean(tok):.1f}{spread} | {percentile(ttft, 50):.2f} / "
                  f"{percentile(ttft, 99):.2f} | {1000 * percentile(itl, 50):.0f} / {1000 * percentile(itl, 99):.0f} |")
    if len(servers) == 2:
        print("\n| streams | tok/s ratio (tetra / llama.cpp) | TTFT p50 ratio |\n|---|---|---|")
        for c in levels:
            t = percentile([x for r in results["tetra"][c] for x in r["ttft"]], 50)
            l = percentile([x for r in results["llama.cpp"][c] for x in r["ttft"]], 50)
            print(f"| {c} | {summary[('tetra', c)] / summary[('llama.cpp', c)]:.2f}x | {t / l:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({name: {str(c): [{k: v for k, v in r.items()} for r in results[name][c]] for c in levels}
                       for name, _ in servers}, f)


if __name__ == "__main__":
    main()
