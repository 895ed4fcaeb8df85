// AVX-512 VNNI W6A8 kernel: three 64-byte loads are 16 rows x 16 inputs of
// 6-bit codes (w6a8.h); nine shift/and/ternlog ops rebuild them as four
// registers of bytes 0..63, then four vpdpbusd per token against 4
// activation bytes broadcast, starting from -32 * Σ a. Per 16 inputs one
// vpmulld by the sub-scales; per 32 inputs one conversion, multiply and fused
// multiply-add. Up to 4 tokens share each load; a single token runs 4 tiles
// per pass (more independent loads in flight), as the W8A8 kernel does.
// Each pass prefetches into L2 the same place of the next pass's tiles (codes,
// sub-scales and d), so a tile's first lines are not left to the hardware
// prefetcher: on the Q6_K head that beat W8A8's "4 KiB ahead in the same
// tile" by ~5-10% (one and two threads, alternating runs). Compiled with
// -mavx512f -mavx512bw -mavx512vnni; w6a8.cc calls it only on such CPUs.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/w4a8/gemm_internal.h"  // Load32, ForEachTilePass (static: this file's own copies)
#include "kernels/w4a8/w6a8_internal.h"

namespace tetra::w6a8_internal {
namespace {

using w4a8_internal::Load32;

constexpr int kGroupsPerSuperBlock = PackedW6::kSuperBlock / PackedW6::kGroupSize;  // 8

// vpternlogd immediate for "c ? b : a" with operands (a, b, c).
constexpr int kSelect = 0xD8;

// The four chunks of codes of one sub-block's three lines (w6a8.h).
struct Codes {
  __m512i q[4];
};

inline Codes Unpack(const uint8_t* lines) {
  const __m512i low6 = _mm512_set1_epi8(0x3F);
  const __m512i line0 = _mm512_load_si512(lines);
  const __m512i line1 = _mm512_load_si512(lines + 64);
  const __m512i line2 = _mm512_load_si512(lines + 128);
  Codes codes;
  codes.q[0] = _mm512_and_si512(line0, low6);
  codes.q[1] = _mm512_and_si512(line1, low6);
  codes.q[2] = _mm512_and_si512(line2, low6);
  // Bits 6..7 of each line to bits 0..1, 2..3, 4..5 of chunk 3. The 16-bit
  // shifts pull bits across the bytes of a word only where a mask drops them.
  const __m512i low_pair = _mm512_srli_epi16(line0, 6);
  const __m512i mid_pair = _mm512_srli_epi16(line1, 4);
  const __m512i high_pair = _mm512_srli_epi16(line2, 2);
  const __m512i low_four = _mm512_ternarylogic_epi32(low_pair, mid_pair, _mm512_set1_epi8(0x0C), kSelect);
  const __m512i six = _mm512_ternarylogic_epi32(low_four, high_pair, _mm512_set1_epi8(0x30), kSelect);
  codes.q[3] = _mm512_and_si512(six, low6);
  return codes;
}

// out[i * T + t][r] = y[t0 + t, (tile + i) * 16 + r].
template <int T, int kTiles>
void TileTokens(const PackedW6& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                float (*out)[16]) {
  const int8_t* x[T];
  const int32_t* token_sums[T];  // Σ a per 16 inputs
  const float* token_scales[T];
  __m512 sums[kTiles][T];
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
    x[t] = a.token_values(t0 + t);
    token_sums[t] = a.token_sub_sums(t0 + t);
    token_scales[t] = a.token_scales(t0 + t);
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) sums[i][t] = _mm512_setzero_ps();
  }
  const size_t tile_bytes = w.tile_bytes;
  const uint8_t* codes = w.codes(tile, 0);
  const int8_t* scales = w.scales(tile, 0);
  const uint16_t* d = w.d(tile, 0);
  for (int64_t s = 0; s < w.num_super_blocks;
       ++s, codes += PackedW6::kCodeBytes, scales += PackedW6::kScaleBytes, d += PackedW6::kTileRows) {
    __m512 tile_d[kTiles];
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
      // The next pass's sub-scales and d for this super-block.
      const auto* next_scales = reinterpret_cast<const char*>(scales) + (i + kTiles) * tile_bytes;
#pragma GCC unroll 4
      for (int line = 0; line < 4; ++line) _mm_prefetch(next_scales + line * 64, _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(d) + (i + kTiles) * tile_bytes, _MM_HINT_T1);
      const auto* p = reinterpret_cast<const __m256i*>(reinterpret_cast<const uint8_t*>(d) + i * tile_bytes);
      tile_d[i] = _mm512_cvtph_ps(_mm256_loadu_si256(p));
    }
    for (int g = 0; g < kGroupsPerSuperBlock; ++g) {
      __m512i acc[kTiles][T];
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) acc[i][t] = _mm512_setzero_si512();
      }
