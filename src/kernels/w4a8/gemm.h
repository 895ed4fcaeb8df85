// W4A8 matrix multiply: y[t, r] = Σ_c w[r, c] * x[t, c] with w a PackedW4 and
// x given as QuantizedActivations (int8 a with one scale sa per token and
// group). Integer dot products per (row, group), converted and scaled once
// per group:
//   y[t, r] = Σ_g ( float(Σ_{c in g} q[r, c] * a[t, c]) * (scale[r, g] * sa[t, g])
//                  + min[r, g] * (sa[t, g] * Σ_{c in g} a[t, c]) )
// (sa * Σ a is precomputed per token and group: one multiply and two fused
// multiply-adds per row, token and group.) Every ISA computes the same
// integers and the same float operations in the same order as the scalar
// reference; results differ from it at most by float rounding.
//
// The kernels read each weight tile (16 rows) once per call and apply it to
// up to 4 tokens at a time from registers, so many tokens reuse the tile from
// cache (GEMM); one token is a GEMV. Nothing is allocated inside GemmW4A8.
// Any thread may call; calls on disjoint row ranges of y may run concurrently.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "base/thread_pool.h"
#include "kernels/w4a8/packed_w4.h"
#include "kernels/w4a8/quantize_activations.h"

namespace tetra {

enum class Isa {
  kScalar,      // portable C++, the reference
  kAvx2,        // vpmaddubsw + vpmaddwd, 256-bit
  kAvxVnni,     // VEX vpdpbusd, 256-bit
  kAvx512Vnni,  // EVEX vpdpbusd, 512-bit
  kBest,        // the fastest this CPU supports
};

std::string_view IsaName(Isa isa);
// The ISAs this CPU runs, kScalar first, fastest last (never contains kBest).
std::vector<Isa> SupportedIsas();
// kBest resolved to a concrete ISA.
Isa BestIsa();
// The ISAs of the 8-bit kernels (w8a8.h): kScalar, and kAvx512Vnni where the
// CPU has it. (W6A8 has its own list, with kAvx2: SupportedW6A8Isas.)
std::vector<Isa> ScalarAndAvx512VnniIsas();
// `isa`, or for kBest the last (fastest) of `supported`; a CHECK that it is
// one of them, naming `kernel`.
Isa ResolveIsa(Isa isa, const std::vector<Isa>& supported, std::string_view kernel);

// y: [a.num_tokens] rows of stride y_stride; writes y[t * y_stride + r] for r
// in [row_begin, row_end) only. Requires a.cols == w.cols, a.group_size ==
// w.group_size, 0 <= row_begin <= row_end <= w.rows, and an ISA from
// SupportedIsas() or kBest (all checked).
void GemmW4A8(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
              int64_t row_begin, int64_t row_end, Isa isa = Isa::kBest);

// All rows, split into tiles over the pool; y: [a.num_tokens, w.rows].
void GemmW4A8(const PackedW4& w, const QuantizedActivations& a, float* y, ThreadPool& pool,
              Isa isa = Isa::kBest);

}  // namespace tetra
