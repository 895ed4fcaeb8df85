// Helpers shared by the paged attention tests (attention_test.cc,
// shared_prefix_attention_test.cc): a layer's paged storage built from
// random K/V (shuffled blocks, poisoned unused ones, sequences that may share
// a prefix of blocks), the f32 reference over it, a scalar reference of int8
// scores, and the error measures with their bounds.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <numeric>
#include <random>
#include <vector>

#include "base/check.h"
#include "base/thread_pool.h"
#include "kernels/attention/attention.h"
#include "kernels/attention/kv_quantize.h"
#include "kernels/reference/attention.h"
#include "kernels/reference/dequantize.h"

namespace tetra::attention_testing {

struct SequenceSpec {
  int64_t length = 0;      // positions in the cache
  int64_t num_tokens = 0;  // new tokens (the last ones)
  // When shares_prefix_of >= 0: positions [0, shared_tokens) (whole blocks)
  // are those of that earlier sequence, the same K/V in the same blocks (the
  // same block ids), as parallel samples of one prompt share its blocks.
  int shares_prefix_of = -1;
  int64_t shared_tokens = 0;
};

// A layer's paged storage for a batch, built from random f32 K/V: full
// blocks through StoreKvBlock at shuffled physical blocks (with unused
// blocks in between, filled with NaN codes), the open block in f32 with
// NaN past its last position, so a read out of bounds shows. A sequence that
// shares a prefix (SequenceSpec::shares_prefix_of) gets its own blocks only
// after the prefix.
struct PagedBatch {
  KvLayerView layer;
  std::vector<uint8_t> keys, values;
  std::vector<float> key_scales, value_scales;
  struct Sequence {
    SequenceSpec spec;
    std::vector<float> original_k, original_v;  // [length, num_kv_heads, head_dim]
    std::vector<float> stored_k, stored_v;      // what the cache holds, dequantized
    std::vector<int32_t> block_table;
    std::vector<float> open_k, open_v;          // [num_kv_heads, block_tokens, head_dim]
    std::vector<float> q;                       // [num_tokens, num_heads, head_dim]
    std::vector<float> out, reference_out, original_out;
    std::vector<float> int8_reference_out;  // RunInt8Reference
  };
  std::vector<Sequence> sequences;
};

// key_outlier > 1 makes every 16th key channel (from dim 3) key_outlier times
// larger, offset by as much: the outlier channels of real models' keys.
inline void MakePagedBatch(KvDtype dtype, int block_tokens, int num_kv_heads, int head_dim, int num_heads,
                           const std::vector<SequenceSpec>& specs, uint32_t seed, PagedBatch& batch,
                           float key_outlier = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  KvLayerView& layer = batch.layer;
  layer.dtype = dtype;
  layer.block_tokens = block_tokens;
  layer.num_kv_heads = num_kv_heads;
  layer.head_dim = head_dim;
  int64_t num_full_blocks = 0;
  for (const SequenceSpec& s : specs) num_full_blocks += s.length / block_tokens - s.shared_tokens / block_tokens;
  const int64_t num_blocks = num_full_blocks * 2 + 1;  // half of them unused
  std::vector<int32_t> physical(static_cast<size_t>(num_blocks));
  std::iota(physical.begin(), physical.end(), 0);
  std::shuffle(physical.begin(), physical.end(), rng);
  const int bytes = KvDtypeBytes(dtype);
  const uint8_t poison = dtype == KvDtype::kFp8E4M3 ? 0x7F : 0xFF;  // NaN in every dtype
  batch.keys.assign(static_cast<size_t>(num_blocks * layer.block_elements() * bytes), poison);
  batch.values.assign(batch.keys.size(), poison);
  batch.key_scales.assign(static_cast<size_t>(num_blocks * num_kv_heads), std::numeric_limits<float>::quiet_NaN());
  batch.value_scales = batch.key_scales;
  layer.keys = batch.keys.data();
  layer.values = batch.values.data();
  layer.key_scales = batch.key_scales.data();
  layer.value_scales = batch.value_scales.data();

  const int64_t row = static_cast<int64_t>(num_kv_heads) * head_dim;
  size_t next_physical = 0;
  batch.sequences.clear();
  batch.sequences.resize(specs.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    PagedBatch::Sequence& seq = batch.sequences[s];
    seq.spec = specs[s];
    const int64_t length = specs[s].length;
    const PagedBatch::Sequence* source = nullptr;
    int64_t shared = 0;
    if (specs[s].shares_prefix_of >= 0) {
      TETRA_CHECK(static_cast<size_t>(specs[s].shares_prefix_of) < s && specs[s].shared_tokens % block_tokens == 0 &&
                      specs[s].shared_tokens <= std::min(length, specs[specs[s].shares_prefix_of].length),
                  "sequence {} cannot share {} positions of sequence {}", s, specs[s].shared_tokens,
                  specs[s].shares_prefix_of);
      source = &batch.sequences[specs[s].shares_prefix_of];
      shared = specs[s].shared_tokens;
    }
    seq.original_k.resize(static_cast<size_t>(length * row));
    seq.original_v.resize(seq.original_k.size());
    if (shared > 0) {
      std::copy_n(source->original_k.begin(), shared * row, seq.original_k.begin());
      std::copy_n(source->original_v.begin(), shared * row, seq.original_v.begin());
    }
    // Per-head offsets and spreads, so FP8 scales differ between heads and blocks.
    for (int64_t p = shared; p < length; ++p) {
      for (int64_t e = 0; e < row; ++e) {
        const float spread = 0.5f + static_cast<float>((e / head_dim + p / 37) % 3);
        seq.original_k[p * row + e] = normal(rng) * spread;
        seq.original_v[p * row + e] = normal(rng) * spread + 0.25f;
        if (key_outlier > 1.0f && e % head_dim % 16 == 3) {
          seq.original_k[p * row + e] = (seq.original_k[p * row + e] + 1.0f) * key_outlier;
        }
      }
    }
    seq.stored_k = seq.original_k;
    seq.stored_v = seq.original_v;
    if (shared > 0) {
      std::copy_n(source->stored_k.begin(), shared * row, seq.stored_k.begin());
      std::copy_n(source->stored_v.begin(), shared * row, seq.stored_v.begin());
      seq.block_table.assign(source->block_table.begin(), source->block_table.begin() + shared / block_tokens);
    }
    const int64_t full = length / block_tokens;
    std::vector<float> block_k(static_cast<size_t>(layer.block_elements()));
    std::vector<float> block_v(block_k.size());
    for (int64_t b = shared / block_tokens; b < full; ++b) {
      const int32_t block = physical[next_physical];
      next_physical += 2;  // leave a poisoned block between used ones
      seq.block_table.push_back(block);
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int slot = 0; slot < block_tokens; ++slot) {
          for (int i = 0; i < head_dim; ++i) {
            const int64_t from = (b * block_tokens + slot) * row + h * head_dim + i;
            const int64_t to = (static_cast<int64_t>(h) * block_tokens + slot) * head_dim + i;
            block_k[to] = seq.original_k[from];
            block_v[to] = seq.original_v[from];
          }
        }
      }
      StoreKvBlock(layer, block_k.data(), block, batch.keys.data(), batch.key_scales.data());
      StoreKvBlock(layer, block_v.data(), block, batch.values.data(), batch.value_scales.data());
      std::vector<float> back(static_cast<size_t>(head_dim));
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int slot = 0; slot < block_tokens; ++slot) {
          const int64_t at = (b * block_tokens + slot) * row + h * head_dim;
          LoadKvBlockRows(layer, batch.keys.data(), batch.key_scales.data(), block, h, slot, 1,
                          seq.stored_k.data() + at);
          LoadKvBlockRows(layer, batch.values.data(), batch.value_scales.data(), block, h, slot, 1,
                          seq.stored_v.data() + at);
        }
      }
    }
    const int64_t open_start = full * block_tokens;
    seq.open_k.assign(static_cast<size_t>(layer.block_elements()), std::numeric_limits<float>::quiet_NaN());
    seq.open_v = seq.open_k;
    for (int64_t p = open_start; p < length; ++p) {
      for (int h = 0; h < num_kv_heads; ++h) {
        for (int i = 0; i < head_dim; ++i) {
          const int64_t to = (static_cast<int64_t>(h) * block_tokens + (p - open_start)) * head_dim + i;
          seq.open_k[to] = seq.original_k[p * row + h * head_dim + i];
          seq.open_v[to] = seq.original_v[p * row + h * head_dim + i];
        }
      }
    }
    seq.q.resize(static_cast<size_t>(specs[s].num_tokens * num_heads * head_dim));
    for (float& x : seq.q) x = 2.0f * normal(rng);  // sharper than unit scores: the running max matters
    seq.out.assign(seq.q.size(), std::numeric_limits<float>::quiet_NaN());
    seq.reference_out.assign(seq.q.size(), 0.0f);
    seq.original_out.assign(seq.q.size(), 0.0f);
  }
}

