// SequenceSampler::Sample per call (engine/sampler.h), on one thread, for
// SmolLM2's vocabulary (49152) and Qwen's (151936).
//
// Rows: "llm" is shaped like a language model's: a floor of N(-2, 2) logits
// and 300 plausible tokens at N(10, 2) (at temperature 0.8 the favourite has
// p 0.16 / 0.40 and the 0.95 nucleus 75 / 53 tokens for the two vocabularies);
// "flat" is N(0, 1) everywhere, the worst case for top-p (its 0.95 nucleus
// holds two thirds of the vocabulary). The row stays in cache, as
// it does after the output head writes it.
//
//   sampler_bench [--benchmark_filter=llm]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "engine/sampler.h"

namespace tetra {
namespace {

std::vector<float> MakeRow(int64_t vocab, bool flat) {
  std::mt19937 rng(17);
  std::vector<float> row(static_cast<size_t>(vocab));
  if (flat) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (float& x : row) x = normal(rng);
    return row;
  }
  std::normal_distribution<float> floor(-2.0f, 2.0f);
  for (float& x : row) x = floor(rng);
  std::normal_distribution<float> plausible(10.0f, 2.0f);
  std::vector<int64_t> ids(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) ids[static_cast<size_t>(i)] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  for (int i = 0; i < 300; ++i) row[static_cast<size_t>(ids[static_cast<size_t>(i)])] = plausible(rng);
  return row;
}

enum Case { kGreedy, kPlain, kTopK, kTopP, kTopKTopP, kMinP, kPenalties, kLogprobs };

const char* CaseName(Case c) {
  switch (c) {
    case kGreedy: return "greedy";
    case kPlain: return "t1_no_filter";
    case kTopK: return "topk40";
    case kTopP: return "topp0.95";
    case kTopKTopP: return "topk40_topp0.95";
    case kMinP: return "minp0.05";
    case kPenalties: return "penalties1000_topp0.95";
    case kLogprobs: return "topk40_topp0.95_logprobs20";
  }
  return "";
}

SamplingParams ParamsFor(Case c) {
  SamplingParams p;
  p.seed = 1;
  p.temperature = 0.8f;
  switch (c) {
    case kGreedy: p.temperature = 0.0f; break;
    case kPlain: p.temperature = 1.0f; break;
    case kTopK: p.top_k = 40; break;
    case kTopP: p.top_p = 0.95f; break;
    case kTopKTopP: p.top_k = 40; p.top_p = 0.95f; break;
    case kMinP: p.min_p = 0.05f; break;
    case kPenalties:
      p.top_p = 0.95f;
      p.repetition_penalty = 1.1f;
      p.presence_penalty = 0.5f;
      p.frequency_penalty = 0.5f;
      break;
    case kLogprobs: p.top_k = 40; p.top_p = 0.95f; p.top_logprobs = 20; break;
  }
  return p;
}

void BM_Sample(benchmark::State& state, int64_t vocab, bool flat, Case c) {
  const std::vector<float> row = MakeRow(vocab, flat);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  // Penalties: 1000 prior tokens, 500 of the prompt and 500 generated.
  std::vector<int32_t> prompt;
  if (c == kPenalties) {
    for (int i = 0; i < 500; ++i) prompt.push_back(token(rng));
  }
  SequenceSampler sampler(ParamsFor(c), 0, prompt);
  if (c == kPenalties) {
    for (int i = 0; i < 500; ++i) sampler.Accept(token(rng));
  }
  SamplerScratch scratch;
  // Each call starts from the same state (Sample records its token for the
  // penalties): a copy assigned over one of the same size, so no allocation.
  SequenceSampler fresh = sampler;
  fresh.Sample(row.data(), vocab, scratch);  // grows the scratch once
  for (auto _ : state) {
    fresh = sampler;
    SampleResult r = fresh.Sample(row.data(), vocab, scratch);
    benchmark::DoNotOptimize(r);
  }
  state.SetLabel(std::to_string(sampler.Distribution(row.data(), vocab, scratch).size()) + " candidates");
}

void Register() {
  for (int64_t vocab : {int64_t{49152}, int64_t{151936}}) {
    for (bool flat : {false, true}) {
      for (Case c : {kGreedy, kPlain, kTopK, kTopP, kTopKTopP, kMinP, kPenalties, kLogprobs}) {
        const std::string name = std::string("Sample/") + (flat ? "flat" : "llm") + "/" + std::to_string(vocab) + "/" +
                                 CaseName(c);
        benchmark::RegisterBenchmark(name.c_str(), BM_Sample, vocab, flat, c)->Unit(benchmark::kMicrosecond);
      }
    }
  }
}

}  // namespace
}  // namespace tetra

int main(int argc, char** argv) {
  tetra::Register();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
