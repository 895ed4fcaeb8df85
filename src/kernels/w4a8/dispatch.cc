// Run-time choice of the W4A8 kernel from the CPU's features, and the
// thread-pool split of output rows.
#include <algorithm>

#include "base/check.h"
#include "base/cpu_features.h"
#include "kernels/w4a8/gemm.h"
#include "kernels/w4a8/gemm_internal.h"

namespace tetra {

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvxVnni: return "avx_vnni";
    case Isa::kAvx512Vnni: return "avx512_vnni";
    case Isa::kBest: return "best";
  }
  return "unknown";
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas = {Isa::kScalar};
#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
  const CpuFeatures& cpu = GetCpuFeatures();
  if (cpu.avx2 && cpu.fma && cpu.f16c) isas.push_back(Isa::kAvx2);
  if (cpu.avx2 && cpu.fma && cpu.f16c && cpu.avxvnni) isas.push_back(Isa::kAvxVnni);
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vnni) isas.push_back(Isa::kAvx512Vnni);
#endif
  return isas;
}

Isa BestIsa() {
  static const Isa best = SupportedIsas().back();
  return best;
}

std::vector<Isa> ScalarAndAvx512VnniIsas() {
  std::vector<Isa> isas = {Isa::kScalar};
#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
  const CpuFeatures& cpu = GetCpuFeatures();
  if (cpu.avx512f && cpu.avx512bw && cpu.avx512vnni) isas.push_back(Isa::kAvx512Vnni);
#endif
  return isas;
}

Isa ResolveIsa(Isa isa, const std::vector<Isa>& supported, std::string_view kernel) {
  if (isa == Isa::kBest) isa = supported.back();
  TETRA_CHECK(std::find(supported.begin(), supported.end(), isa) != supported.end(),
              "{} kernel {} is not supported by this CPU ({})", kernel, IsaName(isa), GetCpuFeatures().Describe());
  return isa;
}

namespace {

w4a8_internal::GemmRowsFn KernelFor(Isa isa) {
  static const std::vector<Isa> supported = SupportedIsas();  // once: per call it allocated thousands a token
  switch (ResolveIsa(isa, supported, "W4A8")) {
#if defined(TETRA_W4A8_HAVE_X86_KERNELS)
    case Isa::kAvx2: return w4a8_internal::GemmRowsAvx2;
    case Isa::kAvxVnni: return w4a8_internal::GemmRowsAvxVnni;
    case Isa::kAvx512Vnni: return w4a8_internal::GemmRowsAvx512Vnni;
#endif
    default: return w4a8_internal::GemmRowsScalar;
  }
}

void CheckShapes(const PackedW4& w, const QuantizedActivations& a) {
  TETRA_CHECK(a.cols == w.cols && a.group_size == w.group_size,
              "activations [{}, {}] group {} do not match weights [{}, {}] group {}", a.num_tokens, a.cols,
              a.group_size, w.rows, w.cols, w.group_size);
}

}  // namespace

void GemmW4A8(const PackedW4& w, const QuantizedActivations& a, float* y, int64_t y_stride,
              int64_t row_begin, int64_t row_end, Isa isa) {
  CheckShapes(w, a);
  TETRA_CHECK(0 <= row_begin && row_begin <= row_end && row_end <= w.rows, "rows [{}, {}) of {}", row_begin,
              row_end, w.rows);
  if (row_begin == row_end || a.num_tokens == 0) return;
  KernelFor(isa)(w, a, y, y_stride, row_begin, row_end);
}

void GemmW4A8(const PackedW4& w, const QuantizedActivations& a, float* y, ThreadPool& pool, Isa isa) {
  CheckShapes(w, a);
  if (w.rows == 0 || a.num_tokens == 0) return;
  const w4a8_internal::GemmRowsFn kernel = KernelFor(isa);
  // Chunks of whole tiles, about four per thread so uneven finishing evens out.
  const int64_t num_chunks_wanted = static_cast<int64_t>(pool.num_threads()) * 4;
  const int64_t tiles_per_chunk = std::max<int64_t>(1, w.num_tiles / num_chunks_wanted);
  pool.ParallelFor(w.num_tiles, tiles_per_chunk, [&](int64_t tile_begin, int64_t tile_end) {
    kernel(w, a, y, w.rows, tile_begin * PackedW4::kTileRows,
           std::min(w.rows, tile_end * PackedW4::kTileRows));
  });
}

}  // namespace tetra
