#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace tetra {

// ---------------------------------------------------------------------------
// Row passes, written once on 16-lane GCC vector types. target_clones builds
// an AVX-512, an AVX2+FMA and a baseline copy of each; the loader picks the
// best the CPU has. Scaled logits are in base 2: t = (logit - max) *
// log2(e) / temperature, so a weight is 2^t (1 for the largest).
// ---------------------------------------------------------------------------

// GCC only: clang (14) rejects the inlined vector helpers inside clones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(TETRA_SAMPLER_NO_CLONES)
#define TETRA_SAMPLER_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define TETRA_SAMPLER_CLONES
#endif
// Helpers on vector values are always inlined into the clones (their vector
// arguments never cross a call, so -Wpsabi's ABI note does not apply).
#define TETRA_INLINE [[gnu::always_inline]] inline

namespace sampler_internal {

constexpr int kLanes = 16;
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
typedef int32_t I16 __attribute__((vector_size(64)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef int32_t I4 __attribute__((vector_size(16)));

using Candidate = SamplerScratch::Candidate;

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();
// Unfiltered sampling draws a block of the row by its mass, then a token in it.
constexpr int64_t kBlock = 512;
// Threshold passes look at 128 values at a time and skip the block when its
// largest misses the threshold.
constexpr int64_t kScan = 128;
// Top-p first collects the tokens with t at or above kLevelCut[0] and goes
// down the levels while the nucleus reaches below what was collected.
constexpr int kLevels = 3;
constexpr float kLevelCut[kLevels] = {-12.0f, -24.0f, -48.0f};
// The lowest level: every token with a finite scaled logit.
constexpr float kAllTokens = -FLT_MAX;
// Room for SelectTop's top logprobs without ties (and for reusing top-k's selection).
constexpr int64_t kRawTopCapacity = 3 * kScan + 2 * kMaxTopLogprobs;
// 2^t is 0 below this (float's normal range ends at 2^-126).
constexpr float kExp2Floor = -125.0f;

TETRA_INLINE V16 Load(const float* p) {
  V16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// The last n < 16 values of a row, padded with -inf (weight 0, never kept).
TETRA_INLINE V16 LoadTail(const float* p, int64_t n) {
  alignas(64) float lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = j < n ? p[j] : kNegInf;
  return Load(lanes);
}
TETRA_INLINE V16 Splat(float x) { return V16{} + x; }
// a > b ? a : b: a NaN a gives b, so an accumulator in b never turns NaN.
template <typename V>
TETRA_INLINE V MaxV(V a, V b) {
  return a > b ? a : b;
}
// Lane reductions in a fixed tree order (v must hold no NaN for MaxLanes).
TETRA_INLINE float MaxLanes(V16 v) {
  const V8 a = MaxV(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7),
                    __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
  const V4 b = MaxV(__builtin_shufflevector(a, a, 0, 1, 2, 3), __builtin_shufflevector(a, a, 4, 5, 6, 7));
  return std::max(std::max(b[0], b[1]), std::max(b[2], b[3]));
}
TETRA_INLINE double SumLanes(V16 v) {
  const V8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const V4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (static_cast<double>(b[0]) + b[1]) + (static_cast<double>(b[2]) + b[3]);
}
// Bit j set where lane j of the comparison result m is true.
TETRA_INLINE uint32_t LaneBits(I16 m) {
  const I16 bit = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
  const I16 b = m & bit;
  const I8 a = __builtin_shufflevector(b, b, 0, 1, 2, 3, 4, 5, 6, 7) |
               __builtin_shufflevector(b, b, 8, 9, 10, 11, 12, 13, 14, 15);
  const I4 c = __builtin_shufflevector(a, a, 0, 1, 2, 3) | __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return static_cast<uint32_t>(c[0] | c[1] | c[2] | c[3]);
}
// The largest of x[0, kScan), NaN ignored.
TETRA_INLINE float MaxOfScan(const float* x) {
  V16 m0 = MaxV(Load(x), Splat(kNegInf));
  V16 m1 = MaxV(Load(x + kLanes), Splat(kNegInf));
  for (int64_t j = 2 * kLanes; j < kScan; j += 2 * kLanes) {
    m0 = MaxV(Load(x + j), m0);
    m1 = MaxV(Load(x + j + kLanes), m1);
  }
  return MaxLanes(MaxV(m0, m1));
}
// Calls visit(i) for each i in [begin, end) where keep(value vector) holds,
// in order; whole 16-value vectors at a time, the tail padded with -inf.
template <typename Keep, typename Visit>
TETRA_INLINE void ForEachKept(const float* x, int64_t begin, int64_t end, Keep keep, Visit visit) {
  for (int64_t i = begin; i < end; i += kLanes) {
    uint32_t bits = LaneBits(keep(end - i >= kLanes ? Load(x + i) : LoadTail(x + i, end - i)));
    while (bits != 0) {
      visit(i + std::countr_zero(bits));
      bits &= bits - 1;
    }
  }
}

TETRA_INLINE I16 ToInt(V16 x) { return __builtin_convertvector(x, I16); }

// 2^t for t <= 0; 0 below kExp2Floor and for NaN. t = n + f with n an
// integer and |f| <= 1/2 (exact), 2^f = e^(f ln 2) by its Taylor series to
// degree 6 (relative error < 1.3e-7), 2^n put in the exponent bits. Lanes
// below the floor compute garbage that the final select drops.
TETRA_INLINE V16 Exp2NonPositive(V16 t) {
  const V16 n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23)
  const V16 f = t - n;
  V16 p = f * 1.5403530393381608e-4f + 1.3333558146428443e-3f;
  p = p * f + 9.6181291076284772e-3f;
  p = p * f + 5.5504108664821580e-2f;
  p = p * f + 2.4022650695910071e-1f;
  p = p * f + 6.9314718055994531e-1f;
  p = p * f + 1.0f;
  const V16 scale = std::bit_cast<V16>((ToInt(MaxV(n, Splat(kExp2Floor))) + 127) << 23);
  return t >= kExp2Floor ? p * scale : V16{};
}

// The largest value (NaN ignored); -inf when none.
TETRA_SAMPLER_CLONES float RowMax(const float* x, int64_t n) {
  V16 m0 = Splat(kNegInf), m1 = m0, m2 = m0, m3 = m0;
  int64_t i = 0;
  for (; i + 4 * kLanes <= n; i += 4 * kLanes) {
    m0 = MaxV(Load(x + i), m0);
    m1 = MaxV(Load(x + i + kLanes), m1);
    m2 = MaxV(Load(x + i + 2 * kLanes), m2);
    m3 = MaxV(Load(x + i + 3 * kLanes), m3);
  }
  for (; i < n; i += kLanes) m0 = MaxV(n - i >= kLanes ? Load(x + i) : LoadTail(x + i, n - i), m0);
  return MaxLanes(MaxV(MaxV(m0, m1), MaxV(m2, m3)));
}

// The first index holding `value` (not NaN), n when none. A block's largest
// equals the row's largest only where it holds it, so with value = RowMax
// only the block holding the answer is scanned.
TETRA_SAMPLER_CLONES int64_t FirstIndexOfMax(const float* x, int64_t n, float value) {
  int64_t i = 0;
  for (; i + kScan <= n; i += kScan) {
    if (MaxOfScan(x + i) == value) break;
  }
  for (; i < n; ++i) {
    if (x[i] == value) return i;
  }
  return n;
}

// One pass over the row for its largest value and its mass 2^((x - max) * k)
// per block of kBlock tokens: each block's maximum first, then the block's
// sum relative to it while the block is still in L1; block_max / block_sum
// get those (block_sum on the block's own scale, see ToRowScale). Returns the
// row's largest value (NaN ignored; -inf when none).
TETRA_SAMPLER_CLONES float MaxAndBlockSums(const float* x, int64_t n, float k, float* block_max, float* block_sum) {
  const V16 vk = Splat(k);
  float row_max = kNegInf;
  for (int64_t begin = 0, block = 0; begin < n; begin += kBlock, ++block) {
    const int64_t end = std::min(n, begin + kBlock);
    V16 m0 = Splat(kNegInf), m1 = m0;
    int64_t i = begin;
    for (; i + 2 * kLanes <= end; i += 2 * kLanes) {
      m0 = MaxV(Load(x + i), m0);
      m1 = MaxV(Load(x + i + kLanes), m1);
    }
    for (; i < end; i += kLanes) m0 = MaxV(end - i >= kLanes ? Load(x + i) : LoadTail(x + i, end - i), m0);
    const float bm = MaxLanes(MaxV(m0, m1));
    // t = (x - bm) * k: no overflow whatever the logits; an all -inf block sums to 0 (NaN lanes).
    const V16 vm = Splat(bm);
    V16 s0{}, s1{};
    for (i = begin; i + 2 * kLanes <= end; i += 2 * kLanes) {
      s0 += Exp2NonPositive((Load(x + i) - vm) * vk);
      s1 += Exp2NonPositive((Load(x + i + kLanes) - vm) * vk);
    }
    for (; i < end; i += kLanes) s0 += Exp2NonPositive(((end - i >= kLanes ? Load(x + i) : LoadTail(x + i, end - i)) - vm) * vk);
    block_max[block] = bm;
    block_sum[block] = static_cast<float>(SumLanes(s0 + s1));
    row_max = std::max(row_max, bm);
  }
  return row_max;
}

// 2^((x[i] - m) * k) for i in [0, n), into out.
TETRA_SAMPLER_CLONES void ExpRow(const float* x, int64_t n, float m, float k, float* out) {
  const V16 vk = Splat(k), vm = Splat(m);
  for (int64_t i = 0; i < n; i += kLanes) {
    const V16 e = Exp2NonPositive(((n - i >= kLanes ? Load(x + i) : LoadTail(x + i, n - i)) - vm) * vk);
    std::memcpy(out + i, &e, static_cast<size_t>(std::min<int64_t>(kLanes, n - i)) * sizeof(float));
  }
}

// weight = 2^logit for each candidate (logit already scaled).
TETRA_SAMPLER_CLONES void WeighCandidates(Candidate* c, int64_t n) {
  alignas(64) float lanes[kLanes];
  for (int64_t i = 0; i < n; i += kLanes) {
    const int64_t len = std::min<int64_t>(kLanes, n - i);
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] = j < len ? c[i + j].logit : kNegInf;
    const V16 e = Exp2NonPositive(Load(lanes));
    for (int64_t j = 0; j < len; ++j) c[i + j].weight = e[j];
  }
}

// Appends every token with t = (x - m) * k >= cut (NaN never) to out, in
// id order, with logit t (weights: WeighCandidates, once per 16 candidates
// rather than once per vector of the row that holds one); returns the count.
// t is monotonic in x, so a block whose largest value misses the cut is
// skipped whole.
TETRA_SAMPLER_CLONES int64_t CollectScaled(const float* x, int64_t n, float m, float k, float cut, Candidate* out) {
  const V16 vk = Splat(k), vm = Splat(m);
  int64_t count = 0;
  auto keep = [&](V16 v) { return (v - vm) * vk >= cut; };
  auto visit = [&](int64_t i) { out[count++] = Candidate{(x[i] - m) * k, 0.0f, static_cast<int32_t>(i)}; };
  int64_t i = 0;
  for (; i + kScan <= n; i += kScan) {
    if ((MaxOfScan(x + i) - m) * k >= cut) ForEachKept(x, i, i + kScan, keep, visit);
  }
  ForEachKept(x, i, n, keep, visit);
  return count;
}

// The +inf entries of the row, in id order, with logit 0 and weight 1.
TETRA_SAMPLER_CLONES int64_t CollectInfinite(const float* x, int64_t n, Candidate* out) {
  int64_t count = 0;
  auto keep = [](V16 v) { return v == kPosInf; };
  auto visit = [&](int64_t i) { out[count++] = Candidate{0.0f, 1.0f, static_cast<int32_t>(i)}; };
  int64_t i = 0;
  for (; i + kScan <= n; i += kScan) {
    if (MaxOfScan(x + i) == kPosInf) ForEachKept(x, i, i + kScan, keep, visit);
  }
  ForEachKept(x, i, n, keep, visit);
  return count;
}

// Larger logit first; equal logits: lower id first.
inline bool Before(const Candidate& a, const Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Reduces buf[0, size) (size > k) to its k first in Before order, plus
// (keep_ties) every other entry equal to the k-th; returns the new size and
// sets *cut to the k-th value.
inline int64_t KeepTop(Candidate* buf, int64_t size, int64_t k, bool keep_ties, float* cut) {
  std::nth_element(buf, buf + (k - 1), buf + size, Before);
  *cut = buf[k - 1].logit;
  if (!keep_ties) return k;
  Candidate* end = std::partition(buf + k, buf + size, [&](const Candidate& c) { return c.logit >= *cut; });
  return end - buf;
}

// The k largest values of the row (NaN and -inf never) into buf, unordered,
// with their raw values; with keep_ties, also every value equal to the k-th.
// buf holds `capacity` >= min(n, k + 64) entries without ties, n with. One
// pass: a block of 64 whose largest value is below the running k-th value is
// skipped whole, so after the first blocks almost nothing is copied.
TETRA_SAMPLER_CLONES int64_t SelectTop(const float* x, int64_t n, int64_t k, bool keep_ties, Candidate* buf,
                                       int64_t capacity) {
  float cut = -FLT_MAX;  // keep x >= cut (x > cut once full, without ties)
  bool strict = false;   // without ties, a later value equal to the k-th has a higher id: it loses
  int64_t size = 0;
  int64_t limit = std::max<int64_t>(2 * k, kScan);
  auto keep = [&](V16 v) { return strict ? v > cut : v >= cut; };
  auto visit = [&](int64_t i) { buf[size++] = Candidate{x[i], 0.0f, static_cast<int32_t>(i)}; };
  int64_t i = 0;
  for (; i + kScan <= n; i += kScan) {
    const float block_max = MaxOfScan(x + i);
    if (strict ? !(block_max > cut) : !(block_max >= cut)) continue;
    ForEachKept(x, i, i + kScan, keep, visit);
    if ((size > limit || size + kScan > capacity) && size > k) {
      size = KeepTop(buf, size, k, keep_ties, &cut);
      strict = !keep_ties;
      if (2 * size > limit) limit = 2 * size;  // ties that would not go: grow, amortised
    }
  }
  ForEachKept(x, i, n, keep, visit);
  float unused;
  return size > k ? KeepTop(buf, size, k, keep_ties, &unused) : size;
}

}  // namespace sampler_internal

namespace {

using namespace sampler_internal;

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256**.
uint64_t NextRandom(std::array<uint64_t, 4>& s) {
  const uint64_t result = std::rotl(s[1] * 5, 7) * 9;
  const uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = std::rotl(s[3], 45);
  return result;
}

// Uniform in [0, 1), 53 bits.
double NextUniform(std::array<uint64_t, 4>& s) {
  return static_cast<double>(NextRandom(s) >> 11) * 0x1.0p-53;
}

bool InRange(float x, float lo, float hi) { return x >= lo && x <= hi; }  // NaN: false

// The row's mass 2^((x - m) * k) per block from MaxAndBlockSums' output,
// into sums (blocks entries); returns the total. scale_scratch: blocks floats.
double ToRowScale(const float* block_max, const float* block_sum, int64_t blocks, float m, float k,
                  float* scale_scratch, double* sums) {
  ExpRow(block_max, blocks, m, k, scale_scratch);  // 2^((block max - row max) * k)
  double total = 0.0;
  for (int64_t b = 0; b < blocks; ++b) {
    sums[b] = static_cast<double>(block_sum[b]) * scale_scratch[b];
    total += sums[b];
  }
  return total;
}

// Keeps the top-p set of c[0, n) at its front (in no particular order) and
// returns its size: in Before order, each token whose predecessors' mass is
// below top_p * total, `total` being the mass of the whole distribution. The
// first token always stays. *complete: the tokens of c reach that mass, so no
// token outside c could be kept. spill: room for n candidates.
//
// No sort of the candidates: their logits are split into 256 buckets by
// value; the bucket where the mass crosses the target is the only one still
// undecided (above it: kept; below: cut), and is split again, until at most
// 64 remain (sorted) or all are equal (ties: lower ids first). Each round
// costs two passes over what is left.
int64_t KeepTopP(Candidate* c, int64_t n, double total, float top_p, Candidate* spill, bool* complete) {
  const double target = static_cast<double>(top_p) * total;
  double before = 0.0;  // mass of the kept tokens, all ahead of [begin, end) in Before order
  int64_t begin = 0, end = n;
  bool cut_some = false;  // tokens past `end` were dropped for reaching the target
  constexpr int kBuckets = 256;
  // The range of the undecided logits: measured once, then kept by the split.
  float lo = n > 0 ? c[0].logit : 0.0f, hi = lo;
  if (n > 64) {
    float lo1 = lo, hi1 = hi;  // two chains: min / max latency, not throughput, is the limit
    int64_t j = 1;
    for (; j + 2 <= n; j += 2) {
      lo = std::min(lo, c[j].logit);
      hi = std::max(hi, c[j].logit);
      lo1 = std::min(lo1, c[j + 1].logit);
      hi1 = std::max(hi1, c[j + 1].logit);
    }
    for (; j < n; ++j) {
      lo = std::min(lo, c[j].logit);
      hi = std::max(hi, c[j].logit);
    }
    lo = std::min(lo, lo1);
    hi = std::max(hi, hi1);
  }
  while (true) {
    const int64_t size = end - begin;
    // Logits are <= 0 and finite here, so hi - lo is too. Float operations
    // are monotonic: a larger logit never lands in a lower bucket.
    const float scale = static_cast<float>(kBuckets) / (hi - lo);
    if (size <= 64 || (lo != hi && !(scale <= FLT_MAX))) {  // few left, or too close for buckets
      std::sort(c + begin, c + end, Before);
      for (int64_t j = begin; j < end; ++j) {
        if (j > 0 && before >= target) {
          *complete = true;
          return j;
        }
        before += c[j].weight;
      }
      *complete = cut_some || before >= target;
      return end;
    }
    if (lo == hi) {  // all equal: the lowest ids first, each the same weight
      const double w = c[begin].weight;
      int64_t keep = 0;
      while (keep < size && (begin + keep == 0 || before < target)) {
        before += w;
        ++keep;
      }
      if (keep < size) {
        std::nth_element(c + begin, c + begin + keep, c + end,
                         [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
      }
      *complete = cut_some || keep < size || before >= target;
      return begin + keep;
    }
    auto bucket = [&](float logit) { return std::min(kBuckets - 1, static_cast<int>((logit - lo) * scale)); };
    double mass[4][kBuckets] = {};  // four interleaved sums: no chain of adds to one bucket
    int64_t j = begin;
    for (; j + 4 <= end; j += 4) {
      mass[0][bucket(c[j].logit)] += c[j].weight;
      mass[1][bucket(c[j + 1].logit)] += c[j + 1].weight;
      mass[2][bucket(c[j + 2].logit)] += c[j + 2].weight;
      mass[3][bucket(c[j + 3].logit)] += c[j + 3].weight;
    }
    for (; j < end; ++j) mass[0][bucket(c[j].logit)] += c[j].weight;
    // From the top bucket down: the first where the mass reaches the target.
    int crossing = -1;
    double above = before;
    for (int b = kBuckets - 1; b >= 0; --b) {
      const double in_bucket = (mass[0][b] + mass[1][b]) + (mass[2][b] + mass[3][b]);
      if (above + in_bucket >= target) {
        crossing = b;
        break;
      }
      above += in_bucket;
    }
    if (crossing < 0) {  // everything left is kept and still short of the target
      *complete = cut_some;
      return end;
    }
    // Above the crossing bucket: kept, compacted in place; in it: spilled,
    // then put right after; below: dropped. Branch-free (which way a logit
    // goes is a coin toss when many share the distribution's middle); the
    // spilled range's min and max come along for the next round.
    int64_t kept = begin, spilled = 0;
    bool dropped = false;
    float next_lo = hi, next_hi = lo;
    for (int64_t i = begin; i < end; ++i) {
      const Candidate x = c[i];
      const int b = bucket(x.logit);
      c[kept] = x;  // kept <= i: c[i] is already read
      spill[spilled] = x;
      const bool in = b == crossing;
      kept += b > crossing;
      spilled += in;
      dropped |= b < crossing;
      next_lo = in ? std::min(next_lo, x.logit) : next_lo;
      next_hi = in ? std::max(next_hi, x.logit) : next_hi;
    }
    cut_some = cut_some || dropped;
    std::copy(spill, spill + spilled, c + kept);
    lo = next_lo;
    hi = next_hi;
    before = above;
    // Nothing kept yet (begin stays 0): the first token is in the crossing bucket, kept there.
    begin = kept;
    end = kept + spilled;
  }
}

// Drops the entries with weight < min_p (the largest has weight 1); keeps the order.
int64_t KeepMinP(Candidate* c, int64_t n, float min_p) {
  if (min_p <= 0.0f) return n;
  return std::remove_if(c, c + n, [&](const Candidate& x) { return !(x.weight >= min_p); }) - c;
}

}  // namespace

// What Sample draws from: a list of weighted candidates, or the whole row.
struct SequenceSampler::Draw {
  enum Kind { kInvalid, kGreedy, kCandidates, kFullRow } kind = kInvalid;
  int32_t token = 0;   // kGreedy
  int64_t count = 0;   // kCandidates: scratch.candidates[0, count)
  double total = 0.0;  // sum of the weights
  // kFullRow: weights 2^((row - max) * scale), summed per block in scratch.block_sums.
  const float* row = nullptr;
  int64_t vocab = 0;
  float max = 0.0f;
  float scale = 1.0f;
  // What the passes learnt of the row, for logprobs when it is the raw row:
  // its largest value, and (sums_scale > 0) its mass at that scale.
  float row_max = 0.0f;
  float sums_scale = 0.0f;
  double sums_total = 0.0;
  // Top-k's selection (raw values) copied to scratch.raw_top when it holds
  // the top_logprobs best: their count, or -1.
  int64_t saved_top = -1;
};

Status ValidateSamplingParams(const SamplingParams& p, int64_t vocab_size) {
  if (vocab_size <= 0) return Status::Errorf("vocab_size must be positive, got {}", vocab_size);
  if (!InRange(p.temperature, 0.0f, 100.0f)) {
    return Status::Errorf("temperature must be in [0, 100], got {}", p.temperature);
  }
  if (p.top_k < -1) return Status::Errorf("top_k must be -1 or 0 (off) or a positive count, got {}", p.top_k);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) return Status::Errorf("top_p must be in (0, 1], got {}", p.top_p);
  if (!InRange(p.min_p, 0.0f, 1.0f)) return Status::Errorf("min_p must be in [0, 1], got {}", p.min_p);
  if (!(p.repetition_penalty > 0.0f && p.repetition_penalty <= 10.0f)) {
    return Status::Errorf("repetition_penalty must be in (0, 10], got {}", p.repetition_penalty);
  }
  if (!InRange(p.presence_penalty, -2.0f, 2.0f)) {
    return Status::Errorf("presence_penalty must be in [-2, 2], got {}", p.presence_penalty);
  }
  if (!InRange(p.frequency_penalty, -2.0f, 2.0f)) {
    return Status::Errorf("frequency_penalty must be in [-2, 2], got {}", p.frequency_penalty);
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= vocab_size) {
      return Status::Errorf("logit_bias token id {} is outside the vocabulary [0, {})", token, vocab_size);
    }
    if (!InRange(bias, -100.0f, 100.0f)) {
      return Status::Errorf("logit_bias for token {} must be in [-100, 100], got {}", token, bias);
    }
  }
  if (p.logit_bias.size() > 1) {
    std::vector<int32_t> ids;
    ids.reserve(p.logit_bias.size());
    for (const auto& entry : p.logit_bias) ids.push_back(entry.first);
    std::sort(ids.begin(), ids.end());
    if (auto dup = std::adjacent_find(ids.begin(), ids.end()); dup != ids.end()) {
      return Status::Errorf("logit_bias lists token {} more than once", *dup);
    }
  }
  if (p.top_logprobs < -1 || p.top_logprobs > kMaxTopLogprobs) {
    return Status::Errorf("top_logprobs must be in [0, {}] (or -1 for none), got {}", kMaxTopLogprobs,
                          p.top_logprobs);
  }
  return Status::Ok();
}

int32_t Argmax(const float* logits, int64_t n) {
  if (n <= 0) return 0;
  const float m = RowMax(logits, n);
  return m == kNegInf ? 0 : static_cast<int32_t>(FirstIndexOfMax(logits, n, m));
}

SequenceSampler::SequenceSampler(const SamplingParams& params, uint64_t stream, std::span<const int32_t> prompt)
    : params_(params) {
  // Sanitise, so that parameters Validate rejects cannot crash or loop.
  SamplingParams& p = params_;
  greedy_ = !(p.temperature >= kGreedyTemperature);  // also NaN and negative
  if (!std::isfinite(p.temperature)) p.temperature = 1.0f;
  if (p.top_k < 0) p.top_k = 0;
  if (!(p.top_p < 1.0f)) p.top_p = 1.0f;          // NaN: off
  if (!(p.top_p > 0.0f)) p.top_p = FLT_MIN;       // keeps the most likely token
  if (!(p.min_p > 0.0f)) p.min_p = 0.0f;          // NaN: off
  if (p.min_p > 1.0f) p.min_p = 1.0f;
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty)) p.repetition_penalty = 1.0f;
  if (!std::isfinite(p.presence_penalty)) p.presence_penalty = 0.0f;
  if (!std::isfinite(p.frequency_penalty)) p.frequency_penalty = 0.0f;
  p.top_logprobs = std::clamp(p.top_logprobs, -1, kMaxTopLogprobs);

