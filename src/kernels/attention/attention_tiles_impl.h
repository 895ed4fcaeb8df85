// The body of one attention work item (attention_internal.h: AttendTask),
// written once over GCC vector types and compiled per ISA: the including file
// defines TETRA_ATTEND_FN (the entry point's name) and is built with its own
// -m flags, so every helper here is inlined and vectorized for that ISA.
// Everything sits in an anonymous namespace, so the copies never clash.
//
// A task walks its key range one KV block (a key tile) at a time: the
// tile's keys and values are converted to f32 once into per-thread scratch
// and used by every query row of the task, with an online softmax (running
// max, sum, rescaled accumulator), so no full score matrix exists.
//
// Per-thread scratch (64-byte aligned, grown once) for a task of R rows
// (R = tokens x group; row r is token r / group, q head r % group), head_dim
// D padded to Dp and block_tokens Bk padded to Kp (multiples of 16):
//   q        [R, Dp]  queries times the softmax scale times log2(e)
//   keys     [D, Kp]  the tile's keys transposed, so scores vectorize over keys
//   values   [Kp, Dp] the tile's values
//   scores   [R, Kp]  base-2 scores, then the tile's probabilities
//   max, sum [R]; acc [R, Dp]  the online-softmax state
// and for int8 scores (task.int8_scores, full FP8 blocks only):
//   q8       [R, Dp]  int8 queries (bytes in the VNNI build, else f32);
//                     q_scale, q_bias [R] their scales and the VNNI build's
//                     correction for its biased keys
//   keys8    Dp x Kp bytes: the VNNI build's int8 keys (the others put
//                     theirs in keys, as f32)
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// The build with AVX-512 VNNI and VBMI computes int8 scores with vpdpbusd
// over keys looked up with vpermi2b; the others hold the same integers in
// f32 and use the f32 score kernel, exact (see "int8 scores" below).
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#define TETRA_ATTEND_INT8_VNNI 1
#endif

#include "base/check.h"
#include "kernels/attention/attention_internal.h"

#ifndef TETRA_ATTEND_FN
#error "define TETRA_ATTEND_FN before including attention_tiles_impl.h"
#endif