inline std::vector<PagedAttentionSequence> Views(PagedBatch& batch) {
  std::vector<PagedAttentionSequence> views;
  for (PagedBatch::Sequence& seq : batch.sequences) {
    PagedAttentionSequence v;
    v.q = seq.q.data();
    v.num_tokens = seq.spec.num_tokens;
    v.kv.length = seq.spec.length;
    v.kv.block_table = seq.block_table.data();
    v.kv.open_keys = seq.open_k.data();
    v.kv.open_values = seq.open_v.data();
    v.out = seq.out.data();
    views.push_back(v);
  }
  return views;
}

// Reference outputs over the stored (dequantized) K/V, and over the originals.
inline void RunReference(const AttentionShape& shape, PagedBatch& batch, ThreadPool& pool) {
  std::vector<AttentionSequence> stored, original;
  for (PagedBatch::Sequence& seq : batch.sequences) {
    AttentionSequence a;
    a.q = seq.q.data();
    a.num_tokens = seq.spec.num_tokens;
    a.first_position = seq.spec.length - seq.spec.num_tokens;
    a.k = seq.stored_k.data();
    a.v = seq.stored_v.data();
    a.out = seq.reference_out.data();
    stored.push_back(a);
    a.k = seq.original_k.data();
    a.v = seq.original_v.data();
    a.out = seq.original_out.data();
    original.push_back(a);
  }
  CausalAttentionBatch(shape, stored, pool);
  CausalAttentionBatch(shape, original, pool);
}

