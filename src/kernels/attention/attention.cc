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

// Rows of one (KV head, output) whose parts are merged after the main loop:
// row r (token r / group, q head r % group of the KV head) goes to
//   out + (r / group) * num_heads * head_dim + (r % group) * head_dim,
// and part p's state of that row (attention_internal.h: AttendTask::partial)
// is at part_rows[p] + r * (2 + head_dim), p < num_parts, the pointers at
// CallScratch::part_rows[first_part ...]. A split decode sequence lists its
// parts of one buffer; a shared-prefix sample lists the prefix parts (its rows
// inside the stacked item's) and then its own suffix parts.
struct MergeItem {
  float* out = nullptr;  // row 0: the first token's first q head of the KV head
  int rows = 0;
  int first_part = 0;
  int num_parts = 0;
};

// One decode key range that a set of query rows attends to, before it is cut
// into parts and work items (one per KV head and part): an ordinary decode
// sequence over all its keys; a shared-prefix group's stacked samples (a
// chunk of at most kMaxTaskRows rows) over the prefix; or one sample over
// its own keys after the prefix.
struct DecodeRange {
  const KvSequenceView* kv = nullptr;
  const float* q = nullptr;  // the first row's token
  int num_tokens = 0;        // tokens of the sequence, or stacked samples
  int64_t first_position = 0;
  int64_t key_begin = 0;  // a multiple of block_tokens
  int64_t key_end = 0;
  // Where an unsplit range writes its normalized rows directly; nullptr when
  // it is always merged (the pieces of a shared-prefix group).
  float* out = nullptr;
  int parts = 0;              // 0 for an empty range (a sample with no keys after the prefix)
  float* partials = nullptr;  // merged ranges: [num_kv_heads, parts, rows, 2 + head_dim]

  bool merged() const { return out == nullptr || parts > 1; }
};

// A shared-prefix group as planned: its ranges are ranges[first_range ..],
// num_chunks prefix chunks of chunk_samples samples (the last may have
// fewer), then one suffix range per sample.
struct GroupPlan {
  const SharedPrefixGroup* group = nullptr;
  int first_range = 0;
  int num_chunks = 0;
  int chunk_samples = 0;
};

