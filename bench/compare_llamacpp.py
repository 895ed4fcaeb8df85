#!/usr/bin/env python3
"""tetra beside llama.cpp on the same GGUF file, same threads, same run.

Runs `tetra bench --json` and then llama.cpp (a llama-bench binary given with
--llama-bench, whose `-o json` output is read; else the llama_cpp Python module
of llama-cpp-python when importable) and prints one table. With --batch B > 1
the decode row's peer is llama-batched-bench (--llama-batched-bench PATH:
`-npp DEPTH -ntg N -npl B`, its jsonl `speed_tg`, run R times), the same
B sequences each holding DEPTH tokens and generating N, total tok/s:

  test | tetra tok/s | llama.cpp tok/s | ratio | roofline (tetra, llama.cpp) | int8 peak (tetra, llama.cpp)

Roofline fraction (decode): tok/s x bytes read per token / measured read
bandwidth. Bytes per token come from the GGUF tensor sizes: every tensor once,
except the token embedding (one row per token, unless it is also the output
matrix) and the routed expert tensors (`*_exps`), of which only
expert_used_count / expert_count are read; plus the KV cache read at the mean
decode context (depth + n/2) at --kv-bytes per element. At batch B > 1 the
figure is the same per-token count, so above 100% means tokens shared weight
reads.
int8 peak fraction (prefill): tok/s x 2 x active weights (elements of the
matrices above, embedding rows excluded) / measured int8 peak (ops/s).

The bandwidth and int8 peak come from peaks_bench's JSON (--peaks-json FILE,
or --peaks-bench BINARY to run it now), or from --bandwidth GB/s and
--int8-peak GOPS. Needs the `gguf` package (pip install gguf).

Example:
  bench/compare_llamacpp.py -m model.gguf -t 2 --tetra build/tetra \
      --llama-bench /work/peers/llama.cpp/build/bin/llama-bench \
      --peaks-bench build/bench/peaks_bench
"""

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time


def fail(message):
    sys.exit(f"compare_llamacpp: {message}")


# ----------------------------------------------------------------- the model

def bytes_per_token(model_path, depth, n, kv_bytes):
    """Weight and KV bytes read per decoded token, and active weight elements."""
    try:
        import gguf
    except ImportError:
        fail("needs the gguf package (pip install gguf) to read tensor sizes")
    reader = gguf.GGUFReader(model_path)

    def field(suffix):
        for name, f in reader.fields.items():
            if name.endswith(suffix):
                return f.contents()
        return None

    expert_count = field(".expert_count") or 0
    experts_used = field(".expert_used_count") or 0
    layers = field(".block_count") or 0
    heads = field(".attention.head_count") or 0
    kv_heads = field(".attention.head_count_kv") or heads
    hidden = field(".embedding_length") or 0
    key_length = field(".attention.key_length") or (hidden // heads if heads else 0)
    value_length = field(".attention.value_length") or key_length
    if isinstance(kv_heads, list):  # per-layer counts
        kv_heads = max(kv_heads)

    names = {t.name for t in reader.tensors}
    tied_output = "output.weight" not in names
    weight_bytes = 0
    active_elements = 0
    for t in reader.tensors:
        size = int(t.n_bytes)
        elements = int(t.n_elements)
        if t.name == "token_embd.weight":
            rows = int(t.shape[-1])  # gguf shapes list ne[0] (the row length) first
            weight_bytes += size // rows
            if tied_output:
                weight_bytes += size
                active_elements += elements
            continue
        if "_exps" in t.name and expert_count:
            weight_bytes += size * experts_used // expert_count
            active_elements += elements * experts_used // expert_count
            continue
        weight_bytes += size
        if len(t.shape) >= 2:
            active_elements += elements
    mean_context = depth + n / 2
    kv_per_token = layers * kv_heads * (key_length + value_length) * kv_bytes * mean_context
    return {
        "weight_bytes_per_token": weight_bytes,
        "kv_bytes_per_token": kv_per_token,
        "bytes_per_token": weight_bytes + kv_per_token,
        "active_weight_elements": active_elements,
        "experts": f"{experts_used}/{expert_count}" if expert_count else "dense",
    }


# ------------------------------------------------------------------ the peaks

def peaks_from_json(text, threads):
    """(GB/s, int8 GOPS) at `threads` threads from peaks_bench JSON."""
    data = json.loads(text)
    best = {}
    for b in data.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        name = b["name"]
        if f"threads:{threads}/" not in name + "/":
            continue
        for prefix, counter in (("BM_MemoryRead", "GB/s"), ("BM_Int8Vnni512", "GOPS"), ("BM_Int8Avx2", "GOPS")):
            if name.startswith(prefix) and counter in b:
                key = "bandwidth" if prefix == "BM_MemoryRead" else "int8"
                best[key] = max(best.get(key, 0.0), float(b[counter]))
                busy = b.get("cpu_busy")
                if busy is not None and busy < 0.9:
                    print(f"warning: {name} ran with cpu_busy {busy:.2f}: other load depressed the peak, "
                          "so the fractions below are overstated; rerun peaks_bench on a quiet machine",
                          file=sys.stderr)
    return best.get("bandwidth"), best.get("int8")


def measure_peaks(binary, threads):
    command = [binary, "--benchmark_format=json",
               "--benchmark_filter=BM_MemoryRead|BM_Int8Vnni512|BM_Int8Avx2"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"{binary} failed: {result.stderr.strip()[-500:]}")
    return peaks_from_json(result.stdout, threads)


# ---------------------------------------------------------------- the engines

def run_tetra(args):
    command = [args.tetra, "bench", "-m", args.model, "-p", str(args.p), "-n", str(args.n),
               "-t", str(args.threads), "--batch", str(args.batch), "-d", str(args.depth),
               "-r", str(args.repetitions), "--weights", args.weights, "--json"]
    print("running:", " ".join(command), file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"tetra bench failed: {result.stderr.strip()}")
    out = json.loads(result.stdout)
    return {"prefill": (out["prefill_tok_s"], out["prefill_tok_s_stddev"]),
            "decode": (out["decode_tok_s"], out["decode_tok_s_stddev"])}


def run_llama_bench(args):
    command = [args.llama_bench, "-m", args.model, "-p", str(args.p), "-n", str(args.n),
               "-t", str(args.threads), "-r", str(args.repetitions), "-o", "json"]
    if args.depth:
        command += ["-d", str(args.depth)]
    print("running:", " ".join(command), file=sys.stderr)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"llama-bench failed: {result.stderr.strip()[-1000:]}")
    figures = {}
    for test in json.loads(result.stdout):
        spread = (float(test["avg_ts"]), float(test["stddev_ts"]))
        if test.get("n_prompt", 0) > 0 and test.get("n_gen", 0) == 0:
            figures["prefill"] = spread
        elif test.get("n_gen", 0) > 0 and test.get("n_prompt", 0) == 0:
            figures["decode"] = spread
    return figures


