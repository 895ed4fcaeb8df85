#include "cli/bench.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include <stdlib.h>  // getloadavg

#include "base/check.h"
#include "base/cpu_features.h"
#include "cli/commands.h"
#include "model/session.h"

namespace tetra::cli {
namespace {

int BenchFail(const std::string& message) { return Fail("bench: " + message); }

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::vector<int32_t> RandomTokens(std::mt19937_64& rng, int64_t count, int64_t vocab_size) {
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab_size - 1));
  std::vector<int32_t> tokens(count);
  for (auto& t : tokens) t = pick(rng);
  return tokens;
}

// The bench's own inputs are valid: a failure is a bug.
void CheckOk(const Status& status) { TETRA_CHECK(status.ok(), "{}", status.message()); }

// Seconds to prefill `prompt` into an empty cache, as one Forward call.
double TimePrefill(Model& model, std::span<const int32_t> prompt, ThreadPool& pool) {
  Session session(model, 1, static_cast<int64_t>(prompt.size()));
  const Session::Step step{session.NewSequence().value(), prompt, LogitsRows::kNone};
  const auto start = std::chrono::steady_clock::now();
  CheckOk(session.Forward(std::span<const Session::Step>(&step, 1), {}, pool));
  return SecondsSince(start);
}

// Seconds for `steps` batched decode steps over `batch` sequences, each
// first filled (untimed) with `depth` tokens.
double TimeDecode(Model& model, const BenchFlags& flags, int steps, std::mt19937_64& rng, ThreadPool& pool,
                  std::vector<float>& logits) {
  const ModelConfig& c = model.config();
  Session session(model, flags.batch, static_cast<int64_t>(flags.depth) + steps);
  std::vector<Session::Step> batch(flags.batch);
  for (int b = 0; b < flags.batch; ++b) {
    batch[b].sequence = session.NewSequence().value();
    if (flags.depth > 0) {
      const std::vector<int32_t> context = RandomTokens(rng, flags.depth, c.vocab_size);
      const Session::Step fill{batch[b].sequence, context, LogitsRows::kNone};
      CheckOk(session.Forward(std::span<const Session::Step>(&fill, 1), {}, pool));
    }
  }
  // Drawn ahead so that the timed loop does nothing but Forward calls.
  const std::vector<int32_t> tokens = RandomTokens(rng, static_cast<int64_t>(steps) * flags.batch, c.vocab_size);
  const auto start = std::chrono::steady_clock::now();
  size_t next = 0;
  // One batched step per generated token: every sequence's token goes
  // through the layers together (experts read once per step).
  logits.resize(static_cast<size_t>(flags.batch) * c.vocab_size);
  for (int step = 0; step < steps; ++step) {
    for (int b = 0; b < flags.batch; ++b) batch[b].tokens = std::span<const int32_t>(&tokens[next++], 1);
    CheckOk(session.Forward(batch, logits, pool));
  }
  return SecondsSince(start);
}

std::string FormatSpread(const Spread& s) { return fmt::format("{:.2f} ± {:.2f}", s.mean, s.stddev); }

}  // namespace

Spread MeanAndStddev(const std::vector<double>& samples) {
  Spread s;
  if (samples.empty()) return s;
  for (double x : samples) s.mean += x;
  s.mean /= static_cast<double>(samples.size());
  if (samples.size() < 2) return s;
  double squares = 0;
  for (double x : samples) squares += (x - s.mean) * (x - s.mean);
  s.stddev = std::sqrt(squares / static_cast<double>(samples.size() - 1));
  return s;
}

void AddBenchCommand(CLI::App& app, BenchFlags& f) {
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode tokens/s, like llama-bench");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory (default: the embedded default model)");
  cmd->add_option("-p,--prompt-tokens", f.prompt_tokens, "Prefill: tokens in the synthetic prompt (default 512)");
  cmd->add_option("-n,--decode-tokens", f.decode_tokens, "Decode: tokens generated per sequence (default 128)");
  cmd->add_option("-t,--threads", f.threads, "Threads (default: all cores)");
  cmd->add_option("--batch", f.batch, "Decode: independent sequences stepped together (default 1)");
  cmd->add_option("-d,--depth", f.depth, "Decode: tokens already in each sequence's KV cache (default 0)");
  cmd->add_option("-r,--repetitions", f.repetitions, "Repetitions; reports mean ± stddev (default 3)");
  cmd->add_option("--seed", f.seed, "Seed of the synthetic token ids (default 1234)");
  AddPrecisionOptions(cmd, f.precision);
  cmd->add_flag("--json", f.json, "Print one JSON object instead of a table");
}

Status ValidateBenchFlags(const BenchFlags& f) {
  if (f.prompt_tokens < 1) return Status::Errorf("-p must be at least 1 (got {})", f.prompt_tokens);
  if (f.decode_tokens < 1) return Status::Errorf("-n must be at least 1 (got {})", f.decode_tokens);
  if (f.batch < 1) return Status::Errorf("--batch must be at least 1 (got {})", f.batch);
  if (f.repetitions < 1) return Status::Errorf("-r must be at least 1 (got {})", f.repetitions);
  if (f.depth < 0) return Status::Errorf("-d must be 0 or more (got {})", f.depth);
  if (f.threads < 0) return Status::Errorf("-t must be 0 (all cores) or more (got {})", f.threads);
  if (f.threads > 1024) return Status::Errorf("-t of {} is more than the 1024 threads supported", f.threads);
  return Status::Ok();
}

