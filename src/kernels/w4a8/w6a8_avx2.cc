// AVX2 W6A8 kernel over the same PackedW6 layout as the AVX-512 one (w6a8.h):
// each 64-byte line is rows 0..7 in its low 32 bytes and rows 8..15 in its
// high 32 bytes, one ymm each. Per half, three loads and eleven
// shift/and/or ops rebuild 8 rows x 16 inputs as four registers of codes
// 0..63; codes (u8) times activations (s8) by vpmaddubsw, two chunks' pairs
// added in 16 bits (4 * 63 * 128 < 32768, no saturation), then vpmaddwd by
// ones to int32, starting from -32 * Σ a. Then the same vpmulld by the
// sub-scales and the same per-32 float step as the AVX-512 kernel and the
// scalar reference, so the output is bit for bit theirs. Up to 2 tokens share
// each load; one token runs 4 tiles per pass (more independent loads in
// flight: ~8% over 2 tiles on the head, alternating runs, one and two
// threads). Each pass prefetches the next pass's tiles into L2, as the
// AVX-512 kernel does. Compiled with -mavx2 -mfma -mf16c; w6a8.cc calls it
// only on such CPUs.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/w4a8/gemm_internal.h"  // Load32, ForEachTilePass (static: this file's own copies)
#include "kernels/w4a8/w6a8_internal.h"

namespace tetra::w6a8_internal {
namespace {

using w4a8_internal::Load32;

constexpr int kGroupsPerSuperBlock = PackedW6::kSuperBlock / PackedW6::kGroupSize;  // 8

// Two products of u8 <= 63 and s8 >= -128 per 16-bit lane, two chunks added:
// at most 4 * 63 * 128 = 32256 in magnitude, inside int16.
static_assert(4 * 63 * 128 < 32768);

// The four chunks of codes of one half (8 rows) of a sub-block's three lines.
struct Codes {
  __m256i q[4];
};

inline Codes Unpack(const uint8_t* lines) {
  const __m256i low6 = _mm256_set1_epi8(0x3F);
  const __m256i top2 = _mm256_set1_epi8(static_cast<char>(0xC0));
  const __m256i line0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lines));
  const __m256i line1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lines + 64));
  const __m256i line2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lines + 128));
  Codes codes;
  codes.q[0] = _mm256_and_si256(line0, low6);
  codes.q[1] = _mm256_and_si256(line1, low6);
  codes.q[2] = _mm256_and_si256(line2, low6);
  // Bits 6..7 of each line, masked first so the 16-bit shifts carry nothing
  // across bytes: line 0's to bits 2..3, line 1's to 4..5, line 2's stay at
  // 6..7; one more shift by 2 puts them at bits 0..5 of chunk 3.
  const __m256i low_pair = _mm256_srli_epi16(_mm256_and_si256(line0, top2), 4);
  const __m256i mid_pair = _mm256_srli_epi16(_mm256_and_si256(line1, top2), 2);
  const __m256i high_pair = _mm256_and_si256(line2, top2);
  codes.q[3] = _mm256_srli_epi16(_mm256_or_si256(_mm256_or_si256(low_pair, mid_pair), high_pair), 2);
  return codes;
}

// out[i * T + t][r] = y[t0 + t, (tile + i) * 16 + r].
template <int T, int kTiles>
void TileTokens(const PackedW6& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                float (*out)[16]) {
  const __m256i ones = _mm256_set1_epi16(1);
  const int8_t* x[T];
  const int32_t* token_sums[T];  // Σ a per 16 inputs
  const float* token_scales[T];
  __m256 sums[kTiles][T][2];
#pragma GCC unroll 2
  for (int t = 0; t < T; ++t) {
    x[t] = a.token_values(t0 + t);
    token_sums[t] = a.token_sub_sums(t0 + t);
    token_scales[t] = a.token_scales(t0 + t);
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) sums[i][t][0] = sums[i][t][1] = _mm256_setzero_ps();
  }
  const size_t tile_bytes = w.tile_bytes;
  const uint8_t* codes = w.codes(tile, 0);
  const int8_t* scales = w.scales(tile, 0);
  const uint16_t* d = w.d(tile, 0);
  for (int64_t s = 0; s < w.num_super_blocks;
       ++s, codes += PackedW6::kCodeBytes, scales += PackedW6::kScaleBytes, d += PackedW6::kTileRows) {
    __m256 tile_d[kTiles][2];
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
      // The next pass's sub-scales and d for this super-block.
      const auto* next_scales = reinterpret_cast<const char*>(scales) + (i + kTiles) * tile_bytes;
#pragma GCC unroll 4
      for (int line = 0; line < 4; ++line) _mm_prefetch(next_scales + line * 64, _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(d) + (i + kTiles) * tile_bytes, _MM_HINT_T1);
      const auto* p = reinterpret_cast<const __m128i*>(reinterpret_cast<const uint8_t*>(d) + i * tile_bytes);
      tile_d[i][0] = _mm256_cvtph_ps(_mm_loadu_si128(p));
      tile_d[i][1] = _mm256_cvtph_ps(_mm_loadu_si128(p + 1));
    }
    for (int g = 0; g < kGroupsPerSuperBlock; ++g) {
      __m256i acc[kTiles][T][2];
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 2
        for (int t = 0; t < T; ++t) acc[i][t][0] = acc[i][t][1] = _mm256_setzero_si256();
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
        __m256i inputs[T][4];
        __m256i start[T];
#pragma GCC unroll 2
        for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
          for (int chunk = 0; chunk < 4; ++chunk) {
            inputs[t][chunk] = _mm256_set1_epi32(Load32(x[t] + first_input + chunk * 4));
          }
          start[t] = _mm256_set1_epi32(-32 * token_sums[t][s * PackedW6::kSubBlocks + h]);
        }
