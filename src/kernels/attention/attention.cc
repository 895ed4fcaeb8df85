#include "kernels/attention/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>

#include "base/check.h"
#include "base/cpu_features.h"
#include "kernels/attention/attention_internal.h"

namespace tetra {

namespace attention_internal {

namespace {

#if defined(TETRA_ATTENTION_HAVE_X86_KERNELS)
// CpuFeatures has no VL or VBMI; the compiler's CPU model has.
bool CpuRunsAvx512Vnni() {
  static const bool runs = [] {
    const CpuFeatures& cpu = GetCpuFeatures();
    __builtin_cpu_init();
    return cpu.avx512f && cpu.avx512bw && cpu.avx512vnni && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512vbmi");
  }();
  return runs;
}
#endif

}  // namespace

AttendFn BestAttendFn(bool int8_scores) {
#if defined(TETRA_ATTENTION_HAVE_X86_KERNELS)
  const CpuFeatures& cpu = GetCpuFeatures();
  // For f32 scores the VNNI build is the avx512 one with more flags; the
  // avx512 build stays the default there.
  if (int8_scores && CpuRunsAvx512Vnni()) return AttendAvx512Vnni;
  if (cpu.avx512f) return AttendAvx512;
  if (cpu.avx2 && cpu.fma && cpu.f16c) return AttendAvx2;
#else
  (void)int8_scores;
#endif
  return AttendGeneric;
}

}  // namespace attention_internal

namespace {

using attention_internal::AttendFn;
static_assert(kMaxQueryHeadsPerKvHead <= attention_internal::kMaxTaskRows, "a task holds one token's whole group");
using attention_internal::AttendTask;

// Query rows (tokens x q heads of a group) a prefill tile aims at: enough to
// reuse each dequantized key tile many times, few enough for many tiles.
constexpr int kPrefillTileRows = 64;

struct WorkItem {
  AttendTask task;
  int64_t cost = 0;  // rows x keys, to hand out the longest first
};

// A decode sequence's KV head whose parts are merged after the main loop.
struct MergeItem {
  const PagedAttentionSequence* sequence = nullptr;
  int kv_head = 0;
  int num_parts = 0;
  int num_tokens = 0;
  int64_t first_token = 0;
  float* partials = nullptr;  // num_parts x [num_tokens * group, 2 + head_dim]
};

// Per-call state, kept by the calling thread and reused, so steady calls
// allocate nothing.
struct CallScratch {
  std::vector<WorkItem> items;
  std::vector<MergeItem> merges;
  std::vector<int64_t> decode_lengths;
  std::vector<int> decode_parts;
  std::vector<float> partials;
};

void CheckInputs(const AttentionShape& shape, const KvLayerView& layer,
                 std::span<const PagedAttentionSequence> sequences, AttentionMath math) {
  TETRA_CHECK(shape.num_kv_heads > 0 && shape.num_heads % shape.num_kv_heads == 0,
              "{} q heads over {} KV heads", shape.num_heads, shape.num_kv_heads);
  TETRA_CHECK(shape.num_heads / shape.num_kv_heads <= kMaxQueryHeadsPerKvHead,
              "GQA group of {} q heads per KV head is over {}", shape.num_heads / shape.num_kv_heads,
              kMaxQueryHeadsPerKvHead);
  TETRA_CHECK(layer.num_kv_heads == shape.num_kv_heads && layer.head_dim == shape.head_dim && layer.head_dim > 0,
              "layer has {} KV heads of {} dims, attention {} of {}", layer.num_kv_heads, layer.head_dim,
              shape.num_kv_heads, shape.head_dim);
  TETRA_CHECK(layer.block_tokens > 0, "layer block_tokens {}", layer.block_tokens);
  TETRA_CHECK(math != AttentionMath::kInt8Scores || shape.head_dim <= kMaxInt8ScoresHeadDim,
              "int8 scores with head_dim {} over {}", shape.head_dim, kMaxInt8ScoresHeadDim);
  for (size_t s = 0; s < sequences.size(); ++s) {
    const PagedAttentionSequence& seq = sequences[s];
    TETRA_CHECK(0 <= seq.num_tokens && seq.num_tokens <= seq.kv.length,
                "sequence {}: {} new tokens but {} positions in the cache", s, seq.num_tokens, seq.kv.length);
    if (seq.num_tokens == 0) continue;
    TETRA_CHECK(seq.q != nullptr && seq.out != nullptr, "sequence {}: missing q or out", s);
    TETRA_CHECK(seq.kv.length < layer.block_tokens || seq.kv.block_table != nullptr,
                "sequence {}: {} positions but no block table", s, seq.kv.length);
    TETRA_CHECK(seq.kv.length % layer.block_tokens == 0 ||
                    (seq.kv.open_keys != nullptr && seq.kv.open_values != nullptr),
                "sequence {}: {} positions but no open block", s, seq.kv.length);
  }
  if (layer.dtype == KvDtype::kFp8E4M3) {
    TETRA_CHECK(layer.key_scales != nullptr && layer.value_scales != nullptr, "FP8 KV layer without scales");
  }
}

AttendFn AttendFnFor(AttentionIsa isa, AttentionMath math) {
  switch (isa) {
    case AttentionIsa::kBest: return attention_internal::BestAttendFn(math == AttentionMath::kInt8Scores);
    case AttentionIsa::kGeneric: return attention_internal::AttendGeneric;
#if defined(TETRA_ATTENTION_HAVE_X86_KERNELS)
    case AttentionIsa::kAvx2: return attention_internal::AttendAvx2;
    case AttentionIsa::kAvx512: return attention_internal::AttendAvx512;
    case AttentionIsa::kAvx512Vnni:
      TETRA_CHECK(attention_internal::CpuRunsAvx512Vnni(),
                  "attention kernel avx512vnni: this CPU lacks AVX-512 BW, VL, VNNI or VBMI");
      return attention_internal::AttendAvx512Vnni;
#else
    default: break;
#endif
  }
  TETRA_CHECK(false, "attention kernel {} is not built for this machine", AttentionIsaName(isa));
  return nullptr;
}

// Softmax merge of one (sequence, KV head)'s parts into its output rows.
void MergeParts(const AttentionShape& shape, const MergeItem& merge) {
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int rows = merge.num_tokens * group;
  const int64_t part_stride = static_cast<int64_t>(rows) * (2 + dim);
  for (int r = 0; r < rows; ++r) {
    float row_max = -std::numeric_limits<float>::infinity();
    for (int p = 0; p < merge.num_parts; ++p) {
      row_max = std::max(row_max, merge.partials[p * part_stride + static_cast<int64_t>(r) * (2 + dim)]);
    }
    float* out = merge.sequence->out + (merge.first_token + r / group) * shape.num_heads * dim +
                 static_cast<int64_t>(merge.kv_head * group + r % group) * dim;
    std::fill(out, out + dim, 0.0f);
    float total = 0.0f;
    for (int p = 0; p < merge.num_parts; ++p) {
      const float* part = merge.partials + p * part_stride + static_cast<int64_t>(r) * (2 + dim);
      if (part[1] == 0.0f) continue;  // the part held no key this row sees
      const float weight = std::exp2(part[0] - row_max);
      total += part[1] * weight;
      for (int i = 0; i < dim; ++i) out[i] += part[2 + i] * weight;
    }
    const float inverse = 1.0f / total;
    for (int i = 0; i < dim; ++i) out[i] *= inverse;
  }
}

// The parts a decode sequence is cut into: the plan's, at most one per
// block, and 1 when its rows do not fit one task.
int DecodeParts(const PagedAttentionSequence& seq, int planned, int group, int block_tokens) {
  const int64_t num_blocks = (seq.kv.length + block_tokens - 1) / block_tokens;
  if (seq.num_tokens * group > attention_internal::kMaxTaskRows) return 1;
  return static_cast<int>(std::min<int64_t>(planned, num_blocks));
}

}  // namespace

std::vector<AttentionIsa> SupportedAttentionIsas() {
  std::vector<AttentionIsa> isas = {AttentionIsa::kGeneric};
#if defined(TETRA_ATTENTION_HAVE_X86_KERNELS)
  const CpuFeatures& cpu = GetCpuFeatures();
  if (cpu.avx2 && cpu.fma && cpu.f16c) isas.push_back(AttentionIsa::kAvx2);
  if (cpu.avx512f) isas.push_back(AttentionIsa::kAvx512);
  if (attention_internal::CpuRunsAvx512Vnni()) isas.push_back(AttentionIsa::kAvx512Vnni);
#endif
  return isas;
}

bool HasFastInt8Scores() {
  static const bool fast = SupportedAttentionIsas().back() == AttentionIsa::kAvx512Vnni;
  return fast;
}

const char* AttentionIsaName(AttentionIsa isa) {
  switch (isa) {
    case AttentionIsa::kBest: return "best";
    case AttentionIsa::kGeneric: return "generic";
    case AttentionIsa::kAvx2: return "avx2";
    case AttentionIsa::kAvx512: return "avx512";
    case AttentionIsa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

const char* AttentionMathName(AttentionMath math) {
  switch (math) {
    case AttentionMath::kF32: return "f32";
    case AttentionMath::kInt8Scores: return "int8";
  }
  return "unknown";
}

void PlanKvSplitsInto(std::span<const int64_t> kv_lengths, int num_kv_heads, int num_threads, std::span<int> parts) {
  TETRA_CHECK(parts.size() == kv_lengths.size(), "{} part counts for {} sequences", parts.size(), kv_lengths.size());
  int64_t total = 0;
  for (int64_t length : kv_lengths) total += length * std::max(1, num_kv_heads);
  // The piece length that cuts the whole batch into kKvPiecesPerThread
  // pieces per thread, but never below the minimum part.
  const int64_t pieces_wanted = static_cast<int64_t>(kKvPiecesPerThread) * std::max(1, num_threads);
  const int64_t piece = std::max(kMinKvPartTokens, (total + pieces_wanted - 1) / pieces_wanted);
  for (size_t s = 0; s < kv_lengths.size(); ++s) {
    const int64_t length = kv_lengths[s];
    if (num_threads <= 1 || length < 2 * kMinKvPartTokens) {
      parts[s] = 1;
      continue;
    }
    const int64_t wanted = (length + piece - 1) / piece;
    parts[s] = static_cast<int>(std::clamp<int64_t>(wanted, 1, length / kMinKvPartTokens));
  }
}

std::vector<int> PlanKvSplits(std::span<const int64_t> kv_lengths, int num_kv_heads, int num_threads) {
  std::vector<int> parts(kv_lengths.size());
  PlanKvSplitsInto(kv_lengths, num_kv_heads, num_threads, parts);
  return parts;
}

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, ThreadPool& pool, AttentionMath math) {
  PagedAttention(shape, layer, sequences, pool, AttentionIsa::kBest, math);
}

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, ThreadPool& pool, AttentionIsa isa,
                    AttentionMath math) {
  CheckInputs(shape, layer, sequences, math);
  const AttendFn attend = AttendFnFor(isa, math);
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int block_tokens = layer.block_tokens;
  const int max_task_tokens = attention_internal::kMaxTaskRows / group;

  thread_local CallScratch call_scratch;
  CallScratch& scratch = call_scratch;
  scratch.items.clear();
  scratch.merges.clear();

  AttendTask base;
  base.layer = &layer;
  base.group = group;
  base.num_heads = shape.num_heads;
  base.log2_scale = shape.scale * std::numbers::log2e_v<float>;
  base.int8_scores = math == AttentionMath::kInt8Scores;

  // Decode sequences: the split plan over their KV lengths.
  scratch.decode_lengths.clear();
  for (const PagedAttentionSequence& seq : sequences) {
    if (seq.num_tokens > 0 && seq.num_tokens <= kMaxDecodeTokens) scratch.decode_lengths.push_back(seq.kv.length);
  }
  scratch.decode_parts.resize(scratch.decode_lengths.size());
  PlanKvSplitsInto(scratch.decode_lengths, shape.num_kv_heads, pool.num_threads(), scratch.decode_parts);

  // Partial-state space for split sequences, sized before any pointer into it is taken.
  int64_t partial_floats = 0;
  {
    size_t d = 0;
    for (const PagedAttentionSequence& seq : sequences) {
      if (seq.num_tokens == 0 || seq.num_tokens > kMaxDecodeTokens) continue;
      const int parts = DecodeParts(seq, scratch.decode_parts[d++], group, block_tokens);
      if (parts > 1) partial_floats += shape.num_kv_heads * parts * seq.num_tokens * group * (2 + dim);
    }
  }
  if (static_cast<int64_t>(scratch.partials.size()) < partial_floats) scratch.partials.resize(partial_floats);

  size_t decode_index = 0;
  float* next_partial = scratch.partials.data();
  for (const PagedAttentionSequence& seq : sequences) {
    if (seq.num_tokens == 0) continue;
    const int64_t first_position = seq.kv.length - seq.num_tokens;
    AttendTask task = base;
    task.kv = &seq.kv;
    if (seq.num_tokens <= kMaxDecodeTokens) {
      const int64_t num_blocks = (seq.kv.length + block_tokens - 1) / block_tokens;
      const int parts = DecodeParts(seq, scratch.decode_parts[decode_index++], group, block_tokens);
      // A group too large for one task's rows takes its tokens in pieces (never split then).
      const int tokens_per_task = static_cast<int>(std::min<int64_t>(seq.num_tokens, max_task_tokens));
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        task.kv_head = h;
        if (parts == 1) {
          for (int64_t t0 = 0; t0 < seq.num_tokens; t0 += tokens_per_task) {
            task.num_tokens = static_cast<int>(std::min<int64_t>(tokens_per_task, seq.num_tokens - t0));
            task.q = seq.q + t0 * shape.num_heads * dim;
            task.out = seq.out + t0 * shape.num_heads * dim;
            task.partial = nullptr;
            task.first_position = first_position + t0;
            task.key_begin = 0;
            task.key_end = seq.kv.length;
            scratch.items.push_back({task, static_cast<int64_t>(task.num_tokens) * group * seq.kv.length});
          }
          continue;
        }
        const int rows = static_cast<int>(seq.num_tokens) * group;
        MergeItem merge{&seq, h, parts, static_cast<int>(seq.num_tokens), 0, next_partial};
        scratch.merges.push_back(merge);
        for (int p = 0; p < parts; ++p) {
          const int64_t block_begin = num_blocks * p / parts;
          const int64_t block_end = num_blocks * (p + 1) / parts;
          task.num_tokens = static_cast<int>(seq.num_tokens);
          task.q = seq.q;
          task.out = nullptr;
          task.partial = next_partial;
          task.first_position = first_position;
          task.key_begin = block_begin * block_tokens;
          task.key_end = std::min(seq.kv.length, block_end * block_tokens);
          next_partial += static_cast<int64_t>(rows) * (2 + dim);
          scratch.items.push_back({task, static_cast<int64_t>(rows) * (task.key_end - task.key_begin)});
        }
      }
      continue;
    }
    // Prefill: query tiles, each against every key up to its last token.
    const int tile_tokens = std::max(1, kPrefillTileRows / group);
    for (int64_t t0 = 0; t0 < seq.num_tokens; t0 += tile_tokens) {
      task.num_tokens = static_cast<int>(std::min<int64_t>(tile_tokens, seq.num_tokens - t0));
      task.q = seq.q + t0 * shape.num_heads * dim;
      task.out = seq.out + t0 * shape.num_heads * dim;
      task.partial = nullptr;
      task.first_position = first_position + t0;
      task.key_begin = 0;
      task.key_end = task.first_position + task.num_tokens;
      const int64_t cost = static_cast<int64_t>(task.num_tokens) * group * task.key_end;
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        task.kv_head = h;
        scratch.items.push_back({task, cost});
      }
    }
  }
  if (scratch.items.empty()) return;

  // Longest first, so the short items fill in at the end and the threads finish together.
  std::sort(scratch.items.begin(), scratch.items.end(),
            [](const WorkItem& a, const WorkItem& b) { return a.cost > b.cost; });
  const std::vector<WorkItem>& items = scratch.items;
  pool.ParallelFor(static_cast<int64_t>(items.size()), 1, [&items, attend](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) attend(items[i].task);
  });
  if (scratch.merges.empty()) return;
  const std::vector<MergeItem>& merges = scratch.merges;
  pool.ParallelFor(static_cast<int64_t>(merges.size()), 1, [&merges, &shape](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) MergeParts(shape, merges[i]);
  });
}

}  // namespace tetra