  track_prompt_ = p.repetition_penalty != 1.0f;
  track_generated_ = track_prompt_ || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (track_prompt_) {
    for (int32_t token : prompt) Record(token, /*from_prompt=*/true);
  }

  seed_ = p.seed.has_value() ? *p.seed : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  uint64_t mix = seed_;
  uint64_t state = SplitMix64(mix);
  uint64_t stream_mix = stream ^ 0xA0761D6478BD642Full;
  state ^= SplitMix64(stream_mix);
  for (uint64_t& word : rng_) word = SplitMix64(state);
  if ((rng_[0] | rng_[1] | rng_[2] | rng_[3]) == 0) rng_[0] = 1;
}

// The home slot of a token in a power-of-two table: the top bits of a
// multiplicative (Fibonacci) hash.
static size_t HomeSlot(int32_t token, size_t capacity) {
  const int shift = 32 - std::countr_zero(capacity);
  return static_cast<size_t>((static_cast<uint32_t>(token) * 0x9E3779B1u) >> shift);
}

void SequenceSampler::Record(int32_t token, bool from_prompt) {
  // Open addressing (linear probing) on a power-of-two table at most half full.
  if (2 * (entries_.size() + 1) > index_.size()) {
    const size_t capacity = std::max<size_t>(64, 2 * index_.size());
    index_.assign(capacity, -1);
    for (size_t e = 0; e < entries_.size(); ++e) {
      size_t slot = HomeSlot(entries_[e].token, capacity);
      while (index_[slot] >= 0) slot = (slot + 1) & (capacity - 1);
      index_[slot] = static_cast<int32_t>(e);
    }
  }
  const size_t mask = index_.size() - 1;
  size_t slot = HomeSlot(token, index_.size());
  while (index_[slot] >= 0) {
    PenaltyEntry& entry = entries_[static_cast<size_t>(index_[slot])];
    if (entry.token == token) {
      if (from_prompt) {
        entry.in_prompt = true;
      } else {
        ++entry.generated;
      }
      return;
    }
    slot = (slot + 1) & mask;
  }
  index_[slot] = static_cast<int32_t>(entries_.size());
  entries_.push_back(PenaltyEntry{token, from_prompt ? 0 : 1, from_prompt});
}

