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
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
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
// Loops over register tiles must unroll fully, or their arrays live in memory.
#define TETRA_UNROLL _Pragma("GCC unroll 16")

constexpr int kLanes = 16;
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
TETRA_INLINE F16v Splat(float x) { return F16v{} + x; }
TETRA_INLINE F16v LaneIndex() { return F16v{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}; }

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

// 16 bytes / 16 halves widened to 32-bit lanes. GCC 12 lowers
// __builtin_convertvector of these one lane at a time, so the x86 builds say
// it with the zero-extending loads.
TETRA_INLINE U16v LoadWidenBytes(const uint8_t* p) {
#if defined(__AVX512F__)
  const __m512i v = _mm512_maskz_cvtepu8_epi32(0xffff, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return (U16v)v;
#elif defined(__AVX2__)
  const __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  const __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8)));
  U16v v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
#else
  U16v v;
  for (int i = 0; i < kLanes; ++i) v[i] = p[i];
  return v;
#endif
}

TETRA_INLINE U16v LoadWidenHalves(const uint8_t* p) {
#if defined(__AVX512F__)
  return (U16v)_mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
#elif defined(__AVX2__)
  const __m256i lo = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i hi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)));
  U16v v;
  std::memcpy(&v, &lo, 32);
  std::memcpy(reinterpret_cast<char*>(&v) + 32, &hi, 32);
  return v;
#else
  U16v v;
  for (int i = 0; i < kLanes; ++i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * i, 2);
    v[i] = h;
  }
  return v;
#endif
}

// Transposes 16 vectors of 16 lanes in place (m[i][l] becomes m[l][i]):
// at each scale s = 8, 4, 2, 1, rows i and i + s swap their off-diagonal
// s-lane blocks.
TETRA_INLINE void Transpose16x16(F16v (&m)[16]) {
#define TETRA_TRANSPOSE_STAGE(S, LO, HI)                   \
  TETRA_UNROLL for (int i = 0; i < 16; ++i) {              \
    if (i & S) continue;                                   \
    const F16v a = m[i], b = m[i + S];                     \
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

// 2^t for t <= 0 (clamped below at -126, where the result is negligible
// against the row's maximum 2^0): t = n + f with n an integer and
// |f| <= 1/2, 2^f by its Taylor polynomial of degree 6 (relative error
// below 2e-7), 2^n put in the exponent bits.
TETRA_INLINE F16v Exp2(F16v t) {
  t = t < -126.0f ? Splat(-126.0f) : t;
  const F16v round_magic = Splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const F16v n = (t + round_magic) - round_magic;
  const F16v f = t - n;
  F16v p = Splat(1.5403530e-4f);
  p = p * f + 1.3333558e-3f;
  p = p * f + 9.6181291e-3f;
  p = p * f + 5.5504109e-2f;
  p = p * f + 2.4022651e-1f;
  p = p * f + 6.9314718e-1f;
  p = p * f + 1.0f;
  const I16v exponent = (__builtin_convertvector(n, I16v) + 127) << 23;
  return p * (F16v)(exponent);
}

// Stored elements are converted to f32 without their block's scale, which
// is applied to whole score rows and probabilities instead. FP8 codes are
// rebuilt from their bits: a code c reads as kFp8ChunkUnit x e4m3(c) (exact
// for every code the KV cache writes; the NaN codes 0x7f/0xff, which it
// never writes, read as +-480 units).
#if defined(__AVX512F__)
// The code's bits, sign extended and shifted, are the binary16 number
// e4m3(c) / 256, subnormals included, which vcvtph2ps widens.
constexpr float kFp8ChunkUnit = 1.0f / 256.0f;
#else
constexpr float kFp8ChunkUnit = 1.0f;
#endif

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
    return (F16v)(LoadWidenHalves(src) << 16);
  } else {
#if defined(__AVX512F__)
    // Sign-extended code << 7: sign in bit 15, exponent in bits 10-13, the
    // mantissa in bits 7-9; bit 14 (a copy of the sign) cleared.
    const __m256i words = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
    const __m256i half_bits = _mm256_and_si256(_mm256_slli_epi16(words, 7), _mm256_set1_epi16(static_cast<short>(0xbfff)));
    return (F16v)_mm512_maskz_cvtph_ps(0xffff, half_bits);
#else
    const U16v code = LoadWidenBytes(src);
    const U16v magnitude = code & 0x7fu;
    const U16v sign = (code & 0x80u) << 24;
    const U16v normal_bits = (magnitude << 20) + (120u << 23);  // exponent bias 7 -> 127
    const F16v subnormal = __builtin_convertvector((I16v)(magnitude), F16v) * 0x1p-9f;
    const F16v magnitude_value = magnitude < 8u ? subnormal : (F16v)(normal_bits);
    return (F16v)((U16v)(magnitude_value) | sign);
#endif
  }
}