// The helpers below pass vector types by value but are always inlined into
// the one entry point, so no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace tetra::attention_internal {
namespace {

#define TETRA_INLINE [[gnu::always_inline]] inline
// Passes a braced list of shuffle indices through a macro argument.
#define TETRA_EXPAND(...) __VA_ARGS__
// Loops over register tiles must unroll fully, or their arrays live in memory.
#define TETRA_UNROLL _Pragma("GCC unroll 16")

constexpr int kLanes = 16;
// 16-lane column blocks per register tile of the score and P.V loops: two
// with 32 zmm registers; one where a 16-lane vector takes two of 16
// registers (AVX2) or four (SSE), or the 4 x 2 tile spills its accumulators.
#if defined(__AVX512F__)
constexpr int kColumnBlocks = 2;
#else
constexpr int kColumnBlocks = 1;
#endif
// The same for the P.V loop: with 32 zmm registers a 4-row tile holds 64 dims (16
// accumulators and 4 value vectors), so each broadcast probability feeds 4
// FMAs and each value load 4 rows.
#if defined(__AVX512F__)
constexpr int kAccumulateColumnBlocks = 4;
#else
constexpr int kAccumulateColumnBlocks = 1;
#endif
// The widest vector the build holds in one register. The score and P.V
// loops, the softmax and (outside AVX-512) the KV conversion work on these:
// GCC keeps a 16-lane vector that spans registers in memory, with scalar
// moves.
#if defined(__AVX512F__)
constexpr int kNativeLanes = 16;
#elif defined(__AVX__)
constexpr int kNativeLanes = 8;
#else
constexpr int kNativeLanes = 4;
#endif
typedef float Native __attribute__((vector_size(4 * kNativeLanes)));
TETRA_INLINE Native LoadNative(const float* p) {
  Native v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
TETRA_INLINE void StoreNative(float* p, Native v) { std::memcpy(p, &v, sizeof(v)); }
// A true broadcast: from memory it is a load-port uop that several FMAs
// share (`Native{} + x` would cost a scalar add and a shuffle-port move).
TETRA_INLINE Native SplatNative(float x) {
#if defined(__AVX512F__)
  return (Native)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (Native)_mm256_set1_ps(x);
#elif defined(__SSE2__)
  return (Native)_mm_set1_ps(x);
#else
  return Native{} + x;
#endif
}
typedef int32_t NativeI __attribute__((vector_size(4 * kNativeLanes)));
typedef uint32_t NativeU __attribute__((vector_size(4 * kNativeLanes)));
typedef float F16v __attribute__((vector_size(64)));
typedef int32_t I16v __attribute__((vector_size(64)));
typedef uint32_t U16v __attribute__((vector_size(64)));
typedef float F8v __attribute__((vector_size(32)));

TETRA_INLINE F16v Load(const float* p) {
  F16v v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
TETRA_INLINE void Store(float* p, F16v v) { std::memcpy(p, &v, sizeof(v)); }

TETRA_INLINE float HorizontalSum(F16v v) {
  F8v half = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
             __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  float sum = 0.0f;
  for (int i = 0; i < 8; ++i) sum += half[i];
  return sum;
}

TETRA_INLINE float HorizontalMax(F16v v) {
  F8v a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  F8v b = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  F8v half = a > b ? a : b;
  float best = half[0];
  for (int i = 1; i < 8; ++i) best = std::max(best, half[i]);
  return best;
}

// The same over Native vectors; the AVX-512 build's are the 16-lane ones.
TETRA_INLINE Native NativeLaneIndex() {
  Native v;
  for (int i = 0; i < kNativeLanes; ++i) v[i] = static_cast<float>(i);
  return v;
}
#if defined(__AVX512F__)
TETRA_INLINE float HorizontalSumNative(Native v) { return HorizontalSum(v); }
TETRA_INLINE float HorizontalMaxNative(Native v) { return HorizontalMax(v); }
#else
typedef float F4v __attribute__((vector_size(16)));
// The four lanes of a Native vector's halves combined by op (AVX: 8 lanes).
template <typename Op>
TETRA_INLINE F4v FoldToQuarter(Native v, Op op) {
#if defined(__AVX__)
  return op(__builtin_shufflevector(v, v, 0, 1, 2, 3), __builtin_shufflevector(v, v, 4, 5, 6, 7));
#else
  (void)op;
  return v;
#endif
}
TETRA_INLINE float HorizontalSumNative(Native v) {
  const F4v q = FoldToQuarter(v, [](F4v a, F4v b) { return a + b; });
  return (q[0] + q[2]) + (q[1] + q[3]);
}
TETRA_INLINE float HorizontalMaxNative(Native v) {
  const F4v q = FoldToQuarter(v, [](F4v a, F4v b) { return a > b ? a : b; });
  return std::max(std::max(q[0], q[2]), std::max(q[1], q[3]));
}
#endif


// Transposes 16 vectors of 16 lanes in place (m[i][l] becomes m[l][i]):
// at each scale s = 8, 4, 2, 1, rows i and i + s swap their off-diagonal
// s-lane blocks.
template <typename V>
TETRA_INLINE void Transpose16x16(V (&m)[16]) {
#define TETRA_TRANSPOSE_STAGE(S, LO, HI)                   \
  TETRA_UNROLL for (int i = 0; i < 16; ++i) {              \
    if (i & S) continue;                                   \
    const V a = m[i], b = m[i + S];                        \
    m[i] = __builtin_shufflevector(a, b, LO);              \
    m[i + S] = __builtin_shufflevector(a, b, HI);          \
  }
#define TETRA_LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define TETRA_HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define TETRA_LO4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define TETRA_HI4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define TETRA_LO2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define TETRA_HI2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define TETRA_LO1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define TETRA_HI1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
  TETRA_TRANSPOSE_STAGE(8, TETRA_LO8, TETRA_HI8)
  TETRA_TRANSPOSE_STAGE(4, TETRA_LO4, TETRA_HI4)
  TETRA_TRANSPOSE_STAGE(2, TETRA_LO2, TETRA_HI2)
  TETRA_TRANSPOSE_STAGE(1, TETRA_LO1, TETRA_HI1)
#undef TETRA_TRANSPOSE_STAGE
#undef TETRA_LO8
#undef TETRA_HI8
#undef TETRA_LO4
#undef TETRA_HI4
#undef TETRA_LO2
#undef TETRA_HI2
#undef TETRA_LO1
#undef TETRA_HI1
}

#if !defined(__AVX512F__)
// Where 16 lanes take two (AVX2) or four registers, a 16 x 16 transpose in
// registers spills badly (decode ran 7x slower per key than AVX-512). This
// path goes through a 1 KiB tile in L1 and transposes blocks of native
// vectors instead (8 x 8 on AVX2, 4 x 4 on SSE): rows i and i + s swap
// their off-diagonal s-lane blocks for s = 4 (AVX2), 2, 1.
TETRA_INLINE void TransposeNative(Native (&m)[kNativeLanes]) {
#define TETRA_TRANSPOSE_STAGE(S, LO, HI)                \
  TETRA_UNROLL for (int i = 0; i < kNativeLanes; ++i) { \
    if (i & S) continue;                                \
    const Native a = m[i], b = m[i + S];                \
    m[i] = __builtin_shufflevector(a, b, LO);           \
    m[i + S] = __builtin_shufflevector(a, b, HI);       \
  }
#if defined(__AVX__)
  TETRA_TRANSPOSE_STAGE(4, TETRA_EXPAND(0, 1, 2, 3, 8, 9, 10, 11), TETRA_EXPAND(4, 5, 6, 7, 12, 13, 14, 15))
  TETRA_TRANSPOSE_STAGE(2, TETRA_EXPAND(0, 1, 8, 9, 4, 5, 12, 13), TETRA_EXPAND(2, 3, 10, 11, 6, 7, 14, 15))
  TETRA_TRANSPOSE_STAGE(1, TETRA_EXPAND(0, 8, 2, 10, 4, 12, 6, 14), TETRA_EXPAND(1, 9, 3, 11, 5, 13, 7, 15))
#else
  TETRA_TRANSPOSE_STAGE(2, TETRA_EXPAND(0, 1, 4, 5), TETRA_EXPAND(2, 3, 6, 7))
  TETRA_TRANSPOSE_STAGE(1, TETRA_EXPAND(0, 4, 2, 6), TETRA_EXPAND(1, 5, 3, 7))
#endif
#undef TETRA_TRANSPOSE_STAGE
}

// Writes the transpose of tile (row j: key j, column i: dim i) to
// dst[i * stride + j] for dims i < dims and all 16 keys.
TETRA_INLINE void StoreTransposed(const float (&tile)[16][16], int dims, float* dst, int64_t stride) {
  constexpr int N = kNativeLanes;
  for (int i0 = 0; i0 < dims; i0 += N) {
    for (int j0 = 0; j0 < 16; j0 += N) {
      Native block[N];
      TETRA_UNROLL for (int r = 0; r < N; ++r) block[r] = LoadNative(&tile[j0 + r][i0]);
      TransposeNative(block);
      // Unrolled where all N dims exist, so block stays in registers (a
      // rolled loop stores it to the stack and reloads it in halves).
      if (i0 + N <= dims) {
        TETRA_UNROLL for (int i = 0; i < N; ++i) {
          StoreNative(dst + static_cast<int64_t>(i0 + i) * stride + j0, block[i]);
        }
      } else {
        for (int i = 0; i < N && i0 + i < dims; ++i) {
          StoreNative(dst + static_cast<int64_t>(i0 + i) * stride + j0, block[i]);
        }
      }
    }
  }
}
#endif

// 2^t for t <= 0 (clamped below at -126, where the result is negligible
// against the row's maximum 2^0): t = n + f with n an integer and
// |f| <= 1/2, 2^f by its Taylor polynomial of degree 6 (relative error
// below 2e-7), 2^n put in the exponent bits.
TETRA_INLINE Native Exp2(Native t) {
  t = t < -126.0f ? SplatNative(-126.0f) : t;
  const Native round_magic = SplatNative(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const Native n = (t + round_magic) - round_magic;
  const Native f = t - n;
  Native p = SplatNative(1.5403530e-4f);
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const NativeI exponent = (__builtin_convertvector(n, NativeI) + 127) << 23;
  return p * (Native)(exponent);
}

// Stored elements are converted to f32 without their block's scale, which
// is applied to whole score rows and probabilities instead. FP8 codes are
// rebuilt from their bits: a code c reads as kFp8ChunkUnit x e4m3(c) (exact
// for every code the KV cache writes; the NaN codes 0x7f/0xff, which it
// never writes, read as +-480 units).
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__F16C__))
// The code's bits, sign extended and shifted, are the binary16 number
// e4m3(c) / 256, subnormals included, which vcvtph2ps widens.
#define TETRA_FP8_VIA_HALF 1
constexpr float kFp8ChunkUnit = 1.0f / 256.0f;
#else
constexpr float kFp8ChunkUnit = 1.0f;
#endif
// What one unit of an int8 key (below) is worth in units of its block's scale.
constexpr float kInt8KeyUnit = kFp8E4M3Max / 127.0f;

template <KvDtype kDtype>
TETRA_INLINE float ConvertOne(const uint8_t* src, int i) {
  if constexpr (kDtype == KvDtype::kF32) {
    float x;
    std::memcpy(&x, src + 4 * i, sizeof(x));
    return x;
  } else if constexpr (kDtype == KvDtype::kBf16) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, sizeof(h));
    return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
  } else {
    const uint32_t code = src[i];
    const uint32_t magnitude = code & 0x7fu;
    const float value = magnitude < 8 ? static_cast<float>(magnitude) * 0x1p-9f
                                      : std::bit_cast<float>((magnitude << 20) + (120u << 23));
    return ((code & 0x80u) ? -value : value) * kFp8ChunkUnit;
  }
}

