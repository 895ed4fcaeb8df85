#include "cli/commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "base/cpu_features.h"
#include "base/logging.h"
#include "base/mapped_file.h"
#include "base/thread_pool.h"
#include "engine/generator.h"
#include "engine/perplexity.h"
#include "model/model.h"

namespace tetra::cli {
int Fail(const std::string& message) {
  std::fprintf(stderr, "tetra: %s\n", message.c_str());
  return 1;
}

namespace {

std::string ResolveModel(const std::string& flag) {
  return flag.empty() ? DefaultModelPath() : flag;
}

}  // namespace

size_t PrefaultWeights(const ModelFiles& files) {
  const bool show_progress = isatty(STDERR_FILENO);
  std::vector<const WeightTensor*> tensors;
  size_t total = 0;
  for (const std::string& name : files.weights.Names()) {
    tensors.push_back(files.weights.Find(name));
    total += tensors.back()->num_bytes;
  }
  std::sort(tensors.begin(), tensors.end(), [](auto* a, auto* b) { return a->data < b->data; });
  constexpr size_t kPage = 4096;
  size_t done = 0;
  int last_percent = -1;
  volatile uint8_t sink = 0;
  for (const WeightTensor* t : tensors) {
    for (size_t offset = 0; offset < t->num_bytes; offset += kPage) sink = sink + t->data[offset];
    done += t->num_bytes;
    const int percent = total ? static_cast<int>(100 * done / total) : 100;
    if (show_progress && percent != last_percent) {
      std::fprintf(stderr, "\rloading %s: %3d%% (%zu / %zu MB)", files.path.c_str(), percent, done >> 20, total >> 20);
      last_percent = percent;
    }
  }
  if (show_progress) std::fprintf(stderr, "\r\033[K");
  return total;
}

std::string KvCacheName(const PrecisionFlags& flags) {
  if (!flags.kv_cache.empty()) return flags.kv_cache;
  return flags.weights == "reference" ? "f32" : "fp8";
}

StatusOr<std::unique_ptr<Model>> LoadForCommand(const std::string& model_flag, const PrecisionFlags& precision,
                                                ThreadPool* pool) {
  const std::string path = ResolveModel(model_flag);
  LoadOptions options;
  options.weights = ParseWeightFormat(precision.weights).value_or(WeightFormat::kW4A8);  // validated by CLI11
  options.pool = pool;
  TETRA_ASSIGN_OR_RETURN(options.kv_dtype, ParseKvDtype(KvCacheName(precision)));
  options.kv_block_tokens = precision.kv_block_tokens;
  if (!precision.attention_math.empty()) {
    options.attention_math = precision.attention_math == "int8" ? AttentionMath::kInt8Scores : AttentionMath::kF32;
  }
  const auto start = std::chrono::steady_clock::now();
  auto model = LoadModel(path, options);
  if (!model.ok()) {
    if (model_flag.empty()) {
      return Status::Errorf(
          "{} (this is the default model: install it with scripts/install-default-model.sh, or pass -m MODEL)",
          model.status().message());
    }
    return model;
  }
  PrefaultWeights(*(*model)->files);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  TETRA_LOG_INFO("loaded {} ({}, {} weights, {} KV cache) in {:.0f} ms", path, (*model)->spec->name,
                 WeightFormatName(options.weights), KvDtypeName((*model)->kv_cache.dtype), ms);
  return model;
}

void AddPrecisionOptions(CLI::App* cmd, PrecisionFlags& flags) {
  cmd->add_option("--weights", flags.weights,
                  "Linear layers: w4a8 (4-bit weights, int8 activations; the default) or reference (f32 on the "
                  "stored weights, for exact comparisons)")
      ->check(CLI::IsMember({"reference", "w4a8"}));
  cmd->add_option("--kv-cache", flags.kv_cache,
                  "KV cache storage: fp8 (E4M3, a scale per block per KV head), bf16 or f32 "
                  "(default: f32 with reference weights, fp8 with w4a8)")
      ->check(CLI::IsMember({"fp8", "bf16", "f32"}));
  cmd->add_option("--kv-block", flags.kv_block_tokens, "KV cache block size in tokens, and FP8 scale group (default 64)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--attention-math", flags.attention_math,
                  "Attention scores over FP8 KV blocks: int8 (int8 dot products) or f32 "
                  "(default: int8 with w4a8 on CPUs with AVX-512 VNNI and VBMI, else f32)")
      ->check(CLI::IsMember({"int8", "f32"}));
}

std::string DefaultModelPath() {
  if (const char* env = std::getenv("TETRA_DEFAULT_MODEL"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return fmt::format("{}/.cache/tetra/models/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : ".");
}

void AddGenerateCommand(CLI::App& app, GenerateFlags& f) {
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt, streamed as it is produced");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory (default: the embedded default model)");
  cmd->add_option("-p,--prompt", f.prompt, "The prompt")->required();
  cmd->add_option("-n,--max-tokens", f.max_new_tokens, "Tokens to generate")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--temperature", f.temperature, "0 for greedy (default 0.8)")->check(CLI::Range(0.0f, 100.0f));
  cmd->add_option("--top-k", f.top_k, "Keep the k most likely tokens (0: all; default 40)")->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--top-p", f.top_p, "Nucleus sampling mass in (0, 1] (1: off; default 0.95)")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--min-p", f.min_p, "Keep tokens with p >= min_p * p_max, in [0, 1] (default 0: off)")
      ->check(CLI::Range(0.0f, 1.0f));
  cmd->add_option("--repetition-penalty", f.repetition_penalty,
                  "Divide positive / multiply negative logits of prompt and generated tokens, in (0, 10] (default 1: off)")
      ->check(CLI::Range(0.0f, 10.0f));
  cmd->add_option("--presence-penalty", f.presence_penalty,
                  "Subtract from the logit of every generated token, in [-2, 2] (default 0)")
      ->check(CLI::Range(-2.0f, 2.0f));
  cmd->add_option("--frequency-penalty", f.frequency_penalty,
                  "Subtract per occurrence in the generated text, in [-2, 2] (default 0)")
      ->check(CLI::Range(-2.0f, 2.0f));
  cmd->add_option("--seed", f.seed, "Random seed (default: random)")->check(CLI::Range(int64_t{-1}, INT64_MAX));
  cmd->add_flag("--chat", f.chat, "Apply the model's chat template to the prompt as a user message");
  cmd->add_option("-t,--threads", f.threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
  AddPrecisionOptions(cmd, f.precision);
}

int RunGenerate(const GenerateFlags& f) {
  ThreadPool pool(f.threads);
  auto loaded = LoadForCommand(f.model, f.precision, &pool);
  if (!loaded.ok()) return Fail(loaded.status().message());
  Model& model = **loaded;

  std::vector<int32_t> prompt;
  if (f.chat) {
    if (!model.chat_template) return Fail(fmt::format("{}: the model has no chat template", model.files->path));
    // As transformers' apply_chat_template calls it (tools and documents null).
    nlohmann::ordered_json context = {
        {"messages", nlohmann::ordered_json::array({{{"role", "user"}, {"content", f.prompt}}})},
        {"tools", nullptr},
        {"documents", nullptr},
        {"add_generation_prompt", true},
        {"bos_token", model.bos_text()},
        {"eos_token", model.eos_text()},
    };
    auto rendered = model.chat_template->Render(context);
    if (!rendered.ok()) return Fail("chat template: " + rendered.status().message());
    prompt = model.tokenizer->Encode(*rendered, /*add_special=*/false, /*parse_special=*/true);
  } else {
    prompt = model.tokenizer->Encode(f.prompt, /*add_special=*/true, /*parse_special=*/true);
  }

  GenerateOptions options;
  options.max_new_tokens = f.max_new_tokens;
  options.sampling.temperature = f.temperature;
  options.sampling.top_k = f.top_k;
  options.sampling.top_p = f.top_p;
  options.sampling.min_p = f.min_p;
  options.sampling.repetition_penalty = f.repetition_penalty;
  options.sampling.presence_penalty = f.presence_penalty;
  options.sampling.frequency_penalty = f.frequency_penalty;
  if (f.seed >= 0) options.sampling.seed = static_cast<uint64_t>(f.seed);  // else a random one
  // Refuse what cannot run before echoing anything.
  if (Status s = CheckRequest(model.config(), prompt, f.max_new_tokens); !s.ok()) return Fail(s.message());
  if (Status s = ValidateSamplingParams(options.sampling, model.config().vocab_size); !s.ok()) {
    return Fail(s.message());
  }
  if (!f.chat) {
    std::fputs(f.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  auto result = Generate(model, prompt, options, pool, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!result.ok()) return Fail(result.status().message());
  const double prefill_tps = result->prefill_seconds > 0 ? result->prompt_tokens / result->prefill_seconds : 0;
  const int64_t decoded = std::max<int64_t>(0, static_cast<int64_t>(result->token_ids.size()) - 1);
  const double decode_tps = result->decode_seconds > 0 ? decoded / result->decode_seconds : 0;
  std::fprintf(stderr,
               "\nprompt: %lld tokens, %.1f tokens/s | generation: %zu tokens, %.1f tokens/s | %d threads (%s)\n",
               static_cast<long long>(result->prompt_tokens), prefill_tps, result->token_ids.size(), decode_tps,
               pool.num_threads(), GetCpuFeatures().Describe().c_str());
  return 0;
}

void AddInfoCommand(CLI::App& app, InfoFlags& f) {
  CLI::App* cmd = app.add_subcommand("info", "Describe a model: architecture, parameters, tensor types, tokenizer");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory (default: the embedded default model)");
}

int RunInfo(const InfoFlags& f) {
  auto loaded = LoadForCommand(f.model, PrecisionFlags{}, nullptr);
  if (!loaded.ok()) return Fail(loaded.status().message());
  const Model& model = **loaded;
  const ModelConfig& c = model.config();
  const ParameterCounts params = CountParameters(c);
  std::map<std::string, std::pair<int, int64_t>> types;  // dtype -> (tensors, elements)
  for (const std::string& name : model.files->weights.Names()) {
    const WeightTensor* t = model.files->weights.Find(name);
    auto& entry = types[std::string(DTypeName(t->dtype))];
    entry.first += 1;
    entry.second += t->num_elements();
  }
  fmt::print("model:           {}\n", model.files->path);
  fmt::print("format:          {}\n", model.files->format == ModelFiles::Format::kGguf
                                         ? fmt::format("GGUF v{}", model.files->gguf_version)
                                         : std::string("Hugging Face directory"));
  fmt::print("architecture:    {}\n", c.arch);
  fmt::print("parameters:      {:.2f} M total, {:.2f} M active per token\n", params.total / 1e6,
             params.active_per_token / 1e6);
  fmt::print("layers:          {} (hidden {}, heads {}, KV heads {}, head dim {})\n", c.num_layers,
             c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
  if (c.is_moe()) {
    fmt::print("experts:         {} (top-{}, FFN {}{}{})\n", c.num_experts, c.num_experts_per_token,
               c.expert_intermediate_size,
               c.shared_expert_intermediate_size ? fmt::format(", shared expert {}", c.shared_expert_intermediate_size) : "",
               c.norm_topk_prob ? ", top-k renormalised" : "");
  } else {
    fmt::print("FFN:             {}\n", c.intermediate_size);
  }
  fmt::print("context:         {} (RoPE theta {})\n", c.max_position, c.rope.theta);
  fmt::print("vocabulary:      {}\n", c.vocab_size);
  fmt::print("tensor types:   ");
  for (const auto& [name, entry] : types) fmt::print(" {} x{} ({:.2f} M)", name, entry.first, entry.second / 1e6);
  fmt::print("\n");
  fmt::print("tokenizer:       {} ({} tokens)\n", model.tokenizer->model_name(), model.tokenizer->vocab_size());
  fmt::print("chat template:   {}\n", model.chat_template ? fmt::format("yes ({} bytes)", model.chat_template_source.size()) : "none");
  return 0;
}

void AddTokenizeCommand(CLI::App& app, TokenizeFlags& f) {
  CLI::App* cmd = app.add_subcommand("tokenize", "Print the tokens of a text");
  cmd->add_option("-m,--model", f.model, "GGUF file (vocab-only is fine) or HF directory");
  auto* prompt = cmd->add_option("-p,--prompt", f.prompt, "Text to tokenize");
  auto* file = cmd->add_option("-f,--file", f.file, "File whose text to tokenize");
  prompt->excludes(file);
  cmd->add_flag("--ids", f.ids_only, "Print only the ids, separated by spaces");
  cmd->add_flag("--no-special", f.no_special, "Add no BOS/EOS and treat special-token text as plain text");
}

int RunTokenize(const TokenizeFlags& f) {
  std::string text = f.prompt;
  if (!f.file.empty()) {
    auto contents = ReadFileToString(f.file);
    if (!contents.ok()) return Fail(contents.status().message());
    text = *contents;
  } else if (f.prompt.empty()) {
    return Fail("tokenize needs -p TEXT or -f FILE");
  }
  auto files = OpenModelFiles(ResolveModel(f.model));
  if (!files.ok()) return Fail(files.status().message());
  auto tokenizer = LoadTokenizer(**files);
  if (!tokenizer.ok()) return Fail(tokenizer.status().message());
  const std::vector<int32_t> ids = (*tokenizer)->Encode(text, !f.no_special, !f.no_special);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (f.ids_only) {
      out += fmt::format("{}{}", i ? " " : "", ids[i]);
    } else {
      out += fmt::format("{:>8} '{}'\n", ids[i], (*tokenizer)->TokenText(ids[i]));
    }
  }
  if (f.ids_only) out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

void AddPerplexityCommand(CLI::App& app, PerplexityFlags& f) {
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model over a text file");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory (default: the embedded default model)");
  cmd->add_option("-f,--file", f.file, "Text file")->required();
  cmd->add_option("-c,--ctx", f.context, "Tokens per window")->check(CLI::Range(int64_t{2}, int64_t{1} << 24));
  cmd->add_flag("--all-tokens", f.all_tokens, "Score every token of a window, not only its second half");
  cmd->add_option("-t,--threads", f.threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
  AddPrecisionOptions(cmd, f.precision);
  cmd->add_flag("--kl-vs-reference", f.kl_vs_reference,
                "Also run the reference weights on the same windows; print the mean KL divergence");
}

int RunPerplexity(const PerplexityFlags& f) {
  auto text = ReadFileToString(f.file);
  if (!text.ok()) return Fail(text.status().message());
  ThreadPool pool(f.threads);
  auto loaded = LoadForCommand(f.model, f.precision, &pool);
  if (!loaded.ok()) return Fail(loaded.status().message());
  Model& model = **loaded;
  const std::vector<int32_t> tokens = model.tokenizer->Encode(*text, /*add_special=*/true, /*parse_special=*/false);
  PerplexityOptions options;
  options.context = f.context;
  options.score_second_half = !f.all_tokens;
  if (f.kl_vs_reference) {
    auto reference = LoadForCommand(f.model, PrecisionFlags{}, &pool);
    if (!reference.ok()) return Fail(reference.status().message());
    auto comparison = CompareWithReference(**reference, model, tokens, options, pool);
    if (!comparison.ok()) return Fail(fmt::format("{}: {}", f.file, comparison.status().message()));
    const ComparisonResult& r = *comparison;
    fmt::print("reference:  perplexity {:.4f} (mean NLL {:.5f} ± {:.5f})\n", r.reference.perplexity,
               r.reference.mean_nll, r.reference.nll_standard_error);
    const std::string candidate = fmt::format("{}+{}-kv", f.precision.weights, KvCacheName(f.precision));
    fmt::print("{:<11} perplexity {:.4f} (mean NLL {:.5f} ± {:.5f}), {:+.3f}% vs reference\n", candidate + ":",
               r.candidate.perplexity, r.candidate.mean_nll, r.candidate.nll_standard_error,
               100.0 * (r.candidate.perplexity / r.reference.perplexity - 1.0));
    fmt::print("KL(reference || {}): mean {:.5f} nats, max {:.4f}; same top-1 token {:.2f}% ({} tokens, {} windows of {})\n",
               candidate, r.mean_kl, r.max_kl, 100.0 * r.top1_agreement, r.reference.num_scored,
               r.reference.num_windows, f.context);
    return 0;
  }
  const auto start = std::chrono::steady_clock::now();
  auto result = ComputePerplexity(model, tokens, options, pool);
  if (!result.ok()) return Fail(fmt::format("{}: {}", f.file, result.status().message()));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("perplexity: {:.4f} (mean NLL {:.5f} ± {:.5f} nats over {} tokens in {} windows of {})\n",
             result->perplexity, result->mean_nll, result->nll_standard_error, result->num_scored,
             result->num_windows, f.context);
  std::fflush(stdout);
  std::fprintf(stderr, "%.1f tokens/s\n", result->num_windows * f.context / seconds);
  return 0;
}

}  // namespace tetra::cli
