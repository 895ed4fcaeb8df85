// This machine's physical limits, measured by the same harness as the kernel
// benchmarks, so that each kernel can report its fraction of the peak:
//   - memory read bandwidth: a streaming read of a 1 GiB buffer (GB/s),
//   - int8 multiply-add peak: vpdpbusd (AVX-512 VNNI, 512 and 256 bit) and the
//     AVX2 vpmaddubsw + vpmaddwd + vpaddd sequence (GOPS, 2 ops per u8*s8 MAC),
//   - bf16 dot-product peak: vdpbf16ps (GFLOP/s, 2 per pair),
//   - fp32 FMA peak: 512 and 256 bit (GFLOP/s, 2 per lane).
// Each compute loop keeps kAccumulators independent dependency chains so that
// the instruction's throughput, not its latency, limits it; the loops over the
// accumulators are unrolled by pragma so that they live in registers (GCC -O2
// otherwise keeps them in a stack array: a load and a store per instruction); bench/README.md
// records the disassembly check that the compiler kept every instruction.
// The argument of each benchmark is the number of threads, each running the
// same loop (compute) or reading its own slice of the buffer (memory).
// ISA-specific loops are compiled with target attributes (the per-function
// form of -mavx512vnni etc.) and skipped when the CPU lacks the feature.
//
// Counters: <unit> (all threads, per wall second), <unit>/core (per second of
// one thread's CPU time, robust to other load) and cpu_busy (1.0 = the cores
// were ours alone); see RateCounters.
//
// Run: build-bench/bench/peaks_bench [--benchmark_format=json]
#include <benchmark/benchmark.h>
#include <immintrin.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <string>
#include <functional>
#include <thread>
#include <vector>

#include "base/cpu_features.h"