#if defined(__AVX512F__)
// Elements [0, count) of a stored row as f32 lanes (count <= 16; lanes past
// count are 0), unscaled as above.
template <KvDtype kDtype>
TETRA_INLINE F16v ConvertChunk(const uint8_t* src, int count) {
  if (count < kLanes) [[unlikely]] {
    F16v v = {};
    for (int i = 0; i < count; ++i) v[i] = ConvertOne<kDtype>(src, i);
    return v;
  }
  if constexpr (kDtype == KvDtype::kF32) {
    return Load(reinterpret_cast<const float*>(src));
  } else if constexpr (kDtype == KvDtype::kBf16) {
    // Each half zero-extended to 32 bits, then moved to the high 16 bits.
    const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    const __m512i words = _mm512_maskz_cvtepu16_epi32(0xffff, halves);
    return (F16v)((U16v)words << 16);
  } else {
    // Sign-extended code << 7: sign in bit 15, exponent in bits 10-13, the
    // mantissa in bits 7-9; bit 14 (a copy of the sign) cleared.
    const __m256i words = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    const __m256i half_bits = _mm256_and_si256(_mm256_slli_epi16(words, 7), _mm256_set1_epi16(static_cast<short>(0xbfff)));
    return (F16v)_mm512_maskz_cvtph_ps(0xffff, half_bits);
  }
}
#else
// The other builds convert a Native vector at a time (AVX2: 8 lanes, SSE:
// 4): 16-lane vectors span registers there, and GCC moved them through the
// stack. count <= kNativeLanes; lanes past count are 0.
template <KvDtype kDtype>
TETRA_INLINE Native ConvertNative(const uint8_t* src, int count) {
  if (count < kNativeLanes) [[unlikely]] {
    Native v = {};
    for (int i = 0; i < count; ++i) v[i] = ConvertOne<kDtype>(src, i);
    return v;
  }
  if constexpr (kDtype == KvDtype::kF32) {
    return LoadNative(reinterpret_cast<const float*>(src));
  } else if constexpr (kDtype == KvDtype::kBf16) {
#if defined(__AVX2__)
    const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    return (Native)_mm256_slli_epi32(words, 16);
#elif defined(__SSE2__) && !defined(__AVX__)
    // Each half goes to the high 16 bits of its lane.
    const __m128i halves = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
    return (Native)_mm_unpacklo_epi16(_mm_setzero_si128(), halves);
#else
    Native v;
    for (int i = 0; i < kNativeLanes; ++i) v[i] = ConvertOne<kDtype>(src, i);
    return v;
#endif
  } else {
#if defined(TETRA_FP8_VIA_HALF)
    // As ConvertChunk above: the codes as binary16 bits, widened by F16C.
    const __m128i words = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
    const __m128i half_bits = _mm_and_si128(_mm_slli_epi16(words, 7), _mm_set1_epi16(static_cast<short>(0xbfff)));
    return (Native)_mm256_cvtph_ps(half_bits);
#else
    NativeU code;
#if defined(__SSE2__) && !defined(__AVX__)
    int32_t four;
    std::memcpy(&four, src, sizeof(four));
    const __m128i bytes = _mm_cvtsi32_si128(four);
    const __m128i zero = _mm_setzero_si128();
    code = (NativeU)_mm_unpacklo_epi16(_mm_unpacklo_epi8(bytes, zero), zero);
#else
    for (int i = 0; i < kNativeLanes; ++i) code[i] = src[i];
#endif
    const NativeU magnitude = code & 0x7fu;
    const NativeU sign = (code & 0x80u) << 24;
    const NativeU normal_bits = (magnitude << 20) + (120u << 23);  // exponent bias 7 -> 127
    const Native subnormal = __builtin_convertvector((NativeI)(magnitude), Native) * 0x1p-9f;
    const Native magnitude_value = magnitude < 8u ? subnormal : (Native)(normal_bits);
    return (Native)((NativeU)(magnitude_value) | sign);
#endif
  }
}
#endif

// What the int8 queries are stored as: bytes for vpdpbusd, or f32 holding
// the same integers for the f32 score kernel.
#if defined(TETRA_ATTEND_INT8_VNNI)
using Int8Lane = int8_t;
#else
using Int8Lane = float;
#endif

// 64-byte aligned arrays, grown on demand and never shrunk.
template <typename T>
class AlignedArray {
 public:
  AlignedArray() = default;
  AlignedArray(const AlignedArray&) = delete;
  AlignedArray& operator=(const AlignedArray&) = delete;
  ~AlignedArray() { std::free(data_); }
  void Reserve(size_t n) {
    if (n <= size_) return;
    std::free(data_);
    data_ = static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64));
    TETRA_CHECK(data_ != nullptr, "attention scratch of {} elements", n);
    size_ = n;
  }
  T* data() { return data_; }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};
using AlignedFloats = AlignedArray<float>;

