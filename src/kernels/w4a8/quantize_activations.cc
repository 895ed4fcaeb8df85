#include "kernels/w4a8/quantize_activations.h"

#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "base/check.h"

namespace tetra {

namespace {

// Rounds v (clamped to [-127, 127], NaN -> 0) half to even by adding and
// subtracting 1.5 * 2^23: exact in the default rounding mode.
inline int8_t QuantizeOne(float v) {
  v = v > 127.0f ? 127.0f : v;
  v = v < -127.0f ? -127.0f : v;
  v = v == v ? v : 0.0f;
  constexpr float kRoundingMagic = 12582912.0f;
  return static_cast<int8_t>(static_cast<int32_t>((v + kRoundingMagic) - kRoundingMagic));
}

float MaxAbs(const float* x, int64_t n) {
  int64_t c = 0;
  float max_abs = 0.0f;
#if defined(__SSE2__)
  const __m128 sign = _mm_set1_ps(-0.0f);
  __m128 acc = _mm_setzero_ps();
  for (; c + 4 <= n; c += 4) acc = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(x + c)), acc);  // NaN skipped
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, acc);
  for (float v : lanes) max_abs = v > max_abs ? v : max_abs;
#endif
  for (; c < n; ++c) {
    const float v = std::fabs(x[c]);
    max_abs = v > max_abs ? v : max_abs;
  }
  return max_abs;
}

// q[c] = QuantizeOne(x[c] * inverse); SSE2 rounds with cvtps2dq (half to even,
// the default MXCSR mode), the same as QuantizeOne.
void QuantizeRow(const float* x, int64_t n, float inverse, int8_t* q) {
  int64_t c = 0;
#if defined(__SSE2__)
  const __m128 scale = _mm_set1_ps(inverse);
  const __m128 upper = _mm_set1_ps(127.0f), lower = _mm_set1_ps(-127.0f);
  for (; c + 16 <= n; c += 16) {
    __m128i words[4];
    for (int k = 0; k < 4; ++k) {
      __m128 v = _mm_mul_ps(_mm_loadu_ps(x + c + 4 * k), scale);
      v = _mm_and_ps(v, _mm_cmpord_ps(v, v));  // NaN -> 0
      v = _mm_max_ps(_mm_min_ps(v, upper), lower);
      words[k] = _mm_cvtps_epi32(v);
    }
    const __m128i shorts_low = _mm_packs_epi32(words[0], words[1]);
    const __m128i shorts_high = _mm_packs_epi32(words[2], words[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + c), _mm_packs_epi16(shorts_low, shorts_high));
  }
#endif
  for (; c < n; ++c) q[c] = QuantizeOne(x[c] * inverse);
}

// Σ q[0..n): SSE2 maps each int8 to v + 128 (xor 0x80) and sums bytes with
// psadbw, then removes the bias.
int32_t SumBytes(const int8_t* q, int64_t n) {
  int64_t c = 0;
  int32_t sum = 0;
#if defined(__SSE2__)
  const __m128i bias = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i zero = _mm_setzero_si128();
  __m128i acc = _mm_setzero_si128();
  for (; c + 16 <= n; c += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + c));
    acc = _mm_add_epi64(acc, _mm_sad_epu8(_mm_xor_si128(v, bias), zero));
  }
  // Each 64-bit lane holds at most 255 * n / 2: fits in 32 bits.
  const int64_t biased = static_cast<int64_t>(_mm_cvtsi128_si32(acc)) +
                         _mm_cvtsi128_si32(_mm_unpackhi_epi64(acc, acc));
  sum = static_cast<int32_t>(biased - 128 * c);
#endif
  for (; c < n; ++c) sum += q[c];
  return sum;
}

}  // namespace

