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

}  // namespace

void QuantizeActivations(const float* x, int64_t num_tokens, int64_t cols, int group_size,
                         QuantizedActivations* out) {
  TETRA_CHECK(num_tokens >= 0 && cols > 0 && group_size > 0 && cols % group_size == 0,
              "shape [{}, {}] with group size {}", num_tokens, cols, group_size);
  out->num_tokens = num_tokens;
  out->cols = cols;
  out->group_size = group_size;
  out->num_groups = cols / group_size;
  out->values_stride = (cols + 63) / 64 * 64;
  // resize() keeps capacity: no allocation once the buffers are large enough.
  out->values.resize(static_cast<size_t>(num_tokens * out->values_stride));
  out->scales.resize(static_cast<size_t>(num_tokens));
  out->group_sums.resize(static_cast<size_t>(num_tokens * out->num_groups));

  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* row = x + t * cols;
    const float max_abs = MaxAbs(row, cols);
    const float scale = max_abs / 127.0f;
    const float inverse = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
    out->scales[static_cast<size_t>(t)] = scale;
    int8_t* q = out->values.data() + t * out->values_stride;
    QuantizeRow(row, cols, inverse, q);
    float* sums = out->group_sums.data() + t * out->num_groups;
    for (int64_t g = 0; g < out->num_groups; ++g) {
      int32_t sum = 0;
      for (int64_t c = g * group_size; c < (g + 1) * group_size; ++c) sum += q[c];
      sums[g] = static_cast<float>(sum);
    }
    std::memset(q + cols, 0, static_cast<size_t>(out->values_stride - cols));
  }
}

}  // namespace tetra
