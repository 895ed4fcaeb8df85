// W4A8 kernel benchmarks: GEMV (one token, expert-shaped weights larger than
// the caches) in GB/s of packed weights, and GEMM (512 tokens x 768 x 2048) in
// GOPS, for every ISA this CPU runs, each with its fraction of this machine's
// limits as measured by bench/peaks_bench.cc:
// 36 GB/s read, ~1.0 TOPS int8 per core (512-bit vpdpbusd).
//
//   kernel_bench --benchmark_filter=W4A8
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/reference/quantize.h"
#include "kernels/w4a8/gemm.h"
#include "kernels/w4a8/w6a8.h"
#include "kernels/w4a8/w8a8.h"

namespace tetra {
namespace {

constexpr double kNotesReadBytesPerSecond = 36e9;
constexpr double kNotesInt8OpsPerSecondPerCore = 1.0e12;

// Random weights packed from F32 (asymmetric: f16 scale and min, 5 bits a
// weight) or, when `symmetric`, from Q4_0 blocks (f16 scale only, 4.5 bits).
PackedW4 RandomPacked(int64_t rows, int64_t cols, uint32_t seed, bool symmetric = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = normal(rng);
  MatrixView view = MatrixView::Contiguous(DType::kF32, rows, cols, w.data());
  std::vector<uint8_t> q4_0;
  if (symmetric) {
    const size_t row_bytes = RowBytes(DType::kQ4_0, cols);
    q4_0.resize(row_bytes * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) QuantizeRow(DType::kQ4_0, &w[r * cols], &q4_0[r * row_bytes], cols);
    view = MatrixView::Contiguous(DType::kQ4_0, rows, cols, q4_0.data());
  }
  StatusOr<PackedW4> packed = PackW4(view, 32);
  if (!packed.ok()) std::abort();
  return std::move(packed).value();
}

std::vector<float> RandomActivations(int64_t tokens, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(tokens * cols));
  for (auto& v : x) v = normal(rng);
  return x;
}

bool IsSupported(Isa isa) {
  for (Isa s : SupportedIsas()) {
    if (s == isa) return true;
  }
  return false;
}

// One token against 48 expert-shaped matrices [768, 2048] (57 MB packed, more
// than the L3), cycling so every call reads its weights from memory.
void BM_W4A8Gemv(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const bool symmetric = state.range(2) != 0;
  if (!IsSupported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  constexpr int64_t kRows = 768, kCols = 2048, kMatrices = 48;
  static std::vector<PackedW4> experts[2];
  if (experts[symmetric].empty()) {
    for (int i = 0; i < kMatrices; ++i) experts[symmetric].push_back(RandomPacked(kRows, kCols, 100 + i, symmetric));
  }
  const std::vector<float> x = RandomActivations(1, kCols);
  QuantizedActivations a;
  QuantizeActivations(x.data(), 1, kCols, 32, &a);
  std::vector<float> y(kRows);
  ThreadPool pool(threads);
  size_t bytes = 0;
  int64_t next = 0;
  for (auto _ : state) {
    const PackedW4& w = experts[symmetric][static_cast<size_t>(next)];
    next = (next + 1) % kMatrices;
    GemmW4A8(w, a, y.data(), pool, isa);
    benchmark::DoNotOptimize(y.data());
    bytes += w.data.size();
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsRate);
  state.counters["of_36GB/s"] =
      benchmark::Counter(static_cast<double>(bytes) / kNotesReadBytesPerSecond, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(IsaName(isa)) + (symmetric ? " q4_0 4.5 bits" : " f32 source 5 bits"));
}

// 512 tokens x [768, 2048]: the prefill shape of one expert's up projection.
void BM_W4A8Gemm(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int64_t tokens = state.range(2);
  if (!IsSupported(isa)) {
    state.SkipWithError("ISA not supported by this CPU");
    return;
  }
  constexpr int64_t kRows = 768, kCols = 2048;
  const PackedW4 w = RandomPacked(kRows, kCols, 7);
  const std::vector<float> x = RandomActivations(tokens, kCols);
  QuantizedActivations a;
  QuantizeActivations(x.data(), tokens, kCols, 32, &a);
  std::vector<float> y(static_cast<size_t>(tokens * kRows));
  ThreadPool pool(threads);
  for (auto _ : state) {
    GemmW4A8(w, a, y.data(), pool, isa);
    benchmark::DoNotOptimize(y.data());
  }
  const double ops = 2.0 * static_cast<double>(tokens * kRows * kCols) * static_cast<double>(state.iterations());
  state.counters["GOPS"] = benchmark::Counter(ops / 1e9, benchmark::Counter::kIsRate);
  state.counters["of_1TOPS/core"] =
      benchmark::Counter(ops / (kNotesInt8OpsPerSecondPerCore * threads), benchmark::Counter::kIsRate);
  state.SetLabel(std::string(IsaName(isa)));
}

// Quantizing the activations (once per token for all rows of all matrices
// that read them): 512 tokens x 2048.
void BM_W4A8QuantizeActivations(benchmark::State& state) {
  const int64_t tokens = state.range(0), cols = 2048;
  const std::vector<float> x = RandomActivations(tokens, cols);
  QuantizedActivations a;
  for (auto _ : state) {
    QuantizeActivations(x.data(), tokens, cols, 32, &a);
    benchmark::DoNotOptimize(a.values.data());
  }
  state.counters["Gfloat/s"] = benchmark::Counter(static_cast<double>(tokens * cols * state.iterations()) / 1e9,
                                                   benchmark::Counter::kIsRate);
}

// The output-head benches: one token over an output-head-shaped matrix
// [49152, 2048] (beyond the caches), rows split across threads in tiles, GB/s
// of packed weights and their fraction of NOTES.md's read bandwidth.
constexpr int64_t kHeadRows = 49152, kHeadCols = 2048;

MatrixView HeadView(DType dtype, const std::vector<uint8_t>& bytes) {
  return MatrixView::Contiguous(dtype, kHeadRows, kHeadCols, bytes.data());
}

// Times gemm(head, a, y, y_stride, row_begin, row_end) over all rows.
template <typename Packed, typename Gemm>
void TimeHeadGemv(benchmark::State& state, const Packed& head, int threads, Gemm&& gemm) {
  const std::vector<float> x = RandomActivations(1, kHeadCols);
  QuantizedActivations a;
  QuantizeActivations(x.data(), 1, kHeadCols, 32, &a);
  std::vector<float> y(kHeadRows);
  ThreadPool pool(threads);
  for (auto _ : state) {
    pool.ParallelFor(head.num_tiles, std::max<int64_t>(1, head.num_tiles / (4 * threads)), [&](int64_t begin, int64_t end) {
      gemm(head, a, y.data(), kHeadRows, begin * 16, std::min(kHeadRows, end * 16));
    });
    benchmark::DoNotOptimize(y.data());
  }
  const double bytes = static_cast<double>(head.data.size()) * static_cast<double>(state.iterations());
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsRate);
  state.counters["of_36GB/s"] = benchmark::Counter(bytes / kNotesReadBytesPerSecond, benchmark::Counter::kIsRate);
}

// The 8-bit output head path (W8A8, AVX-512 VNNI), packed from Q8_0 (8.5
// bits a weight, 107 MB).
void BM_W8A8HeadGemv(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const std::vector<Isa> supported = SupportedW8A8Isas();
  if (std::find(supported.begin(), supported.end(), isa) == supported.end()) {
    state.SkipWithError("no W8A8 kernel for this ISA on this CPU");
    return;
  }
  static const PackedW8 head = [] {
    std::mt19937 rng(3);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::vector<float> row(kHeadCols);
    const size_t row_bytes = RowBytes(DType::kQ8_0, kHeadCols);
    std::vector<uint8_t> q8_0(row_bytes * kHeadRows);
    for (int64_t r = 0; r < kHeadRows; ++r) {
      for (float& v : row) v = normal(rng);
      QuantizeRow(DType::kQ8_0, row.data(), &q8_0[r * row_bytes], kHeadCols);
    }
    StatusOr<PackedW8> packed = PackW8(HeadView(DType::kQ8_0, q8_0));
    if (!packed.ok()) std::abort();
    return std::move(packed).value();
  }();
  TimeHeadGemv(state, head, threads, [isa](auto&&... args) { GemmW8A8(args..., isa); });
  state.SetLabel(std::string(IsaName(isa)) + " q8_0 8.5 bits");
}

// The 6-bit output head path (W6A8, AVX2 and AVX-512 VNNI): a Q6_K head held
// bit for bit (6.5625 bits a weight, 83 MB). The codes are random bytes (the
// kernel's work does not depend on them).
void BM_W6A8HeadGemv(benchmark::State& state) {
  const Isa isa = static_cast<Isa>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const std::vector<Isa> supported = SupportedW6A8Isas();
  if (std::find(supported.begin(), supported.end(), isa) == supported.end()) {
    state.SkipWithError("no W6A8 kernel for this ISA on this CPU");
    return;
  }
  static const PackedW6 head = [] {
    std::mt19937 rng(3);
    std::vector<uint8_t> q6_k(RowBytes(DType::kQ6_K, kHeadCols) * kHeadRows);
    for (auto& b : q6_k) b = static_cast<uint8_t>(rng());
    const uint16_t d = 0x1400;  // 2^-10
    for (size_t block = 0; block < q6_k.size() / 210; ++block) std::memcpy(&q6_k[block * 210 + 208], &d, 2);
    StatusOr<PackedW6> packed = PackW6(HeadView(DType::kQ6_K, q6_k));
    if (!packed.ok()) std::abort();
    return std::move(packed).value();
  }();
  TimeHeadGemv(state, head, threads, [isa](auto&&... args) { GemmW6A8(args..., isa); });
  state.SetLabel(std::string(IsaName(isa)) + " q6_k 6.5625 bits");
}

void IsaThreadArgs(benchmark::internal::Benchmark* b) {
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni}) {
    for (int threads : {1, 2}) {
      for (int symmetric : {0, 1}) b->Args({static_cast<int64_t>(isa), threads, symmetric});
    }
  }
}