// 64-byte aligned floats, grown on demand and never shrunk.
class AlignedFloats {
 public:
  AlignedFloats() = default;
  AlignedFloats(const AlignedFloats&) = delete;
  AlignedFloats& operator=(const AlignedFloats&) = delete;
  ~AlignedFloats() { std::free(data_); }
  void Reserve(size_t n) {
    if (n <= size_) return;
    std::free(data_);
    data_ = static_cast<float*>(std::aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64));
    TETRA_CHECK(data_ != nullptr, "attention scratch of {} floats", n);
    size_ = n;
  }
  float* data() { return data_; }

 private:
  float* data_ = nullptr;
  size_t size_ = 0;
};

struct Scratch {
  AlignedFloats q, keys, values, scores, max, sum, acc;
  void Reserve(int rows, int padded_dim, int padded_keys) {
    auto grow = [](AlignedFloats& v, size_t n) { v.Reserve(n); };
    grow(q, static_cast<size_t>(rows) * padded_dim);
    grow(keys, static_cast<size_t>(padded_dim) * padded_keys);
    grow(values, static_cast<size_t>(padded_keys) * padded_dim);
    grow(scores, static_cast<size_t>(rows) * padded_keys);
    grow(max, static_cast<size_t>(rows));
    grow(sum, static_cast<size_t>(rows));
    grow(acc, static_cast<size_t>(rows) * padded_dim);
  }
};

// scores[r][j] = q[r] . keys_t[:, j] for NR rows and j in [0, 16 * NC) of one
// column block; keys_t is [dim, key_stride].
template <int NR, int NC>
TETRA_INLINE void ScoresTransposedBlock(const float* q, int q_stride, const float* keys_t, int key_stride, int dim,
                                        float* scores, int score_stride) {
  F16v acc[NR][NC] = {};
  for (int i = 0; i < dim; ++i) {
    F16v k[NC];
    TETRA_UNROLL for (int c = 0; c < NC; ++c) k[c] = Load(keys_t + static_cast<int64_t>(i) * key_stride + c * kLanes);
    TETRA_UNROLL for (int r = 0; r < NR; ++r) {
      const F16v qi = Splat(q[r * q_stride + i]);
      TETRA_UNROLL for (int c = 0; c < NC; ++c) acc[r][c] += qi * k[c];
    }
  }
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < NC; ++c) Store(scores + r * score_stride + c * kLanes, acc[r][c]);
  }
}

template <int NR>
TETRA_INLINE void ScoresTransposedRows(const float* q, int q_stride, const float* keys_t, int key_stride, int dim,
                                       int padded_keys, float* scores, int score_stride) {
  int c = 0;
  for (; c + 2 * kLanes <= padded_keys; c += 2 * kLanes) {
    ScoresTransposedBlock<NR, 2>(q, q_stride, keys_t + c, key_stride, dim, scores + c, score_stride);
  }
  if (c < padded_keys) ScoresTransposedBlock<NR, 1>(q, q_stride, keys_t + c, key_stride, dim, scores + c, score_stride);
}