Status ValidateBenchForModel(const BenchFlags& f, const ModelConfig& c) {
  if (f.prompt_tokens > c.max_position) {
    return Status::Errorf("-p {} is longer than the model's context of {} tokens", f.prompt_tokens, c.max_position);
  }
  if (static_cast<int64_t>(f.depth) + f.decode_tokens > c.max_position) {
    return Status::Errorf("-d {} plus -n {} is longer than the model's context of {} tokens", f.depth,
                          f.decode_tokens, c.max_position);
  }
  if (c.vocab_size < 1) return Status::Error("the model has an empty vocabulary");
  return Status::Ok();
}

BenchResult MeasureModelSpeed(Model& model, const BenchFlags& f, ThreadPool& pool) {
  const ModelConfig& c = model.config();
  std::mt19937_64 rng(f.seed);
  std::vector<float> logits(c.vocab_size);
  const std::vector<int32_t> prompt = RandomTokens(rng, f.prompt_tokens, c.vocab_size);

  // Warm-up, untimed: the whole prefill (its first run grows the step's
  // scratch buffers and faults their pages in, a once-per-process cost) and
  // one decode step.
  TimePrefill(model, prompt, pool);
  BenchFlags one = f;
  one.batch = 1;
  one.depth = 0;
  TimeDecode(model, one, 1, rng, pool, logits);

  BenchResult result;
  for (int r = 0; r < f.repetitions; ++r) {
    const double seconds = TimePrefill(model, prompt, pool);
    result.prefill_tok_s.push_back(f.prompt_tokens / std::max(seconds, 1e-9));
  }
  for (int r = 0; r < f.repetitions; ++r) {
    const double seconds = TimeDecode(model, f, f.decode_tokens, rng, pool, logits);
    result.decode_tok_s.push_back(static_cast<double>(f.decode_tokens) * f.batch / std::max(seconds, 1e-9));
  }
  return result;
}

int RunBench(const BenchFlags& f) {
  if (Status s = ValidateBenchFlags(f); !s.ok()) return BenchFail(s.message());
  const std::string path = f.model.empty() ? DefaultModelPath() : f.model;
  ThreadPool pool(f.threads);
  auto loaded = LoadForCommand(f.model, f.precision, &pool);  // pages the weights in: no repetition pays faults
  if (!loaded.ok()) return BenchFail(loaded.status().message());
  Model& model = **loaded;
  const ModelConfig& c = model.config();
  if (Status s = ValidateBenchForModel(f, c); !s.ok()) return BenchFail(fmt::format("{}: {}", path, s.message()));

  size_t weight_bytes = 0;
  for (const std::string& name : model.files->weights.Names()) weight_bytes += model.files->weights.Find(name)->num_bytes;
  const BenchResult result = MeasureModelSpeed(model, f, pool);
  const Spread prefill = MeanAndStddev(result.prefill_tok_s);
  const Spread decode = MeanAndStddev(result.decode_tok_s);
  const ParameterCounts params = CountParameters(c);
  const std::string cpu = GetCpuFeatures().Describe();
  // Other processes on the same cores depress the figures: say how loaded.
  double load[1] = {-1.0};
  if (getloadavg(load, 1) != 1) load[0] = -1.0;

  if (f.json) {
    nlohmann::ordered_json out = {
        {"model", path},
        {"model_name", std::filesystem::path(path).filename().string()},
        {"arch", c.arch},
        {"weight_bytes", weight_bytes},
        {"params_total", params.total},
        {"params_active_per_token", params.active_per_token},
        {"threads", pool.num_threads()},
        {"weights", f.precision.weights},
        {"kv_cache", KvCacheName(f.precision)},
        {"cpu_features", cpu},
        {"p", f.prompt_tokens},
        {"n", f.decode_tokens},
        {"batch", f.batch},
        {"depth", f.depth},
        {"repetitions", f.repetitions},
        {"seed", f.seed},
        {"prefill_tok_s", prefill.mean},
        {"prefill_tok_s_stddev", prefill.stddev},
        {"decode_tok_s", decode.mean},
        {"decode_tok_s_stddev", decode.stddev},
        {"prefill_tok_s_samples", result.prefill_tok_s},
        {"decode_tok_s_samples", result.decode_tok_s},
        {"decode_batching", "batched: one Forward call per step for all sequences"},
        {"load_average_1m", load[0]},
    };
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("model: %s (%s, %.1f MiB, %.1fM params, %.1fM active per token)\n", path.c_str(), c.arch.c_str(),
              weight_bytes / 1048576.0, params.total / 1e6, params.active_per_token / 1e6);
  std::printf("threads: %d | cpu: %s | repetitions: %d | load average (1 min, before the run ended): %.2f\n\n",
              pool.num_threads(), cpu.c_str(), f.repetitions, load[0]);
  const std::string prefill_test = fmt::format("pp{}", f.prompt_tokens);
  std::string decode_test = fmt::format("tg{} batch {}", f.decode_tokens, f.batch);
  if (f.depth > 0) decode_test += fmt::format(" @ d{}", f.depth);
  const size_t width = std::max<size_t>(decode_test.size(), 12);
  std::printf("| %-*s | %20s |\n", static_cast<int>(width), "test", "tokens/s");
  std::printf("| %s | %s |\n", std::string(width, '-').c_str(), std::string(20, '-').c_str());
  // "±" is two bytes in UTF-8: pad by one more.
  std::printf("| %-*s | %21s |\n", static_cast<int>(width), prefill_test.c_str(), FormatSpread(prefill).c_str());
  std::printf("| %-*s | %21s |\n", static_cast<int>(width), decode_test.c_str(), FormatSpread(decode).c_str());
  if (f.batch > 1) {
    std::printf("\nbatch %d: one batched step per token for all sequences; tokens/s is the total over all sequences.\n",
                f.batch);
  }
  return 0;
}

}  // namespace tetra::cli