void ResizeActivations(int64_t num_tokens, int64_t cols, int group_size, QuantizedActivations* out) {
  TETRA_CHECK(num_tokens >= 0 && cols > 0 && group_size > 0 && cols % group_size == 0,
              "shape [{}, {}] with group size {}", num_tokens, cols, group_size);
  out->num_tokens = num_tokens;
  out->cols = cols;
  out->group_size = group_size;
  out->num_groups = cols / group_size;
  out->values_stride = (cols + 63) / 64 * 64;
  // resize() keeps capacity: no allocation once the buffers are large enough.
  const size_t num_token_groups = static_cast<size_t>(num_tokens * out->num_groups);
  out->values.resize(static_cast<size_t>(num_tokens * out->values_stride));
  out->scales.resize(num_token_groups);
  out->group_sums.resize(num_token_groups);
  out->scaled_group_sums.resize(num_token_groups);
  // Groups of a multiple of 16 inputs only (W6A8 takes groups of 32).
  const bool has_sub_sums = group_size % QuantizedActivations::kSubSumInputs == 0;
  out->sub_sums.resize(has_sub_sums ? static_cast<size_t>(num_tokens * (cols / QuantizedActivations::kSubSumInputs)) : 0);
  out->values_base = out->values.data();
  out->scales_base = out->scales.data();
  out->group_sums_base = out->group_sums.data();
  out->scaled_group_sums_base = out->scaled_group_sums.data();
  out->sub_sums_base = out->sub_sums.data();
}

void QuantizeActivationRows(const float* x, int64_t begin, int64_t end, QuantizedActivations* out) {
  TETRA_CHECK(0 <= begin && begin <= end && end <= out->num_tokens && out->values_base == out->values.data(),
              "tokens [{}, {}) of {} (or a slice)", begin, end, out->num_tokens);
  const int64_t cols = out->cols;
  const int group_size = out->group_size;
  constexpr int kSub = QuantizedActivations::kSubSumInputs;
  for (int64_t t = begin; t < end; ++t) {
    int8_t* q = out->values.data() + t * out->values_stride;
    const size_t first = static_cast<size_t>(t * out->num_groups);
    for (int64_t g = 0; g < out->num_groups; ++g) {
      const int64_t c = g * group_size;
      const float max_abs = MaxAbs(x + t * cols + c, group_size);
      const float scale = max_abs / 127.0f;
      const float inverse = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
      QuantizeRow(x + t * cols + c, group_size, inverse, q + c);
      int32_t group_sum;
      if (out->sub_sums.empty()) {
        group_sum = SumBytes(q + c, group_size);
      } else {
        int32_t* sub_sums = out->sub_sums.data() + t * (cols / kSub) + c / kSub;
        group_sum = 0;
        for (int k = 0; k < group_size / kSub; ++k) {
          sub_sums[k] = SumBytes(q + c + k * kSub, kSub);
          group_sum += sub_sums[k];
        }
      }
      const float sum = static_cast<float>(group_sum);  // |sum| < 2^24: exact
      out->scales[first + static_cast<size_t>(g)] = scale;
      out->group_sums[first + static_cast<size_t>(g)] = sum;
      out->scaled_group_sums[first + static_cast<size_t>(g)] = scale * sum;
    }
    std::memset(q + cols, 0, static_cast<size_t>(out->values_stride - cols));
  }
}

void QuantizeActivations(const float* x, int64_t num_tokens, int64_t cols, int group_size,
                         QuantizedActivations* out) {
  ResizeActivations(num_tokens, cols, group_size, out);
  QuantizeActivationRows(x, 0, num_tokens, out);
}

void SliceActivations(const QuantizedActivations& all, int64_t first, int64_t count, QuantizedActivations* out) {
  TETRA_CHECK(0 <= first && 0 <= count && first + count <= all.num_tokens, "tokens [{}, {}) of {}", first,
              first + count, all.num_tokens);
  out->num_tokens = count;
  out->cols = all.cols;
  out->group_size = all.group_size;
  out->num_groups = all.num_groups;
  out->values_stride = all.values_stride;
  out->values_base = all.values_base + first * all.values_stride;
  out->scales_base = all.scales_base + first * all.num_groups;
  out->group_sums_base = all.group_sums_base + first * all.num_groups;
  out->scaled_group_sums_base = all.scaled_group_sums_base + first * all.num_groups;
  out->sub_sums_base = all.sub_sums_base + first * (all.cols / QuantizedActivations::kSubSumInputs);
}

}  // namespace tetra
