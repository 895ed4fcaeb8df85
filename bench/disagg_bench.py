#!/usr/bin/env python3
"""Colocated against disaggregated tetra on one machine, one core per role.

Workload, the same for both, for --seconds: --chat streams of chat-sized
requests (about --chat-prompt tokens, --chat-tokens new tokens, back to
back) while --long streams send long prompts (--long-min to --long-max
tokens, --long-tokens new tokens, back to back): the case where a long
prefill stalls every decoding stream of a colocated server. With
--chat-rate / --long-rate the requests arrive open loop instead (Poisson,
the same request rate for both configurations, whatever their speed).

  colocated      tetra serve -t 2 (both cores), chunked prefill mixed with decodes
  disaggregated  tetra serve --role prefill -t 1 on core 0, --role decode -t 1 on
                 core 1, tetra router in front (taskset pins them)

Reported per configuration and request class: requests done, TTFT p50/p99,
inter-token latency (ITL) p50/p99, and goodput: requests per second that
met the SLO (TTFT <= --slo-ttft s and mean ITL <= --slo-itl ms). Rounds
alternate the configurations. Prompts are token ids (distinct per request,
no shared prefix), greedy, ignore_eos.

Example:
  .venv-test/bin/python bench/disagg_bench.py --tetra build/tetra -m ~/.cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import argparse
import asyncio
import json
import random
import os
import shutil
import sys
import time

import httpx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_bench import Server, free_port, percentile  # noqa: E402  the same process and percentile helpers


class Proc(Server):
    """serve_bench's server process, named by its log."""

    def __init__(self, cmd, port, log):
        super().__init__(log, cmd, port, log)


def pinned(core, cmd):
    return (["taskset", "-c", str(core)] if shutil.which("taskset") else []) + cmd


async def stream(client, url, prompt, max_tokens):
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True}
    start = time.perf_counter()
    last = ttft = None
    gaps = []
    async with client.stream("POST", url, json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:200]}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if not json.loads(line[6:]).get("choices"):
                continue
            now = time.perf_counter()
            if ttft is None:
                ttft = now - start
            else:
                gaps.append(now - last)
            last = now
    return ttft, gaps


async def run_load(base, args, seed):
    url = base + "/v1/completions"
    rng = random.Random(seed)
    results = {"chat": [], "long": []}
    deadline = time.perf_counter() + args.seconds
    counter = [0]

    def prompt(n):
        counter[0] += 1
        k = counter[0] * 7919 + seed * 104729
        return [(k + i * 37) % 40000 + 100 for i in range(n)]

    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0),
                                 limits=httpx.Limits(max_connections=args.chat + args.long + 4)) as client:
        async def worker(kind):
            while time.perf_counter() < deadline:
                if kind == "chat":
                    p, n = prompt(args.chat_prompt), args.chat_tokens
                else:
                    p, n = prompt(rng.randint(args.long_min, args.long_max)), args.long_tokens
                ttft, gaps = await stream(client, url, p, n)
                results[kind].append((ttft, gaps))

        async def one(kind):
            if kind == "chat":
                p, n = prompt(args.chat_prompt), args.chat_tokens
            else:
                p, n = prompt(rng.randint(args.long_min, args.long_max)), args.long_tokens
            results[kind].append(await stream(client, url, p, n))

        async def arrivals(kind, rate):
            # Open loop: Poisson arrivals at `rate` per second, whatever the server's speed.
            arrival_rng = random.Random(seed * 7 + (kind == "long"))
            tasks = []
            while time.perf_counter() < deadline:
                tasks.append(asyncio.create_task(one(kind)))
                await asyncio.sleep(arrival_rng.expovariate(rate))
            await asyncio.gather(*tasks)

        start = time.perf_counter()
        loads = []
        for kind, rate, streams in (("chat", args.chat_rate, args.chat), ("long", args.long_rate, args.long)):
            loads += [arrivals(kind, rate)] if rate > 0 else [worker(kind) for _ in range(streams)]
        await asyncio.gather(*loads)
        wall = time.perf_counter() - start
    return results, wall


pct = percentile


def summarize(results, wall, args):
    out = {}
    for kind, rows in results.items():
        ttfts = [t for t, _ in rows if t is not None]
        gaps = [g for _, gs in rows for g in gs]
        good = sum(1 for t, gs in rows
                   if t is not None and t <= args.slo_ttft and (not gs or sum(gs) / len(gs) * 1000 <= args.slo_itl))
        out[kind] = {"requests": len(rows), "ttft_p50": pct(ttfts, 50), "ttft_p99": pct(ttfts, 99),
                     "itl_p50": pct(gaps, 50) * 1000, "itl_p99": pct(gaps, 99) * 1000, "goodput": good / wall}
    return out


def start_colocated(args):
    port = free_port()
    return [Proc([args.tetra, "serve", "-m", args.model, "--port", str(port), "-t", "2", *args.tetra_args.split()],
                 port, "/tmp/disagg-bench-colocated.log")], f"http://127.0.0.1:{port}"


