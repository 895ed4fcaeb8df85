// The shared llama-family decoder: RMSNorm, GQA attention with RoPE (optional
// q/k/v bias and per-head q/k norm), and per layer either a SwiGLU FFN or a
// mixture of SwiGLU experts (optional shared expert with a sigmoid gate).
// Linear layers run in the chosen weight format (model/linear.h); the router
// and the shared-expert gate stay f32.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/check.h"
#include "kernels/attention/attention.h"
#include "kernels/reference/matmul.h"
#include "kernels/reference/ops.h"
#include "model/architecture.h"
#include "model/linear.h"
#include "model/moe_ffn.h"

namespace tetra {
namespace {

struct Mlp {  // SwiGLU: down(silu(gate x) * up x)
  Linear gate, up, down;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm;  // [hidden]
  Linear q, k, v, o;
  std::vector<float> q_bias, k_bias, v_bias;  // empty when absent
  std::vector<float> q_norm, k_norm;          // [head_dim], empty when absent
  // Dense layers use `dense`; MoE layers the rest.
  Mlp dense;
  MoeFfn moe;
  Mlp shared;                   // empty when absent
  MatrixView shared_gate;       // [1, hidden], empty when absent
  bool is_moe = false;
  int moe_index = -1;  // among the MoE layers, for per-expert counters
};

// One runner's step scratch.
struct DecoderWorkspace : Workspace {
  std::vector<float> x, normed, q, k, v, attn, proj, cos_values, sin_values, gate, up, down, shared_weight;
  std::vector<PagedAttentionSequence> sequences;
  LinearInput input;  // prepared activations, reused across layers
  MoeScratch moe;
  std::vector<std::vector<int64_t>> expert_load;  // [moe layer][expert] tokens routed
};

class Decoder : public Architecture {
 public:
  explicit Decoder(const ModelConfig& config) : config_(config) {}

  const ModelConfig& config() const override { return config_; }

