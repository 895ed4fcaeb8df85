// AVX-512 VNNI kernel: one 64-byte load is 16 rows x 4 inputs (two nibbles per
// byte); the low and high nibbles each feed one vpdpbusd (unsigned weight
// nibbles x signed int8 activations, broadcast 4 at a time). Up to 4 tokens
// share every weight load. Compiled with -mavx512f -mavx512bw -mavx512vnni;
// dispatch.cc calls it only when the CPU has those features.
// GCC 12 warns falsely about _mm512_undefined_ps inside _mm512_cvtepi32_ps.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "kernels/w4a8/gemm_internal.h"

namespace tetra::w4a8_internal {
namespace {

constexpr int kPrefetchBytes = 4096;

// out[i * T + t][r] = y[t0 + t, (tile + i) * 16 + r] for T tokens and
// kTiles consecutive tiles: two tiles per pass give one token twice the
// independent loads and dot-product chains, and share each activation
// broadcast between two vpdpbusd.
template <int T, int kTiles, bool kHasMins>
void TileTokens(const PackedW4& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                float (*out)[PackedW4::kTileRows]) {
  // With 8 or more (tile, token) pairs there are enough independent chains:
  // low and high nibbles share one accumulator, which keeps 4 tiles x 2
  // tokens within the 32 registers.
  constexpr bool kOneChain = kTiles * T >= 8;
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const int sub_blocks = w.group_size / PackedW4::kSubBlockInputs;
  const int8_t* x[T];
  const float* token_scales[T];
  const float* scaled_group_sums[T];
  __m512 sums[kTiles][T];
  #pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    x[t] = a.token_values(t0 + t);
    token_scales[t] = a.token_scales(t0 + t);
    scaled_group_sums[t] = a.token_scaled_group_sums(t0 + t);
    #pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) sums[i][t] = _mm512_setzero_ps();
  }
  const uint8_t* group = w.nibbles(tile, 0);
  const uint16_t* group_scales = w.scales(tile, 0);
  const uint16_t* group_mins = w.mins(tile, 0);
  const size_t tile_bytes = w.tile_bytes;
  for (int64_t g = 0; g < w.num_groups;
       ++g, group += w.nibble_bytes, group_scales += PackedW4::kTileRows, group_mins += PackedW4::kTileRows) {
    __m512i dot_low[kTiles][T], dot_high[kTiles][T];
    #pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      #pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) dot_low[i][t] = dot_high[i][t] = _mm512_setzero_si512();
    }
    const int64_t first_input = g * w.group_size;
    for (int s = 0; s < sub_blocks; ++s) {
      // One thread's loads alone do not keep enough misses in flight to reach
      // the memory bandwidth: ask for the nibbles kPrefetchBytes ahead, into
      // L2 (4 KiB and L2 measured best: decode 55 -> 64 tok/s on the bench
      // MoE; 2 or 8 KiB, or into L1, were slower).
      #pragma GCC unroll 4
      for (int i = 0; i < kTiles; ++i) {
        const uint8_t* bytes = group + i * tile_bytes + s * 256;
        #pragma GCC unroll 4
        for (int line = 0; line < 4; ++line) {
          _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes + line * 64), _MM_HINT_T1);
        }
      }
      #pragma GCC unroll 4
      for (int chunk = 0; chunk < 4; ++chunk) {
        __m512i low[kTiles], high[kTiles];
        #pragma GCC unroll 4
        for (int i = 0; i < kTiles; ++i) {
          const __m512i packed = _mm512_load_si512(group + i * tile_bytes + s * 256 + chunk * 64);
          low[i] = _mm512_and_si512(packed, low_mask);
          high[i] = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low_mask);
        }
        const int64_t input = first_input + s * 32 + chunk * 4;
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const __m512i low_inputs = _mm512_set1_epi32(Load32(x[t] + input));
          const __m512i high_inputs = _mm512_set1_epi32(Load32(x[t] + input + 16));
          #pragma GCC unroll 4
          for (int i = 0; i < kTiles; ++i) {
            dot_low[i][t] = _mm512_dpbusd_epi32(dot_low[i][t], low[i], low_inputs);
            if constexpr (kOneChain) {
              dot_low[i][t] = _mm512_dpbusd_epi32(dot_low[i][t], high[i], high_inputs);
            } else {
              dot_high[i][t] = _mm512_dpbusd_epi32(dot_high[i][t], high[i], high_inputs);
            }
          }
        }
      }
    }
    #pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) {
      const uint16_t* tile_scales = reinterpret_cast<const uint16_t*>(reinterpret_cast<const uint8_t*>(group_scales) + i * tile_bytes);
      const uint16_t* tile_mins = reinterpret_cast<const uint16_t*>(reinterpret_cast<const uint8_t*>(group_mins) + i * tile_bytes);
      // The same distance ahead in the parameter streams (16 groups of 16 rows).
      _mm_prefetch(reinterpret_cast<const char*>(tile_scales + kPrefetchBytes / 16), _MM_HINT_T1);
      if constexpr (kHasMins) _mm_prefetch(reinterpret_cast<const char*>(tile_mins + kPrefetchBytes / 16), _MM_HINT_T1);
      const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile_scales)));
      // Symmetric packs: min = -8 * scale, exact.
      const __m512 mins = kHasMins ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile_mins)))
                                   : _mm512_mul_ps(scales, _mm512_set1_ps(-8.0f));
      #pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512 dot =
            _mm512_cvtepi32_ps(kOneChain ? dot_low[i][t] : _mm512_add_epi32(dot_low[i][t], dot_high[i][t]));
        const __m512 scales_times_token_scale = _mm512_mul_ps(scales, _mm512_set1_ps(token_scales[t][g]));
        sums[i][t] = _mm512_fmadd_ps(dot, scales_times_token_scale, sums[i][t]);
        sums[i][t] = _mm512_fmadd_ps(mins, _mm512_set1_ps(scaled_group_sums[t][g]), sums[i][t]);
      }
    }
  }
  #pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    #pragma GCC unroll 4
    for (int i = 0; i < kTiles; ++i) _mm512_storeu_ps(out[i * T + t], sums[i][t]);
  }
}