void SequenceSampler::Accept(int32_t token) {
  if (track_generated_) Record(token, /*from_prompt=*/false);
}

const float* SequenceSampler::ProcessedRow(const float* logits, int64_t vocab, SamplerScratch& scratch) const {
  if (params_.logit_bias.empty() && entries_.empty()) return logits;
  if (scratch.row.size() < static_cast<size_t>(vocab)) scratch.row.resize(static_cast<size_t>(vocab));
  float* row = scratch.row.data();
  std::memcpy(row, logits, static_cast<size_t>(vocab) * sizeof(float));
  for (const auto& [token, bias] : params_.logit_bias) {
    if (token >= 0 && token < vocab) row[token] += bias;
  }
  const float rp = params_.repetition_penalty;
  for (const PenaltyEntry& e : entries_) {
    if (e.token < 0 || e.token >= vocab) continue;
    float v = row[e.token];
    if (rp != 1.0f) v = v > 0.0f ? v / rp : v * rp;
    if (e.generated > 0) {
      v -= params_.frequency_penalty * static_cast<float>(e.generated) + params_.presence_penalty;
    }
    row[e.token] = v;
  }
  return row;
}

void SequenceSampler::BuildDraw(const float* row, int64_t vocab, SamplerScratch& scratch, Draw& draw) const {
  draw = Draw{};
  if (vocab <= 0) return;
  const SamplingParams& p = params_;
  if (greedy_) {
    const float m = RowMax(row, vocab);
    if (m == kNegInf) return;
    draw.row_max = m;
    draw.kind = Draw::kGreedy;
    draw.token = static_cast<int32_t>(FirstIndexOfMax(row, vocab, m));
    return;
  }
  if (scratch.candidates.size() < static_cast<size_t>(vocab)) {
    scratch.candidates.resize(static_cast<size_t>(vocab));
    scratch.spill.resize(static_cast<size_t>(vocab));
  }
  Candidate* c = scratch.candidates.data();
  const float scale = kLog2e / p.temperature;  // t = (logit - max) * scale; weight 2^t
  // Min-p keeps weight >= min_p, i.e. t >= log2(min_p): collect a little
  // below, the exact test is on the weights.
  const float min_p_cut = p.min_p > 0.0f ? std::log2(p.min_p) - 1e-3f : kAllTokens;
  const bool top_k = p.top_k > 0 && p.top_k < vocab;
  int64_t n = 0;
  double total = 0.0;  // the mass top-p takes its share of

  if (top_k) {
    // Top-k first; top-p then shares out the mass of what it kept.
    n = SelectTop(row, vocab, p.top_k, /*keep_ties=*/true, c, vocab);
    if (n == 0) return;
    float m = c[0].logit;
    for (int64_t j = 1; j < n; ++j) m = std::max(m, c[j].logit);
    draw.row_max = m;  // the row's largest is among its top k
    if (p.top_logprobs > 0 && p.top_logprobs <= p.top_k && n <= kRawTopCapacity) {
      // Every token >= the k-th value: the top_logprobs best are among them (if this row is the raw one).
      if (scratch.raw_top.size() < static_cast<size_t>(kRawTopCapacity)) scratch.raw_top.resize(kRawTopCapacity);
      std::copy(c, c + n, scratch.raw_top.data());
      draw.saved_top = n;
    }
    if (m == kPosInf) {
      n = std::remove_if(c, c + n, [](const Candidate& x) { return x.logit != kPosInf; }) - c;
      for (int64_t j = 0; j < n; ++j) c[j] = Candidate{0.0f, 1.0f, c[j].id};
    } else {
      for (int64_t j = 0; j < n; ++j) c[j].logit = std::max((c[j].logit - m) * scale, -FLT_MAX);
      WeighCandidates(c, n);
    }
    for (int64_t j = 0; j < n; ++j) total += c[j].weight;
  } else {
    // Top-p and unfiltered sampling need the row's mass: one pass gives it
    // with the maximum. Min-p alone needs only the maximum.
    const bool need_mass = p.top_p < 1.0f || p.min_p <= 0.0f;
    const int64_t blocks = (vocab + kBlock - 1) / kBlock;
    if (need_mass) scratch.ReserveBlocks(blocks);
    const float m = need_mass ? MaxAndBlockSums(row, vocab, scale, scratch.block_max.data(), scratch.block_rel.data())
                              : RowMax(row, vocab);
    if (m == kNegInf) return;
    draw.row_max = m;
    if (m == kPosInf) {
      n = CollectInfinite(row, vocab, c);
      total = static_cast<double>(n);
    } else if (p.top_p < 1.0f) {
      // Collect above the first level and go lower while the nucleus reaches
      // past what was collected.
      total = ToRowScale(scratch.block_max.data(), scratch.block_rel.data(), blocks, m, scale,
                         scratch.block_scale.data(), scratch.block_sums.data());
      draw.sums_scale = scale;
      draw.sums_total = total;
      for (int level = 0;; ++level) {
        const float cut = std::max(level < kLevels ? kLevelCut[level] : kAllTokens, min_p_cut);
        n = CollectScaled(row, vocab, m, scale, cut, c);
        WeighCandidates(c, n);
        bool complete = false;
        n = KeepTopP(c, n, total, p.top_p, scratch.spill.data(), &complete);
        // Done when nothing outside could be kept: by top-p, or by min-p (cut == min_p_cut).
        if (complete || level >= kLevels || cut == min_p_cut) break;
      }
      n = KeepMinP(c, n, p.min_p);
      draw.kind = Draw::kCandidates;
      draw.count = n;
      for (int64_t j = 0; j < n; ++j) draw.total += c[j].weight;
      return;
    } else if (p.min_p > 0.0f) {
      n = CollectScaled(row, vocab, m, scale, min_p_cut, c);
      WeighCandidates(c, n);
    } else {
      // No filter: sample the whole row by block masses.
      draw.kind = Draw::kFullRow;
      draw.total = ToRowScale(scratch.block_max.data(), scratch.block_rel.data(), blocks, m, scale,
                              scratch.block_scale.data(), scratch.block_sums.data());
      draw.sums_scale = scale;
      draw.sums_total = draw.total;
      draw.row = row;
      draw.vocab = vocab;
      draw.max = m;
      draw.scale = scale;
      return;
    }
  }
  // c holds every token that could be kept, and all of the mass top-p shares.
  if (p.top_p < 1.0f) {
    bool complete = false;
    n = KeepTopP(c, n, total, p.top_p, scratch.spill.data(), &complete);
  }
  n = KeepMinP(c, n, p.min_p);
  draw.kind = Draw::kCandidates;
  draw.count = n;
  for (int64_t j = 0; j < n; ++j) draw.total += c[j].weight;
}