#pragma GCC unroll 4
        for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 2
          for (int half = 0; half < 2; ++half) {
            const Codes q = Unpack(lines + i * tile_bytes + half * 32);
            const __m256i sub_scales = _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                reinterpret_cast<const __m128i*>(scales + i * tile_bytes + h * PackedW6::kTileRows + half * 8)));
#pragma GCC unroll 2
            for (int t = 0; t < T; ++t) {
              const __m256i pairs01 = _mm256_add_epi16(_mm256_maddubs_epi16(q.q[0], inputs[t][0]),
                                                       _mm256_maddubs_epi16(q.q[1], inputs[t][1]));
              const __m256i pairs23 = _mm256_add_epi16(_mm256_maddubs_epi16(q.q[2], inputs[t][2]),
                                                       _mm256_maddubs_epi16(q.q[3], inputs[t][3]));
              const __m256i dot = _mm256_add_epi32(
                  start[t], _mm256_add_epi32(_mm256_madd_epi16(pairs01, ones), _mm256_madd_epi16(pairs23, ones)));
              acc[i][t][half] = _mm256_add_epi32(acc[i][t][half], _mm256_mullo_epi32(dot, sub_scales));
            }
          }
        }
      }
      const int64_t group = s * kGroupsPerSuperBlock + g;
#pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) {
#pragma GCC unroll 2
        for (int t = 0; t < T; ++t) {
          const __m256 token_scale = _mm256_set1_ps(token_scales[t][group]);
#pragma GCC unroll 2
          for (int half = 0; half < 2; ++half) {
            const __m256 scale = _mm256_mul_ps(tile_d[i][half], token_scale);
            sums[i][t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][t][half]), scale, sums[i][t][half]);
          }
        }
      }
    }
  }
#pragma GCC unroll 2
  for (int t = 0; t < T; ++t) {
#pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
      _mm256_storeu_ps(out[i * T + t], sums[i][t][0]);
      _mm256_storeu_ps(out[i * T + t] + 8, sums[i][t][1]);
    }
  }
}

}  // namespace

void GemmRowsAvx2(const PackedW6& w, const QuantizedActivations& a, float* y,
                  int64_t y_stride, int64_t row_begin, int64_t row_end) {
  // Passes of 2 tokens x 1 tile, or 1 token x 4 (else 2) tiles: 16 ymm registers.
  const w4a8_internal::PassShape shape{.max_tokens = 2, .max_tokens_for_four = 1, .max_tokens_for_two = 1};
  w4a8_internal::ForEachTilePass(row_begin, row_end, a.num_tokens, shape, y, y_stride,
                                 [&](int64_t tile, int tiles, int64_t t0, int64_t n, float (*out)[16]) {
                                   if (tiles == 4) {
                                     TileTokens<1, 4>(w, a, tile, t0, out);
                                   } else if (tiles == 2) {
                                     TileTokens<1, 2>(w, a, tile, t0, out);
                                   } else if (n == 2) {
                                     TileTokens<2, 1>(w, a, tile, t0, out);
                                   } else {
                                     TileTokens<1, 1>(w, a, tile, t0, out);
                                   }
                                 });
}

}  // namespace tetra::w6a8_internal
