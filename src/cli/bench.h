// `tetra bench`: prefill and decode speed of a model, measured the way
// llama-bench measures it, so the two can be put side by side.
//
//   prefill: one sequence, a synthetic prompt of p random valid token ids
//            (fixed seed), run as one Forward call on an empty KV cache.
//   decode:  B independent sequences, each with its own block table pre-filled
//            with `depth` tokens (untimed), stepped together one token each
//            per step for n steps (one Architecture::Forward call per
//            step); the token fed back is a random valid id (no sampling), as
//            llama-bench does. The figure is total tokens/s over all B
//            sequences.
// Each of the R repetitions starts from fresh caches; the result is the mean
// and sample standard deviation of tokens/s over the repetitions, after one
// untimed warm-up (the whole prefill and one decode step). Benchmarks time; tests never assert on these numbers.
// Main thread only.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "cli/commands.h"
#include "model/model.h"

namespace tetra::cli {

struct BenchFlags {
  std::string model;
  int prompt_tokens = 512;     // -p
  int decode_tokens = 128;     // -n
  int threads = 0;             // -t, 0: all cores
  int batch = 1;               // --batch
  int depth = 0;               // -d: tokens already in each decode sequence's cache
  int repetitions = 3;         // -r
  uint64_t seed = 1234;        // --seed, for the synthetic token ids
  bool json = false;           // --json: one JSON object on stdout
  PrecisionFlags precision;  // --weights, --kv-cache, --kv-block
};
void AddBenchCommand(CLI::App& app, BenchFlags& flags);
int RunBench(const BenchFlags& flags);

// Mean and sample standard deviation (0 for fewer than 2 samples).
struct Spread {
  double mean = 0.0;
  double stddev = 0.0;
};
Spread MeanAndStddev(const std::vector<double>& samples);

struct BenchResult {
  std::vector<double> prefill_tok_s;  // one per repetition
  std::vector<double> decode_tok_s;   // one per repetition, all B sequences together
};

// Flag values that cannot run on any model ("-p must be at least 1 (got 0)").
Status ValidateBenchFlags(const BenchFlags& flags);
// Flag values this model cannot run: a prompt or depth + n beyond its context.
Status ValidateBenchForModel(const BenchFlags& flags, const ModelConfig& config);

// Runs the measurements; flags must have passed both validations.
BenchResult MeasureModelSpeed(Model& model, const BenchFlags& flags, ThreadPool& pool);

}  // namespace tetra::cli
