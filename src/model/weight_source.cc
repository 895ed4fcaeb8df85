#include "model/weight_source.h"

#include <fmt/ranges.h>

#include <charconv>
#include <cstring>

#include "kernels/reference/dequantize.h"

namespace tetra {

namespace {

bool ConsumePrefix(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

bool ConsumeInt(std::string_view& s, int* value) {
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *value);
  if (ec != std::errc() || ptr == s.data()) return false;
  s.remove_prefix(static_cast<size_t>(ptr - s.data()));
  return true;
}

struct NamePair {
  std::string_view hf;
  std::string_view canonical;
};

// Per-layer names after "model.layers.N.", without the ".weight"/".bias" tail.
constexpr NamePair kLayerNames[] = {
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"self_attn.q_norm", "attn_q_norm"},
    {"self_attn.k_norm", "attn_k_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"mlp.gate", "ffn_gate_inp"},                 // qwen MoE router
    {"block_sparse_moe.gate", "ffn_gate_inp"},    // mixtral router
    {"mlp.shared_expert.gate_proj", "ffn_gate_shexp"},
    {"mlp.shared_expert.up_proj", "ffn_up_shexp"},
    {"mlp.shared_expert.down_proj", "ffn_down_shexp"},
    {"mlp.shared_expert_gate", "ffn_gate_inp_shexp"},
    {"mlp.experts.gate_up_proj", "ffn_gate_up_exps"},  // fused [E, 2I, H]
    {"mlp.experts.down_proj", "ffn_down_exps"},        // fused [E, H, I]
    {"block_sparse_moe.experts.gate_up_proj", "ffn_gate_up_exps"},
    {"block_sparse_moe.experts.down_proj", "ffn_down_exps"},
};

// Per-expert names after "...experts.E.".
constexpr NamePair kExpertNames[] = {
    {"gate_proj", "ffn_gate"}, {"up_proj", "ffn_up"}, {"down_proj", "ffn_down"},
    {"w1", "ffn_gate"},        {"w3", "ffn_up"},      {"w2", "ffn_down"},
};

}  // namespace

std::optional<std::string> HfToCanonicalName(std::string_view name) {
  if (name == "model.embed_tokens.weight") return "token_embd.weight";
  if (name == "model.norm.weight") return "output_norm.weight";
  if (name == "lm_head.weight") return "output.weight";
  std::string_view s = name;
  int layer = 0;
  if (!ConsumePrefix(s, "model.layers.") || !ConsumeInt(s, &layer) || !ConsumePrefix(s, ".")) {
    return std::nullopt;
  }
  // Split off the tail (".weight" / ".bias"), or none for fused expert params.
  std::string_view tail;
  for (std::string_view t : {std::string_view(".weight"), std::string_view(".bias")}) {
    if (s.size() > t.size() && s.substr(s.size() - t.size()) == t) {
      tail = t;
      s.remove_suffix(t.size());
      break;
    }
  }
  for (const NamePair& p : kLayerNames) {
    if (s == p.hf) {
      return fmt::format("blk.{}.{}{}", layer, p.canonical, tail.empty() ? ".weight" : tail);
    }
  }
  for (std::string_view experts : {"mlp.experts.", "block_sparse_moe.experts."}) {
    std::string_view e = s;
    int expert = 0;
    if (ConsumePrefix(e, experts) && ConsumeInt(e, &expert) && ConsumePrefix(e, ".")) {
      for (const NamePair& p : kExpertNames) {
        if (e == p.hf) return fmt::format("blk.{}.{}.{}{}", layer, p.canonical, expert, tail);
      }
    }
  }
  return std::nullopt;
}

WeightSource::WeightSource(const ModelFiles& files) : files_(files) {
  for (const std::string& name : files.weights.Names()) {
    const WeightTensor* t = files.weights.Find(name);
    if (files.format == ModelFiles::Format::kGguf) {
      by_canonical_name_[name] = t;
    } else if (auto canonical = HfToCanonicalName(name)) {
      by_canonical_name_[*canonical] = t;
    }
  }
}

const WeightTensor* WeightSource::Find(const std::string& name) const {
  auto it = by_canonical_name_.find(name);
  return it == by_canonical_name_.end() ? nullptr : it->second;
}

Status WeightSource::Missing(const std::string& name) const {
  return Status::Errorf("{}: missing tensor '{}'", files_.path, name);
}

Status WeightSource::CheckUsable(const WeightTensor& t) const {
  if (!GetDTypeTraits(t.dtype).can_dequantize) {
    return Status::Errorf("{}: tensor '{}' has type {}, which tetra cannot use as weights",
                          files_.path, t.name, DTypeName(t.dtype));
  }
  return Status::Ok();
}

StatusOr<MatrixView> WeightSource::Matrix(const std::string& name, int64_t rows,
                                          int64_t cols) const {
  const WeightTensor* t = Find(name);
  if (t == nullptr) return Missing(name);
  TETRA_RETURN_IF_ERROR(CheckUsable(*t));
  if (t->shape != std::vector<int64_t>{rows, cols}) {
    return Status::Errorf("{}: tensor '{}' has shape [{}], expected [{}, {}]", files_.path, t->name,
                          fmt::join(t->shape, ", "), rows, cols);
  }
  return MatrixView::Contiguous(t->dtype, rows, cols, t->data);
}

StatusOr<std::vector<float>> WeightSource::Vector(const std::string& name, int64_t n) const {
  const WeightTensor* t = Find(name);
  if (t == nullptr) return Missing(name);
  TETRA_RETURN_IF_ERROR(CheckUsable(*t));
  if (t->num_elements() != n || (t->shape.size() != 1 && !(t->shape.size() == 2 && t->shape[0] == 1))) {
    return Status::Errorf("{}: tensor '{}' has shape [{}], expected [{}]", files_.path, t->name,
                          fmt::join(t->shape, ", "), n);
  }
  if (n % GetDTypeTraits(t->dtype).block_size != 0) {
    return Status::Errorf("{}: tensor '{}' of type {} has {} values, not whole blocks", files_.path,
                          t->name, DTypeName(t->dtype), n);
  }
  std::vector<float> values(static_cast<size_t>(n));
  DequantizeRow(t->dtype, t->data, values.data(), n);
  return values;
}

StatusOr<MatrixView> WeightSource::SliceOf3d(const WeightTensor& t, int index, int num,
                                             int64_t row_offset, int64_t rows, int64_t cols,
                                             int64_t rows_per_slice) const {
  TETRA_RETURN_IF_ERROR(CheckUsable(t));
  if (t.shape != std::vector<int64_t>{num, rows_per_slice, cols}) {
    return Status::Errorf("{}: tensor '{}' has shape [{}], expected [{}, {}, {}]", files_.path,
                          t.name, fmt::join(t.shape, ", "), num, rows_per_slice, cols);
  }
  const size_t row_bytes = RowBytes(t.dtype, cols);
  const uint8_t* base =
      t.data + (static_cast<size_t>(index) * rows_per_slice + row_offset) * row_bytes;
  return MatrixView{t.dtype, rows, cols, base, row_bytes};
}

StatusOr<MatrixView> WeightSource::ExpertMatrix(int layer, std::string_view kind, int expert,
                                                int num_experts, int64_t rows,
                                                int64_t cols) const {
  const std::string merged = fmt::format("blk.{}.ffn_{}_exps.weight", layer, kind);
  if (const WeightTensor* t = Find(merged)) {
    return SliceOf3d(*t, expert, num_experts, 0, rows, cols, rows);
  }
  if (kind != "down") {
    if (const WeightTensor* t = Find(fmt::format("blk.{}.ffn_gate_up_exps.weight", layer))) {
      return SliceOf3d(*t, expert, num_experts, kind == "gate" ? 0 : rows, rows, cols, 2 * rows);
    }
  }
  const std::string per_expert = fmt::format("blk.{}.ffn_{}.{}.weight", layer, kind, expert);
  if (Has(per_expert)) return Matrix(per_expert, rows, cols);
  return Status::Errorf("{}: missing tensor '{}' (or per-expert '{}')", files_.path, merged,
                        per_expert);
}

}  // namespace tetra