// Per-call state, kept by the calling thread and reused, so steady calls
// allocate nothing.
struct CallScratch {
  std::vector<WorkItem> items;
  std::vector<MergeItem> merges;
  std::vector<const float*> part_rows;
  std::vector<DecodeRange> ranges;
  std::vector<GroupPlan> group_plans;
  std::vector<uint8_t> grouped;  // per sequence: kUngrouped, kInSmallGroup or kSharedPrefix
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

// What CheckGroups writes per sequence into CallScratch::grouped.
constexpr uint8_t kUngrouped = 0;
constexpr uint8_t kInSmallGroup = 1;  // in a group attended as if ungrouped
constexpr uint8_t kSharedPrefix = 2;  // attended through its group's shared prefix

// The groups' contract (attention.h: SharedPrefixGroup); marks in `grouped`
// the sequences that a group attends (count > 1, prefix_tokens > 0).
void CheckGroups(const AttentionShape& shape, const KvLayerView& layer,
                 std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                 std::vector<uint8_t>& grouped) {
  grouped.assign(sequences.size(), kUngrouped);
  const int64_t q_stride = static_cast<int64_t>(shape.num_heads) * shape.head_dim;
  const int64_t num_sequences = static_cast<int64_t>(sequences.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    const SharedPrefixGroup& group = groups[g];
    TETRA_CHECK(group.first >= 0 && group.count >= 0 && group.first + int64_t{group.count} <= num_sequences,
                "shared-prefix group {}: sequences [{}, {} + {}) of {}", g, group.first, group.first, group.count,
                num_sequences);
    TETRA_CHECK(group.prefix_tokens >= 0 && group.prefix_tokens % layer.block_tokens == 0,
                "shared-prefix group {}: prefix of {} tokens is not whole blocks of {}", g, group.prefix_tokens,
                layer.block_tokens);
    if (group.count == 0) continue;
    const PagedAttentionSequence& lead = sequences[group.first];
    const int64_t prefix_blocks = group.prefix_tokens / layer.block_tokens;
    for (int i = 0; i < group.count; ++i) {
      const int s = group.first + i;
      const PagedAttentionSequence& seq = sequences[s];
      TETRA_CHECK(grouped[s] == kUngrouped, "sequence {} is in two shared-prefix groups", s);
      grouped[s] = kInSmallGroup;
      TETRA_CHECK(seq.num_tokens == 1, "shared-prefix group {}: sequence {} has {} new tokens, not 1", g, s,
                  seq.num_tokens);
      TETRA_CHECK(seq.q == lead.q + i * q_stride, "shared-prefix group {}: sequence {}'s q does not follow {}'s", g,
                  s, s - 1);
      TETRA_CHECK(group.prefix_tokens <= seq.kv.length,
                  "shared-prefix group {}: prefix of {} tokens, sequence {} has {}", g, group.prefix_tokens, s,
                  seq.kv.length);
      TETRA_CHECK(prefix_blocks == 0 || seq.kv.block_table == lead.kv.block_table ||
                      std::equal(lead.kv.block_table, lead.kv.block_table + prefix_blocks, seq.kv.block_table),
                  "shared-prefix group {}: sequence {}'s blocks differ from sequence {}'s in the prefix", g, s,
                  group.first);
    }
    // A group of one, or with no prefix, is attended as if ungrouped.
    if (group.count > 1 && group.prefix_tokens > 0) {
      for (int i = 0; i < group.count; ++i) grouped[group.first + i] = kSharedPrefix;
    }
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

// Softmax merge of one MergeItem's parts into its output rows: each part's
// state weighed by 2^(m_part - max over parts), the sums likewise, then the
// output normalized.
void MergeParts(const AttentionShape& shape, const MergeItem& merge, const float* const* part_rows) {
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int64_t token_stride = static_cast<int64_t>(shape.num_heads) * dim;
  for (int r = 0; r < merge.rows; ++r) {
    const int64_t row_offset = static_cast<int64_t>(r) * (2 + dim);
    float row_max = -std::numeric_limits<float>::infinity();
    for (int p = 0; p < merge.num_parts; ++p) row_max = std::max(row_max, part_rows[p][row_offset]);
    float* out = merge.out + (r / group) * token_stride + static_cast<int64_t>(r % group) * dim;
    std::fill(out, out + dim, 0.0f);
    float total = 0.0f;
    for (int p = 0; p < merge.num_parts; ++p) {
      const float* part = part_rows[p] + row_offset;
      if (part[1] == 0.0f) continue;  // the part held no key this row sees
      const float weight = std::exp2(part[0] - row_max);
      total += part[1] * weight;
      for (int i = 0; i < dim; ++i) out[i] += part[2 + i] * weight;
    }
    const float inverse = 1.0f / total;
    for (int i = 0; i < dim; ++i) out[i] *= inverse;
  }
}

// The parts a decode range is cut into: the plan's, at most one per block
// (0 for an empty range), and 1 when its rows do not fit one task.
int RangeParts(const DecodeRange& range, int planned, int group, int block_tokens) {
  if (range.key_end <= range.key_begin) return 0;
  const int64_t num_blocks = (range.key_end - range.key_begin + block_tokens - 1) / block_tokens;
  if (range.num_tokens * group > attention_internal::kMaxTaskRows) return 1;
  return static_cast<int>(std::min<int64_t>(planned, num_blocks));
}

// The decode ranges of a call, in scratch.ranges, with scratch.group_plans
// for the shared-prefix groups: first every ordinary decode sequence, then
// each group's prefix chunks and its samples' suffixes.
void CollectDecodeRanges(std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                         int group_rows, CallScratch& scratch) {
  scratch.ranges.clear();
  scratch.group_plans.clear();
  for (size_t s = 0; s < sequences.size(); ++s) {
    const PagedAttentionSequence& seq = sequences[s];
    if (seq.num_tokens == 0 || seq.num_tokens > kMaxDecodeTokens || scratch.grouped[s] == kSharedPrefix) continue;
    DecodeRange range;
    range.kv = &seq.kv;
    range.q = seq.q;
    range.num_tokens = static_cast<int>(seq.num_tokens);
    range.first_position = seq.kv.length - seq.num_tokens;
    range.key_end = seq.kv.length;
    range.out = seq.out;
    scratch.ranges.push_back(range);
  }
  const int max_samples = attention_internal::kMaxTaskRows / group_rows;
  for (const SharedPrefixGroup& group : groups) {
    if (group.count <= 1 || group.prefix_tokens == 0) continue;
    // Chunks of at most max_samples stacked samples, as even as the count allows.
    const int num_chunks = (group.count + max_samples - 1) / max_samples;
    const int chunk_samples = (group.count + num_chunks - 1) / num_chunks;
    scratch.group_plans.push_back({&group, static_cast<int>(scratch.ranges.size()), num_chunks, chunk_samples});
    const PagedAttentionSequence* members = sequences.data() + group.first;
    for (int c = 0; c < num_chunks; ++c) {
      const int first_sample = c * chunk_samples;
      DecodeRange prefix;
      prefix.kv = &members[0].kv;
      prefix.q = members[first_sample].q;
      prefix.num_tokens = std::min(chunk_samples, group.count - first_sample);
      prefix.first_position = group.prefix_tokens;  // past every prefix key: none masked
      prefix.key_end = group.prefix_tokens;
      scratch.ranges.push_back(prefix);
    }
    for (int i = 0; i < group.count; ++i) {
      DecodeRange suffix;
      suffix.kv = &members[i].kv;
      suffix.q = members[i].q;
      suffix.num_tokens = 1;
      suffix.first_position = members[i].kv.length - 1;
      suffix.key_begin = group.prefix_tokens;
      suffix.key_end = members[i].kv.length;
      scratch.ranges.push_back(suffix);
    }
  }
}

// The merge items of a call's split ranges and shared-prefix samples.
void CollectMerges(const AttentionShape& shape, std::span<const PagedAttentionSequence> sequences,
                   CallScratch& scratch) {
  const int group_rows = shape.num_heads / shape.num_kv_heads;
  const int64_t row_floats = 2 + shape.head_dim;
  const int64_t head_offset = static_cast<int64_t>(group_rows) * shape.head_dim;  // one KV head's q heads in out
  scratch.merges.clear();
  scratch.part_rows.clear();
  // The part pointers of `range` for KV head h, starting at row `first_row`.
  const auto add_parts = [&](const DecodeRange& range, int h, int first_row) {
    const int64_t rows = static_cast<int64_t>(range.num_tokens) * group_rows;
    for (int p = 0; p < range.parts; ++p) {
      scratch.part_rows.push_back(range.partials + ((h * range.parts + p) * rows + first_row) * row_floats);
    }
  };
  const size_t ordinary_end =
      scratch.group_plans.empty() ? scratch.ranges.size() : static_cast<size_t>(scratch.group_plans[0].first_range);
  for (size_t i = 0; i < ordinary_end; ++i) {
    const DecodeRange& range = scratch.ranges[i];
    if (!range.merged()) continue;
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      const int first_part = static_cast<int>(scratch.part_rows.size());
      add_parts(range, h, 0);
      scratch.merges.push_back({range.out + h * head_offset, range.num_tokens * group_rows, first_part, range.parts});
    }
  }
  for (const GroupPlan& plan : scratch.group_plans) {
    const SharedPrefixGroup& group = *plan.group;
    for (int i = 0; i < group.count; ++i) {
      const DecodeRange& prefix = scratch.ranges[plan.first_range + i / plan.chunk_samples];
      const DecodeRange& suffix = scratch.ranges[plan.first_range + plan.num_chunks + i];
      float* out = sequences[group.first + i].out;
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        const int first_part = static_cast<int>(scratch.part_rows.size());
        add_parts(prefix, h, (i % plan.chunk_samples) * group_rows);
        add_parts(suffix, h, 0);
        scratch.merges.push_back({out + h * head_offset, group_rows, first_part,
                                  static_cast<int>(scratch.part_rows.size()) - first_part});
      }
    }
  }
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
  PagedAttention(shape, layer, sequences, {}, pool, AttentionIsa::kBest, math);
}

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, ThreadPool& pool, AttentionIsa isa,
                    AttentionMath math) {
  PagedAttention(shape, layer, sequences, {}, pool, isa, math);
}

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                    ThreadPool& pool, AttentionMath math) {
  PagedAttention(shape, layer, sequences, groups, pool, AttentionIsa::kBest, math);
}