struct Scratch {
  AlignedFloats q, keys, values, scores, max, sum, acc;
  AlignedArray<Int8Lane> q8;
  AlignedFloats q_scale;
  AlignedArray<int32_t> q_bias;
  AlignedArray<uint8_t> keys8;
  void Reserve(int rows, int padded_dim, int padded_keys, bool int8_scores) {
    q.Reserve(static_cast<size_t>(rows) * padded_dim);
    keys.Reserve(static_cast<size_t>(padded_dim) * padded_keys);
    values.Reserve(static_cast<size_t>(padded_keys) * padded_dim);
    scores.Reserve(static_cast<size_t>(rows) * padded_keys);
    max.Reserve(static_cast<size_t>(rows));
    sum.Reserve(static_cast<size_t>(rows));
    acc.Reserve(static_cast<size_t>(rows) * padded_dim);
    if (int8_scores) {
      q8.Reserve(static_cast<size_t>(rows) * padded_dim);
      q_scale.Reserve(static_cast<size_t>(rows));
      q_bias.Reserve(static_cast<size_t>(rows));
#if defined(TETRA_ATTEND_INT8_VNNI)
      keys8.Reserve(static_cast<size_t>(padded_dim) * padded_keys);
#endif
    }
  }
};

// scores[r][j] = q[r] . keys_t[:, j] for NR rows and j in [0, 16 * NC) of one
// column block; keys_t is [dim, key_stride].
template <int NR, int NC>
TETRA_INLINE void ScoresTransposedBlock(const float* q, int q_stride, const float* keys_t, int key_stride, int dim,
                                        float* scores, int score_stride) {
  constexpr int P = NC * kLanes / kNativeLanes;  // native vectors per row
  Native acc[NR][P] = {};
  for (int i = 0; i < dim; ++i) {
    Native k[P];
    TETRA_UNROLL for (int c = 0; c < P; ++c) k[c] = LoadNative(keys_t + static_cast<int64_t>(i) * key_stride + c * kNativeLanes);
    TETRA_UNROLL for (int r = 0; r < NR; ++r) {
      const Native qi = SplatNative(q[r * q_stride + i]);
      TETRA_UNROLL for (int c = 0; c < P; ++c) acc[r][c] += qi * k[c];
    }
  }
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < P; ++c) StoreNative(scores + r * score_stride + c * kNativeLanes, acc[r][c]);
  }
}

template <int NR>
TETRA_INLINE void ScoresTransposedRows(const float* q, int q_stride, const float* keys_t, int key_stride, int dim,
                                       int padded_keys, float* scores, int score_stride) {
  int c = 0;
  for (; c + kColumnBlocks * kLanes <= padded_keys; c += kColumnBlocks * kLanes) {
    ScoresTransposedBlock<NR, kColumnBlocks>(q, q_stride, keys_t + c, key_stride, dim, scores + c, score_stride);
  }
  if (c < padded_keys) ScoresTransposedBlock<NR, 1>(q, q_stride, keys_t + c, key_stride, dim, scores + c, score_stride);
}

// acc[r] += sum_j p[r][j] * values[j] for NR rows, over dims [0, 16 * NC) of
// one column block.
template <int NR, int NC>
TETRA_INLINE void AccumulateBlock(const float* p, int p_stride, const float* values, int value_stride,
                                  int num_keys, float* acc, int acc_stride) {
  constexpr int P = NC * kLanes / kNativeLanes;
  Native a[NR][P];
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < P; ++c) a[r][c] = LoadNative(acc + r * acc_stride + c * kNativeLanes);
  }
  for (int j = 0; j < num_keys; ++j) {
    Native v[P];
    TETRA_UNROLL for (int c = 0; c < P; ++c) v[c] = LoadNative(values + static_cast<int64_t>(j) * value_stride + c * kNativeLanes);
    TETRA_UNROLL for (int r = 0; r < NR; ++r) {
      const Native pj = SplatNative(p[r * p_stride + j]);
      TETRA_UNROLL for (int c = 0; c < P; ++c) a[r][c] += pj * v[c];
    }
  }
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < P; ++c) StoreNative(acc + r * acc_stride + c * kNativeLanes, a[r][c]);
  }
}

template <int NR>
TETRA_INLINE void AccumulateRows(const float* p, int p_stride, const float* values, int padded_dim, int num_keys,
                                 float* acc) {
  int c = 0;
  for (; c + kAccumulateColumnBlocks * kLanes <= padded_dim; c += kAccumulateColumnBlocks * kLanes) {
    AccumulateBlock<NR, kAccumulateColumnBlocks>(p, p_stride, values + c, padded_dim, num_keys, acc + c, padded_dim);
  }
  // padded_dim is a multiple of kLanes: the rest a column block at a time.
  for (; c < padded_dim; c += kLanes) {
    AccumulateBlock<NR, 1>(p, p_stride, values + c, padded_dim, num_keys, acc + c, padded_dim);
  }
}

// Calls fn.template operator()<NR>(first_row) over [0, rows) in blocks of 4
// rows and one tail block of 1 to 3.
template <typename Fn>
TETRA_INLINE void ForRowBlocks(int rows, Fn&& fn) {
  int r = 0;
  for (; r + 4 <= rows; r += 4) fn.template operator()<4>(r);
  switch (rows - r) {
    case 3: fn.template operator()<3>(r); break;
    case 2: fn.template operator()<2>(r); break;
    case 1: fn.template operator()<1>(r); break;
    default: break;
  }
}

// Where one key tile of KV head h is stored: its first key and value rows
// (a full block in the layer's dtype, or the sequence's f32 open block),
// the row stride in bytes and the factors its converted elements need.
struct TileSource {
  KvDtype dtype;
  const uint8_t* keys;
  const uint8_t* values;
  int64_t row_bytes;
  float key_scale;    // what the converted elements are multiplied by
  float value_scale;
  float int8_key_scale;  // FP8: what the int8 keys (the table's) are multiplied by
};