// acc[r] += sum_j p[r][j] * values[j] for NR rows, over dims [0, 16 * NC) of
// one column block.
template <int NR, int NC>
TETRA_INLINE void AccumulateBlock(const float* p, int p_stride, const float* values, int value_stride,
                                  int num_keys, float* acc, int acc_stride) {
  F16v a[NR][NC];
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < NC; ++c) a[r][c] = Load(acc + r * acc_stride + c * kLanes);
  }
  for (int j = 0; j < num_keys; ++j) {
    F16v v[NC];
    TETRA_UNROLL for (int c = 0; c < NC; ++c) v[c] = Load(values + static_cast<int64_t>(j) * value_stride + c * kLanes);
    TETRA_UNROLL for (int r = 0; r < NR; ++r) {
      const F16v pj = Splat(p[r * p_stride + j]);
      TETRA_UNROLL for (int c = 0; c < NC; ++c) a[r][c] += pj * v[c];
    }
  }
  TETRA_UNROLL for (int r = 0; r < NR; ++r) {
    TETRA_UNROLL for (int c = 0; c < NC; ++c) Store(acc + r * acc_stride + c * kLanes, a[r][c]);
  }
}

template <int NR>
TETRA_INLINE void AccumulateRows(const float* p, int p_stride, const float* values, int padded_dim, int num_keys,
                                 float* acc) {
  int c = 0;
  for (; c + 2 * kLanes <= padded_dim; c += 2 * kLanes) {
    AccumulateBlock<NR, 2>(p, p_stride, values + c, padded_dim, num_keys, acc + c, padded_dim);
  }
  if (c < padded_dim) AccumulateBlock<NR, 1>(p, p_stride, values + c, padded_dim, num_keys, acc + c, padded_dim);
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
            is_fp8 ? layer.value_scales[scale_index] / kFp8ChunkUnit : 1.0f};
  }
  const int64_t first = static_cast<int64_t>(h) * block_tokens * layer.head_dim;
  return {KvDtype::kF32, reinterpret_cast<const uint8_t*>(kv.open_keys + first),
          reinterpret_cast<const uint8_t*>(kv.open_values + first),
          static_cast<int64_t>(layer.head_dim) * 4, 1.0f, 1.0f};
}