def start_disaggregated(args):
    pp, dp, rp = free_port(), free_port(), free_port()
    procs = [Proc(pinned(0, [args.tetra, "serve", "-m", args.model, "--port", str(pp), "-t", "1", "--role", "prefill",
                             *args.tetra_args.split(), *args.prefill_args.split()]), pp, "/tmp/disagg-bench-prefill.log"),
             Proc(pinned(1, [args.tetra, "serve", "-m", args.model, "--port", str(dp), "-t", "1", "--role", "decode",
                             *args.tetra_args.split(), *args.decode_args.split()]), dp, "/tmp/disagg-bench-decode.log")]
    procs.append(Proc(pinned(1, [args.tetra, "router", "--port", str(rp), "--prefill", f"http://127.0.0.1:{pp}",
                                 "--decode", f"http://127.0.0.1:{dp}"]), rp, "/tmp/disagg-bench-router.log"))
    return procs, f"http://127.0.0.1:{rp}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tetra", default="build/tetra")
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("--tetra-args", default="", help="extra flags for every tetra serve")
    ap.add_argument("--decode-args", default="", help="extra flags for the decode instance only")
    ap.add_argument("--prefill-args", default="", help="extra flags for the prefill instance only")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--chat", type=int, default=4)
    ap.add_argument("--chat-rate", type=float, default=0,
                    help="chat requests per second, Poisson (open loop; the same rate for both configurations); "
                         "0: --chat streams back to back")
    ap.add_argument("--long-rate", type=float, default=0, help="long requests per second, Poisson; 0: --long streams")
    ap.add_argument("--chat-prompt", type=int, default=100)
    ap.add_argument("--chat-tokens", type=int, default=64)
    ap.add_argument("--long", type=int, default=1)
    ap.add_argument("--long-min", type=int, default=2000)
    ap.add_argument("--long-max", type=int, default=6000)
    ap.add_argument("--long-tokens", type=int, default=16)
    ap.add_argument("--slo-ttft", type=float, default=2.0)
    ap.add_argument("--slo-itl", type=float, default=100.0)
    ap.add_argument("-r", "--rounds", type=int, default=2)
    ap.add_argument("--configs", default="colocated,disaggregated", help="which configurations to run")
    ap.add_argument("--json")
    args = ap.parse_args()

    configs = [c for c in ("colocated", "disaggregated") if c in args.configs.split(",")]
    table = {c: [] for c in configs}
    for rnd in range(args.rounds):
        order = configs if rnd % 2 == 0 else configs[::-1]
        for config in order:
            procs, base = (start_colocated if config == "colocated" else start_disaggregated)(args)
            try:
                results, wall = asyncio.run(run_load(base, args, seed=rnd))
            finally:
                for p in reversed(procs):
                    p.stop()
            s = summarize(results, wall, args)
            table[config].append(s)
            for kind in ("chat", "long"):
                k = s[kind]
                print(f"round {rnd} {config:13s} {kind:4s}: {k['requests']:4d} req, TTFT p50 {k['ttft_p50']:6.2f} "
                      f"p99 {k['ttft_p99']:6.2f} s, ITL p50 {k['itl_p50']:6.1f} p99 {k['itl_p99']:7.1f} ms, "
                      f"goodput {k['goodput']:.2f} req/s", flush=True)

    chat = f"chat at {args.chat_rate}/s" if args.chat_rate > 0 else f"{args.chat} chat streams"
    long = f"long at {args.long_rate}/s" if args.long_rate > 0 else f"{args.long} long streams"
    print(f"\nSLO: TTFT <= {args.slo_ttft} s and mean ITL <= {args.slo_itl} ms; {chat} "
          f"({args.chat_prompt} + {args.chat_tokens} tokens), {long} ({args.long_min}-{args.long_max} + "
          f"{args.long_tokens}); {args.seconds:.0f} s per round; mean over rounds (range)\n")
    print("| config | class | requests | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) | goodput (req/s) |")
    print("|---|---|---|---|---|---|")

    def fmt(config, kind, key, scale="{:.2f}"):
        vals = [r[kind][key] for r in table[config]]
        mean = sum(vals) / len(vals)
        return scale.format(mean) + (f" ({scale.format(min(vals))}-{scale.format(max(vals))})" if len(vals) > 1 else "")

    for config in configs:
        for kind in ("chat", "long"):
            reqs = sum(r[kind]["requests"] for r in table[config])
            print(f"| {config} | {kind} | {reqs} | {fmt(config, kind, 'ttft_p50')} / {fmt(config, kind, 'ttft_p99')} | "
                  f"{fmt(config, kind, 'itl_p50', '{:.0f}')} / {fmt(config, kind, 'itl_p99', '{:.0f}')} | "
                  f"{fmt(config, kind, 'goodput')} |")
    if len(configs) == 2:
        c = sum(r["chat"]["itl_p99"] for r in table["colocated"]) / args.rounds
        d = sum(r["chat"]["itl_p99"] for r in table["disaggregated"]) / args.rounds
        print(f"\nchat ITL p99, disaggregated / colocated: {d / c:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f)


if __name__ == "__main__":
    main()
