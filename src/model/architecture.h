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
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/weight_source.h"

namespace tetra {

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

// Step scratch of one runner (activations, routing, prepared inputs): each
// runner owns one, so runners share the immutable weights and nothing else.
class Workspace {
 public:
  virtual ~Workspace() = default;
};

class Architecture {
 public:
  virtual ~Architecture() = default;
  // Binds and validates every tensor; errors name the tensor and the problem.
  virtual Status Load(const WeightSource& weights, const LoadOptions& options) = 0;

  virtual std::unique_ptr<Workspace> NewWorkspace() const = 0;
  // Runs one step (model/forward_batch.h): the linear layers and the
  // experts see all tokens of all sequences at once (an expert's weights are
  // read once per step for every token routed to it); attention and RoPE
  // follow each sequence's own positions; each sequence's new keys and
  // values are written into `kv` through its block table and slot. Writes
  // batch.logits. An invalid batch (ValidateForwardBatch) is an error and
  // changes nothing. Immutable weights: any number of runners may call it
  // at once, each with its own workspace, KV storage and pool.
  virtual Status Forward(const ForwardBatch& batch, KvStorage& kv, Workspace& workspace, ThreadPool& pool) const = 0;

  virtual const ModelConfig& config() const = 0;
  // Tokens routed to each expert by the steps run with `workspace`, per MoE
  // layer ([layer][expert]; empty for dense models). For load balancing and metrics.
  virtual std::vector<std::vector<int64_t>> ExpertLoad(const Workspace& workspace) const { return {}; }
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