TileSource SourceOfTile(const KvLayerView& layer, const KvSequenceView& kv, int h, int64_t block_index) {
  const int block_tokens = layer.block_tokens;
  const int64_t full_blocks = kv.length / block_tokens;
  if (block_index < full_blocks) {
    const int32_t block = kv.block_table[block_index];
    const int bytes = KvDtypeBytes(layer.dtype);
    const int64_t first = (static_cast<int64_t>(block) * layer.num_kv_heads + h) * block_tokens * layer.head_dim;
    const bool is_fp8 = layer.dtype == KvDtype::kFp8E4M3;
    const int64_t scale_index = static_cast<int64_t>(block) * layer.num_kv_heads + h;
    return {layer.dtype, layer.keys + first * bytes, layer.values + first * bytes,
            static_cast<int64_t>(layer.head_dim) * bytes,
            is_fp8 ? layer.key_scales[scale_index] / kFp8ChunkUnit : 1.0f,
            is_fp8 ? layer.value_scales[scale_index] / kFp8ChunkUnit : 1.0f,
            is_fp8 ? layer.key_scales[scale_index] * kInt8KeyUnit : 1.0f};
  }
  const int64_t first = static_cast<int64_t>(h) * block_tokens * layer.head_dim;
  return {KvDtype::kF32, reinterpret_cast<const uint8_t*>(kv.open_keys + first),
          reinterpret_cast<const uint8_t*>(kv.open_values + first),
          static_cast<int64_t>(layer.head_dim) * 4, 1.0f, 1.0f, 1.0f};
}

// FP8 codes [0, count) to their int8 keys (the rest 0) as f32, for the
// builds without VNNI (int8 scores below): round(e4m3 x 127 / 448), as the
// table. e4m3 x 127 is exact (4 + 7 significant bits), and its exact
// quotients by 448 lie at least 1/256 from a half, far beyond the rounding
// of a product by f32(1/448); the one tie, 224 x 127 / 448 = 63.5, comes
// out just above it (63.5000038) and so rounds to 64 like the table (every
// code is checked in every build by attention_test).
// V is F16v or Native, `converted` the codes through ConvertChunk or
// ConvertNative.
template <typename V>
TETRA_INLINE V Int8Keys(V converted) {
  const V scaled = (converted * (127.0f / kFp8ChunkUnit)) * (1.0f / 448.0f);
  const V round_magic = V{} + 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const V k8 = (scaled + round_magic) - round_magic;
  const V high = V{} + 127.0f, low = V{} - 127.0f;
  const V clamped = k8 > high ? high : k8;  // the NaN codes (never written) read as 136
  return clamped < low ? low : clamped;
}

// One tile's keys to (unscaled) f32, transposed keys_t [dim, round16(num_keys)]
// (the padding keys 0), built by 16 x 16 blocks. kInt8Keys (FP8 only): the
// int8 keys of the codes instead (Int8Keys).
template <KvDtype kDtype, bool kInt8Keys = false>
void LoadKeys(const TileSource& source, int num_keys, int dim, int padded_keys, float* keys_t) {
  constexpr int kBytes = kDtype == KvDtype::kF32 ? 4 : kDtype == KvDtype::kBf16 ? 2 : 1;
  for (int j0 = 0; j0 < num_keys; j0 += kLanes) {
    const int block_keys = std::min(kLanes, num_keys - j0);
    const uint8_t* first_row = source.keys + j0 * source.row_bytes;
    for (int i0 = 0; i0 < dim; i0 += kLanes) {
      const int block_dims = std::min(kLanes, dim - i0);
#if defined(__AVX512F__)
      F16v block[kLanes];
      TETRA_UNROLL for (int j = 0; j < kLanes; ++j) {
        const uint8_t* chunk = first_row + j * source.row_bytes + i0 * kBytes;
        if (j >= block_keys) {
          block[j] = F16v{};
        } else if constexpr (kInt8Keys) {
          block[j] = Int8Keys(ConvertChunk<KvDtype::kFp8E4M3>(chunk, block_dims));
        } else {
          block[j] = ConvertChunk<kDtype>(chunk, block_dims);
        }
      }
      Transpose16x16(block);
      for (int i = 0; i < block_dims; ++i) Store(keys_t + static_cast<int64_t>(i0 + i) * padded_keys + j0, block[i]);
#else
      // Converted a native vector at a time straight into the L1 tile.
      alignas(64) float tile[kLanes][kLanes];
      for (int j = 0; j < kLanes; ++j) {
        const uint8_t* chunk = first_row + j * source.row_bytes + i0 * kBytes;
        TETRA_UNROLL for (int c = 0; c < kLanes; c += kNativeLanes) {
          const int count = std::clamp(block_dims - c, 0, kNativeLanes);
          Native v = {};
          if (j < block_keys) {
            v = ConvertNative<kDtype>(chunk + c * kBytes, count);
            if constexpr (kInt8Keys) v = Int8Keys(v);
          }
          StoreNative(&tile[j][c], v);
        }
      }
      StoreTransposed(tile, block_dims, keys_t + static_cast<int64_t>(i0) * padded_keys + j0, padded_keys);
#endif
    }
  }
}

// One tile's values to (unscaled) f32 rows values [num_keys, padded_dim] (the
// padding dims 0).
template <KvDtype kDtype>
void LoadValues(const TileSource& source, int num_keys, int dim, int padded_dim, float* values) {
  constexpr int kBytes = kDtype == KvDtype::kF32 ? 4 : kDtype == KvDtype::kBf16 ? 2 : 1;
  for (int j = 0; j < num_keys; ++j) {
    const uint8_t* row = source.values + j * source.row_bytes;
    float* dst = values + static_cast<int64_t>(j) * padded_dim;
#if defined(__AVX512F__)
    for (int i0 = 0; i0 < padded_dim; i0 += kLanes) {
      Store(dst + i0, ConvertChunk<kDtype>(row + i0 * kBytes, std::max(0, std::min(kLanes, dim - i0))));
    }
#else
    for (int i0 = 0; i0 < padded_dim; i0 += kNativeLanes) {
      StoreNative(dst + i0, ConvertNative<kDtype>(row + i0 * kBytes, std::clamp(dim - i0, 0, kNativeLanes)));
    }
#endif
  }
}

template <KvDtype kDtype>
void LoadTile(const TileSource& source, int num_keys, int dim, int padded_dim, int padded_keys, float* keys_t,
              float* values) {
  LoadKeys<kDtype>(source, num_keys, dim, padded_keys, keys_t);
  LoadValues<kDtype>(source, num_keys, dim, padded_dim, values);
}

// ---------------------------------------------------------------- int8 scores
// For full FP8 blocks under AttentionMath::kInt8Scores. Each query row (the
// scaled q) is quantized once per task, symmetric: q8 = rint(x * 127 / amax),
// scale amax / 127. Each FP8 key code maps through one fixed table to
// k8 = round(e4m3(code) * 127 / 448): since the block's scale maps its amax
// to 448, that is the block quantized to int8 at scale key_scale * 448 / 127
// (kInt8KeyUnit), with no per-block work. A score is then
// (sum q8 k8) * q_scale * key_scale * 448 / 127, the integer sum exact and
// exact in f32 too (|sum| <= 127 * 127 * dim < 2^24: PagedAttention checks
// dim <= kMaxInt8ScoresHeadDim), so every build computes the same scores up
// to the f32 rounding of the scale products.