SampleResult SequenceSampler::Sample(const float* logits, int64_t vocab, SamplerScratch& scratch) {
  SampleResult result;
  const float* row = ProcessedRow(logits, vocab, scratch);
  Draw draw;
  BuildDraw(row, vocab, scratch, draw);
  switch (draw.kind) {
    case Draw::kInvalid:
      result.token = 0;
      result.logits_were_all_invalid = true;
      break;
    case Draw::kGreedy:
      result.token = draw.token;
      break;
    case Draw::kCandidates: {
      const Candidate* c = scratch.candidates.data();
      const double target = NextUniform(rng_) * draw.total;
      double mass = 0.0;
      int32_t chosen = -1;
      for (int64_t j = 0; j < draw.count; ++j) {
        if (c[j].weight > 0.0f) chosen = c[j].id;  // the last positive one, if rounding runs past the end
        mass += c[j].weight;
        if (mass > target && c[j].weight > 0.0f) break;
      }
      if (chosen < 0) {  // no positive weight: cannot happen, the largest has weight 1
        result.logits_were_all_invalid = true;
        chosen = 0;
      }
      result.token = chosen;
      break;
    }
    case Draw::kFullRow: {
      const double target = NextUniform(rng_) * draw.total;
      const int64_t blocks = (vocab + kBlock - 1) / kBlock;
      double mass = 0.0;
      int64_t block = -1;
      for (int64_t b = 0; b < blocks; ++b) {
        const double s = scratch.block_sums[b];
        if (s > 0.0) block = b;
        if (mass + s > target && s > 0.0) break;
        mass += s;
      }
      // block >= 0: the block holding the maximum has mass >= 1.
      const int64_t begin = block * kBlock;
      const int64_t len = std::min(kBlock, vocab - begin);
      float weights[kBlock];
      ExpRow(draw.row + begin, len, draw.max, draw.scale, weights);
      int32_t chosen = -1;
      for (int64_t j = 0; j < len; ++j) {
        if (weights[j] > 0.0f) chosen = static_cast<int32_t>(begin + j);
        mass += weights[j];
        if (mass > target && weights[j] > 0.0f) break;
      }
      result.token = chosen >= 0 ? chosen : static_cast<int32_t>(begin);
      break;
    }
  }

  if (params_.top_logprobs >= 0) {
    // From the raw row: log_softmax(logits). Without bias or penalties the
    // row sampled from is the raw one: its maximum (and at temperature 1 its
    // mass) are known already.
    const bool raw = row == logits && draw.kind != Draw::kInvalid;
    const int k = params_.top_logprobs;
    const int64_t blocks = (vocab + kBlock - 1) / kBlock;
    float m = draw.row_max;
    double z = draw.sums_total;
    if (!raw || (std::isfinite(m) && draw.sums_scale != kLog2e)) {
      // The sampling draw above is finished with the block arrays.
      scratch.ReserveBlocks(blocks);
      m = vocab > 0 ? MaxAndBlockSums(logits, vocab, kLog2e, scratch.block_max.data(), scratch.block_rel.data())
                    : kNegInf;
      if (std::isfinite(m)) {
        z = ToRowScale(scratch.block_max.data(), scratch.block_rel.data(), blocks, m, kLog2e,
                       scratch.block_scale.data(), scratch.block_sums.data());
      }
    }
    if (vocab <= 0 || m == kNegInf) {
      result.logprob = kNegInf;
    } else if (m == kPosInf) {
      if (scratch.candidates.size() < static_cast<size_t>(vocab)) scratch.candidates.resize(static_cast<size_t>(vocab));
      const int64_t count = CollectInfinite(logits, vocab, scratch.candidates.data());
      const float each = -std::log(static_cast<float>(count));
      result.logprob = logits[result.token] == kPosInf ? each : kNegInf;
      result.num_top = static_cast<int>(std::min<int64_t>(k, count));
      for (int j = 0; j < result.num_top; ++j) result.top_storage[j] = {scratch.candidates[j].id, each};
    } else {
      const double log_z = std::log(z);
      auto logprob = [&](float x) {
        return x >= -FLT_MAX ? static_cast<float>(static_cast<double>(x - m) - log_z) : kNegInf;
      };
      result.logprob = logprob(logits[result.token]);
      if (k > 0) {
        if (scratch.raw_top.size() < static_cast<size_t>(kRawTopCapacity)) scratch.raw_top.resize(kRawTopCapacity);
        Candidate* top = scratch.raw_top.data();
        int64_t count = 0;
        if (raw && draw.saved_top >= 0) {  // top-k already selected them from this row
          count = std::min<int64_t>(k, draw.saved_top);
          std::partial_sort(top, top + count, top + draw.saved_top, Before);
        } else {
          count = SelectTop(logits, vocab, k, /*keep_ties=*/false, top, kRawTopCapacity);
          std::sort(top, top + count, Before);
        }
        result.num_top = static_cast<int>(count);
        for (int64_t j = 0; j < count; ++j) result.top_storage[j] = {top[j].id, logprob(top[j].logit)};
      }
    }
  }
  Accept(result.token);
  return result;
}