void PagedAttention(const AttentionShape& shape, const KvLayerView& layer,
                    std::span<const PagedAttentionSequence> sequences, std::span<const SharedPrefixGroup> groups,
                    ThreadPool& pool, AttentionIsa isa, AttentionMath math) {
  CheckInputs(shape, layer, sequences, math);
  thread_local CallScratch call_scratch;
  CallScratch& scratch = call_scratch;
  CheckGroups(shape, layer, sequences, groups, scratch.grouped);
  const AttendFn attend = AttendFnFor(isa, math);
  const int group = shape.num_heads / shape.num_kv_heads;
  const int dim = shape.head_dim;
  const int block_tokens = layer.block_tokens;
  const int max_task_tokens = attention_internal::kMaxTaskRows / group;
  scratch.items.clear();

  AttendTask base;
  base.layer = &layer;
  base.group = group;
  base.num_heads = shape.num_heads;
  base.log2_scale = shape.scale * std::numbers::log2e_v<float>;
  base.int8_scores = math == AttentionMath::kInt8Scores;

  // Decode ranges and the split plan over their key counts (a shared prefix
  // counts once, like one sequence of its length).
  CollectDecodeRanges(sequences, groups, group, scratch);
  scratch.decode_lengths.clear();
  for (const DecodeRange& range : scratch.ranges) scratch.decode_lengths.push_back(range.key_end - range.key_begin);
  scratch.decode_parts.resize(scratch.decode_lengths.size());
  PlanKvSplitsInto(scratch.decode_lengths, shape.num_kv_heads, pool.num_threads(), scratch.decode_parts);

  // Partial-state space for merged ranges, sized before any pointer into it is taken.
  int64_t partial_floats = 0;
  for (size_t i = 0; i < scratch.ranges.size(); ++i) {
    DecodeRange& range = scratch.ranges[i];
    range.parts = RangeParts(range, scratch.decode_parts[i], group, block_tokens);
    if (range.merged()) {
      partial_floats += int64_t{shape.num_kv_heads} * range.parts * range.num_tokens * group * (2 + dim);
    }
  }
  if (static_cast<int64_t>(scratch.partials.size()) < partial_floats) scratch.partials.resize(partial_floats);

  float* next_partial = scratch.partials.data();
  for (DecodeRange& range : scratch.ranges) {
    if (range.parts == 0) continue;
    AttendTask task = base;
    task.kv = range.kv;
    const int rows = range.num_tokens * group;
    if (!range.merged()) {
      // Whole, straight to out; a group too large for one task's rows takes
      // its tokens in pieces.
      const int tokens_per_task = std::min(range.num_tokens, max_task_tokens);
      for (int h = 0; h < shape.num_kv_heads; ++h) {
        task.kv_head = h;
        for (int t0 = 0; t0 < range.num_tokens; t0 += tokens_per_task) {
          task.num_tokens = std::min(tokens_per_task, range.num_tokens - t0);
          task.q = range.q + int64_t{t0} * shape.num_heads * dim;
          task.out = range.out + int64_t{t0} * shape.num_heads * dim;
          task.partial = nullptr;
          task.first_position = range.first_position + t0;
          task.key_begin = range.key_begin;
          task.key_end = range.key_end;
          scratch.items.push_back({task, int64_t{task.num_tokens} * group * (range.key_end - range.key_begin)});
        }
      }
      continue;
    }
    // Parts of whole blocks, each writing its rows' partial state.
    range.partials = next_partial;
    next_partial += int64_t{shape.num_kv_heads} * range.parts * rows * (2 + dim);
    const int64_t first_block = range.key_begin / block_tokens;
    const int64_t num_blocks = (range.key_end - range.key_begin + block_tokens - 1) / block_tokens;
    task.num_tokens = range.num_tokens;
    task.q = range.q;
    task.out = nullptr;
    task.first_position = range.first_position;
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      task.kv_head = h;
      for (int p = 0; p < range.parts; ++p) {
        task.partial = range.partials + (int64_t{h} * range.parts + p) * rows * (2 + dim);
        task.key_begin = (first_block + num_blocks * p / range.parts) * block_tokens;
        task.key_end = std::min(range.key_end, (first_block + num_blocks * (p + 1) / range.parts) * block_tokens);
        scratch.items.push_back({task, int64_t{rows} * (task.key_end - task.key_begin)});
      }
    }
  }
  CollectMerges(shape, sequences, scratch);

  // Prefill: query tiles, each against every key up to its last token.
  const int tile_tokens = std::max(1, kPrefillTileRows / group);
  for (const PagedAttentionSequence& seq : sequences) {
    if (seq.num_tokens <= kMaxDecodeTokens) continue;
    AttendTask task = base;
    task.kv = &seq.kv;
    const int64_t first_position = seq.kv.length - seq.num_tokens;
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
  const float* const* part_rows = scratch.part_rows.data();
  pool.ParallelFor(static_cast<int64_t>(merges.size()), 1, [&merges, &shape, part_rows](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) MergeParts(shape, merges[i], part_rows + merges[i].first_part);
  });
}

}  // namespace tetra
