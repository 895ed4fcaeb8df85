// What the CPU we run on can do, read once at start-up. Kernels dispatch on
// this at run time; the portable path must always exist.
#pragma once

#include <string>

namespace tetra {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;  // f16 <-> f32 conversions
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;
  bool avxvnni = false;
  std::string Describe() const;  // e.g. "avx2 fma avx512f avx512vnni"
};

const CpuFeatures& GetCpuFeatures();

}  // namespace tetra