def run_llama_cpp_python(args):
    """The same measurement through llama-cpp-python: one eval of p random
    tokens, then n single-token evals, R times each."""
    import random

    import llama_cpp

    n_ctx = max(args.p, args.depth + args.n) + 8
    llm = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                          n_ctx=n_ctx, n_batch=max(args.p, 1), verbose=False)
    vocab = llm.n_vocab()
    rng = random.Random(1234)
    prompt = [rng.randrange(vocab) for _ in range(args.p)]
    llm.reset()
    llm.eval(prompt[:16])  # warm-up
    prefill, decode = [], []
    for _ in range(args.repetitions):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        prefill.append(args.p / (time.perf_counter() - start))
    for _ in range(args.repetitions):
        llm.reset()
        if args.depth:
            llm.eval([rng.randrange(vocab) for _ in range(args.depth)])
        start = time.perf_counter()
        for _ in range(args.n):
            llm.eval([rng.randrange(vocab)])
        decode.append(args.n / (time.perf_counter() - start))

    def spread(xs):
        return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)

    return {"prefill": spread(prefill), "decode": spread(decode)}


def run_llama_batched_bench(args):
    """Batched decode: B sequences of DEPTH prompt tokens (at least 1), N new
    tokens each; llama-batched-bench's total generation tok/s, R runs."""
    command = [args.llama_batched_bench, "-m", args.model, "-c", str(args.batch * (max(args.depth, 1) + args.n) + 64),
               "-npp", str(max(args.depth, 1)), "-ntg", str(args.n), "-npl", str(args.batch),
               "-t", str(args.threads), "--output-format", "jsonl"]
    print("running:", " ".join(command), f"(x{args.repetitions})", file=sys.stderr)
    speeds = []
    for _ in range(args.repetitions):
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"llama-batched-bench failed: {result.stderr.strip()[-1000:]}")
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if not lines:
            fail("llama-batched-bench printed no jsonl result")
        speeds.append(float(json.loads(lines[-1])["speed_tg"]))
    return (statistics.mean(speeds), statistics.stdev(speeds) if len(speeds) > 1 else 0.0)


def run_llama(args):
    name, figures = None, {}
    if args.llama_bench:
        name, figures = "llama-bench", run_llama_bench(args)
        if args.batch > 1:
            figures.pop("decode", None)  # llama-bench decodes one sequence
    if args.batch > 1:
        # The batched decode peer runs with or without llama-bench.
        if args.llama_batched_bench:
            figures["decode"] = run_llama_batched_bench(args)
            name = name or "llama-batched-bench"
        return name, figures
    if name:
        return name, figures
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None, {}
    return "llama-cpp-python", run_llama_cpp_python(args)


# ------------------------------------------------------------------ the table