  Status Load(const WeightSource& w, const LoadOptions& options) override {
    const ModelConfig& c = config_;
    // Int8 scores by default with W4A8 where the CPU has their fast build.
    attention_math_ = options.attention_math.value_or(
        options.weights == WeightFormat::kW4A8 && HasFastInt8Scores() ? AttentionMath::kInt8Scores
                                                                       : AttentionMath::kF32);
    // Its integer sums are exact up to this head size; beyond it, f32.
    if (c.head_dim > kMaxInt8ScoresHeadDim) attention_math_ = AttentionMath::kF32;
    // Binds a matrix for the chosen weight format (reference or packed).
    // Under W4A8 the FFN weights (experts, shared experts, dense FFNs) take 4
    // bits; attention projections keep 8 bits when the file holds 8 or more
    // (they are a small share of an MoE's weights but most of the 4-bit
    // error: on the MoE fixtures mean KL 0.025 -> 0.011) and Q6_K's 6 bits;
    // lower-bit files stay at their 4 bits (Q4_0/Q4_1/Q4_K repack losslessly).
    auto bind = [&](const std::string& tensor, int64_t rows, int64_t cols,
                    bool is_attention = false) -> StatusOr<Linear> {
      auto view = w.Matrix(tensor, rows, cols);
      if (!view.ok()) return view.status();
      const bool eight_bit = is_attention && (HoldsEightBitsOrMore(view->dtype) || view->dtype == DType::kQ6_K);
      return Linear::Bind(*view, options.weights, w.display_path() + ": " + tensor, eight_bit, options.pool);
    };
    auto bind_expert = [&](int layer, std::string_view kind, int e, int64_t rows, int64_t cols) -> StatusOr<Linear> {
      auto view = w.ExpertMatrix(layer, kind, e, c.num_experts, rows, cols);
      if (!view.ok()) return view.status();
      return Linear::Bind(*view, options.weights, fmt::format("{}: blk.{}.{} expert {}", w.display_path(), layer, kind, e),
                          false, options.pool);
    };
    const int64_t hidden = c.hidden_size;
    const int64_t q_size = static_cast<int64_t>(c.num_heads) * c.head_dim;
    const int64_t kv_size = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
    TETRA_ASSIGN_OR_RETURN(embedding_, w.Matrix("token_embd.weight", c.vocab_size, hidden));
    TETRA_ASSIGN_OR_RETURN(output_norm_, w.Vector("output_norm.weight", hidden));
    {
      // The output head keeps 8-bit weights under W4A8: it is one matrix but
      // sets every logit, and 4-bit rounding there costs the most accuracy.
      const std::string head = w.Has("output.weight") ? "output.weight" : "token_embd.weight";  // tied
      TETRA_ASSIGN_OR_RETURN(const MatrixView head_view, w.Matrix(head, c.vocab_size, hidden));
      TETRA_ASSIGN_OR_RETURN(output_, Linear::Bind(head_view, options.weights, head, /*eight_bit=*/true, options.pool));
    }
    if (w.Has("rope_freqs.weight")) {
      TETRA_ASSIGN_OR_RETURN(config_.rope.freq_factors,
                             w.Vector("rope_freqs.weight", c.rope.rotary_dim / 2));
    }
    rope_ = RopeTable(config_.rope.InverseFrequencies());

    layers_.resize(c.num_layers);
    for (int i = 0; i < c.num_layers; ++i) {
      LayerWeights& l = layers_[i];
      auto name = [i](const char* n) { return fmt::format("blk.{}.{}", i, n); };
      TETRA_ASSIGN_OR_RETURN(l.attn_norm, w.Vector(name("attn_norm.weight"), hidden));
      TETRA_ASSIGN_OR_RETURN(l.ffn_norm, w.Vector(name("ffn_norm.weight"), hidden));
      TETRA_ASSIGN_OR_RETURN(l.q, bind(name("attn_q.weight"), q_size, hidden, /*is_attention=*/true));
      TETRA_ASSIGN_OR_RETURN(l.k, bind(name("attn_k.weight"), kv_size, hidden, /*is_attention=*/true));
      TETRA_ASSIGN_OR_RETURN(l.v, bind(name("attn_v.weight"), kv_size, hidden, /*is_attention=*/true));
      TETRA_ASSIGN_OR_RETURN(l.o, bind(name("attn_output.weight"), hidden, q_size, /*is_attention=*/true));
      if (w.Has(name("attn_q.bias"))) {
        TETRA_ASSIGN_OR_RETURN(l.q_bias, w.Vector(name("attn_q.bias"), q_size));
        TETRA_ASSIGN_OR_RETURN(l.k_bias, w.Vector(name("attn_k.bias"), kv_size));
        TETRA_ASSIGN_OR_RETURN(l.v_bias, w.Vector(name("attn_v.bias"), kv_size));
      }
      if (w.Has(name("attn_q_norm.weight"))) {
        TETRA_ASSIGN_OR_RETURN(l.q_norm, w.Vector(name("attn_q_norm.weight"), c.head_dim));
        TETRA_ASSIGN_OR_RETURN(l.k_norm, w.Vector(name("attn_k_norm.weight"), c.head_dim));
      }
      l.is_moe = c.is_moe() && w.Has(name("ffn_gate_inp.weight"));
      if (!l.is_moe) {
        const int64_t inter = c.intermediate_size;
        TETRA_ASSIGN_OR_RETURN(l.dense.gate, bind(name("ffn_gate.weight"), inter, hidden));
        TETRA_ASSIGN_OR_RETURN(l.dense.up, bind(name("ffn_up.weight"), inter, hidden));
        TETRA_ASSIGN_OR_RETURN(l.dense.down, bind(name("ffn_down.weight"), hidden, inter));
        continue;
      }
      const int64_t inter = c.expert_intermediate_size;
      MatrixView router;
      TETRA_ASSIGN_OR_RETURN(router, w.Matrix(name("ffn_gate_inp.weight"), c.num_experts, hidden));
      std::vector<ExpertWeights> experts(c.num_experts);
      for (int e = 0; e < c.num_experts; ++e) {
        TETRA_ASSIGN_OR_RETURN(experts[e].gate, bind_expert(i, "gate", e, inter, hidden));
        TETRA_ASSIGN_OR_RETURN(experts[e].up, bind_expert(i, "up", e, inter, hidden));
        TETRA_ASSIGN_OR_RETURN(experts[e].down, bind_expert(i, "down", e, hidden, inter));
      }
      l.moe = MoeFfn(router, std::move(experts), c.num_experts_per_token, c.norm_topk_prob);
      l.moe_index = num_moe_layers_++;
      if (c.shared_expert_intermediate_size > 0) {
        const int64_t s = c.shared_expert_intermediate_size;
        TETRA_ASSIGN_OR_RETURN(l.shared.gate, bind(name("ffn_gate_shexp.weight"), s, hidden));
        TETRA_ASSIGN_OR_RETURN(l.shared.up, bind(name("ffn_up_shexp.weight"), s, hidden));
        TETRA_ASSIGN_OR_RETURN(l.shared.down, bind(name("ffn_down_shexp.weight"), hidden, s));
        if (w.Has(name("ffn_gate_inp_shexp.weight"))) {
          const WeightTensor* t = w.Find(name("ffn_gate_inp_shexp.weight"));
          // GGUF stores the gate as a vector [hidden], HF as a [1, hidden] matrix.
          if (t->shape.size() == 1) {
            if (t->shape[0] != hidden || t->dtype != DType::kF32) {
              return Status::Errorf("{}: tensor '{}' must be an F32 vector of {} values",
                                    w.display_path(), t->name, hidden);
            }
            l.shared_gate = MatrixView::Contiguous(t->dtype, 1, hidden, t->data);
          } else {
            TETRA_ASSIGN_OR_RETURN(l.shared_gate, w.Matrix(name("ffn_gate_inp_shexp.weight"), 1, hidden));
          }
        }
      }
    }
    return Status::Ok();
  }

