// The architecture interface, its registry, and the per-architecture spec.
// Adding an architecture is one file in archs/ plus one line in registry.cc.
#pragma once

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "kernels/attention/attention.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/weight_source.h"

namespace tetra {

// One forward step of one sequence: its new tokens, appended to its KV cache.
struct SequenceStep {
  std::span<const int32_t> tokens;  // [num_tokens]
  bool logits_for_all_tokens = false;  // else only for the last token
};

struct LoadOptions {
  WeightFormat weights = WeightFormat::kReference;
  ThreadPool* pool = nullptr;  // for load-time work such as packing (serial when null)
  // The KV cache's storage type; unset means f32 for reference weights (the
  // exact path) and FP8 E4M3 for W4A8.
  std::optional<KvDtype> kv_dtype;
  int kv_block_tokens = 64;
  // How attention scores full FP8 KV blocks (kernels/attention/attention.h);
  // unset means int8 with W4A8 where the CPU has the int8 build
  // (HasFastInt8Scores), else f32.
  std::optional<AttentionMath> attention_math{};
};

// One sequence's part of a batched step.
struct BatchEntry {
  std::span<const int32_t> tokens;  // [n_i] new tokens
  KvCache* kv = nullptr;            // the sequence's cache; the tokens are appended
  bool logits_for_all_tokens = false;  // else only for its last token
};

class Architecture {
 public:
  virtual ~Architecture() = default;
  // Binds and validates every tensor; errors name the tensor and the problem.
  virtual Status Load(const WeightSource& weights, const LoadOptions& options) = 0;
  // Runs several sequences' new tokens in one step: the linear layers and the
  // experts see all tokens of all sequences at once (an expert's weights are
  // read once per step for every token routed to it); attention and RoPE
  // follow each sequence's own positions [kv.length(), kv.length() + n_i).
  // Writes logits: for each entry in order, n_i rows or 1 row, [rows, vocab].
  virtual void ForwardBatch(std::span<const BatchEntry> batch, float* logits, ThreadPool& pool) = 0;
  // One sequence (a batch of one).
  void Forward(const SequenceStep& step, KvCache& kv, float* logits, ThreadPool& pool) {
    const BatchEntry entry{step.tokens, &kv, step.logits_for_all_tokens};
    ForwardBatch(std::span<const BatchEntry>(&entry, 1), logits, pool);
  }
  virtual const ModelConfig& config() const = 0;
  // Tokens routed to each expert since load, per MoE layer ([layer][expert];
  // empty for dense models). For load balancing and metrics.
  virtual std::vector<std::vector<int64_t>> ExpertLoad() const { return {}; }
};

// What distinguishes one llama-family architecture from another.
struct ArchSpec {
  std::string name;                         // "qwen2_moe"
  std::vector<std::string> hf_model_types;  // config.json "model_type" values
  std::string gguf_arch;                    // GGUF general.architecture
  bool is_moe = false;                      // picks between e.g. llama and mixtral in GGUF
  bool norm_topk_prob_default = false;      // when the config does not say
  bool norm_topk_prob_always = false;       // mixtral renormalises unconditionally
  // llama.cpp's converter permutes Q/K rows of the `llama` arch so that GGUF
  // files use interleaved RoPE; other archs keep the NEOX pairing.
  RopeStyle gguf_rope_style = RopeStyle::kNeox;
  // HF configs name the expert FFN size differently per family.
  std::string hf_expert_intermediate_key = "moe_intermediate_size";
  std::string hf_num_experts_key = "num_experts";
  // Creates the forward implementation (the shared decoder unless overridden).
  std::unique_ptr<Architecture> (*create)(const ModelConfig& config) = nullptr;
};

// All registered architectures.
const std::vector<ArchSpec>& ArchRegistry();
// nullptr when unknown.
const ArchSpec* FindArchForHf(const std::string& model_type);
const ArchSpec* FindArchForGguf(const std::string& gguf_arch, bool has_experts);

// The shared llama-family decoder (dense or MoE, per layer by its tensors).
std::unique_ptr<Architecture> CreateDecoder(const ModelConfig& config);

}  // namespace tetra