// max |a - b| over max |b| across the batch.
inline double NormalisedMaxError(const PagedBatch& batch, bool against_original) {
  double max_error = 0.0, max_ref = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = against_original ? seq.original_out : seq.reference_out;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      max_error = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_error, err);
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    }
  }
  return max_error / std::max(max_ref, 1e-30);
}

// sqrt(sum (a - b)^2 / sum b^2) across the batch.
inline double RelativeRmsError(const PagedBatch& batch) {
  double error = 0.0, norm = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    for (size_t i = 0; i < seq.original_out.size(); ++i) {
      const double d = static_cast<double>(seq.out[i]) - seq.original_out[i];
      error += d * d;
      norm += static_cast<double>(seq.original_out[i]) * seq.original_out[i];
    }
  }
  return std::sqrt(error / std::max(norm, 1e-30));
}

// Same (dequantized) K/V, f32 arithmetic in a different order and a
// polynomial exp2: a few ulps of f32 relative to the output's magnitude.
inline constexpr double kTightBound = 2e-5;
// Against the original f32 K/V, relative rms error of the outputs; measured
// at most 6.5e-2 (FP8) and 4.2e-3 (BF16) on these shapes, whose scores are
// sharp (q ~ 2 N(0, 1)). A wrong scale or code would be off by ~1.
inline constexpr double kFp8RmsBound = 0.1;
inline constexpr double kBf16RmsBound = 8e-3;

inline const char* DtypeName(KvDtype dtype) {
  return dtype == KvDtype::kF32 ? "f32" : dtype == KvDtype::kBf16 ? "bf16" : "fp8";
}

// The int8 key of an FP8 code, from the spec: round(e4m3 * 127 / 448), ties
// away from zero, saturating at +-127.
inline int Int8KeyOfCode(uint8_t code) {
  const double value = Fp8E4M3ToFloat(code);
  const long magnitude = std::min(127L, std::lround(std::fabs(value) * 127.0 / 448.0));
  return static_cast<int>(value < 0 ? -magnitude : magnitude);
}


