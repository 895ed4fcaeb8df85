#!/usr/bin/env python3
"""Writes the benchmark MoE model: a Qwen3-30B-A3B-shaped `qwen3moe` GGUF with
random 4-bit weights and a real tokenizer, loadable by tetra and by llama.cpp.

Default shape (Qwen3-30B-A3B with 8 of its 48 layers):
  hidden 2048, 32 query heads and 4 KV heads of dim 128, q/k RMS norms,
  128 experts, top-8, expert FFN 768, no shared expert, untied output.
Vocabulary: the tokenizer.* metadata of SmolLM2-135M-Instruct (49152 tokens,
byte-level BPE), copied from its GGUF.

Weights are not quantized from floats: the quantized blocks are generated
directly (random 4-bit codes, random f16 scales with random sign) so that the
dequantized values have mean 0 and std ~= --weight-std (0.02, like a trained
model), and writing ~2.8 GB takes seconds. Norm weights are F32 ~1.0, the router
(ffn_gate_inp) F32 random, the output matrix Q6_K by default.

Conventions (llama.cpp's, learned from gguf-py's constants and the tiny
qwen3moe fixture written by tools/fixtures/gguf_export.py):
  * expert tensors are 3-D [n_expert, out, in] in numpy order (ggml ne = {in, out, n_expert});
  * ffn_gate_inp [n_expert, hidden] F32; attn_q_norm / attn_k_norm [head_dim] F32;
  * metadata qwen3moe.{block_count, context_length, embedding_length,
    feed_forward_length, attention.head_count(_kv), attention.key_length,
    attention.value_length, rope.freq_base, attention.layer_norm_rms_epsilon,
    expert_count, expert_used_count, expert_feed_forward_length}.

Only needs the `gguf` and `numpy` packages (see tools/requirements-bench.txt and
scripts/make-bench-model.sh).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType

DEFAULT_OUTPUT = Path.home() / ".cache/tetra/models/bench-qwen3moe-a3b-8l.gguf"
DEFAULT_TOKENIZER = Path.home() / ".cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf"

WEIGHT_TYPES = {"q4_0": Q.Q4_0, "q4_k": Q.Q4_K, "q6_k": Q.Q6_K, "q8_0": Q.Q8_0}
FILE_TYPE_BY_WEIGHT_TYPE = {
    Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M,
    Q.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K,
    Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}


# ---------------------------------------------------------------------------
# Random quantized blocks. Each function returns `n_blocks` blocks as a
# [n_blocks, type_size] uint8 array whose dequantized values have mean ~0 and
# std ~= `std`.
# ---------------------------------------------------------------------------

def _random_bytes(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n] uint8 uniform random; writable. (random_raw is ~15x faster than Generator.bytes.)"""
    return rng.bit_generator.random_raw((n + 7) // 8).view(np.uint8)[:n]


def _random_blocks(rng: np.random.Generator, n_blocks: int, type_size: int) -> np.ndarray:
    return _random_bytes(rng, n_blocks * type_size).reshape(n_blocks, type_size)


def _random_f16_scales(rng: np.random.Generator, n: int, magnitude: float, signed: bool) -> np.ndarray:
    """[n, 2] uint8: f16 scales, |scale| uniform in [0.5, 1.5] * magnitude, random sign if signed."""
    scales = rng.random(n, dtype=np.float32)
    scales += 0.5
    scales *= magnitude
    if signed:
        scales *= 1.0 - 2.0 * (_random_bytes(rng, n) & 1).astype(np.float32)
    return scales.astype("<f2").view(np.uint8).reshape(n, 2)


def _blocks_q4_0(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    # block: f16 d, 16 bytes of nibbles; value = (nibble - 8) * d.
    # nibble - 8 uniform on -8..7 has mean -0.5 (cancelled by the random sign of d)
    # and root mean square sqrt(mean((k-8)^2)) = sqrt(21.5).
    blocks = _random_blocks(rng, n_blocks, 18)
    blocks[:, 0:2] = _random_f16_scales(rng, n_blocks, std / np.sqrt(21.5) / np.sqrt(13 / 12), signed=True)
    return blocks


def _blocks_q8_0(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    # block: f16 d, 32 int8; value = q * d. q uniform on -128..127: rms ~= 73.9.
    blocks = _random_blocks(rng, n_blocks, 34)
    blocks[:, 0:2] = _random_f16_scales(rng, n_blocks, std / 73.9 / np.sqrt(13 / 12), signed=True)
    return blocks


def _blocks_q4_k(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    # super-block of 256: f16 d, f16 dmin, 12 bytes of packed 6-bit (scale, min)
    # for 8 sub-blocks of 32, 128 bytes of nibbles; value = d*sc*q - dmin*m.
    # We use m == sc per sub-block and dmin = 7.5 * d, so value = d*sc*(q - 7.5):
    # zero mean, rms d*sc*sqrt(21.25).
    blocks = _random_blocks(rng, n_blocks, 144)
    sub_scales = rng.integers(32, 64, size=(n_blocks, 8), dtype=np.uint8)  # 6-bit values
    mean_sub_scale_rms = np.sqrt(np.mean(np.arange(32, 64, dtype=np.float64) ** 2))
    d = (rng.random(n_blocks, dtype=np.float32) + 0.5) * np.float32(
        std / mean_sub_scale_rms / np.sqrt(21.25) / np.sqrt(13 / 12))
    blocks[:, 0:2] = d.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    blocks[:, 2:4] = (d * 7.5).astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    low, high = sub_scales[:, :4], sub_scales[:, 4:]
    # bytes 0..3: low 6 bits = scale j, top 2 bits = bits 4..5 of scale j+4
    blocks[:, 4:8] = (low & 63) | ((high >> 4) << 6)
    # bytes 4..7: low 6 bits = min j, top 2 bits = bits 4..5 of min j+4 (min == scale)
    blocks[:, 8:12] = (low & 63) | ((high >> 4) << 6)
    # bytes 8..11: low nibble = bits 0..3 of scale j+4, high nibble = bits 0..3 of min j+4
    blocks[:, 12:16] = (high & 0xF) | ((high & 0xF) << 4)
    return blocks


def _blocks_q6_k(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    # super-block of 256: 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d;
    # value = d * scale * (q6 - 32), q6 uniform on 0..63: mean -0.5, rms ~= 18.5.
    blocks = _random_blocks(rng, n_blocks, 210)
    sub_scales = rng.integers(16, 64, size=(n_blocks, 16), dtype=np.int16)
    sub_scales *= np.where(rng.integers(0, 2, size=(n_blocks, 16)) == 0, 1, -1).astype(np.int16)
    blocks[:, 192:208] = sub_scales.astype(np.int8).view(np.uint8)
    mean_sub_scale_rms = np.sqrt(np.mean(np.arange(16, 64, dtype=np.float64) ** 2))
    d = (rng.random(n_blocks, dtype=np.float32) + 0.5) * np.float32(
        std / mean_sub_scale_rms / 18.48 / np.sqrt(13 / 12))
    blocks[:, 208:210] = d.astype("<f2").view(np.uint8).reshape(n_blocks, 2)
    return blocks


BLOCK_WRITERS = {Q.Q4_0: _blocks_q4_0, Q.Q4_K: _blocks_q4_k, Q.Q6_K: _blocks_q6_k, Q.Q8_0: _blocks_q8_0}


# ---------------------------------------------------------------------------
# The tensor plan.
# ---------------------------------------------------------------------------

@dataclass
class Shape:
    layers: int = 8
    hidden: int = 2048
    heads: int = 32
    kv_heads: int = 4
    head_dim: int = 128
    experts: int = 128
    experts_used: int = 8
    expert_ffn: int = 768
    dense_ffn: int = 6144          # metadata only (Qwen3-30B-A3B's intermediate_size)
    context_length: int = 40960
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]   # numpy order: [..., rows, row_length]
    qtype: Q
    kind: str                # "attention" | "experts" | "router" | "norm" | "embedding" | "output"

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape))

    @property
    def num_bytes(self) -> int:
        block_size, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.num_elements // block_size * type_size


def plan_tensors(s: Shape, vocab_size: int, weight_qtype: Q, output_qtype: Q, embedding_qtype: Q,
                 tied: bool) -> list[PlannedTensor]:
    """Every tensor of the file in writing order (llama.cpp's converter order for Qwen3-MoE)."""
    q_size, kv_size = s.heads * s.head_dim, s.kv_heads * s.head_dim
    plan = [PlannedTensor("token_embd.weight", (vocab_size, s.hidden), embedding_qtype, "embedding")]
    for i in range(s.layers):
        b = f"blk.{i}."
        plan += [
            PlannedTensor(b + "attn_norm.weight", (s.hidden,), Q.F32, "norm"),
            PlannedTensor(b + "attn_q.weight", (q_size, s.hidden), weight_qtype, "attention"),
            PlannedTensor(b + "attn_k.weight", (kv_size, s.hidden), weight_qtype, "attention"),
            PlannedTensor(b + "attn_v.weight", (kv_size, s.hidden), weight_qtype, "attention"),
            PlannedTensor(b + "attn_q_norm.weight", (s.head_dim,), Q.F32, "norm"),
            PlannedTensor(b + "attn_k_norm.weight", (s.head_dim,), Q.F32, "norm"),
            PlannedTensor(b + "attn_output.weight", (s.hidden, q_size), weight_qtype, "attention"),
            PlannedTensor(b + "ffn_norm.weight", (s.hidden,), Q.F32, "norm"),
            PlannedTensor(b + "ffn_gate_inp.weight", (s.experts, s.hidden), Q.F32, "router"),
            PlannedTensor(b + "ffn_gate_exps.weight", (s.experts, s.expert_ffn, s.hidden), weight_qtype, "experts"),
            PlannedTensor(b + "ffn_up_exps.weight", (s.experts, s.expert_ffn, s.hidden), weight_qtype, "experts"),
            PlannedTensor(b + "ffn_down_exps.weight", (s.experts, s.hidden, s.expert_ffn), weight_qtype, "experts"),
        ]
    plan.append(PlannedTensor("output_norm.weight", (s.hidden,), Q.F32, "norm"))
    if not tied:
        plan.append(PlannedTensor("output.weight", (vocab_size, s.hidden), output_qtype, "output"))
    return plan



def check_plan(plan: list[PlannedTensor]) -> None:
    """Raises ValueError when a row length does not fit its type's block size."""
    for t in plan:
        block_size, _ = gguf.GGML_QUANT_SIZES[t.qtype]
        if t.shape[-1] % block_size != 0:
            raise ValueError(f"tensor {t.name!r}: row length {t.shape[-1]} is not a multiple of "
                             f"{t.qtype.name}'s block size {block_size}; pick other dimensions or --weight-type")


def generate(t: PlannedTensor, rng: np.random.Generator, weight_std: float) -> np.ndarray:
    """The tensor's stored bytes (uint8, byte shape) or F32 values."""
    if t.qtype == Q.F32:
        if t.kind == "norm":
            return (1.0 + 0.05 * rng.standard_normal(t.shape, dtype=np.float32)).astype(np.float32)
        return (weight_std * rng.standard_normal(t.shape, dtype=np.float32)).astype(np.float32)
    block_size, type_size = gguf.GGML_QUANT_SIZES[t.qtype]
    blocks = BLOCK_WRITERS[t.qtype](rng, t.num_elements // block_size, weight_std)
    return blocks.reshape(*t.shape[:-1], t.shape[-1] // block_size * type_size)


# ---------------------------------------------------------------------------
# Tokenizer metadata copied from another GGUF.
# ---------------------------------------------------------------------------

_SCALAR_FORMATS = {
    gguf.GGUFValueType.UINT8: "<B", gguf.GGUFValueType.INT8: "<b", gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h", gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f", gguf.GGUFValueType.BOOL: "<?", gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q", gguf.GGUFValueType.FLOAT64: "<d",
}


def read_gguf_metadata(path: Path) -> dict[str, tuple[object, gguf.GGUFValueType, gguf.GGUFValueType | None]]:
    """key -> (value, type, array item type) of a little-endian GGUF v2/v3 file.

    A plain struct walk over the key/value section: gguf.GGUFReader builds a numpy
    view per array item and takes ~20 s on a 49k-token vocabulary; this takes <1 s.
    """
    import mmap
    import struct

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        size = len(data)
        pos = 0

        def take(fmt: str):
            nonlocal pos
            width = struct.calcsize(fmt)
            if pos + width > size:
                raise ValueError(f"{path}: metadata runs past the end of the file at byte {pos}")
            (value,) = struct.unpack_from(fmt, data, pos)
            pos += width
            return value

        def take_string() -> str:
            nonlocal pos
            length = take("<Q")
            if pos + length > size:
                raise ValueError(f"{path}: string of {length} bytes at byte {pos} runs past the end of the file")
            text = bytes(data[pos:pos + length]).decode("utf-8", errors="surrogateescape")
            pos += length
            return text

        def take_value(vtype: gguf.GGUFValueType):
            if vtype == gguf.GGUFValueType.STRING:
                return take_string()
            if vtype in _SCALAR_FORMATS:
                return take(_SCALAR_FORMATS[vtype])
            raise ValueError(f"{path}: unsupported metadata value type {vtype} at byte {pos}")

        def _value_type(code: int, key: str) -> gguf.GGUFValueType:
            try:
                return gguf.GGUFValueType(code)
            except ValueError:
                raise ValueError(f"{path}: metadata {key!r} has unknown value type {code}") from None

        if take("<I") != gguf.GGUF_MAGIC:
            raise ValueError(f"{path}: not a GGUF file (bad magic)")
        version = take("<I")
        if version not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {version}")
        take("<Q")  # tensor count
        num_kv = take("<Q")
        metadata = {}
        for _ in range(num_kv):
            key = take_string()
            vtype = _value_type(take("<I"), key)
            if vtype == gguf.GGUFValueType.ARRAY:
                item_type = _value_type(take("<I"), key)
                count = take("<Q")
                if item_type in _SCALAR_FORMATS and item_type != gguf.GGUFValueType.BOOL:
                    width = struct.calcsize(_SCALAR_FORMATS[item_type])
                    if pos + count * width > size:
                        raise ValueError(f"{path}: array {key!r} runs past the end of the file")
                    items = np.frombuffer(data, dtype=np.dtype(_SCALAR_FORMATS[item_type]), count=count,
                                          offset=pos).tolist()
                    pos += count * width
                else:
                    items = [take_value(item_type) for _ in range(count)]
                metadata[key] = (items, vtype, item_type)
            else:
                metadata[key] = (take_value(vtype), vtype, None)
        return metadata


def read_tokenizer_fields(path: Path) -> tuple[list[tuple[str, object, gguf.GGUFValueType, gguf.GGUFValueType | None]], int]:
    """(key, value, type, array item type) for every tokenizer.* key, and the vocab size."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer source GGUF not found (run scripts/install-default-model.sh)")
    metadata = read_gguf_metadata(path)
    fields = [(key, *entry) for key, entry in metadata.items() if key.startswith("tokenizer.")]
    if "tokenizer.ggml.tokens" not in metadata:
        raise ValueError(f"{path}: no 'tokenizer.ggml.tokens' array")
    return fields, len(metadata["tokenizer.ggml.tokens"][0])


# ---------------------------------------------------------------------------
# Sizes.
# ---------------------------------------------------------------------------

def summarize(plan: list[PlannedTensor], s: Shape, tied: bool) -> dict[str, float]:
    """Parameter counts and bytes read per decoded token (weights only, no KV)."""
    fraction_active = s.experts_used / s.experts
    total_params = sum(t.num_elements for t in plan)
    total_bytes = sum(t.num_bytes for t in plan)
    expert_params = sum(t.num_elements for t in plan if t.kind == "experts")
    expert_bytes = sum(t.num_bytes for t in plan if t.kind == "experts")
    embedding = next(t for t in plan if t.kind == "embedding")
    dense = [t for t in plan if t.kind in ("attention", "router", "norm", "output")]
    dense_params = sum(t.num_elements for t in dense)
    dense_bytes = sum(t.num_bytes for t in dense)
    # Output projection: the separate output matrix, or the tied embedding read in full.
    tied_output_params = embedding.num_elements if tied else 0
    tied_output_bytes = embedding.num_bytes if tied else 0
    embedding_row_bytes = embedding.num_bytes // embedding.shape[0]
    per_kind = {kind: sum(t.num_bytes for t in plan if t.kind == kind)
                for kind in ("attention", "experts", "router", "norm", "output", "embedding")}
    return {
        "total_params": total_params,
        "total_bytes": total_bytes,
        "active_params": dense_params + tied_output_params + expert_params * fraction_active,
        "active_params_with_embedding": dense_params + expert_params * fraction_active + embedding.num_elements * (0 if tied else 1),
        "bytes_per_token": dense_bytes + tied_output_bytes + expert_bytes * fraction_active + embedding_row_bytes,
        "bytes_per_token_attention": per_kind["attention"],
        "bytes_per_token_experts": expert_bytes * fraction_active,
        "bytes_per_token_router_norms": per_kind["router"] + per_kind["norm"],
        "bytes_per_token_output": per_kind["output"] + tied_output_bytes,
        "bytes_all_experts": expert_bytes,
    }


# ---------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    d = Shape()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="GGUF file to write")
    p.add_argument("--tokenizer-from", type=Path, default=DEFAULT_TOKENIZER,
                   help="GGUF whose tokenizer.* metadata is copied (sets the vocab size)")
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--kv-heads", type=int, default=d.kv_heads)
    p.add_argument("--head-dim", type=int, default=d.head_dim)
    p.add_argument("--experts", type=int, default=d.experts)
    p.add_argument("--experts-used", type=int, default=d.experts_used)
    p.add_argument("--expert-ffn", type=int, default=d.expert_ffn)
    p.add_argument("--dense-ffn", type=int, default=d.dense_ffn, help="feed_forward_length metadata only")
    p.add_argument("--context-length", type=int, default=d.context_length)
    p.add_argument("--weight-type", choices=sorted(WEIGHT_TYPES), default="q4_0",
                   help="type of attention and expert matrices")
    p.add_argument("--output-type", choices=sorted(WEIGHT_TYPES), default="q6_k", help="type of output.weight")
    p.add_argument("--embedding-type", choices=sorted(WEIGHT_TYPES), default="q4_0", help="type of token_embd.weight")
    p.add_argument("--tied", action="store_true", help="no output.weight: the output reuses token_embd")
    p.add_argument("--weight-std", type=float, default=0.02, help="std of the dequantized weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default=None, help="general.name (default: from the file name)")
    p.add_argument("--dry-run", action="store_true", help="print sizes without writing")
    p.add_argument("--verify", action="store_true",
                   help="read the file back with gguf.GGUFReader: tensor names, types, shapes, the copied "
                        "tokenizer metadata, and mean/std of dequantized samples")
    args = p.parse_args(argv)
    for flag in ("layers", "hidden", "heads", "kv_heads", "head_dim", "experts", "experts_used", "expert_ffn"):
        if getattr(args, flag) <= 0:
            p.error(f"--{flag.replace('_', '-')} must be positive")
    if args.experts_used > args.experts:
        p.error("--experts-used must not exceed --experts")
    if args.heads % args.kv_heads != 0:
        p.error("--heads must be a multiple of --kv-heads")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    shape = Shape(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                  head_dim=args.head_dim, experts=args.experts, experts_used=args.experts_used,
                  expert_ffn=args.expert_ffn, dense_ffn=args.dense_ffn, context_length=args.context_length)
    weight_qtype, output_qtype = WEIGHT_TYPES[args.weight_type], WEIGHT_TYPES[args.output_type]
    embedding_qtype = WEIGHT_TYPES[args.embedding_type]

    started = time.monotonic()
    try:
        tokenizer_fields, vocab_size = read_tokenizer_fields(args.tokenizer_from)
        plan = plan_tensors(shape, vocab_size, weight_qtype, output_qtype, embedding_qtype, args.tied)
        check_plan(plan)
    except (OSError, ValueError) as e:
        print(f"make_bench_model: {e}", file=sys.stderr)
        return 2
    sizes = summarize(plan, shape, args.tied)

    if not args.dry_run:
        name = args.name or args.output.name.removesuffix(".gguf")
        write_gguf(args.output, plan, shape, weight_qtype, tokenizer_fields, vocab_size, name,
                   np.random.default_rng(args.seed), args.weight_std)
    elapsed = time.monotonic() - started

    gib = 1024 ** 3
    mb = 1e6
    print(f"{'would write' if args.dry_run else 'wrote'} {args.output}")
    if not args.dry_run:
        print(f"  file size            {os.path.getsize(args.output):,} bytes ({os.path.getsize(args.output) / gib:.2f} GiB)"
              f" in {elapsed:.1f} s")
    print(f"  shape                {shape.layers} layers, hidden {shape.hidden}, {shape.heads} q heads / "
          f"{shape.kv_heads} kv heads x {shape.head_dim}, {shape.experts} experts top-{shape.experts_used} "
          f"x ffn {shape.expert_ffn}, vocab {vocab_size}, weights {weight_qtype.name}, output "
          f"{'tied' if args.tied else output_qtype.name}")
    print(f"  total parameters     {sizes['total_params'] / 1e9:.3f} B ({sizes['total_bytes'] / mb:,.1f} MB of tensors)")
    print(f"  active parameters    {sizes['active_params'] / 1e9:.3f} B per token (without the embedding table;"
          f" {sizes['active_params_with_embedding'] / 1e9:.3f} B counting it)")
    print(f"  bytes read per token {sizes['bytes_per_token'] / mb:,.1f} MB = attention "
          f"{sizes['bytes_per_token_attention'] / mb:,.1f} + experts ({shape.experts_used}/{shape.experts}) "
          f"{sizes['bytes_per_token_experts'] / mb:,.1f} + router/norms "
          f"{sizes['bytes_per_token_router_norms'] / mb:,.1f} + output "
          f"{sizes['bytes_per_token_output'] / mb:,.1f} + one embedding row (weights only, no KV cache)")
    if args.verify and not args.dry_run:
        problems = verify(args.output, plan, tokenizer_fields, args.weight_std)
        for problem in problems:
            print(f"make_bench_model: verify: {problem}", file=sys.stderr)
        if problems:
            return 1
        print("  verify               ok (names, types, shapes, tokenizer metadata, dequantized mean/std)")
    return 0


def write_gguf(path: Path, plan: list[PlannedTensor], s: Shape, weight_qtype: Q, tokenizer_fields,
               vocab_size: int, name: str, rng: np.random.Generator, weight_std: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3MOE]
    writer = gguf.GGUFWriter(str(temporary), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_description("random-weight benchmark model shaped like Qwen3-30B-A3B "
                           "(tools/make_bench_model.py); output is meaningless")
    writer.add_block_count(s.layers)
    writer.add_context_length(s.context_length)
    writer.add_embedding_length(s.hidden)
    writer.add_feed_forward_length(s.dense_ffn)
    writer.add_head_count(s.heads)
    writer.add_head_count_kv(s.kv_heads)
    writer.add_rope_freq_base(s.rope_theta)
    writer.add_layer_norm_rms_eps(s.rms_norm_eps)
    writer.add_expert_count(s.experts)
    writer.add_expert_used_count(s.experts_used)
    writer.add_key_length(s.head_dim)
    writer.add_value_length(s.head_dim)
    writer.add_file_type(FILE_TYPE_BY_WEIGHT_TYPE[weight_qtype])
    writer.add_expert_feed_forward_length(s.expert_ffn)
    writer.add_vocab_size(vocab_size)
    for key, value, vtype, sub_type in tokenizer_fields:
        writer.add_key_value(key, value, vtype, sub_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    for t in plan:
        if t.qtype == Q.F32:
            writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.num_bytes)
        else:
            block_size, type_size = gguf.GGML_QUANT_SIZES[t.qtype]
            byte_shape = (*t.shape[:-1], t.shape[-1] // block_size * type_size)
            writer.add_tensor_info(t.name, byte_shape, np.dtype(np.uint8), t.num_bytes, raw_dtype=t.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in plan:  # one tensor in memory at a time (the largest, an experts tensor, is ~113 MB)
        writer.write_tensor_data(generate(t, rng, weight_std))
    writer.close()
    os.replace(temporary, path)


def verify(path: Path, plan: list[PlannedTensor], tokenizer_fields, weight_std: float) -> list[str]:
    """Problems found reading `path` back with the gguf package's own reader and dequantizer."""
    problems = []
    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    if sorted(by_name) != sorted(t.name for t in plan):
        problems.append(f"tensor names differ from the plan: {sorted(set(by_name) ^ {t.name for t in plan})}")
    for key, value, vtype, _ in tokenizer_fields:
        field = reader.fields.get(key)
        if field is None or field.types[0] != vtype or field.contents() != value:
            problems.append(f"metadata {key!r} differs from the tokenizer source")
    rng = np.random.default_rng(1)
    for t in plan:
        stored = by_name.get(t.name)
        if stored is None:
            continue
        if stored.tensor_type != t.qtype or tuple(int(n) for n in reversed(stored.shape)) != t.shape:
            problems.append(f"{t.name}: stored {stored.tensor_type.name} {list(stored.shape)}, planned "
                            f"{t.qtype.name} {list(reversed(t.shape))}")
            continue
        rows = np.asarray(stored.data).reshape(-1, np.asarray(stored.data).shape[-1])
        sample = rows[rng.integers(0, rows.shape[0], size=min(64, rows.shape[0]))]
        values = gguf.quants.dequantize(sample, stored.tensor_type).astype(np.float64)
        if not np.isfinite(values).all():
            problems.append(f"{t.name}: non-finite values")
        elif t.kind == "norm":
            if abs(values.mean() - 1.0) > 0.1:
                problems.append(f"{t.name}: norm weights mean {values.mean():.3f}, expected ~1")
        elif abs(values.std() / weight_std - 1.0) > 0.15 or abs(values.mean()) > 0.2 * weight_std:
            problems.append(f"{t.name}: dequantized mean {values.mean():.5f} std {values.std():.5f}, "
                            f"expected ~0 and ~{weight_std}")
    return problems


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
