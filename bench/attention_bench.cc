// Paged attention benchmarks (kernels/attention/attention.h): Qwen3-30B-A3B's
// attention shape (32 query heads, 4 KV heads, head dim 128) over a paged KV
// cache of 64-token blocks, FP8 E4M3 or BF16.
//   prefill: one sequence's 2048-token chunk from position 0; GFLOP/s counts
//            the causal QK^T and PV multiply-adds (2 * 2 * d per pair).
//   decode:  one new token per sequence; GB/s counts the KV bytes read, the
//            figure to hold against the memory read bandwidth
//            (bench/peaks_bench.cc), because decode attention streams the cache;
//            s/key/kv_head is the time per cached position per KV head.
// FP8 runs both score maths (math:0 f32, math:1 int8 = AttentionMath::kInt8Scores).
//   shared prefix: decode of `samples` parallel samples of one 2048-token
//            prompt (32 shared FP8 blocks), each with its own 32 positions
//            (its f32 open block), with and without SharedPrefixGroup
//            (grouped:1/0), in Qwen3-30B-A3B's shape and SmolLM2-135M's
//            (model:0/1: 9 query heads, 3 KV heads, head dim 64). KV_GB/s
//            counts the bytes the step needs: the prefix once, plus every
//            sample's suffix, either way.
//
//   attention_bench --benchmark_filter=Attention
#include <benchmark/benchmark.h>

#include <cmath>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/kv_quantize.h"

namespace tetra {
namespace {

constexpr int kHeads = 32, kKvHeads = 4, kHeadDim = 128, kBlockTokens = 64;

// Random keys and values of several sequences in one block pool; each
// sequence's full blocks are stored in `dtype`, its open block kept f32.
struct Batch {
  KvLayerView layer;
  std::vector<uint8_t> keys, values;
  std::vector<float> key_scales, value_scales;
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<float>> open_keys, open_values, q, out;
  std::vector<PagedAttentionSequence> sequences;
  int64_t kv_bytes_read = 0;  // per call
};

void MakeBatch(KvDtype dtype, const std::vector<int64_t>& lengths, int64_t new_tokens, Batch& b) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  b.layer = KvLayerView{dtype, kBlockTokens, kKvHeads, kHeadDim};
  int64_t num_blocks = 0;
  for (int64_t length : lengths) num_blocks += length / kBlockTokens;
  const int64_t block_elements = b.layer.block_elements();
  b.keys.resize(static_cast<size_t>(num_blocks * block_elements * KvDtypeBytes(dtype)));
  b.values.resize(b.keys.size());
  b.key_scales.resize(static_cast<size_t>(num_blocks * kKvHeads));
  b.value_scales.resize(b.key_scales.size());
  b.layer.keys = b.keys.data();
  b.layer.values = b.values.data();
  b.layer.key_scales = b.key_scales.data();
  b.layer.value_scales = b.value_scales.data();
  std::vector<float> block(static_cast<size_t>(block_elements));
  int32_t next_block = 0;
  for (int64_t length : lengths) {
    std::vector<int32_t>& table = b.tables.emplace_back();
    for (int64_t i = 0; i < length / kBlockTokens; ++i, ++next_block) {
      table.push_back(next_block);
      for (float& x : block) x = normal(rng);
      StoreKvBlock(b.layer, block.data(), next_block, b.keys.data(), b.key_scales.data());
      for (float& x : block) x = normal(rng);
      StoreKvBlock(b.layer, block.data(), next_block, b.values.data(), b.value_scales.data());
    }
    for (auto* open : {&b.open_keys.emplace_back(block_elements), &b.open_values.emplace_back(block_elements)}) {
      for (float& x : *open) x = normal(rng);
    }
    const int64_t tokens = std::min(new_tokens, length);
    b.q.emplace_back(static_cast<size_t>(tokens * kHeads * kHeadDim));
    for (float& x : b.q.back()) x = normal(rng);
    b.out.emplace_back(b.q.back().size());
    b.kv_bytes_read += 2 * length * kKvHeads * kHeadDim * KvDtypeBytes(dtype);
  }
  for (size_t s = 0; s < lengths.size(); ++s) {
    KvSequenceView kv{lengths[s], b.tables[s].data(), b.open_keys[s].data(), b.open_values[s].data()};
    b.sequences.push_back({b.q[s].data(), std::min(new_tokens, lengths[s]), kv, b.out[s].data()});
  }
}

const AttentionShape kShape{kHeads, kKvHeads, kHeadDim, 1.0f / std::sqrt(static_cast<float>(kHeadDim))};

std::string Name(KvDtype dtype, AttentionMath math) {
  return std::string(dtype == KvDtype::kFp8E4M3 ? "fp8" : "bf16") +
         (math == AttentionMath::kInt8Scores ? " int8 scores" : "");
}

void BM_AttentionPrefill(benchmark::State& state) {
  const KvDtype dtype = static_cast<KvDtype>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int64_t tokens = state.range(2);
  const auto math = static_cast<AttentionMath>(state.range(3));
  Batch b;
  MakeBatch(dtype, {tokens}, tokens, b);
  ThreadPool pool(threads);
  for (auto _ : state) {
    PagedAttention(kShape, b.layer, b.sequences, pool, math);
    benchmark::DoNotOptimize(b.out[0].data());
  }
  // Causal pairs (t attends to t + 1 keys), QK^T and PV, a multiply-add each.
  const double pairs = static_cast<double>(tokens) * static_cast<double>(tokens + 1) / 2.0;
  const double flops = pairs * kHeads * kHeadDim * 2.0 * 2.0 * static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsRate);
  state.SetLabel(Name(dtype, math));
}