// What kInt8Scores computes, from scratch and in double: each row of q
// (times scale * log2 e, in f32 as the kernel does) to q8 = rint(x * 127 /
// amax); full blocks score sum(q8 * k8) * amax / 127 * key_scale * 448 / 127
// over the stored codes; the open block scores x . k in f32 values; softmax
// in base 2; values as stored.
inline void RunInt8Reference(const AttentionShape& shape, PagedBatch& batch) {
  const KvLayerView& layer = batch.layer;
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int bt = layer.block_tokens;
  const float log2_scale = shape.scale * std::numbers::log2e_v<float>;
  const int64_t row = static_cast<int64_t>(shape.num_kv_heads) * dim;
  int key_of_code[256];
  for (int code = 0; code < 256; ++code) key_of_code[code] = Int8KeyOfCode(static_cast<uint8_t>(code));
  for (PagedBatch::Sequence& seq : batch.sequences) {
    const int64_t length = seq.spec.length;
    const int64_t full_keys = length / bt * bt;
    // The full blocks' int8 keys [full_keys, num_kv_heads, head_dim] and scales [full_keys, num_kv_heads].
    std::vector<int> k8(static_cast<size_t>(full_keys * row));
    std::vector<double> key_scale(static_cast<size_t>(full_keys * shape.num_kv_heads));
    for (int64_t p = 0; p < full_keys; ++p) {
      const int32_t block = seq.block_table[p / bt];
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const uint8_t* codes =
            batch.keys.data() + ((static_cast<int64_t>(block) * shape.num_kv_heads + h) * bt + p % bt) * dim;
        for (int i = 0; i < dim; ++i) k8[p * row + h * dim + i] = key_of_code[codes[i]];
        key_scale[p * shape.num_kv_heads + h] = batch.key_scales[block * shape.num_kv_heads + h] * 448.0 / 127.0;
      }
    }
    seq.int8_reference_out.assign(seq.q.size(), 0.0f);
    std::vector<float> x(static_cast<size_t>(dim));
    std::vector<int> q8(static_cast<size_t>(dim));
    std::vector<double> scores(static_cast<size_t>(length));
    for (int64_t t = 0; t < seq.spec.num_tokens; ++t) {
      const int64_t position = length - seq.spec.num_tokens + t;
      for (int head = 0; head < shape.num_heads; ++head) {
        const int h = head / group;
        const float* q = seq.q.data() + (t * shape.num_heads + head) * dim;
        float amax = 0.0f;
        for (int i = 0; i < dim; ++i) {
          x[i] = q[i] * log2_scale;
          amax = std::max(amax, std::fabs(x[i]));
        }
        const bool is_tiny = amax < 1e-30f;
        const float inverse = is_tiny ? 0.0f : 127.0f / amax;
        const double q_scale = is_tiny ? 0.0 : static_cast<double>(amax / 127.0f);
        for (int i = 0; i < dim; ++i) q8[i] = static_cast<int>(std::nearbyint(x[i] * inverse));
        double best = -std::numeric_limits<double>::infinity();
        for (int64_t p = 0; p <= position; ++p) {
          double score = 0.0;
          if (p < full_keys) {
            const int* k = k8.data() + p * row + h * dim;
            int64_t dot = 0;
            for (int i = 0; i < dim; ++i) dot += q8[i] * k[i];
            score = static_cast<double>(dot) * q_scale * key_scale[p * shape.num_kv_heads + h];
          } else {
            for (int i = 0; i < dim; ++i) score += static_cast<double>(x[i]) * seq.original_k[p * row + h * dim + i];
          }
          scores[p] = score;
          best = std::max(best, score);
        }
        double total = 0.0;
        std::vector<double> out(static_cast<size_t>(dim), 0.0);
        for (int64_t p = 0; p <= position; ++p) {
          const double weight = std::exp2(scores[p] - best);
          total += weight;
          for (int i = 0; i < dim; ++i) out[i] += weight * seq.stored_v[p * row + h * dim + i];
        }
        float* dst = seq.int8_reference_out.data() + (t * shape.num_heads + head) * dim;
        for (int i = 0; i < dim; ++i) dst[i] = static_cast<float>(out[i] / total);
      }
    }
  }
}

// max |out - reference| over max |reference| across the batch, reference a
// member of each sequence.
inline double NormalisedMaxErrorAgainst(const PagedBatch& batch,
                                        std::vector<float> PagedBatch::Sequence::*reference) {
  double max_error = 0.0, max_ref = 0.0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = seq.*reference;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      max_error = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_error, err);
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    }
  }
  return max_error / std::max(max_ref, 1e-30);
}

// mean |out - reference| across the batch.
inline double MeanAbsErrorAgainst(const PagedBatch& batch, std::vector<float> PagedBatch::Sequence::*reference) {
  double error = 0.0;
  int64_t count = 0;
  for (const PagedBatch::Sequence& seq : batch.sequences) {
    const std::vector<float>& ref = seq.*reference;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double err = std::fabs(static_cast<double>(seq.out[i]) - ref[i]);
      error += std::isnan(err) ? std::numeric_limits<double>::infinity() : err;
      ++count;
    }
  }
  return error / std::max<int64_t>(count, 1);
}

inline void ClearOutputs(PagedBatch& batch) {
  for (PagedBatch::Sequence& seq : batch.sequences) {
    std::fill(seq.out.begin(), seq.out.end(), std::numeric_limits<float>::quiet_NaN());
  }
}

}  // namespace tetra::attention_testing