void IsaThreadTokenArgs(benchmark::internal::Benchmark* b) {
  for (Isa isa : {Isa::kAvx2, Isa::kAvxVnni, Isa::kAvx512Vnni}) {
    for (int threads : {1, 2}) b->Args({static_cast<int64_t>(isa), threads, 512});
  }
  b->Args({static_cast<int64_t>(Isa::kScalar), 1, 16});
}

BENCHMARK(BM_W4A8Gemv)->Apply(IsaThreadArgs)->ArgNames({"isa", "threads", "symmetric"})->UseRealTime();
BENCHMARK(BM_W4A8Gemm)->Apply(IsaThreadTokenArgs)->ArgNames({"isa", "threads", "tokens"})->UseRealTime();
BENCHMARK(BM_W4A8QuantizeActivations)->Arg(1)->Arg(512);
BENCHMARK(BM_W8A8HeadGemv)
    ->Args({static_cast<int64_t>(Isa::kAvx512Vnni), 1})
    ->Args({static_cast<int64_t>(Isa::kAvx512Vnni), 2})
    ->ArgNames({"isa", "threads"})
    ->UseRealTime();
BENCHMARK(BM_W6A8HeadGemv)
    ->Args({static_cast<int64_t>(Isa::kAvx2), 1})
    ->Args({static_cast<int64_t>(Isa::kAvx2), 2})
    ->Args({static_cast<int64_t>(Isa::kAvx512Vnni), 1})
    ->Args({static_cast<int64_t>(Isa::kAvx512Vnni), 2})
    ->ArgNames({"isa", "threads"})
    ->UseRealTime();

}  // namespace
}  // namespace tetra

BENCHMARK_MAIN();
