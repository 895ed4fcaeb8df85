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

constexpr int kMaxTokensPerPass = 4;
constexpr int kPrefetchBytes = 4096;

inline int32_t Load32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// out[t][r] = y[t0 + t, tile * 16 + r] for T tokens.
template <int T, bool kHasMins>
void TileTokens(const PackedW4& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                float (*out)[PackedW4::kTileRows]) {
  const __m512i low_mask = _mm512_set1_epi8(0x0F);
  const int sub_blocks = w.group_size / PackedW4::kSubBlockInputs;
  const int8_t* x[T];
  const float* token_scales[T];
  const float* scaled_group_sums[T];
  __m512 sums[T];
  #pragma GCC unroll 8
  for (int t = 0; t < T; ++t) {
    x[t] = a.token_values(t0 + t);
    token_scales[t] = a.token_scales(t0 + t);
    scaled_group_sums[t] = a.token_scaled_group_sums(t0 + t);
    sums[t] = _mm512_setzero_ps();
  }
  const uint8_t* group = w.nibbles(tile, 0);
  const uint16_t* group_scales = w.scales(tile, 0);
  const uint16_t* group_mins = w.mins(tile, 0);
  for (int64_t g = 0; g < w.num_groups;
       ++g, group += w.nibble_bytes, group_scales += PackedW4::kTileRows, group_mins += PackedW4::kTileRows) {
    __m512i dot_low[T], dot_high[T];
    #pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      dot_low[t] = _mm512_setzero_si512();
      dot_high[t] = _mm512_setzero_si512();
    }
    const int64_t first_input = g * w.group_size;
    for (int s = 0; s < sub_blocks; ++s) {
      const uint8_t* bytes = group + s * 256;
      // One thread's loads alone do not keep enough misses in flight to reach
      // the memory bandwidth: ask for the nibbles kPrefetchBytes ahead, into
      // L2 (4 KiB and L2 measured best: decode 55 -> 64 tok/s on the bench
      // MoE; 2 or 8 KiB, or into L1, were slower).
#pragma GCC unroll 4
      for (int line = 0; line < 4; ++line) _mm_prefetch(reinterpret_cast<const char*>(bytes + kPrefetchBytes + line * 64), _MM_HINT_T1);
#pragma GCC unroll 4
      for (int chunk = 0; chunk < 4; ++chunk) {
        const __m512i packed = _mm512_load_si512(bytes + chunk * 64);
        const __m512i low = _mm512_and_si512(packed, low_mask);
        const __m512i high = _mm512_and_si512(_mm512_srli_epi16(packed, 4), low_mask);
        const int64_t input = first_input + s * 32 + chunk * 4;
        #pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          dot_low[t] = _mm512_dpbusd_epi32(dot_low[t], low, _mm512_set1_epi32(Load32(x[t] + input)));
          dot_high[t] = _mm512_dpbusd_epi32(dot_high[t], high, _mm512_set1_epi32(Load32(x[t] + input + 16)));
        }
      }
    }
    // The same distance ahead in the parameter streams (16 groups of 16 rows).
    _mm_prefetch(reinterpret_cast<const char*>(group_scales + kPrefetchBytes / 16), _MM_HINT_T1);
    if constexpr (kHasMins) _mm_prefetch(reinterpret_cast<const char*>(group_mins + kPrefetchBytes / 16), _MM_HINT_T1);
    const __m512 scales = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group_scales)));
    // Symmetric packs: min = -8 * scale, exact.
    const __m512 mins = kHasMins ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(group_mins)))
                                 : _mm512_mul_ps(scales, _mm512_set1_ps(-8.0f));
    #pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(dot_low[t], dot_high[t]));
      const __m512 scales_times_token_scale = _mm512_mul_ps(scales, _mm512_set1_ps(token_scales[t][g]));
      sums[t] = _mm512_fmadd_ps(dot, scales_times_token_scale, sums[t]);
      sums[t] = _mm512_fmadd_ps(mins, _mm512_set1_ps(scaled_group_sums[t][g]), sums[t]);
    }
  }
  #pragma GCC unroll 8
  for (int t = 0; t < T; ++t) _mm512_storeu_ps(out[t], sums[t]);
}

template <bool kHasMins>
void RunTileTokens(int64_t n, const PackedW4& w, const QuantizedActivations& a, int64_t tile, int64_t t0,
                   float (*out)[PackedW4::kTileRows]) {
  switch (n) {
    case 4: TileTokens<4, kHasMins>(w, a, tile, t0, out); break;
    case 3: TileTokens<3, kHasMins>(w, a, tile, t0, out); break;
    case 2: TileTokens<2, kHasMins>(w, a, tile, t0, out); break;
    default: TileTokens<1, kHasMins>(w, a, tile, t0, out); break;
  }
}

}  // namespace

void GemmRowsAvx512Vnni(const PackedW4& w, const QuantizedActivations& a, float* y,
                        int64_t y_stride, int64_t row_begin, int64_t row_end) {
  constexpr int kRows = PackedW4::kTileRows;
  const int64_t tile_begin = row_begin / kRows;
  const int64_t tile_end = (row_end + kRows - 1) / kRows;
  alignas(64) float out[kMaxTokensPerPass][kRows];
  // Blocks of kTilesPerBlock tiles (~190 KB of weights at 2048 columns) stay
  // in L2 while every group of tokens passes over them; a group's activations
  // stay in L1 across the block's tiles.
  constexpr int64_t kTilesPerBlock = 8;
  for (int64_t block = tile_begin; block < tile_end; block += kTilesPerBlock) {
    const int64_t block_end = std::min(tile_end, block + kTilesPerBlock);
    for (int64_t t0 = 0; t0 < a.num_tokens; t0 += kMaxTokensPerPass) {
      for (int64_t tile = block; tile < block_end; ++tile) {
        const int64_t n = std::min<int64_t>(kMaxTokensPerPass, a.num_tokens - t0);
        if (w.has_mins) {
          RunTileTokens<true>(n, w, a, tile, t0, out);
        } else {
          RunTileTokens<false>(n, w, a, tile, t0, out);
        }
        for (int64_t t = 0; t < n; ++t) StoreTileRows(out[t], tile, row_begin, row_end, y + (t0 + t) * y_stride);
      }
    }
  }
}

}  // namespace tetra::w4a8_internal