  std::unique_ptr<Workspace> NewWorkspace() const override {
    auto workspace = std::make_unique<DecoderWorkspace>();
    for (const LayerWeights& l : layers_) {
      if (l.is_moe) workspace->expert_load.emplace_back(l.moe.num_experts(), 0);
    }
    return workspace;
  }

  std::vector<std::vector<int64_t>> ExpertLoad(const Workspace& workspace) const override {
    return static_cast<const DecoderWorkspace&>(workspace).expert_load;
  }

  Status Forward(const ForwardBatch& batch, KvStorage& kv, Workspace& workspace, ThreadPool& pool) const override {
    const ModelConfig& c = config_;
    const ForwardLimits limits{c.vocab_size, c.max_position, kv.options().block_tokens, kv.num_blocks(), kv.num_slots()};
    TETRA_RETURN_IF_ERROR(ValidateForwardBatch(batch, limits));
    DecoderWorkspace& ws = static_cast<DecoderWorkspace&>(workspace);
    const int64_t hidden = c.hidden_size;
    const int64_t q_size = static_cast<int64_t>(c.num_heads) * c.head_dim;
    const int64_t kv_size = static_cast<int64_t>(c.num_kv_heads) * c.head_dim;
    const std::span<const ForwardSequence> seqs = batch.sequences;
    const int64_t n = static_cast<int64_t>(batch.tokens.size());

    // Step scratch, resized in place, so steady decode allocates nothing.
    std::vector<float>& x = ws.x;           // [n, hidden] residual stream
    std::vector<float>& normed = ws.normed; // [n, hidden]
    std::vector<float>& q = ws.q;           // [n, num_heads * head_dim]
    std::vector<float>& k = ws.k;           // [n, num_kv_heads * head_dim]
    std::vector<float>& v = ws.v;
    std::vector<float>& attn = ws.attn;     // [n, num_heads * head_dim]
    std::vector<float>& proj = ws.proj;     // [n, hidden]
    x.resize(n * hidden);
    normed.resize(n * hidden);
    q.resize(n * q_size);
    k.resize(n * kv_size);
    v.resize(n * kv_size);
    attn.resize(n * q_size);
    proj.resize(n * hidden);

    const int64_t num_pairs = rope_.num_pairs();
    std::vector<float>& cos_values = ws.cos_values;  // [n, num_pairs]
    std::vector<float>& sin_values = ws.sin_values;
    cos_values.resize(n * num_pairs);
    sin_values.resize(n * num_pairs);
    for (const ForwardSequence& seq : seqs) {
      for (int64_t i = 0; i < seq.num_tokens; ++i) {
        const int64_t t = seq.first_token + i;
        DequantizeMatrixRow(embedding_, batch.tokens[t], &x[t * hidden]);
        rope_.Compute(seq.start_position + i, &cos_values[t * num_pairs], &sin_values[t * num_pairs]);
      }
    }
    const AttentionShape shape{c.num_heads, c.num_kv_heads, c.head_dim,
                               1.0f / std::sqrt(static_cast<float>(c.head_dim))};
    std::vector<PagedAttentionSequence>& sequences = ws.sequences;
    sequences.resize(seqs.size());

    for (int layer = 0; layer < c.num_layers; ++layer) {
      const LayerWeights& l = layers_[layer];
      for (int64_t t = 0; t < n; ++t) {
        RmsNorm(&x[t * hidden], l.attn_norm.data(), c.rms_norm_eps, hidden, &normed[t * hidden]);
      }
      const LinearTarget qkv[] = {{&l.q, q.data(), q_size}, {&l.k, k.data(), kv_size}, {&l.v, v.data(), kv_size}};
      ApplyShared(qkv, normed.data(), n, &ws.input, pool);
      for (int64_t t = 0; t < n; ++t) {
        float* qt = &q[t * q_size];
        float* kt = &k[t * kv_size];
        float* vt = &v[t * kv_size];
        if (!l.q_bias.empty()) {
          for (int64_t i = 0; i < q_size; ++i) qt[i] += l.q_bias[i];
          for (int64_t i = 0; i < kv_size; ++i) kt[i] += l.k_bias[i];
          for (int64_t i = 0; i < kv_size; ++i) vt[i] += l.v_bias[i];
        }
        if (!l.q_norm.empty()) {
          for (int h = 0; h < c.num_heads; ++h) {
            float* head = qt + h * c.head_dim;
            RmsNorm(head, l.q_norm.data(), c.rms_norm_eps, c.head_dim, head);
          }
          for (int h = 0; h < c.num_kv_heads; ++h) {
            float* head = kt + h * c.head_dim;
            RmsNorm(head, l.k_norm.data(), c.rms_norm_eps, c.head_dim, head);
          }
        }
        ApplyRope(qt, c.num_heads, c.head_dim, num_pairs, &cos_values[t * num_pairs],
                  &sin_values[t * num_pairs], c.rope.style);
        ApplyRope(kt, c.num_kv_heads, c.head_dim, num_pairs, &cos_values[t * num_pairs],
                  &sin_values[t * num_pairs], c.rope.style);
      }
      // Append each sequence's keys and values to its cache; attend per sequence.
      for (size_t i = 0; i < seqs.size(); ++i) {
        const ForwardSequence& seq = seqs[i];
        const int64_t first = seq.first_token;
        kv.Write(layer, seq.block_table, seq.slot, seq.start_position, seq.num_tokens, &k[first * kv_size],
                 &v[first * kv_size]);
        sequences[i] = PagedAttentionSequence{&q[first * q_size], seq.num_tokens,
                                              kv.View(layer, seq.block_table, seq.slot,
                                                      seq.start_position + seq.num_tokens),
                                              &attn[first * q_size]};
      }
      if (batch.on_layer_written) batch.on_layer_written(layer);
      PagedAttention(shape, kv.layer(layer), sequences, batch.shared_prefixes, pool, attention_math_);
      l.o.Apply(attn.data(), n, proj.data(), &ws.input, pool);
      for (int64_t i = 0; i < n * hidden; ++i) x[i] += proj[i];

      for (int64_t t = 0; t < n; ++t) {
        RmsNorm(&x[t * hidden], l.ffn_norm.data(), c.rms_norm_eps, hidden, &normed[t * hidden]);
      }
      if (l.is_moe) {
        MoeLayer(l, normed.data(), n, proj.data(), ws, ws.expert_load[l.moe_index].data(), pool);
      } else {
        std::fill(proj.begin(), proj.end(), 0.0f);
        MlpAccumulate(l.dense, normed.data(), n, nullptr, proj.data(), ws, pool);
      }
      for (int64_t i = 0; i < n * hidden; ++i) x[i] += proj[i];
    }

    // Final norm of the rows that get logits, gathered in sequence order.
    int64_t num_logit_rows = 0;
    for (const ForwardSequence& seq : seqs) {
      const int64_t end = seq.first_token + seq.num_tokens;
      const int64_t first_row = end - seq.num_logit_rows();
      for (int64_t t = first_row; t < end; ++t, ++num_logit_rows) {
        RmsNorm(&x[t * hidden], output_norm_.data(), c.rms_norm_eps, hidden, &normed[num_logit_rows * hidden]);
      }
    }
    if (num_logit_rows > 0) output_.Apply(normed.data(), num_logit_rows, batch.logits.data(), &ws.input, pool);
    return Status::Ok();
  }

