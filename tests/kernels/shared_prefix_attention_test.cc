// Shared-prefix decode attention (attention.h: SharedPrefixGroup): parallel
// samples that share a prompt's blocks, their prefix read once for all.
//   - Swept over every ISA build, f32 and int8 scores, FP8/BF16/F32 caches,
//     blocks of 16 and 64, 1/2/5/16 samples, prefixes of 0, 1 and 2048/block
//     blocks, suffixes of 0 (the new token is the prefix's last position),
//     part of a block and several blocks (differing between samples), 1-3
//     threads: the grouped call equals the same sequences without groups
//     (kGroupedBound) and the reference (f32: CausalAttentionBatch over the
//     dequantized K/V; int8 scores over FP8: RunInt8Reference) within the
//     bound the other attention tests use (kTightBound).
//   - More stacked rows than one task holds (samples x GQA group > 256).
//   - Several groups (one of one sample, one without a prefix), ungrouped
//     decodes and a prefill chunk in one call, repeated.
//   - Steady grouped calls allocate nothing.
//   - The contract's checks.
// The test data is built as the engine builds it: the samples' block tables
// hold the prompt's block ids over the prefix and blocks of their own after.
#include <gtest/gtest.h>

// GCC pairs the replaced operator new with the library's delete when inlining.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <list>
#include <new>
#include <vector>

#include "attention_test_util.h"
#include "kernels/attention/attention.h"