// One tile's keys to (unscaled) f32, transposed keys_t [dim, round16(num_keys)] (the
// padding keys 0), built by 16 x 16 blocks; its values to f32 rows
// values [num_keys, padded_dim] (the padding dims 0).
template <KvDtype kDtype>
void LoadTile(const TileSource& source, int num_keys, int dim, int padded_dim, int padded_keys, float* keys_t,
              float* values) {
  constexpr int kBytes = kDtype == KvDtype::kF32 ? 4 : kDtype == KvDtype::kBf16 ? 2 : 1;
  for (int j0 = 0; j0 < num_keys; j0 += kLanes) {
    const int block_keys = std::min(kLanes, num_keys - j0);
    const uint8_t* first_row = source.keys + j0 * source.row_bytes;
    for (int i0 = 0; i0 < dim; i0 += kLanes) {
      const int block_dims = std::min(kLanes, dim - i0);
      F16v block[kLanes];
      TETRA_UNROLL for (int j = 0; j < kLanes; ++j) {
        block[j] = j < block_keys
                       ? ConvertChunk<kDtype>(first_row + j * source.row_bytes + i0 * kBytes, block_dims)
                       : F16v{};
      }
      Transpose16x16(block);
      for (int i = 0; i < block_dims; ++i) Store(keys_t + static_cast<int64_t>(i0 + i) * padded_keys + j0, block[i]);
    }
  }
  for (int j = 0; j < num_keys; ++j) {
    const uint8_t* row = source.values + j * source.row_bytes;
    float* dst = values + static_cast<int64_t>(j) * padded_dim;
    for (int i0 = 0; i0 < padded_dim; i0 += kLanes) {
      Store(dst + i0, ConvertChunk<kDtype>(row + i0 * kBytes, std::max(0, std::min(kLanes, dim - i0))));
    }
  }
}

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

  thread_local Scratch scratch;
  scratch.Reserve(rows, padded_dim, padded_keys);
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

  const int64_t last_position = task.first_position + task.num_tokens - 1;
  const int64_t key_end = std::min(task.key_end, last_position + 1);
  for (int64_t key_begin = task.key_begin; key_begin < key_end; key_begin += block_tokens) {
    const int num_keys = static_cast<int>(std::min<int64_t>(block_tokens, key_end - key_begin));
    const int tile_keys = (num_keys + kLanes - 1) / kLanes * kLanes;  // score columns computed
    const TileSource source = SourceOfTile(layer, kv, task.kv_head, key_begin / block_tokens);

    switch (source.dtype) {
      case KvDtype::kF32: LoadTile<KvDtype::kF32>(source, num_keys, dim, padded_dim, padded_keys, keys, values); break;
      case KvDtype::kBf16: LoadTile<KvDtype::kBf16>(source, num_keys, dim, padded_dim, padded_keys, keys, values); break;
      case KvDtype::kFp8E4M3:
        LoadTile<KvDtype::kFp8E4M3>(source, num_keys, dim, padded_dim, padded_keys, keys, values);
        break;
    }

    // Base-2 scores [rows, tile_keys].
    ForRowBlocks(rows, [&]<int NR>(int r) {
      ScoresTransposedRows<NR>(q + static_cast<int64_t>(r) * padded_dim, padded_dim, keys, padded_keys, dim,
                               tile_keys, scores + static_cast<int64_t>(r) * padded_keys, padded_keys);
    });

    // Online softmax: each row's probabilities against its new maximum, the
    // old state rescaled. Keys after a row's position (diagonal tiles) and
    // the tile's padding get probability 0. The scores get the keys' block
    // scale here; the stored probabilities carry the values' block scale.
    const float key_scale = source.key_scale;
    const float value_scale = source.value_scale;
    int max_visible = 0;
    for (int r = 0; r < rows; ++r) {
      float* s = scores + static_cast<int64_t>(r) * padded_keys;
      const int64_t position = task.first_position + r / group;
      const int visible = static_cast<int>(std::clamp<int64_t>(position - key_begin + 1, 0, num_keys));
      max_visible = std::max(max_visible, visible);
      if (visible == 0) {
        for (int j = 0; j < tile_keys; j += kLanes) Store(s + j, F16v{});
        continue;
      }
      const F16v lanes = LaneIndex();
      const float visible_f = static_cast<float>(visible);
      F16v best = Splat(-std::numeric_limits<float>::infinity());
      for (int j = 0; j < tile_keys; j += kLanes) {
        const F16v v = Load(s + j) * key_scale;
        const F16v masked = (lanes + static_cast<float>(j)) < visible_f ? v : best;
        best = masked > best ? masked : best;
      }
      const float new_max = std::max(row_max[r], HorizontalMax(best));
      const float correction = std::exp2(row_max[r] - new_max);  // 0 on the row's first keys
      F16v total = {};
      for (int j = 0; j < tile_keys; j += kLanes) {
        const F16v p = Exp2(Load(s + j) * key_scale - new_max);
        const F16v masked = (lanes + static_cast<float>(j)) < visible_f ? p : F16v{};
        total += masked;
        Store(s + j, masked * value_scale);
      }
      row_sum[r] = row_sum[r] * correction + HorizontalSum(total);
      row_max[r] = new_max;
      if (correction != 1.0f) {
        float* a = acc + static_cast<int64_t>(r) * padded_dim;
        for (int i = 0; i < padded_dim; i += kLanes) Store(a + i, Load(a + i) * correction);
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
#undef TETRA_UNROLL