// kBiasedInt8Keys[m] = 128 + round(e4m3(m) * 127 / 448) for the magnitude
// bits m = code & 0x7f (the one tie, 224 -> 63.5, rounds up either way), and
// 255 for the NaN magnitude, which the cache never writes. A negative code's
// biased key is 128 - k8, the table's entry negated modulo 256.
constexpr std::array<uint8_t, 128> MakeBiasedInt8Keys() {
  std::array<uint8_t, 128> table{};
  for (int m = 0; m < 128; ++m) {
    // e4m3: m / 2^9 below the smallest normal, else (8 + mantissa) * 2^(exponent - 10).
    double value = m < 8 ? m / 512.0 : (8 + (m & 7)) / 1024.0;
    for (int e = 0; m >= 8 && e < (m >> 3); ++e) value *= 2.0;
    const int k8 = std::min(127, static_cast<int>(value * 127.0 / 448.0 + 0.5));
    table[m] = static_cast<uint8_t>(128 + k8);
  }
  return table;
}
alignas(64) constexpr std::array<uint8_t, 128> kBiasedInt8Keys = MakeBiasedInt8Keys();
static_assert(kBiasedInt8Keys[0x7e] == 255 && kBiasedInt8Keys[0x70] == 128 + 36 && kBiasedInt8Keys[0] == 128);

// The task's rows of q [rows, padded_dim] (already scaled) to q8 [rows,
// padded_dim] (padding 0), q_scale = amax / 127 and q_bias = -128 * sum(q8),
// which cancels the VNNI build's key bias. A row whose amax is below 1e-30
// (where 127 / amax may overflow) becomes zeros; NaN stays in q_scale.
void QuantizeQueryRows(const float* q, int rows, int dim, int padded_dim, Int8Lane* q8, float* q_scale,
                       int32_t* q_bias) {
  for (int r = 0; r < rows; ++r) {
    const float* x = q + static_cast<int64_t>(r) * padded_dim;
    float amax = 0.0f;
    for (int i = 0; i < dim; ++i) {
      const float magnitude = std::fabs(x[i]);
      if (!(magnitude <= amax)) amax = magnitude;  // NaN sticks
    }
    const bool is_tiny = amax < 1e-30f;
    const float inverse = is_tiny ? 0.0f : 127.0f / amax;
    Int8Lane* dst = q8 + static_cast<int64_t>(r) * padded_dim;
    int32_t sum = 0;
    for (int i = 0; i < dim; ++i) {
      const long v = std::clamp(std::lrint(x[i] * inverse), -127L, 127L);
      dst[i] = static_cast<Int8Lane>(v);
      sum += static_cast<int32_t>(v);
    }
    std::fill(dst + dim, dst + padded_dim, Int8Lane{0});
    q_scale[r] = is_tiny ? 0.0f : amax / 127.0f;
    q_bias[r] = -128 * sum;
  }
}

#if defined(TETRA_ATTEND_INT8_VNNI)
// 64 FP8 codes to biased int8 keys k8 + 128: vpermi2b looks the magnitude up
// in the two 64-byte halves of the table (index bits 0-6), then negative
// codes take 0 - entry.
TETRA_INLINE __m512i BiasedInt8Keys(__m512i codes, __m512i table_low, __m512i table_high) {
  const __m512i magnitude = _mm512_permutex2var_epi8(table_low, codes, table_high);
  return _mm512_mask_sub_epi8(magnitude, _mm512_movepi8_mask(codes), _mm512_setzero_si512(), magnitude);
}

// 16 keys x up to 64 dims of codes (row j at rows + j * row_bytes) to biased
// keys, transposed by 32-bit words: out[g] lane j is key j's dims 4g..4g+3.
// kFull: 16 keys of 64 dims, plain loads; else the first `num_keys` rows
// (the others 0) and dims_mask's bytes (the others code 0, key 128).
template <bool kFull>
TETRA_INLINE void LoadKeySlab(const uint8_t* rows, int64_t row_bytes, int num_keys, __mmask64 dims_mask,
                              __m512i table_low, __m512i table_high, I16v (&out)[kLanes]) {
  TETRA_UNROLL for (int j = 0; j < kLanes; ++j) {
    if (kFull) {
      out[j] = (I16v)BiasedInt8Keys(_mm512_loadu_si512(rows + j * row_bytes), table_low, table_high);
    } else {
      out[j] = j < num_keys ? (I16v)BiasedInt8Keys(_mm512_maskz_loadu_epi8(dims_mask, rows + j * row_bytes),
                                                   table_low, table_high)
                            : I16v{};
    }
  }
  Transpose16x16(out);
}

// One tile's keys as biased bytes k8 + 128, laid out for vpdpbusd: for each
// group g of 4 dims, keys8[(g * padded_keys + j) * 4 + b] is key j's dim
// 4g + b, so one 64-byte load holds 16 keys x 4 dims. Built 16 keys x 64
// dims at a time: a table lookup per key, then a 16 x 16 transpose of 32-bit
// words. Keys past num_keys (to the next 16) are 0, padding dims 128 (k8 0).
void LoadKeysInt8(const TileSource& source, int num_keys, int dim, int padded_dim, int padded_keys, uint8_t* keys8) {
  const __m512i table_low = _mm512_loadu_si512(kBiasedInt8Keys.data());
  const __m512i table_high = _mm512_loadu_si512(kBiasedInt8Keys.data() + 64);
  for (int j0 = 0; j0 < num_keys; j0 += kLanes) {
    const int block_keys = std::min(kLanes, num_keys - j0);
    const uint8_t* first_row = source.keys + j0 * source.row_bytes;
    for (int i0 = 0; i0 < dim; i0 += 64) {
      const int block_dims = std::min(64, dim - i0);
      I16v block[kLanes];
      if (block_keys == kLanes && block_dims == 64) {
        LoadKeySlab<true>(first_row + i0, source.row_bytes, kLanes, ~__mmask64{0}, table_low, table_high, block);
      } else {
        const __mmask64 dims_mask = block_dims == 64 ? ~__mmask64{0} : (__mmask64{1} << block_dims) - 1;
        LoadKeySlab<false>(first_row + i0, source.row_bytes, block_keys, dims_mask, table_low, table_high, block);
      }
      const int groups = std::min(kLanes, (padded_dim - i0) / 4);
      uint8_t* dst = keys8 + (static_cast<int64_t>(i0 / 4) * padded_keys + j0) * 4;
      for (int g = 0; g < groups; ++g) std::memcpy(dst + static_cast<int64_t>(g) * padded_keys * 4, &block[g], 64);
    }
  }
}