namespace tetra {
namespace {

constexpr int kAccumulators = 12;          // independent chains per loop
// Loop trips per call: milliseconds, long against thread start-up and the
// scheduler's time slice, so that 2 threads really run side by side.
constexpr int64_t kInnerIterations = 1 << 21;

double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Wall-clock and CPU time of one run over several threads.
struct ThreadedTime {
  double wall_seconds = 0;
  double cpu_seconds = 0;  // summed over the threads
};

// Runs fn(thread_index) on num_threads threads (the caller is one of them).
ThreadedTime RunOnThreads(int num_threads, const std::function<void(int)>& fn) {
  std::vector<double> cpu(num_threads);
  auto timed = [&](int t) {
    const double start = ThreadCpuSeconds();
    fn(t);
    cpu[t] = ThreadCpuSeconds() - start;
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> others;
  for (int t = 1; t < num_threads; ++t) others.emplace_back(timed, t);
  timed(0);
  for (auto& thread : others) thread.join();
  ThreadedTime time;
  time.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (double c : cpu) time.cpu_seconds += c;
  return time;
}

// Accumulates the runs of one benchmark and sets its counters:
//   <unit>          units / 1e9 per wall-clock second, all threads together;
//   <unit>/core     units / 1e9 per second of CPU time of one thread: the
//                   per-core figure even when other processes share the cores;
//   cpu_busy        CPU time / (wall time * threads): 1.0 when the benchmark
//                   had the cores to itself, lower when the machine was loaded.
class RateCounters {
 public:
  void Add(const ThreadedTime& time) {
    wall_seconds_ += time.wall_seconds;
    cpu_seconds_ += time.cpu_seconds;
  }
  void Set(benchmark::State& state, const std::string& unit, double units_per_iteration, int num_threads) const {
    const double units = units_per_iteration * static_cast<double>(state.iterations()) / 1e9;
    state.counters[unit] = benchmark::Counter(units, benchmark::Counter::kIsRate);
    if (cpu_seconds_ > 0) state.counters[unit + "/core"] = units / cpu_seconds_;
    if (wall_seconds_ > 0) state.counters["cpu_busy"] = cpu_seconds_ / (wall_seconds_ * num_threads);
  }

 private:
  double wall_seconds_ = 0;
  double cpu_seconds_ = 0;
};

// Skips the benchmark unless the CPU has the feature. Returns whether to run.
bool RequireFeature(benchmark::State& state, bool has_feature, const char* name) {
  if (!has_feature) state.SkipWithError((std::string("the CPU lacks ") + name).c_str());
  return has_feature;
}

// ---------------------------------------------------------------- memory read

constexpr size_t kReadBufferBytes = size_t{1} << 30;

// 1 GiB of non-zero bytes, backed by real pages (not the shared zero page),
// with transparent huge pages requested to keep TLB misses out of the figure.
const uint8_t* ReadBuffer() {
  static uint8_t* buffer = [] {
    void* p = mmap(nullptr, kReadBufferBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return static_cast<uint8_t*>(nullptr);
    madvise(p, kReadBufferBytes, MADV_HUGEPAGE);
    std::memset(p, 0x5a, kReadBufferBytes);
    return static_cast<uint8_t*>(p);
  }();
  return buffer;
}

// Sums [begin, end) as 64-bit lanes with 8 accumulators, 512 bytes per trip.
// `end - begin` is a multiple of 512; begin is 64-byte aligned.
__attribute__((target("avx512f"))) uint64_t StreamRead512(const uint8_t* begin, const uint8_t* end) {
  __m512i acc[8];
  #pragma GCC unroll 16
  for (auto& a : acc) a = _mm512_setzero_si512();
  for (const uint8_t* p = begin; p < end; p += 512) {
    #pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) acc[i] = _mm512_add_epi64(acc[i], _mm512_load_si512(p + 64 * i));
  }
  #pragma GCC unroll 16
  for (int i = 1; i < 8; ++i) acc[0] = _mm512_add_epi64(acc[0], acc[i]);
  // (Not _mm512_reduce_add_*: GCC 12 warns falsely about uninitialised use.)
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, acc[0]);
  return lanes[0] + lanes[7];
}

__attribute__((target("avx2"))) uint64_t StreamRead256(const uint8_t* begin, const uint8_t* end) {
  __m256i acc[8];
  #pragma GCC unroll 16
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (const uint8_t* p = begin; p < end; p += 256) {
    #pragma GCC unroll 16
    for (int i = 0; i < 8; ++i) {
      acc[i] = _mm256_add_epi64(acc[i], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32 * i)));
    }
  }
  #pragma GCC unroll 16
  for (int i = 1; i < 8; ++i) acc[0] = _mm256_add_epi64(acc[0], acc[i]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

void BM_MemoryRead(benchmark::State& state, bool use_avx512) {
  const CpuFeatures& cpu = GetCpuFeatures();
  if (!RequireFeature(state, use_avx512 ? cpu.avx512f : cpu.avx2, use_avx512 ? "avx512f" : "avx2")) return;
  const uint8_t* buffer = ReadBuffer();
  if (buffer == nullptr) {
    state.SkipWithError("cannot map a 1 GiB buffer");
    return;
  }
  const int num_threads = static_cast<int>(state.range(0));
  const size_t slice = kReadBufferBytes / num_threads;  // a multiple of 512
  std::vector<uint64_t> sums(num_threads);
  RateCounters rates;
  for (auto _ : state) {
    const ThreadedTime time = RunOnThreads(num_threads, [&](int t) {
      const uint8_t* begin = buffer + t * slice;
      sums[t] = use_avx512 ? StreamRead512(begin, begin + slice) : StreamRead256(begin, begin + slice);
    });
    state.SetIterationTime(time.wall_seconds);
    rates.Add(time);
    benchmark::DoNotOptimize(sums.data());
  }
  rates.Set(state, "GB/s", static_cast<double>(kReadBufferBytes), num_threads);
}
BENCHMARK_CAPTURE(BM_MemoryRead, avx512, true)->ArgName("threads")->Arg(1)->Arg(2)->UseManualTime()->MinTime(1.0);
BENCHMARK_CAPTURE(BM_MemoryRead, avx2, false)->ArgName("threads")->Arg(1)->Arg(2)->UseManualTime()->MinTime(1.0);

// ------------------------------------------------------------- compute peaks
// Each loop takes its operands through an empty asm statement so that the
// compiler can neither constant-fold them nor hoist the work out of the loop.

// int8: vpdpbusd zmm, 64 u8*s8 MACs = 128 ops per instruction.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int32_t VnniLoop512(int64_t trips) {
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  asm volatile("" : "+v"(a), "+v"(b));
  __m512i acc[kAccumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm512_setzero_si512();
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+v"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAccumulators; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAccumulators; ++k) acc[0] = _mm512_add_epi32(acc[0], acc[k]);
  alignas(64) int32_t lanes[16];
  _mm512_store_si512(lanes, acc[0]);
  return lanes[0] + lanes[15];
}

// int8: vpdpbusd ymm (EVEX, AVX512-VL), 32 MACs = 64 ops per instruction.
__attribute__((target("avx512f,avx512vl,avx512vnni"))) int32_t VnniLoop256(int64_t trips) {
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2);
  asm volatile("" : "+v"(a), "+v"(b));
  __m256i acc[kAccumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm256_setzero_si256();
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+v"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAccumulators; ++k) acc[k] = _mm256_dpbusd_epi32(acc[k], a, b);
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAccumulators; ++k) acc[0] = _mm256_add_epi32(acc[0], acc[k]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  return lanes[0] + lanes[7];
}

// int8 without VNNI: vpmaddubsw (u8*s8 pairs -> s16) + vpmaddwd (s16 pairs
// * 1 -> s32) + vpaddd, 32 MACs = 64 ops per three instructions. Only 16 ymm
// registers without AVX-512: 6 accumulators, or GCC spills some to the stack.
constexpr int kAvx2Accumulators = 6;
__attribute__((target("avx2"))) int32_t Avx2Int8Loop(int64_t trips) {
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(-2), ones = _mm256_set1_epi16(1);
  asm volatile("" : "+x"(a), "+x"(b), "+x"(ones));
  __m256i acc[kAvx2Accumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm256_setzero_si256();
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+x"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAvx2Accumulators; ++k) {
      // Without this the compiler would compute the same products once.
      asm volatile("" : "+x"(a));
      const __m256i pairs16 = _mm256_maddubs_epi16(a, b);
      acc[k] = _mm256_add_epi32(acc[k], _mm256_madd_epi16(pairs16, ones));
    }
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAvx2Accumulators; ++k) acc[0] = _mm256_add_epi32(acc[0], acc[k]);
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[0]);
  return lanes[0] + lanes[7];
}

// fp32: vfmadd zmm, 16 lanes * 2 = 32 flops per instruction. acc += a*b with
// tiny products, so the values stay normal (no denormal slow paths).
__attribute__((target("avx512f"))) float FmaLoop512(int64_t trips) {
  __m512 a = _mm512_set1_ps(1e-7f), b = _mm512_set1_ps(0.5f);
  asm volatile("" : "+v"(a), "+v"(b));
  __m512 acc[kAccumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm512_set1_ps(1.0f);
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+v"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAccumulators; ++k) acc[k] = _mm512_fmadd_ps(a, b, acc[k]);
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAccumulators; ++k) acc[0] = _mm512_add_ps(acc[0], acc[k]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  return lanes[0] + lanes[15];
}

// fp32: vfmadd ymm, 8 lanes * 2 = 16 flops per instruction.
__attribute__((target("avx2,fma"))) float FmaLoop256(int64_t trips) {
  __m256 a = _mm256_set1_ps(1e-7f), b = _mm256_set1_ps(0.5f);
  asm volatile("" : "+x"(a), "+x"(b));
  __m256 acc[kAccumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm256_set1_ps(1.0f);
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+x"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAccumulators; ++k) acc[k] = _mm256_fmadd_ps(a, b, acc[k]);
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAccumulators; ++k) acc[0] = _mm256_add_ps(acc[0], acc[k]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc[0]);
  return lanes[0] + lanes[7];
}

// bf16: vdpbf16ps zmm, 32 bf16 pairs * 2 = 64 flops per instruction.
__attribute__((target("avx512f,avx512bf16"))) float Bf16Loop512(int64_t trips) {
  __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-7f), _mm512_set1_ps(1e-7f));
  __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.5f));
  asm volatile("" : "+v"(a), "+v"(b));
  __m512 acc[kAccumulators];
  #pragma GCC unroll 16
  for (auto& x : acc) x = _mm512_set1_ps(1.0f);
  // Opaque starts: identical chains would be merged into one by the compiler.
  #pragma GCC unroll 16
  for (auto& x : acc) asm volatile("" : "+v"(x));
  for (int64_t i = 0; i < trips; ++i) {
    #pragma GCC unroll 16
    for (int k = 0; k < kAccumulators; ++k) acc[k] = _mm512_dpbf16_ps(acc[k], a, b);
  }
  #pragma GCC unroll 16
  for (int k = 1; k < kAccumulators; ++k) acc[0] = _mm512_add_ps(acc[0], acc[k]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, acc[0]);
  return lanes[0] + lanes[15];
}

