// Subcommands of the tetra binary: flags, registration and the run function
// of each. Run functions return the process exit code and print one-line
// errors ("tetra: <what>: <problem>") to stderr.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "base/thread_pool.h"
#include "model/model.h"

namespace tetra::cli {

// Prints "tetra: <message>" to stderr; returns the exit code 1.
int Fail(const std::string& message);

// How a command runs the model: --weights, --kv-cache, --kv-block.
struct PrecisionFlags {
  std::string weights = "w4a8";  // w4a8 (the fast path, the default) | reference (f32, the exact comparison)
  std::string kv_cache;               // fp8 | bf16 | f32; empty: f32 for reference weights, fp8 for w4a8
  int kv_block_tokens = 64;
  std::string attention_math;         // int8 | f32; empty: int8 for w4a8 on AVX-512 VNNI+VBMI, else f32
};
// Adds the PrecisionFlags options to a subcommand.
void AddPrecisionOptions(CLI::App* cmd, PrecisionFlags& flags);
// The KV cache type the flags resolve to ("fp8", "bf16", "f32").
std::string KvCacheName(const PrecisionFlags& flags);

// Loads MODEL (the default model when the flag is empty) as the precision
// flags say, packing on `pool` (may be null), and pages the mapped weights in
// (a progress line on a terminal). Errors name the file; for the default
// model they say how to install it.
StatusOr<std::unique_ptr<Model>> LoadForCommand(const std::string& model_flag, const PrecisionFlags& precision,
                                                ThreadPool* pool);

// Touches every page of the mapped weights once; returns their bytes.
size_t PrefaultWeights(const ModelFiles& files);

// The embedded default model: $TETRA_DEFAULT_MODEL, else the file that
// scripts/install-default-model.sh puts in ~/.cache/tetra/models/.
std::string DefaultModelPath();

struct GenerateFlags {
  std::string model;
  std::string prompt;
  int max_new_tokens = 128;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int64_t seed = -1;  // -1: random
  bool chat = false;
  int threads = 0;
  PrecisionFlags precision;
};
void AddGenerateCommand(CLI::App& app, GenerateFlags& flags);
int RunGenerate(const GenerateFlags& flags);

struct InfoFlags {
  std::string model;
};
void AddInfoCommand(CLI::App& app, InfoFlags& flags);
int RunInfo(const InfoFlags& flags);

struct TokenizeFlags {
  std::string model;
  std::string prompt;
  std::string file;
  bool ids_only = false;
  bool no_special = false;
};
void AddTokenizeCommand(CLI::App& app, TokenizeFlags& flags);
int RunTokenize(const TokenizeFlags& flags);

struct PerplexityFlags {
  std::string model;
  std::string file;
  int64_t context = 512;
  bool all_tokens = false;
  int threads = 0;
  PrecisionFlags precision;
  bool kl_vs_reference = false;
};
void AddPerplexityCommand(CLI::App& app, PerplexityFlags& flags);
int RunPerplexity(const PerplexityFlags& flags);

}  // namespace tetra::cli
