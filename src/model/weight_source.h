// Canonical access to a model's tensors for the architectures. Canonical names
// are GGUF's ("blk.3.attn_q.weight"); HF names are mapped onto them here, so
// architectures never see a format. Validates shapes and types as it binds.
// Immutable; any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "format/model_files.h"
#include "tensor/matrix_view.h"

namespace tetra {

// Maps one HF tensor name onto its canonical name; nullopt for names tetra
// does not use (e.g. "model.rotary_emb.inv_freq").
std::optional<std::string> HfToCanonicalName(std::string_view hf_name);

class WeightSource {
 public:
  explicit WeightSource(const ModelFiles& files);

  const std::string& display_path() const { return files_.path; }
  const WeightTensor* Find(const std::string& name) const;
  bool Has(const std::string& name) const { return Find(name) != nullptr; }

  // A [rows, cols] matrix; error when missing, mis-shaped or of an unusable type.
  StatusOr<MatrixView> Matrix(const std::string& name, int64_t rows, int64_t cols) const;
  // A vector of n values converted to f32.
  StatusOr<std::vector<float>> Vector(const std::string& name, int64_t n) const;

  // Expert e's [rows, cols] matrix of a layer's expert FFN, `kind` being
  // "gate", "up" or "down". Found in GGUF's merged blk.L.ffn_KIND_exps
  // [E, rows, cols], in HF's fused gate_up [E, 2*rows, cols], or per expert
  // as blk.L.ffn_KIND.E.weight.
  StatusOr<MatrixView> ExpertMatrix(int layer, std::string_view kind, int expert,
                                    int num_experts, int64_t rows, int64_t cols) const;

 private:
  Status CheckUsable(const WeightTensor& t) const;
  Status Missing(const std::string& name) const;
  StatusOr<MatrixView> SliceOf3d(const WeightTensor& t, int index, int num, int64_t row_offset,
                                 int64_t rows, int64_t cols, int64_t rows_per_slice) const;

  const ModelFiles& files_;
  std::unordered_map<std::string, const WeightTensor*> by_canonical_name_;
};

}  // namespace tetra