// Runs loop(kInnerIterations) on each of state.range(0) threads and reports
// `counter` = ops_per_trip * trips executed / 1e9 per second.
template <typename Result>
void RunComputePeak(benchmark::State& state, Result (*loop)(int64_t), double ops_per_trip, const char* counter) {
  const int num_threads = static_cast<int>(state.range(0));
  std::vector<Result> results(num_threads);
  RateCounters rates;
  for (auto _ : state) {
    const ThreadedTime time = RunOnThreads(num_threads, [&](int t) { results[t] = loop(kInnerIterations); });
    state.SetIterationTime(time.wall_seconds);
    rates.Add(time);
    benchmark::DoNotOptimize(results.data());
  }
  rates.Set(state, counter, ops_per_trip * kInnerIterations * num_threads, num_threads);
}

void BM_Int8Vnni512(benchmark::State& state) {
  if (RequireFeature(state, GetCpuFeatures().avx512vnni, "avx512vnni")) RunComputePeak(state, VnniLoop512, 128 * kAccumulators, "GOPS");
}
void BM_Int8Vnni256(benchmark::State& state) {
  if (RequireFeature(state, GetCpuFeatures().avx512vnni, "avx512vnni")) RunComputePeak(state, VnniLoop256, 64 * kAccumulators, "GOPS");
}
void BM_Int8Avx2MaddUbs(benchmark::State& state) {
  if (RequireFeature(state, GetCpuFeatures().avx2, "avx2")) RunComputePeak(state, Avx2Int8Loop, 64 * kAvx2Accumulators, "GOPS");
}
void BM_Fp32Fma512(benchmark::State& state) {
  if (RequireFeature(state, GetCpuFeatures().avx512f, "avx512f")) RunComputePeak(state, FmaLoop512, 32 * kAccumulators, "GFLOP/s");
}
void BM_Fp32Fma256(benchmark::State& state) {
  const CpuFeatures& cpu = GetCpuFeatures();
  if (RequireFeature(state, cpu.avx2 && cpu.fma, "avx2+fma")) RunComputePeak(state, FmaLoop256, 16 * kAccumulators, "GFLOP/s");
}
void BM_Bf16Dot512(benchmark::State& state) {
  if (RequireFeature(state, GetCpuFeatures().avx512bf16, "avx512bf16")) RunComputePeak(state, Bf16Loop512, 64 * kAccumulators, "GFLOP/s");
}

#define TETRA_PEAK(fn) BENCHMARK(fn)->ArgName("threads")->Arg(1)->Arg(2)->UseManualTime()
TETRA_PEAK(BM_Int8Vnni512);
TETRA_PEAK(BM_Int8Vnni256);
TETRA_PEAK(BM_Int8Avx2MaddUbs);
TETRA_PEAK(BM_Fp32Fma512);
TETRA_PEAK(BM_Fp32Fma256);
TETRA_PEAK(BM_Bf16Dot512);

}  // namespace
}  // namespace tetra

BENCHMARK_MAIN();
