// Single-sequence generation: chunked prefill of the prompt, then decode one
// token at a time with sampling and streaming detokenization. The engine
// thread runs it; kernels use the given pool.
#pragma once

#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/thread_pool.h"
#include "engine/sampler.h"
#include "model/model.h"

namespace tetra {

struct GenerateOptions {
  int max_new_tokens = 128;
  SamplingParams sampling;
  bool stop_at_eos = true;
  int prefill_chunk_tokens = 512;  // as the engine's default step budget, so both chunk a prompt alike
};

struct GenerateResult {
  std::vector<int32_t> token_ids;  // generated tokens only
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;  // after the first generated token
  bool stopped_at_eos = false;
};

// Error when the prompt is empty, holds an id outside the vocabulary, or does
// not leave room for max_new_tokens in the model's context.
Status CheckRequest(const ModelConfig& config, std::span<const int32_t> prompt, int max_new_tokens);

// on_text receives each complete piece of text as it is produced (never half
// a UTF-8 character); may be empty.
StatusOr<GenerateResult> Generate(Model& model, std::span<const int32_t> prompt,
                                  const GenerateOptions& options, ThreadPool& pool,
                                  const std::function<void(std::string_view)>& on_text);

// Logits for every position of `tokens` ([n, vocab]), run as one prefill.
std::vector<float> ForwardAllLogits(Model& model, std::span<const int32_t> tokens, ThreadPool& pool);

}  // namespace tetra