// decode: `sequences` sequences of `length` positions, or (length 0) the
// uneven batch of one 100-token and one 30000-token sequence.
void BM_AttentionDecode(benchmark::State& state) {
  const KvDtype dtype = static_cast<KvDtype>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int64_t length = state.range(2);
  const int64_t sequences = state.range(3);
  const auto math = static_cast<AttentionMath>(state.range(4));
  Batch b;
  MakeBatch(dtype, length > 0 ? std::vector<int64_t>(static_cast<size_t>(sequences), length)
                              : std::vector<int64_t>{100, 30000},
            1, b);
  ThreadPool pool(threads);
  for (auto _ : state) {
    PagedAttention(kShape, b.layer, b.sequences, pool, math);
    benchmark::DoNotOptimize(b.out[0].data());
  }
  int64_t positions = 0;
  for (const PagedAttentionSequence& seq : b.sequences) positions += seq.kv.length;
  const double iterations = static_cast<double>(state.iterations());
  state.counters["KV_GB/s"] = benchmark::Counter(static_cast<double>(b.kv_bytes_read) * iterations / 1e9,
                                                 benchmark::Counter::kIsRate);
  state.counters["s/key/kv_head"] = benchmark::Counter(static_cast<double>(positions) * kKvHeads * iterations,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel(Name(dtype, math) + (length > 0 ? "" : " 100+30000"));
}

// Every tile-kernel build this CPU runs, one thread, FP8 decode 1 x 8192 with
// f32 scores (isa: the AttentionIsa value), so the portable and AVX2 builds
// are measured too.
void BM_AttentionDecodeIsa(benchmark::State& state) {
  const auto isa = static_cast<AttentionIsa>(state.range(0));
  const auto math = static_cast<AttentionMath>(state.range(1));
  Batch b;
  MakeBatch(KvDtype::kFp8E4M3, {8192}, 1, b);
  ThreadPool pool(1);
  for (auto _ : state) {
    PagedAttention(kShape, b.layer, b.sequences, pool, isa, math);
    benchmark::DoNotOptimize(b.out[0].data());
  }
  state.counters["s/key/kv_head"] = benchmark::Counter(8192.0 * kKvHeads * static_cast<double>(state.iterations()),
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.SetLabel(std::string(AttentionIsaName(isa)) + " " + Name(KvDtype::kFp8E4M3, math));
}

void IsaArgs(benchmark::internal::Benchmark* b) {
  for (AttentionIsa isa : SupportedAttentionIsas()) {
    for (AttentionMath math : {AttentionMath::kF32, AttentionMath::kInt8Scores}) {
      b->Args({static_cast<int64_t>(isa), static_cast<int64_t>(math)});
    }
  }
}

// Parallel samples of one prompt: `samples` sequences whose block tables
// hold the same prompt_tokens / kBlockTokens FP8 blocks (each its own copy of
// the table, as the engine keeps them), each with suffix_tokens positions of
// its own in its f32 open block; q and out laid out sample after sample.
struct SharedPrefixBatch {
  AttentionShape shape;
  KvLayerView layer;
  std::vector<uint8_t> keys, values;
  std::vector<float> key_scales, value_scales;
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<float>> open_keys, open_values;
  std::vector<float> q, out;
  std::vector<PagedAttentionSequence> sequences;
  SharedPrefixGroup group;
  int64_t kv_bytes_needed = 0;  // per step: the prefix once, every suffix
};

void MakeSharedPrefixBatch(const AttentionShape& shape, int64_t prompt_tokens, int64_t suffix_tokens, int samples,
                           SharedPrefixBatch& b) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  b.shape = shape;
  b.layer = KvLayerView{KvDtype::kFp8E4M3, kBlockTokens, shape.num_kv_heads, shape.head_dim};
  const int64_t num_blocks = prompt_tokens / kBlockTokens;
  const int64_t block_elements = b.layer.block_elements();
  b.keys.resize(static_cast<size_t>(num_blocks * block_elements));
  b.values.resize(b.keys.size());
  b.key_scales.resize(static_cast<size_t>(num_blocks * shape.num_kv_heads));
  b.value_scales.resize(b.key_scales.size());
  b.layer.keys = b.keys.data();
  b.layer.values = b.values.data();
  b.layer.key_scales = b.key_scales.data();
  b.layer.value_scales = b.value_scales.data();
  std::vector<float> block(static_cast<size_t>(block_elements));
  for (int32_t i = 0; i < num_blocks; ++i) {
    for (float& x : block) x = normal(rng);
    StoreKvBlock(b.layer, block.data(), i, b.keys.data(), b.key_scales.data());
    for (float& x : block) x = normal(rng);
    StoreKvBlock(b.layer, block.data(), i, b.values.data(), b.value_scales.data());
  }
  const int64_t q_floats = static_cast<int64_t>(shape.num_heads) * shape.head_dim;
  b.q.resize(static_cast<size_t>(samples * q_floats));
  for (float& x : b.q) x = normal(rng);
  b.out.resize(b.q.size());
  for (int i = 0; i < samples; ++i) {
    std::vector<int32_t>& table = b.tables.emplace_back(static_cast<size_t>(num_blocks));
    std::iota(table.begin(), table.end(), 0);
    for (auto* open : {&b.open_keys.emplace_back(block_elements), &b.open_values.emplace_back(block_elements)}) {
      for (float& x : *open) x = normal(rng);
    }
  }
  for (int i = 0; i < samples; ++i) {
    KvSequenceView kv{prompt_tokens + suffix_tokens, b.tables[i].data(), b.open_keys[i].data(),
                      b.open_values[i].data()};
    b.sequences.push_back({b.q.data() + i * q_floats, 1, kv, b.out.data() + i * q_floats});
  }
  b.group = {0, samples, prompt_tokens};
  const int64_t row_elements = int64_t{shape.num_kv_heads} * shape.head_dim;
  // Keys and values: the FP8 prefix once, each f32 suffix.
  b.kv_bytes_needed =
      2 * row_elements * (prompt_tokens * KvDtypeBytes(KvDtype::kFp8E4M3) + samples * suffix_tokens * 4);
}

const AttentionShape kSmolShape{9, 3, 64, 1.0f / 8.0f};

void BM_AttentionSharedPrefix(benchmark::State& state) {
  const bool smol = state.range(0) == 1;
  const int threads = static_cast<int>(state.range(1));
  const int samples = static_cast<int>(state.range(2));
  const bool grouped = state.range(3) != 0;
  const auto math = static_cast<AttentionMath>(state.range(4));
  SharedPrefixBatch b;
  MakeSharedPrefixBatch(smol ? kSmolShape : kShape, 2048, 32, samples, b);
  ThreadPool pool(threads);
  const std::span<const SharedPrefixGroup> groups(&b.group, grouped ? 1 : 0);
  for (auto _ : state) {
    PagedAttention(b.shape, b.layer, b.sequences, groups, pool, math);
    benchmark::DoNotOptimize(b.out.data());
  }
  state.counters["KV_GB/s"] = benchmark::Counter(
      static_cast<double>(b.kv_bytes_needed) * static_cast<double>(state.iterations()) / 1e9,
      benchmark::Counter::kIsRate);
  state.SetLabel(std::string(smol ? "smollm2-135m" : "qwen3-30b-a3b") + (grouped ? " grouped" : "") +
                 (math == AttentionMath::kInt8Scores ? " int8 scores" : ""));
}

void SharedPrefixArgs(benchmark::internal::Benchmark* b) {
  for (int model : {0, 1}) {
    for (int64_t math : {static_cast<int64_t>(AttentionMath::kF32), static_cast<int64_t>(AttentionMath::kInt8Scores)}) {
      for (int threads : {1, 2}) {
        for (int samples : {1, 4, 16}) {
          for (int grouped : {0, 1}) b->Args({model, threads, samples, grouped, math});
        }
      }
    }
  }
}

// (dtype, math) pairs: int8 scores only change FP8 blocks.
constexpr int64_t kF32 = static_cast<int64_t>(AttentionMath::kF32);
constexpr int64_t kInt8 = static_cast<int64_t>(AttentionMath::kInt8Scores);
constexpr int64_t kFp8 = static_cast<int64_t>(KvDtype::kFp8E4M3);
constexpr int64_t kBf16 = static_cast<int64_t>(KvDtype::kBf16);
constexpr std::pair<int64_t, int64_t> kDtypeMaths[] = {{kFp8, kF32}, {kFp8, kInt8}, {kBf16, kF32}};

void PrefillArgs(benchmark::internal::Benchmark* b) {
  for (auto [dtype, math] : kDtypeMaths) {
    for (int threads : {1, 2}) b->Args({dtype, threads, 2048, math});
  }
}

void DecodeArgs(benchmark::internal::Benchmark* b) {
  for (auto [dtype, math] : kDtypeMaths) {
    for (int threads : {1, 2}) {
      b->Args({dtype, threads, 8192, 1, math});
      b->Args({dtype, threads, 8192, 4, math});
      b->Args({dtype, threads, 0, 2, math});
    }
  }
}

BENCHMARK(BM_AttentionPrefill)->Apply(PrefillArgs)->ArgNames({"dtype", "threads", "tokens", "math"})->UseRealTime();
BENCHMARK(BM_AttentionDecodeIsa)->Apply(IsaArgs)->ArgNames({"isa", "math"})->UseRealTime();
BENCHMARK(BM_AttentionDecode)
    ->Apply(DecodeArgs)
    ->ArgNames({"dtype", "threads", "length", "seqs", "math"})
    ->UseRealTime();
BENCHMARK(BM_AttentionSharedPrefix)
    ->Apply(SharedPrefixArgs)
    ->ArgNames({"model", "threads", "samples", "grouped", "math"})
    ->UseRealTime();

}  // namespace
}  // namespace tetra

BENCHMARK_MAIN();