std::vector<TokenProb> SequenceSampler::Distribution(const float* logits, int64_t vocab,
                                                     SamplerScratch& scratch) const {
  std::vector<TokenProb> out;
  const float* row = ProcessedRow(logits, vocab, scratch);
  Draw draw;
  BuildDraw(row, vocab, scratch, draw);
  switch (draw.kind) {
    case Draw::kInvalid:
      break;
    case Draw::kGreedy:
      out.push_back({draw.token, 1.0});
      break;
    case Draw::kCandidates:
      for (int64_t j = 0; j < draw.count; ++j) {
        const Candidate& c = scratch.candidates[j];
        if (c.weight > 0.0f) out.push_back({c.id, c.weight / draw.total});
      }
      break;
    case Draw::kFullRow: {
      std::vector<float> weights(static_cast<size_t>(vocab));
      ExpRow(draw.row, vocab, draw.max, draw.scale, weights.data());
      for (int64_t i = 0; i < vocab; ++i) {
        if (weights[i] > 0.0f) out.push_back({static_cast<int32_t>(i), weights[i] / draw.total});
      }
      break;
    }
  }
  std::sort(out.begin(), out.end(), [](const TokenProb& a, const TokenProb& b) { return a.token < b.token; });
  return out;
}

}  // namespace tetra