// scores[r][j] = (q8[r] . k8[j]) * q_scale[r] for NR rows and keys [0, 16 * NC)
// of one column block, over `groups` groups of 4 dims: the accumulator starts
// at q_bias, which takes off the keys' bias of 128.
template <int NR, int NC>
TETRA_INLINE void ScoresInt8Block(const int8_t* q8, int q_stride, const float* q_scale, const int32_t* q_bias,
                                  const uint8_t* keys8, int64_t group_stride, int groups, float* scores,
                                  int score_stride) {
  __m512i acc[NR][NC];
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_set1_epi32(q_bias[r]);
  }
  for (int g = 0; g < groups; ++g) {
    __m512i k[NC];
    TETRA_UNROLL for (int c = 0; c < NC; ++c) k[c] = _mm512_load_si512(keys8 + g * group_stride + c * 64);
    TETRA_UNROLL for (int r = 0; r < NR; ++r) {
      int32_t q4;
      std::memcpy(&q4, q8 + r * q_stride + 4 * g, sizeof(q4));
      const __m512i qg = _mm512_set1_epi32(q4);
      TETRA_UNROLL for (int c = 0; c < NC; ++c) acc[r][c] = _mm512_dpbusd_epi32(acc[r][c], k[c], qg);
    }
  }
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < NC; ++c) {
      Store(scores + r * score_stride + c * kLanes, __builtin_convertvector((I16v)acc[r][c], F16v) * q_scale[r]);
    }
  }
}

template <int NR>
TETRA_INLINE void ScoresInt8Rows(const int8_t* q8, int q_stride, const float* q_scale, const int32_t* q_bias,
                                 const uint8_t* keys8, int padded_keys, int /*num_keys*/, int dim, int tile_keys,
                                 float* scores, int score_stride) {
  const int64_t group_stride = static_cast<int64_t>(padded_keys) * 4;
  const int groups = (dim + 3) / 4;
  int c = 0;
  for (; c + 4 * kLanes <= tile_keys; c += 4 * kLanes) {
    ScoresInt8Block<NR, 4>(q8, q_stride, q_scale, q_bias, keys8 + c * 4, group_stride, groups, scores + c,
                           score_stride);
  }
  const uint8_t* k = keys8 + c * 4;
  float* s = scores + c;
  switch ((tile_keys - c) / kLanes) {
    case 3: ScoresInt8Block<NR, 3>(q8, q_stride, q_scale, q_bias, k, group_stride, groups, s, score_stride); break;
    case 2: ScoresInt8Block<NR, 2>(q8, q_stride, q_scale, q_bias, k, group_stride, groups, s, score_stride); break;
    case 1: ScoresInt8Block<NR, 1>(q8, q_stride, q_scale, q_bias, k, group_stride, groups, s, score_stride); break;
    default: break;
  }
}
#else
// Other builds: the int8 keys as f32 (exact small integers) in the f32
// kernel's transposed layout keys_t [dim, padded_keys], and the f32 score
// kernel over them. Every product and partial sum is an integer of magnitude
// below 127 * 127 * dim < 2^24, so f32 holds it exactly in any order: the
// same integers as vpdpbusd.

void LoadKeysInt8(const TileSource& source, int num_keys, int dim, int /*padded_dim*/, int padded_keys,
                  float* keys_t) {
  LoadKeys<KvDtype::kFp8E4M3, true>(source, num_keys, dim, padded_keys, keys_t);
}

// scores[r][j] = (q8[r] . k8[j]) * q_scale[r] for NR rows, keys [0, tile_keys).
template <int NR>
TETRA_INLINE void ScoresInt8Rows(const float* q8, int q_stride, const float* q_scale, const int32_t* /*q_bias*/,
                                 const float* keys_t, int padded_keys, int /*num_keys*/, int dim, int tile_keys,
                                 float* scores, int score_stride) {
  ScoresTransposedRows<NR>(q8, q_stride, keys_t, padded_keys, dim, tile_keys, scores, score_stride);
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    float* row = scores + r * score_stride;
    for (int j = 0; j < tile_keys; j += kNativeLanes) StoreNative(row + j, LoadNative(row + j) * q_scale[r]);
  }
}
#endif

}  // namespace

