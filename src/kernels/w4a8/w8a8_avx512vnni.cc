// AVX-512 VNNI W8A8 kernel: one 64-byte load is 16 rows x 4 inputs (unsigned
// bytes), one vpdpbusd per token against 4 activation bytes broadcast. Up to
// 4 tokens share each load; a single token runs 4 tiles per pass (more
// independent loads in flight, as the W4A8 kernel does). Compiled with
// -mavx512f -mavx512bw -mavx512vnni; w8a8.cc calls it only on such CPUs.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/w4a8/gemm_internal.h"  // Load32, ForEachTilePass (static: this file's own copies)
#include "kernels/w4a8/w8a8_internal.h"

namespace tetra::w8a8_internal {
namespace {

using w4a8_internal::Load32;

constexpr int kPrefetchBytes = 4096;

// out[i * T + t][r] = y[t0 + t, (tile + i) * 16 + r].
template <int T, int kTiles, bool kHasMins>
void TileTokens(const PackedW8& w, const QuantizedActivations& a, int64_t tile, int64_t t0, float (*out)[16]) {
  const int8_t* x[T];
  __m512 sums[kTiles][T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    x[t] = a.token_values(t0 + t);
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) sums[i][t] = _mm512_setzero_ps();
  }
  const size_t tile_bytes = w.tile_bytes;
  const uint8_t* group = w.bytes(tile, 0);
  const uint16_t* group_scales = w.scales(tile, 0);
  const uint16_t* group_mins = w.mins(tile, 0);
  for (int64_t g = 0; g < w.num_groups; ++g, group += PackedW8::kGroupBytes, group_scales += 16, group_mins += 16) {
    __m512i dot[kTiles][T];
#pragma GCC unroll 4
    for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) dot[i][t] = _mm512_setzero_si512();
    }
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 8
      for (int line = 0; line < 8; ++line) {
        _mm_prefetch(reinterpret_cast<const char*>(group + i * tile_bytes + kPrefetchBytes + line * 64), _MM_HINT_T1);
      }
    }
    const int64_t first_input = g * PackedW8::kGroupSize;
#pragma GCC unroll 8
    for (int chunk = 0; chunk < 8; ++chunk) {
      __m512i weights[kTiles];
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) weights[i] = _mm512_load_si512(group + i * tile_bytes + chunk * 64);
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m512i inputs = _mm512_set1_epi32(Load32(x[t] + first_input + chunk * 4));
#pragma GCC unroll 4
        for (int i = 0; i < kTiles; ++i) dot[i][t] = _mm512_dpbusd_epi32(dot[i][t], weights[i], inputs);
      }
    }
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
      const auto* tile_scales = reinterpret_cast<const uint16_t*>(reinterpret_cast<const uint8_t*>(group_scales) + i * tile_bytes);
      const auto* tile_mins = reinterpret_cast<const uint16_t*>(reinterpret_cast<const uint8_t*>(group_mins) + i * tile_bytes);
      const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile_scales)));
      // Symmetric packs (Q8_0): min = -128 * scale, exact.
      const __m512 mins = kHasMins ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile_mins)))
                                   : _mm512_mul_ps(scales, _mm512_set1_ps(-128.0f));
#pragma GCC unroll 4
      for (int t = 0; t < T; ++t) {
        const __m512 scale = _mm512_mul_ps(scales, _mm512_set1_ps(a.token_scales(t0 + t)[g]));
        sums[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[i][t]), scale, sums[i][t]);
        sums[i][t] = _mm512_fmadd_ps(mins, _mm512_set1_ps(a.token_scaled_group_sums(t0 + t)[g]), sums[i][t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) _mm512_storeu_ps(out[i * T + t], sums[i][t]);
  }
}

template <int kTiles, bool kHasMins>
void RunTileTokens(int64_t n, const PackedW8& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                   float (*out)[16]) {
  switch (n) {
    case 4: TileTokens<4, kTiles, kHasMins>(w, a, tile, t0, out); break;
    case 3: TileTokens<3, kTiles, kHasMins>(w, a, tile, t0, out); break;
    case 2: TileTokens<2, kTiles, kHasMins>(w, a, tile, t0, out); break;
    default: TileTokens<1, kTiles, kHasMins>(w, a, tile, t0, out); break;
  }
}

}  // namespace

void GemmRowsAvx512Vnni(const PackedW8& w, const QuantizedActivations& a, float* y, int64_t y_stride,
                        int64_t row_begin, int64_t row_end) {
  w4a8_internal::ForEachTilePass(
      row_begin, row_end, a.num_tokens, w4a8_internal::PassShape{}, y, y_stride,
      [&](int64_t tile, int tiles, int64_t t0, int64_t n, float (*out)[16]) {
        if (tiles == 4) {
          w.has_mins ? TileTokens<1, 4, true>(w, a, tile, t0, out) : TileTokens<1, 4, false>(w, a, tile, t0, out);
        } else if (tiles == 2) {
          w.has_mins ? RunTileTokens<2, true>(n, w, a, tile, t0, out) : RunTileTokens<2, false>(n, w, a, tile, t0, out);
        } else {
          w.has_mins ? RunTileTokens<1, true>(n, w, a, tile, t0, out) : RunTileTokens<1, false>(n, w, a, tile, t0, out);
        }
      });
}

}  // namespace tetra::w8a8_internal
