// The serving engine under load, without HTTP: C concurrent requests of P
// random prompt tokens and N new tokens each (greedy, no early stop),
// submitted at once, run to the end; rounds alternate between configurations
// so that the VM's drift hits both alike.
//
//   --compare overlap      steps overlapped (step N+1 planned while N computes) vs not:
//                          the runner's idle time between steps, per step and as a
//                          fraction of the wall time, and output tokens/s
//   --compare shared-prefix  n parallel samples of one prompt, with the shared-prefix
//                          decode attention vs without (each sample reads the prompt)
//
// Output: one line per round and configuration, then a summary (mean, min-max).
// Decode tok/s counts the tokens after the moment every sample has its first
// one, over the time from that moment to the end, so prefill is left out.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <numeric>
#include <random>

#include "engine/engine.h"
#include "model/model.h"

namespace tetra {
namespace {

struct Flags {
  std::string model;
  std::string compare = "overlap";
  int concurrency = 16;
  int prompt_tokens = 128;
  int max_tokens = 64;
  int n = 1;
  int rounds = 3;
  int threads = 0;
  std::string weights = "w4a8";
  int max_step_tokens = 512;
};

struct RoundResult {
  double seconds = 0;
  int64_t output_tokens = 0;
  int64_t steps = 0;
  double busy = 0, idle = 0;
  // The decode phase: from the moment every sample has its first token to the end.
  double decode_seconds = 0;
  int64_t decode_tokens = 0;
};

RoundResult RunRound(const Model& model, const Flags& f, EngineOptions options, uint64_t seed) {
  auto engine = CreateEngine(model, options);
  if (!engine.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", engine.status().message().c_str());
    std::exit(1);
  }
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(model.config().vocab_size - 1));
  std::mutex mu;
  std::condition_variable cv;
  int remaining = f.concurrency;
  int64_t output_tokens = 0;  // under mu
  const int total_samples = f.concurrency * f.n;
  int samples_started = 0;
  std::vector<std::vector<bool>> started(f.concurrency, std::vector<bool>(f.n, false));
  std::chrono::steady_clock::time_point decode_start;
  int64_t tokens_at_decode_start = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < f.concurrency; ++i) {
    EngineRequest r;
    r.prompt.resize(f.prompt_tokens);
    for (int32_t& t : r.prompt) t = token(rng);
    r.max_tokens = f.max_tokens;
    r.n = f.n;
    r.ignore_eos = true;
    r.sampling.temperature = 0.0f;
    auto id = (*engine)->Submit(std::move(r), [&, i](RequestUpdate&& u) {
      std::lock_guard<std::mutex> lock(mu);
      for (const SampleUpdate& s : u.samples) {
        output_tokens += static_cast<int64_t>(s.tokens.size());
        if (!s.tokens.empty() && !started[i][s.index]) {
          started[i][s.index] = true;
          if (++samples_started == total_samples) {
            decode_start = std::chrono::steady_clock::now();
            tokens_at_decode_start = output_tokens;
          }
        }
      }
      if (u.finished) {
        --remaining;
        cv.notify_all();
      }
    });
    if (!id.ok()) {
      std::fprintf(stderr, "engine_bench: %s\n", id.status().message().c_str());
      std::exit(1);
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return remaining == 0; });
  }
  const auto end = std::chrono::steady_clock::now();
  RoundResult result;
  result.seconds = std::chrono::duration<double>(end - start).count();
  const EngineMetrics m = (*engine)->metrics();
  std::lock_guard<std::mutex> lock(mu);
  result.output_tokens = output_tokens;
  if (samples_started == total_samples) {
    result.decode_seconds = std::chrono::duration<double>(end - decode_start).count();
    result.decode_tokens = output_tokens - tokens_at_decode_start;
  }
  result.steps = m.num_steps;
  result.busy = m.step_busy_seconds;
  result.idle = m.step_idle_seconds;
  return result;
}