template <int kTiles, bool kHasMins>
void RunTileTokens(int64_t n, const PackedW4& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                   float (*out)[PackedW4::kTileRows]) {
  switch (n) {
    case 4: TileTokens<4, kTiles, kHasMins>(w, a, tile, t0, out); break;
    case 3: TileTokens<3, kTiles, kHasMins>(w, a, tile, t0, out); break;
    case 2: TileTokens<2, kTiles, kHasMins>(w, a, tile, t0, out); break;
    default: TileTokens<1, kTiles, kHasMins>(w, a, tile, t0, out); break;
  }
}

}  // namespace

void GemmRowsAvx512Vnni(const PackedW4& w, const QuantizedActivations& a, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end) {
  // Four tiles per pass for one or two tokens, two otherwise.
  ForEachTilePass(row_begin, row_end, a.num_tokens, PassShape{.max_tokens_for_four = 2}, y, y_stride,
                  [&](int64_t tile, int tiles, int64_t t0, int64_t n, float (*out)[PackedW4::kTileRows]) {
                    if (tiles == 4 && n == 2) {
                      w.has_mins ? TileTokens<2, 4, true>(w, a, tile, t0, out)
                                 : TileTokens<2, 4, false>(w, a, tile, t0, out);
                    } else if (tiles == 4) {
                      w.has_mins ? TileTokens<1, 4, true>(w, a, tile, t0, out)
                                 : TileTokens<1, 4, false>(w, a, tile, t0, out);
                    } else if (tiles == 2) {
                      w.has_mins ? RunTileTokens<2, true>(n, w, a, tile, t0, out)
                                 : RunTileTokens<2, false>(n, w, a, tile, t0, out);
                    } else {
                      w.has_mins ? RunTileTokens<1, true>(n, w, a, tile, t0, out)
                                 : RunTileTokens<1, false>(n, w, a, tile, t0, out);
                    }
                  });
}

}  // namespace tetra::w4a8_internal