 private:
  // out[t] += weight[t] * mlp(x[t]) for t in [0, n); weights nullptr means 1.
  void MlpAccumulate(const Mlp& mlp, const float* x, int64_t n, const float* weights, float* out,
                     DecoderWorkspace& ws, ThreadPool& pool) const {
    const int64_t inter = mlp.gate.rows();
    const int64_t hidden = mlp.down.rows();
    std::vector<float>& gate = ws.gate;  // [n, inter]
    std::vector<float>& up = ws.up;
    std::vector<float>& down = ws.down;  // [n, hidden]
    gate.resize(n * inter);
    up.resize(n * inter);
    down.resize(n * hidden);
    const LinearTarget gate_up[] = {{&mlp.gate, gate.data(), inter}, {&mlp.up, up.data(), inter}};
    ApplyShared(gate_up, x, n, &ws.input, pool);
    SiluMul(gate.data(), up.data(), n * inter, gate.data());
    mlp.down.Apply(gate.data(), n, down.data(), &ws.input, pool);
    for (int64_t t = 0; t < n; ++t) {
      const float w = weights ? weights[t] : 1.0f;
      for (int64_t i = 0; i < hidden; ++i) out[t * hidden + i] += w * down[t * hidden + i];
    }
  }

  // Routed experts (model/moe_ffn.h), plus the shared expert scaled by its
  // sigmoid gate where the architecture has one.
  void MoeLayer(const LayerWeights& l, const float* x, int64_t n, float* out, DecoderWorkspace& ws,
                int64_t* tokens_per_expert, ThreadPool& pool) const {
    l.moe.Forward(x, n, out, ws.moe, tokens_per_expert, pool);
    if (!l.shared.gate.empty()) {
      std::vector<float>& shared_weight = ws.shared_weight;  // [n]
      shared_weight.assign(n, 1.0f);
      if (!l.shared_gate.empty()) {
        MatMul(l.shared_gate, x, n, shared_weight.data(), pool);
        for (float& s : shared_weight) s = Sigmoid(s);
      }
      MlpAccumulate(l.shared, x, n, shared_weight.data(), out, ws, pool);
    }
  }

  ModelConfig config_;
  MatrixView embedding_;
  Linear output_;
  AttentionMath attention_math_ = AttentionMath::kF32;
  std::vector<float> output_norm_;
  RopeTable rope_;
  std::vector<LayerWeights> layers_;
  int num_moe_layers_ = 0;
};

}  // namespace

std::unique_ptr<Architecture> CreateDecoder(const ModelConfig& config) {
  return std::make_unique<Decoder>(config);
}

}  // namespace tetra
