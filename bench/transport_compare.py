#!/usr/bin/env python3
"""tetra's KV transport beside iperf3 and Mooncake's transfer engine, over loopback.

For every block size and stream count, in the same run and alternating per
round: tetra's transport_bench (transfers of one block per chunk, hashed and
verified, scattered destination blocks), iperf3 with the same write size and
parallel streams (-l, -P: the loopback TCP ceiling, nothing verified), and
Mooncake's transfer_engine_bench in TCP mode (write, the same block size,
as many submission threads as streams, DRAM buffers, P2P handshake).
Everything runs on this machine, so each pair shares its cores, as a
prefill and a decode instance on one box would.

Setup: scripts/install-bench-deps.sh (iperf3, .venv-bench with
mooncake-transfer-engine). Mooncake's binaries link libcuda.so.1; without an
NVIDIA driver the script points them at the CUDA toolkit's stub
(--libcuda-stub).

Example:
  python3 bench/transport_compare.py --tetra-bench build/bench/transport_bench \\
      --block-kib 16,64,256,1024,4096 --streams 1,2,4,8 -r 2
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time


def tetra_gbps(args, kib, streams):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([args.tetra_bench, "--block-kib", str(kib), "--streams", str(streams), "-r", "1",
                        "--seconds", str(args.seconds), "--json", out.name],
                       check=True, stdout=subprocess.DEVNULL)
        return json.load(open(out.name))[0]["gbps"][0]


def iperf3_gbps(args, kib, streams, port=5299):
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        # iperf3 writes at most 1 MiB at a time.
        r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-l", f"{min(kib, 1024)}K", "-P", str(streams),
                            "-t", str(args.seconds), "-J"], check=True, capture_output=True, text=True)
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 8e9
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


class Mooncake:
    """One transfer_engine_bench target per run; an initiator per measurement."""

    def __init__(self, args):
        site = glob.glob(os.path.join(args.mooncake_venv, "lib", "python3*", "site-packages"))
        if not site:
            sys.exit(f"transport_compare: no {args.mooncake_venv}; run scripts/install-bench-deps.sh")
        site = site[0]
        self.binary = os.path.join(site, "mooncake", "transfer_engine_bench")
        libs = [os.path.join(site, "mooncake"), os.path.join(site, "nvidia", "cuda_runtime", "lib")]
        self.stub_dir = tempfile.TemporaryDirectory()
        if args.libcuda_stub:
            os.symlink(args.libcuda_stub, os.path.join(self.stub_dir.name, "libcuda.so.1"))
            libs.insert(0, self.stub_dir.name)
        self.env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]))
        self.buffer = str(args.mooncake_buffer_mib << 20)
        self.start()

    def start(self):
        self.log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log")
        self.target = subprocess.Popen(
            [self.binary, "--mode=target", "--metadata_server=P2PHANDSHAKE", "--local_server_name=127.0.0.1:17001",
             "--protocol=tcp", "--use_vram=false", f"--buffer_size={self.buffer}", "--logtostderr"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.segment = None
        for _ in range(100):
            time.sleep(0.1)
            self.log.seek(0)
            m = re.search(r"listening on (127\.0\.0\.1:\d+)", self.log.read())
            if m:
                self.segment = m.group(1)
                break
        if self.segment is None:
            self.close()
            self.log.seek(0)
            sys.exit("transport_compare: Mooncake's target did not start:\n" + self.log.read()[-2000:])

    def gbps(self, args, kib, streams):
        r = subprocess.run(
            [self.binary, "--mode=initiator", "--metadata_server=P2PHANDSHAKE", f"--segment_id={self.segment}",
             "--local_server_name=127.0.0.1:17002", "--protocol=tcp", "--operation=write",
             f"--block_size={kib << 10}", "--batch_size=32", f"--threads={streams}",
             f"--duration={max(1, round(args.seconds))}", "--use_vram=false", f"--buffer_size={self.buffer}",
             "--report_unit=GB", "--logtostderr"],
            env=self.env, capture_output=True, text=True, timeout=120)
        m = re.search(r"throughput ([0-9.]+) GB/s", r.stdout + r.stderr)
        if not m:
            print("transport_compare: Mooncake failed:\n" + (r.stdout + r.stderr)[-1000:], file=sys.stderr)
            return None
        return float(m.group(1))

    def close(self):
        self.target.terminate()
        try:
            self.target.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.target.kill()


def default_stub():
    for path in sorted(glob.glob("/usr/local/cuda*/lib64/stubs/libcuda.so")):
        return path
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tetra-bench", default="build/bench/transport_bench")
    p.add_argument("--block-kib", default="16,64,256,1024,4096")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("-r", "--rounds", type=int, default=2)
    p.add_argument("--no-mooncake", action="store_true")
    p.add_argument("--mooncake-venv", default=".venv-bench")
    p.add_argument("--mooncake-buffer-mib", type=int, default=256)
    p.add_argument("--libcuda-stub", default=None, help="libcuda.so to load as libcuda.so.1 (default: the toolkit's stub "
                   "when no driver is installed)")
    p.add_argument("--json")
    args = p.parse_args()
    if args.libcuda_stub is None and not glob.glob("/usr/lib/x86_64-linux-gnu/libcuda.so.1"):
        args.libcuda_stub = default_stub()

    blocks = [int(x) for x in args.block_kib.split(",")]
    streams = [int(x) for x in args.streams.split(",")]
    peers = ["tetra", "iperf3"] + ([] if args.no_mooncake else ["mooncake"])
    figures = {(peer, b, s): [] for peer in peers for b in blocks for s in streams}
    mooncake = None if args.no_mooncake else Mooncake(args)
    try:
        for rnd in range(args.rounds):
            for b in blocks:
                for s in streams:
                    order = peers if rnd % 2 == 0 else list(reversed(peers))
                    for peer in order:
                        if peer == "tetra":
                            g = tetra_gbps(args, b, s)
                        elif peer == "iperf3":
                            g = iperf3_gbps(args, b, s)
                        else:
                            g = mooncake.gbps(args, b, s)
                            if g is None:  # its target may have died with the failed run: restart, retry once
                                mooncake.close()
                                mooncake.start()
                                g = mooncake.gbps(args, b, s)
                        if g is None:
                            print(f"round {rnd} {peer:8s} block {b:5d} KiB streams {s}: failed", flush=True)
                            continue
                        figures[(peer, b, s)].append(g)
                        print(f"round {rnd} {peer:8s} block {b:5d} KiB streams {s}: {g:6.2f} GB/s", flush=True)
    finally:
        if mooncake:
            mooncake.close()

    def cell(peer, b, s):
        v = figures[(peer, b, s)]
        if not v:
            return None, "failed"
        return statistics.mean(v), f"{statistics.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})"

    header = "| block | streams | tetra GB/s | iperf3 GB/s | tetra / iperf3 |"
    sep = "|---|---|---|---|---|"
    if mooncake:
        header += " Mooncake TCP GB/s | tetra / Mooncake |"
        sep += "---|---|"
    print("\n" + header + "\n" + sep)
    for b in blocks:
        for s in streams:
            t, ts = cell("tetra", b, s)
            i, is_ = cell("iperf3", b, s)
            row = f"| {b} KiB | {s} | {ts} | {is_} | {t / i:.0%} |"
            if mooncake:
                m, ms = cell("mooncake", b, s)
                row += f" {ms} | {t / m:.1f}x |" if m else f" {ms} (every try) | – |"
            print(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"peer": k[0], "block_kib": k[1], "streams": k[2], "gbps": v} for k, v in figures.items()], f)


if __name__ == "__main__":
    main()