namespace {
// Heap allocations by any thread of the binary (SteadyGroupedCallsAllocateNothing).
std::atomic<int64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace tetra {
namespace {

using namespace attention_testing;

// The grouped call against the same call without groups: the same products,
// summed in another order (the prefix and suffix are separate parts) and
// merged through one more log-sum-exp step. Measured over the 5,480 cases
// below at most 3.2e-6 (f32 scores) and 2.7e-6 (int8 scores: each query row
// is quantized on its own either way, so the integers are the same); against
// the references at most 3.9e-6. A masked prefix or a dropped suffix part is
// off by far more (both fail OddShapes).
constexpr double kGroupedBound = 5e-6;

// One group of parallel samples: `count` sequences after the prompt's
// prefix_tokens positions; sample i has suffix_tokens + i % 3 more (at least
// one position in all).
struct GroupSpec {
  int count = 0;
  int64_t prefix_tokens = 0;
  int64_t suffix_tokens = 0;
};

// Appends a group's sequence specs: sample 0 holds the prompt's blocks, the
// others share them.
SharedPrefixGroup AddGroup(const GroupSpec& group, std::vector<SequenceSpec>& specs) {
  const int first = static_cast<int>(specs.size());
  for (int i = 0; i < group.count; ++i) {
    SequenceSpec spec;
    spec.length = std::max<int64_t>(1, group.prefix_tokens + group.suffix_tokens + i % 3);
    spec.num_tokens = 1;
    if (i > 0 && group.prefix_tokens > 0) {
      spec.shares_prefix_of = first;
      spec.shared_tokens = group.prefix_tokens;
    }
    specs.push_back(spec);
  }
  return {first, group.count, group.prefix_tokens};
}

// The views of a batch with each group's q rows moved back to back into
// `group_q` (the contract: one token per sample, contiguous); the values are
// the batch's, so its references still hold.
std::vector<PagedAttentionSequence> GroupedViews(const AttentionShape& shape, PagedBatch& batch,
                                                 std::span<const SharedPrefixGroup> groups,
                                                 std::list<std::vector<float>>& group_q) {
  std::vector<PagedAttentionSequence> views = Views(batch);
  const size_t q_floats = static_cast<size_t>(shape.num_heads) * shape.head_dim;
  for (const SharedPrefixGroup& group : groups) {
    std::vector<float>& q = group_q.emplace_back(static_cast<size_t>(group.count) * q_floats);
    for (int i = 0; i < group.count; ++i) {
      const std::vector<float>& own = batch.sequences[group.first + i].q;
      std::copy(own.begin(), own.end(), q.begin() + static_cast<ptrdiff_t>(i * q_floats));
      views[group.first + i].q = q.data() + i * q_floats;
    }
  }
  return views;
}

// max |out - other| over max |other| across the batch.
double NormalisedDifference(const PagedBatch& batch, const std::vector<std::vector<float>>& other) {
  double max_error = 0.0, max_ref = 0.0;
  for (size_t s = 0; s < batch.sequences.size(); ++s) {
    const std::vector<float>& out = batch.sequences[s].out;
    for (size_t i = 0; i < out.size(); ++i) {
      const double err = std::fabs(static_cast<double>(out[i]) - other[s][i]);
      max_error = std::isnan(err) ? std::numeric_limits<double>::infinity() : std::max(max_error, err);
      max_ref = std::max(max_ref, std::fabs(static_cast<double>(other[s][i])));
    }
  }
  return max_error / std::max(max_ref, 1e-30);
}

// The worst errors seen, printed at the end of the sweep (the bounds above
// come from them).
struct Worst {
  double grouped_f32 = 0.0, grouped_int8 = 0.0, reference_f32 = 0.0, reference_int8 = 0.0;
  int cases = 0;
};

// Every ISA, both maths and the given thread counts on one batch: the grouped
// call against the ungrouped one and against the reference.
void CheckGroupedBatch(KvDtype dtype, int block_tokens, int head_dim, int num_kv_heads, int group_size,
                       const std::vector<SequenceSpec>& specs, const std::vector<SharedPrefixGroup>& groups,
                       uint32_t seed, const std::vector<int>& thread_counts, Worst& worst) {
  const AttentionShape shape{num_kv_heads * group_size, num_kv_heads, head_dim, 1.0f / std::sqrt(float(head_dim))};
  PagedBatch batch;
  MakePagedBatch(dtype, block_tokens, num_kv_heads, head_dim, shape.num_heads, specs, seed, batch);
  {
    ThreadPool pool(2);
    RunReference(shape, batch, pool);
  }
  const bool has_int8 = dtype == KvDtype::kFp8E4M3;
  if (has_int8) RunInt8Reference(shape, batch);
  std::list<std::vector<float>> group_q;
  const std::vector<PagedAttentionSequence> views = GroupedViews(shape, batch, groups, group_q);
  std::vector<std::vector<float>> ungrouped(batch.sequences.size());
  for (int threads : thread_counts) {
    ThreadPool pool(threads);
    for (AttentionIsa isa : SupportedAttentionIsas()) {
      for (AttentionMath math : {AttentionMath::kF32, AttentionMath::kInt8Scores}) {
        SCOPED_TRACE(testing::Message() << DtypeName(dtype) << " block " << block_tokens << " dim " << head_dim
                                        << " kv heads " << num_kv_heads << " group " << group_size << " threads "
                                        << threads << " isa " << AttentionIsaName(isa) << " math "
                                        << AttentionMathName(math));
        ClearOutputs(batch);
        PagedAttention(shape, batch.layer, views, pool, isa, math);
        for (size_t s = 0; s < batch.sequences.size(); ++s) ungrouped[s] = batch.sequences[s].out;
        ClearOutputs(batch);
        PagedAttention(shape, batch.layer, views, groups, pool, isa, math);
        const bool int8 = math == AttentionMath::kInt8Scores && has_int8;
        const double grouped = NormalisedDifference(batch, ungrouped);
        const double reference =
            int8 ? NormalisedMaxErrorAgainst(batch, &PagedBatch::Sequence::int8_reference_out)
                 : NormalisedMaxError(batch, false);
        EXPECT_LE(grouped, kGroupedBound);
        EXPECT_LE(reference, kTightBound);
        double& worst_grouped = int8 ? worst.grouped_int8 : worst.grouped_f32;
        double& worst_reference = int8 ? worst.reference_int8 : worst.reference_f32;
        worst_grouped = std::max(worst_grouped, grouped);
        worst_reference = std::max(worst_reference, reference);
        ++worst.cases;
      }
    }
  }
}

void PrintWorst(const char* what, const Worst& worst) {
  std::printf("%s: %d cases; grouped vs ungrouped at most %.3g (f32 scores), %.3g (int8 scores); "
              "vs reference at most %.3g (f32), %.3g (int8)\n",
              what, worst.cases, worst.grouped_f32, worst.grouped_int8, worst.reference_f32, worst.reference_int8);
}

TEST(SharedPrefixAttention, MatchesUngroupedAndReferenceOnSweptShapes) {
  Worst worst;
  uint32_t seed = 1;
  for (KvDtype dtype : {KvDtype::kFp8E4M3, KvDtype::kBf16, KvDtype::kF32}) {
    for (int block_tokens : {16, 64}) {
      for (int count : {1, 2, 5, 16}) {
        for (int64_t prefix_blocks : {int64_t{0}, int64_t{1}, int64_t{2048 / block_tokens}}) {
          for (int64_t suffix : {int64_t{0}, int64_t{block_tokens / 2 + 1}, int64_t{3 * block_tokens + 5}}) {
            std::vector<SequenceSpec> specs;
            const SharedPrefixGroup group = AddGroup({count, prefix_blocks * block_tokens, suffix}, specs);
            CheckGroupedBatch(dtype, block_tokens, 64, 2, 4, specs, {group}, seed++, {1, 2, 3}, worst);
          }
        }
      }
    }
  }
  PrintWorst("swept shapes", worst);
}

TEST(SharedPrefixAttention, OddShapes) {
  // head_dim 72 and 40, blocks of 24 tokens, 3 KV heads, groups of 3 and 5.
  Worst worst;
  for (KvDtype dtype : {KvDtype::kFp8E4M3, KvDtype::kBf16}) {
    std::vector<SequenceSpec> specs;
    const SharedPrefixGroup group = AddGroup({6, 24 * 30, 13}, specs);
    CheckGroupedBatch(dtype, 24, 72, 3, 3, specs, {group}, 60 + static_cast<uint32_t>(dtype), {1, 2, 3}, worst);
  }
  std::vector<SequenceSpec> specs;
  const SharedPrefixGroup group = AddGroup({3, 16 * 40, 40}, specs);
  CheckGroupedBatch(KvDtype::kFp8E4M3, 16, 40, 1, 5, specs, {group}, 70, {2}, worst);
  PrintWorst("odd shapes", worst);
}

TEST(SharedPrefixAttention, MoreStackedRowsThanOneTaskHolds) {
  // samples x GQA group over kMaxTaskRows (256): the samples are stacked in
  // several prefix items (37 x 8 = 296 rows: 19 + 18 samples; 16 x 24: 8 + 8;
  // 3 x 128: 2 + 1; 2 x 256: one sample each).
  Worst worst;
  struct Case {
    int count, group_size, head_dim, num_kv_heads;
    int64_t prefix_tokens;
  };
  uint32_t seed = 80;
  for (const Case& c : std::vector<Case>{{37, 8, 64, 2, 2048}, {16, 24, 64, 1, 1024}, {3, 128, 32, 1, 512},
                                         {2, 256, 16, 1, 256}}) {
    for (KvDtype dtype : {KvDtype::kFp8E4M3, KvDtype::kF32}) {
      std::vector<SequenceSpec> specs;
      const SharedPrefixGroup group = AddGroup({c.count, c.prefix_tokens, 20}, specs);
      CheckGroupedBatch(dtype, 16, c.head_dim, c.num_kv_heads, c.group_size, specs, {group}, seed++, {1, 2, 3},
                        worst);
    }
  }
  PrintWorst("large groups", worst);
}

TEST(SharedPrefixAttention, GroupsNextToOtherSequencesInOneCall) {
  // Two real groups (listed out of order), a group of one sample and one with
  // no prefix (both ungrouped then), an empty one, ungrouped decodes of 1 and 3 tokens, a
  // long one that split-KV cuts, and a prefill chunk deep in a sequence.
  std::vector<SequenceSpec> specs = {{3000, 1}, {500, 3}};
  const SharedPrefixGroup a = AddGroup({4, 64 * 16, 40}, specs);
  specs.push_back({700, 200});
  const SharedPrefixGroup b = AddGroup({5, 64, 70}, specs);
  const SharedPrefixGroup single = AddGroup({1, 128, 9}, specs);
  const SharedPrefixGroup no_prefix = AddGroup({3, 0, 150}, specs);
  specs.push_back({64, 64});
  const SharedPrefixGroup empty{static_cast<int>(specs.size()), 0, 64};  // no samples: nothing to do
  const std::vector<SharedPrefixGroup> groups = {b, single, empty, a, no_prefix};
  Worst worst;
  for (KvDtype dtype : {KvDtype::kFp8E4M3, KvDtype::kBf16}) {
    CheckGroupedBatch(dtype, 64, 128, 2, 4, specs, groups, 90 + static_cast<uint32_t>(dtype), {1, 2, 3}, worst);
  }
  PrintWorst("mixed batch", worst);

  // The same call again and again (scratch reused across calls).
  const AttentionShape shape{8, 2, 128, 1.0f / std::sqrt(128.0f)};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, 64, 2, 128, shape.num_heads, specs, 95, batch);
  ThreadPool pool(2);
  RunReference(shape, batch, pool);
  std::list<std::vector<float>> group_q;
  const std::vector<PagedAttentionSequence> views = GroupedViews(shape, batch, groups, group_q);
  for (int call = 0; call < 3; ++call) {
    ClearOutputs(batch);
    PagedAttention(shape, batch.layer, views, groups, pool);
    EXPECT_LE(NormalisedMaxError(batch, false), kTightBound) << "call " << call;
  }
}

TEST(SharedPrefixAttention, SteadyGroupedCallsAllocateNothing) {
  std::vector<SequenceSpec> specs = {{900, 1}};
  const SharedPrefixGroup a = AddGroup({16, 64 * 16, 33}, specs);
  const SharedPrefixGroup b = AddGroup({40, 64 * 4, 5}, specs);  // 40 x 8 rows: two prefix items
  const AttentionShape shape{16, 2, 64, 0.125f};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, 64, 2, 64, shape.num_heads, specs, 7, batch);
  const std::vector<SharedPrefixGroup> groups = {a, b};
  std::list<std::vector<float>> group_q;
  const std::vector<PagedAttentionSequence> views = GroupedViews(shape, batch, groups, group_q);
  ThreadPool pool(2);
  for (AttentionMath math : {AttentionMath::kF32, AttentionMath::kInt8Scores}) {
    PagedAttention(shape, batch.layer, views, groups, pool, math);  // grows the scratch
    const int64_t before = g_allocations.load();
    for (int call = 0; call < 5; ++call) PagedAttention(shape, batch.layer, views, groups, pool, math);
    EXPECT_EQ(g_allocations.load() - before, 0) << AttentionMathName(math);
  }
}

TEST(SharedPrefixAttentionDeathTest, ChecksTheContract) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<SequenceSpec> specs = {{100, 2}};
  const SharedPrefixGroup group = AddGroup({3, 64, 10}, specs);  // sequences 1-3
  const AttentionShape shape{4, 1, 16, 0.25f};
  PagedBatch batch;
  MakePagedBatch(KvDtype::kFp8E4M3, 16, 1, 16, shape.num_heads, specs, 3, batch);
  std::list<std::vector<float>> group_q;
  const std::vector<PagedAttentionSequence> views = GroupedViews(shape, batch, {&group, 1}, group_q);
  ThreadPool pool(1);
  const auto run = [&](std::vector<PagedAttentionSequence> v, SharedPrefixGroup g) {
    PagedAttention(shape, batch.layer, v, {&g, 1}, pool);
  };
  run(views, group);  // the valid call
  EXPECT_DEATH(run(views, {1, 4, 64}), "sequences \\[1, 1 \\+ 4\\) of 4");
  EXPECT_DEATH(run(views, {0, 2, 64}), "sequence 0 has 2 new tokens");
  EXPECT_DEATH(run(views, {1, 3, 40}), "not whole blocks");
  EXPECT_DEATH(run(views, {1, 3, 80}), "prefix of 80 tokens, sequence 1 has 74");
  std::vector<PagedAttentionSequence> apart = views;
  apart[2].q = batch.sequences[2].q.data();
  EXPECT_DEATH(run(apart, group), "sequence 2's q does not follow 1's");
  std::vector<int32_t> other_table = batch.sequences[3].block_table;
  other_table[3] ^= 1;  // the prefix's last block
  std::vector<PagedAttentionSequence> differ = views;
  differ[3].kv.block_table = other_table.data();
  EXPECT_DEATH(run(differ, group), "sequence 3's blocks differ");
  const std::vector<SharedPrefixGroup> overlapping = {{1, 2, 64}, {2, 2, 64}};
  EXPECT_DEATH(PagedAttention(shape, batch.layer, views, overlapping, pool), "sequence 2 is in two");
}

}  // namespace
}  // namespace tetra