std::string Range(const std::vector<double>& v, const char* format) {
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return fmt::format(fmt::runtime(std::string(format) + " ({}-{})"), mean, fmt::format(fmt::runtime(format), *lo),
                     fmt::format(fmt::runtime(format), *hi));
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app("tetra engine benchmark: overlap and shared-prefix attention, without HTTP");
  app.add_option("-m,--model", f.model, "GGUF file or HF directory")->required();
  app.add_option("--compare", f.compare, "overlap | shared-prefix")->check(CLI::IsMember({"overlap", "shared-prefix"}));
  app.add_option("-c,--concurrency", f.concurrency, "Requests at once")->check(CLI::Range(1, 4096));
  app.add_option("-p,--prompt-tokens", f.prompt_tokens, "Prompt tokens per request")->check(CLI::Range(1, 1 << 20));
  app.add_option("-n,--max-tokens", f.max_tokens, "New tokens per sample")->check(CLI::Range(1, 1 << 20));
  app.add_option("--samples", f.n, "Parallel samples per request (n)")->check(CLI::Range(1, 256));
  app.add_option("-r,--rounds", f.rounds, "Rounds per configuration, alternating")->check(CLI::Range(1, 100));
  app.add_option("-t,--threads", f.threads, "Kernel threads (0: one per core)");
  app.add_option("--weights", f.weights, "w4a8 | reference")->check(CLI::IsMember({"w4a8", "reference"}));
  app.add_option("--max-step-tokens", f.max_step_tokens, "Token budget per step")->check(CLI::Range(1, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  LoadOptions load;
  load.weights = *ParseWeightFormat(f.weights);
  auto model = LoadModel(f.model, load);
  if (!model.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", model.status().message().c_str());
    return 1;
  }
  EngineOptions base;
  base.num_threads = f.threads;
  base.max_num_sequences = std::max(64, f.concurrency * f.n);
  base.max_step_tokens = f.max_step_tokens;
  const bool overlap = f.compare == "overlap";
  const char* names[2] = {overlap ? "no overlap" : "each sample reads the prompt",
                          overlap ? "overlap" : "shared-prefix attention"};
  std::map<int, std::vector<double>> tok_s, decode_tok_s, idle_us, idle_fraction;
  std::printf("model %s, %s, %d requests x n %d, prompt %d, %d new tokens, step budget %d\n", f.model.c_str(),
              f.weights.c_str(), f.concurrency, f.n, f.prompt_tokens, f.max_tokens, f.max_step_tokens);
  // Warm-up: pages the weights in and grows the scratch buffers.
  RunRound(**model, f, base, 0);
  for (int round = 0; round < f.rounds; ++round) {
    for (int config = 0; config < 2; ++config) {
      EngineOptions options = base;
      if (overlap) {
        options.overlap = config == 1;
      } else {
        options.shared_prefix_attention = config == 1;
      }
      const RoundResult r = RunRound(**model, f, options, 1000 + round);
      tok_s[config].push_back(static_cast<double>(r.output_tokens) / r.seconds);
      decode_tok_s[config].push_back(r.decode_seconds > 0 ? static_cast<double>(r.decode_tokens) / r.decode_seconds
                                                          : 0.0);
      idle_us[config].push_back(r.steps > 0 ? 1e6 * r.idle / static_cast<double>(r.steps) : 0.0);
      idle_fraction[config].push_back(100.0 * r.idle / r.seconds);
      std::printf(
          "round %d %-28s %8.1f output tok/s, %8.1f decode tok/s, %5lld steps, busy %.2f s, idle %.3f s (%.0f us/step, "
          "%.1f%%)\n",
          round, names[config], tok_s[config].back(), decode_tok_s[config].back(), static_cast<long long>(r.steps),
          r.busy, r.idle, idle_us[config].back(), idle_fraction[config].back());
      std::fflush(stdout);
    }
  }
  std::printf(
      "\n| configuration | output tok/s | decode tok/s | runner idle per step (us) | idle share of wall time (%%) "
      "|\n|---|---|---|---|---|\n");
  for (int config = 0; config < 2; ++config) {
    std::printf("| %s | %s | %s | %s | %s |\n", names[config], Range(tok_s[config], "{:.1f}").c_str(),
                Range(decode_tok_s[config], "{:.1f}").c_str(), Range(idle_us[config], "{:.0f}").c_str(),
                Range(idle_fraction[config], "{:.2f}").c_str());
  }
  const auto sum = [](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); };
  std::printf("\nratio of mean output tok/s (%s / %s): %.2fx\n", names[1], names[0], sum(tok_s[1]) / sum(tok_s[0]));
  std::printf("ratio of mean decode tok/s (every sample past its first token): %.2fx\n",
              sum(decode_tok_s[1]) / sum(decode_tok_s[0]));
  return 0;
}

}  // namespace
}  // namespace tetra

int main(int argc, char** argv) { return tetra::Main(argc, argv); }
