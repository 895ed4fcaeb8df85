#include "engine/generator.h"

#include <algorithm>
#include <chrono>

#include "base/check.h"
#include "model/session.h"

namespace tetra {

namespace {
double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}
}  // namespace

std::vector<float> ForwardAllLogits(Model& model, std::span<const int32_t> tokens, ThreadPool& pool) {
  const ModelConfig& c = model.config();
  Session session(model, 1, static_cast<int64_t>(tokens.size()));
  const int seq = session.NewSequence().value();
  std::vector<float> logits(tokens.size() * c.vocab_size);
  const Session::Step step{seq, tokens, LogitsRows::kAll};
  const Status status = session.Forward(std::span<const Session::Step>(&step, 1), logits, pool);
  TETRA_CHECK(status.ok(), "{}", status.message());
  return logits;
}

Status CheckRequest(const ModelConfig& c, std::span<const int32_t> prompt, int max_new_tokens) {
  if (prompt.empty()) return Status::Error("the prompt is empty: nothing to continue");
  for (int32_t id : prompt) {
    if (id < 0 || id >= c.vocab_size) return Status::Errorf("token id {} is outside the vocabulary of {}", id, c.vocab_size);
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + max_new_tokens;
  if (total > c.max_position) {
    return Status::Errorf("prompt of {} tokens plus {} new tokens exceeds the model's context of {}",
                          prompt.size(), max_new_tokens, c.max_position);
  }
  return Status::Ok();
}

StatusOr<GenerateResult> Generate(Model& model, std::span<const int32_t> prompt,
                                  const GenerateOptions& options, ThreadPool& pool,
                                  const std::function<void(std::string_view)>& on_text) {
  const ModelConfig& c = model.config();
  TETRA_RETURN_IF_ERROR(CheckRequest(c, prompt, options.max_new_tokens));
  TETRA_RETURN_IF_ERROR(ValidateSamplingParams(options.sampling, c.vocab_size));
  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  // Room for the whole request up front: a sequence of its own never waits for blocks.
  Session session(model, 1, static_cast<int64_t>(prompt.size()) + options.max_new_tokens);
  const int seq = session.NewSequence().value();
  std::vector<float> logits(c.vocab_size);
  auto forward = [&](std::span<const int32_t> tokens, LogitsRows rows) {
    const Session::Step step{seq, tokens, rows};
    return session.Forward(std::span<const Session::Step>(&step, 1),
                           std::span<float>(logits.data(), rows == LogitsRows::kNone ? 0 : logits.size()), pool);
  };
  SequenceSampler sampler(options.sampling, /*stream=*/0, prompt);
  SamplerScratch scratch;
  StreamingDecoder decoder(*model.tokenizer, /*skip_special=*/true);

  auto start = std::chrono::steady_clock::now();
  const int64_t chunk = std::max(1, options.prefill_chunk_tokens);
  for (int64_t begin = 0; begin < static_cast<int64_t>(prompt.size()); begin += chunk) {
    const int64_t n = std::min<int64_t>(chunk, static_cast<int64_t>(prompt.size()) - begin);
    const bool is_last = begin + n == static_cast<int64_t>(prompt.size());
    TETRA_RETURN_IF_ERROR(forward(prompt.subspan(begin, n), is_last ? LogitsRows::kLast : LogitsRows::kNone));
  }
  result.prefill_seconds = SecondsSince(start);
  start = std::chrono::steady_clock::now();

  const auto& stop_ids = model.tokenizer->stop_ids();
  for (int i = 0; i < options.max_new_tokens; ++i) {
    const SampleResult sampled = sampler.Sample(logits.data(), c.vocab_size, scratch);
    if (sampled.logits_were_all_invalid) {
      return Status::Errorf("the model's logits at generated token {} are all NaN or -inf", i);
    }
    const int32_t next = sampled.token;
    if (options.stop_at_eos && std::find(stop_ids.begin(), stop_ids.end(), next) != stop_ids.end()) {
      result.stopped_at_eos = true;
      break;
    }
    result.token_ids.push_back(next);
    if (on_text) {
      std::string piece = decoder.Push(next);
      if (!piece.empty()) on_text(piece);
    }
    if (i + 1 == options.max_new_tokens) break;
    const int32_t token[1] = {next};
    TETRA_RETURN_IF_ERROR(forward(std::span<const int32_t>(token, 1), LogitsRows::kLast));
  }
  if (on_text) {
    std::string rest = decoder.Flush();
    if (!rest.empty()) on_text(rest);
  }
  result.decode_seconds = SecondsSince(start);
  return result;
}

}  // namespace tetra