#pragma GCC unroll 2
      for (int h = 2 * g; h < 2 * g + 2; ++h) {
        const uint8_t* lines = codes + h * PackedW6::kSubBlockBytes;
        // The next pass's codes at this place (past the last tile: harmless).
#pragma GCC unroll 4
        for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 3
          for (int line = 0; line < 3; ++line) {
            _mm_prefetch(reinterpret_cast<const char*>(lines + (i + kTiles) * tile_bytes + line * 64),
                         _MM_HINT_T1);
          }
        }
        const int64_t first_input = s * PackedW6::kSuperBlock + h * PackedW6::kSubBlock;
#pragma GCC unroll 4
        for (int i = 0; i < kTiles; ++i) {
          const Codes q = Unpack(lines + i * tile_bytes);
          const __m512i sub_scales = _mm512_cvtepi8_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + i * tile_bytes + h * PackedW6::kTileRows)));
#pragma GCC unroll 4
          for (int t = 0; t < T; ++t) {
            __m512i dot = _mm512_set1_epi32(-32 * token_sums[t][s * PackedW6::kSubBlocks + h]);
#pragma GCC unroll 4
            for (int chunk = 0; chunk < 4; ++chunk) {
              const __m512i inputs = _mm512_set1_epi32(Load32(x[t] + first_input + chunk * 4));
              dot = _mm512_dpbusd_epi32(dot, q.q[chunk], inputs);
            }
            acc[i][t] = _mm512_add_epi32(acc[i][t], _mm512_mullo_epi32(dot, sub_scales));
          }
        }
      }
      const int64_t group = s * kGroupsPerSuperBlock + g;
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const __m512 scale = _mm512_mul_ps(tile_d[i], _mm512_set1_ps(token_scales[t][group]));
          sums[i][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][t]), scale, sums[i][t]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) _mm512_storeu_ps(out[i * T + t], sums[i][t]);
  }
}

template <int kTiles>
void RunTileTokens(int64_t n, const PackedW6& w, const QuantizedActivations& a, int64_t tile,
                   int64_t t0, float (*out)[16]) {
  switch (n) {
    case 4: TileTokens<4, kTiles>(w, a, tile, t0, out); break;
    case 3: TileTokens<3, kTiles>(w, a, tile, t0, out); break;
    case 2: TileTokens<2, kTiles>(w, a, tile, t0, out); break;
    default: TileTokens<1, kTiles>(w, a, tile, t0, out); break;
  }
}

}  // namespace

void GemmRowsAvx512Vnni(const PackedW6& w, const QuantizedActivations& a, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end) {
  w4a8_internal::ForEachTilePass(row_begin, row_end, a.num_tokens, w4a8_internal::PassShape{}, y, y_stride,
                                 [&](int64_t tile, int tiles, int64_t t0, int64_t n, float (*out)[16]) {
                                   if (tiles == 4) {
                                     TileTokens<1, 4>(w, a, tile, t0, out);
                                   } else if (tiles == 2) {
                                     RunTileTokens<2>(n, w, a, tile, t0, out);
                                   } else {
                                     RunTileTokens<1>(n, w, a, tile, t0, out);
                                   }
                                 });
}

}  // namespace tetra::w6a8_internal