void TETRA_ATTEND_FN(const AttendTask& task) {
  const KvLayerView& layer = *task.layer;
  const KvSequenceView& kv = *task.kv;
  const int dim = layer.head_dim;
  const int padded_dim = (dim + kLanes - 1) / kLanes * kLanes;
  const int block_tokens = layer.block_tokens;
  const int padded_keys = (block_tokens + kLanes - 1) / kLanes * kLanes;
  const int group = task.group;
  const int rows = task.num_tokens * group;
  TETRA_CHECK(rows > 0 && rows <= kMaxTaskRows, "attention task of {} rows", rows);

  // Int8 scores apply to the layer's full blocks only when they are FP8.
  const bool int8_scores = task.int8_scores && layer.dtype == KvDtype::kFp8E4M3;

  thread_local Scratch scratch;
  scratch.Reserve(rows, padded_dim, padded_keys, int8_scores);
  float* const q = scratch.q.data();
  float* const keys = scratch.keys.data();
  float* const values = scratch.values.data();
  float* const scores = scratch.scores.data();
  float* const row_max = scratch.max.data();
  float* const row_sum = scratch.sum.data();
  float* const acc = scratch.acc.data();

  const int64_t q_token_stride = static_cast<int64_t>(task.num_heads) * dim;
  const int first_head = task.kv_head * group;
  for (int r = 0; r < rows; ++r) {
    float* dst = q + static_cast<int64_t>(r) * padded_dim;
    const float* src = task.q + (r / group) * q_token_stride + static_cast<int64_t>(first_head + r % group) * dim;
    for (int i = 0; i < dim; ++i) dst[i] = src[i] * task.log2_scale;
    for (int i = dim; i < padded_dim; ++i) dst[i] = 0.0f;
    row_max[r] = -std::numeric_limits<float>::infinity();
    row_sum[r] = 0.0f;
  }
  std::fill(acc, acc + static_cast<int64_t>(rows) * padded_dim, 0.0f);
  if (int8_scores) {
    QuantizeQueryRows(q, rows, dim, padded_dim, scratch.q8.data(), scratch.q_scale.data(), scratch.q_bias.data());
  }

  const int64_t last_position = task.first_position + task.num_tokens - 1;
  const int64_t key_end = std::min(task.key_end, last_position + 1);
  for (int64_t key_begin = task.key_begin; key_begin < key_end; key_begin += block_tokens) {
    const int num_keys = static_cast<int>(std::min<int64_t>(block_tokens, key_end - key_begin));
    const int tile_keys = (num_keys + kLanes - 1) / kLanes * kLanes;  // score columns computed
    const TileSource source = SourceOfTile(layer, kv, task.kv_head, key_begin / block_tokens);

    const bool tile_int8 = int8_scores && source.dtype == KvDtype::kFp8E4M3;
    if (tile_int8) {
      // Base-2 scores [rows, tile_keys] in units of the int8 keys' scale.
#if defined(TETRA_ATTEND_INT8_VNNI)
      uint8_t* const keys8 = scratch.keys8.data();
#else
      float* const keys8 = keys;
#endif
      LoadKeysInt8(source, num_keys, dim, padded_dim, padded_keys, keys8);
      LoadValues<KvDtype::kFp8E4M3>(source, num_keys, dim, padded_dim, values);
      ForRowBlocks(rows, [&]<int NR>(int r) {
        ScoresInt8Rows<NR>(scratch.q8.data() + static_cast<int64_t>(r) * padded_dim, padded_dim,
                           scratch.q_scale.data() + r, scratch.q_bias.data() + r, keys8, padded_keys, num_keys, dim,
                           tile_keys, scores + static_cast<int64_t>(r) * padded_keys, padded_keys);
      });
    } else {
      switch (source.dtype) {
        case KvDtype::kF32:
          LoadTile<KvDtype::kF32>(source, num_keys, dim, padded_dim, padded_keys, keys, values);
          break;
        case KvDtype::kBf16:
          LoadTile<KvDtype::kBf16>(source, num_keys, dim, padded_dim, padded_keys, keys, values);
          break;
        case KvDtype::kFp8E4M3:
          LoadTile<KvDtype::kFp8E4M3>(source, num_keys, dim, padded_dim, padded_keys, keys, values);
          break;
      }

      // Base-2 scores [rows, tile_keys].
      ForRowBlocks(rows, [&]<int NR>(int r) {
        ScoresTransposedRows<NR>(q + static_cast<int64_t>(r) * padded_dim, padded_dim, keys, padded_keys, dim,
                                 tile_keys, scores + static_cast<int64_t>(r) * padded_keys, padded_keys);
      });
    }

    // Online softmax: each row's probabilities against its new maximum, the
    // old state rescaled. Keys after a row's position (diagonal tiles) and
    // the tile's padding get probability 0. The scores get the keys' block
    // scale here; the stored probabilities carry the values' block scale.
    const float key_scale = tile_int8 ? source.int8_key_scale : source.key_scale;
    const float value_scale = source.value_scale;
    int max_visible = 0;
    for (int r = 0; r < rows; ++r) {
      float* s = scores + static_cast<int64_t>(r) * padded_keys;
      const int64_t position = task.first_position + r / group;
      const int visible = static_cast<int>(std::clamp<int64_t>(position - key_begin + 1, 0, num_keys));
      max_visible = std::max(max_visible, visible);
      if (visible == 0) {
        for (int j = 0; j < tile_keys; j += kNativeLanes) StoreNative(s + j, Native{});
        continue;
      }
      // Native vectors: 16-lane ones that span registers live in memory.
      const Native lanes = NativeLaneIndex();
      const float visible_f = static_cast<float>(visible);
      Native best = SplatNative(-std::numeric_limits<float>::infinity());
      for (int j = 0; j < tile_keys; j += kNativeLanes) {
        const Native v = LoadNative(s + j) * key_scale;
        const Native masked = (lanes + static_cast<float>(j)) < visible_f ? v : best;
        best = masked > best ? masked : best;
      }
      const float new_max = std::max(row_max[r], HorizontalMaxNative(best));
      const float correction = std::exp2(row_max[r] - new_max);  // 0 on the row's first keys
      Native total = {};
      for (int j = 0; j < tile_keys; j += kNativeLanes) {
        const Native p = Exp2(LoadNative(s + j) * key_scale - new_max);
        const Native masked = (lanes + static_cast<float>(j)) < visible_f ? p : Native{};
        total += masked;
        StoreNative(s + j, masked * value_scale);
      }
      row_sum[r] = row_sum[r] * correction + HorizontalSumNative(total);
      row_max[r] = new_max;
      if (correction != 1.0f) {
        float* a = acc + static_cast<int64_t>(r) * padded_dim;
        for (int i = 0; i < padded_dim; i += kNativeLanes) StoreNative(a + i, LoadNative(a + i) * correction);
      }
    }

    // acc += p v over the keys some row sees.
    ForRowBlocks(rows, [&]<int NR>(int r) {
      AccumulateRows<NR>(scores + static_cast<int64_t>(r) * padded_keys, padded_keys, values, padded_dim,
                         max_visible, acc + static_cast<int64_t>(r) * padded_dim);
    });
  }

  for (int r = 0; r < rows; ++r) {
    const float* a = acc + static_cast<int64_t>(r) * padded_dim;
    if (task.out != nullptr) {
      float* dst = task.out + (r / group) * q_token_stride + static_cast<int64_t>(first_head + r % group) * dim;
      const float inverse = 1.0f / row_sum[r];
      for (int i = 0; i < dim; ++i) dst[i] = a[i] * inverse;
    } else {
      float* dst = task.partial + static_cast<int64_t>(r) * (2 + dim);
      dst[0] = row_max[r];
      dst[1] = row_sum[r];
      std::memcpy(dst + 2, a, static_cast<size_t>(dim) * sizeof(float));
    }
  }
}

}  // namespace tetra::attention_internal

#undef TETRA_INLINE
#undef TETRA_EXPAND
#undef TETRA_UNROLL