def percent(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"


def tok_s(spread):
    return "n/a" if spread is None else f"{spread[0]:.2f} ± {spread[1]:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="GGUF file both engines load")
    parser.add_argument("-p", type=int, default=512, help="prompt tokens (prefill)")
    parser.add_argument("-n", type=int, default=128, help="generated tokens (decode)")
    parser.add_argument("-t", "--threads", type=int, default=os.cpu_count(), help="threads for both")
    parser.add_argument("-d", "--depth", type=int, default=0, help="tokens already in the KV cache for decode")
    parser.add_argument("--batch", type=int, default=1, help="tetra decode batch (llama-bench has none: batch 1)")
    parser.add_argument("-r", "--repetitions", type=int, default=3)
    parser.add_argument("--weights", default="w4a8", choices=["reference", "w4a8"], help="tetra's weight format")
    parser.add_argument("--tetra", default=shutil.which("tetra") or "build/tetra", help="tetra binary")
    parser.add_argument("--llama-bench", help="a llama-bench binary (else llama-cpp-python if importable)")
    parser.add_argument("--llama-batched-bench", help="a llama-batched-bench binary: the peer of --batch B > 1")
    parser.add_argument("--peaks-json", help="saved output of peaks_bench --benchmark_format=json")
    parser.add_argument("--peaks-bench", help="a peaks_bench binary to run now")
    parser.add_argument("--bandwidth", type=float, help="memory read bandwidth, GB/s")
    parser.add_argument("--int8-peak", type=float, help="int8 peak, GOPS, at these threads")
    parser.add_argument("--kv-bytes", type=float, default=2.0,
                        help="bytes per cached K/V element for the roofline (llama.cpp f16: 2)")
    parser.add_argument("--json-out", help="also write every figure to this JSON file")
    args = parser.parse_args()
    if min(args.p, args.n, args.threads, args.batch, args.repetitions) < 1 or args.depth < 0:
        fail("-p, -n, -t, --batch and -r must be at least 1, -d at least 0")
    if not os.path.isfile(args.model):
        fail(f"{args.model}: no such file (a GGUF file is needed: llama.cpp reads nothing else)")

    bandwidth, int8_peak = args.bandwidth, args.int8_peak
    if args.peaks_json or args.peaks_bench:
        if args.peaks_json:
            with open(args.peaks_json) as f:
                measured = peaks_from_json(f.read(), args.threads)
        else:
            measured = measure_peaks(args.peaks_bench, args.threads)
        bandwidth = bandwidth or measured[0]
        int8_peak = int8_peak or measured[1]

    shape = bytes_per_token(args.model, args.depth, args.n, args.kv_bytes)
    tetra = run_tetra(args)
    llama_name, llama = run_llama(args)
    if llama_name is None:
        print("no llama.cpp figures: pass --llama-bench PATH, or install llama-cpp-python "
              "(used at batch 1 only)", file=sys.stderr)

    def roofline(spread):
        if spread is None or not bandwidth:
            return None
        return spread[0] * shape["bytes_per_token"] / (bandwidth * 1e9)

    def int8_fraction(spread):
        if spread is None or not int8_peak:
            return None
        return spread[0] * 2 * shape["active_weight_elements"] / (int8_peak * 1e9)

    rows = []
    decode_label = f"tg{args.n}" + (f" batch {args.batch}" if args.batch > 1 else "") + \
        (f" @ d{args.depth}" if args.depth else "")
    for key, label in (("prefill", f"pp{args.p}"), ("decode", decode_label)):
        ours = tetra.get(key)
        theirs = llama.get(key)
        ratio = ours[0] / theirs[0] if ours and theirs and theirs[0] > 0 else None
        fraction = roofline if key == "decode" else int8_fraction
        rows.append({"test": label, "tetra": ours, "llama": theirs, "ratio": ratio,
                     "tetra_fraction": fraction(ours), "llama_fraction": fraction(theirs),
                     "limit": "read-bandwidth roofline" if key == "decode" else "int8 peak"})

    print(f"model: {args.model} | threads: {args.threads} | experts: {shape['experts']} | "
          f"weights read per token: {shape['weight_bytes_per_token'] / 1e6:.1f} MB + KV "
          f"{shape['kv_bytes_per_token'] / 1e6:.2f} MB")
    print(f"bandwidth: {bandwidth or 'n/a'} GB/s | int8 peak: {int8_peak or 'n/a'} GOPS | "
          f"peer: {llama_name or 'none'}")
    print()
    header = ["test", "tetra tok/s", f"{llama_name or 'llama.cpp'} tok/s", "ratio", "limit", "tetra", "llama.cpp"]
    table = [header] + [[r["test"], tok_s(r["tetra"]), tok_s(r["llama"]),
                         "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x", r["limit"],
                         percent(r["tetra_fraction"]), percent(r["llama_fraction"])] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"model": args.model, "threads": args.threads, "bandwidth_gb_s": bandwidth,
                       "int8_peak_gops": int8_peak, "peer": llama_name, **shape, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
