// The serving engine's public face: requests in, streamed updates out.
//
// A request is a tokenized prompt with sampling parameters and limits; the
// engine schedules it with every other request (continuous batching,
// chunked prefill mixed with decodes, prefix caching, preemption), and
// reports its progress through a callback: new text and tokens per sample,
// then a last update with each sample's finish reason and the usage counts.
//
// Threads: Submit, Abort, Validate and metrics() may be called from any
// thread. Callbacks run on the engine's thread, one request's updates in
// order; a callback must not block or call back into the engine other than
// Abort (post the update to your own thread/IO loop and return).
// Every submitted request gets exactly one final update (finished == true),
// whatever ends it: its stop condition, Abort, an error, or shutdown.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "engine/metrics.h"
#include "engine/sampler.h"

namespace tetra {

struct Model;

struct EngineRequest {
  std::vector<int32_t> prompt;  // token ids, not empty
  SamplingParams sampling;
  int max_tokens = 16;          // new tokens per sample, >= 1
  int n = 1;                    // parallel samples sharing the prompt's KV
  // Generation stops when a sample's text contains one of these (the text
  // before it is returned, unless include_stop_string); matched across
  // token boundaries.
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;  // stop on these ids too (not returned)
  bool ignore_eos = false;              // do not stop at the model's end tokens
  bool include_stop_string = false;
  bool skip_special_tokens = true;      // leave special tokens out of the text
  int priority = 0;                     // lower runs first; FCFS among equals
  // Prefill/decode disaggregation (doc/disaggregation.md):
  //   kExport (a prefill instance): compute the prompt's KV, sample nothing,
  //     and hold the KV until the engine is told it was sent (n must be 1;
  //     max_tokens is not used). The caller passes every prompt token but
  //     the last, which the decode instance computes.
  //   kImport (a decode instance): the KV of every prompt token but the last
  //     arrives from a prefill instance into blocks reserved for it; the last
  //     token is computed here, so sampling goes exactly as without
  //     disaggregation.
  enum class KvHandoff : uint8_t { kNone, kExport, kImport };
  KvHandoff kv_handoff = KvHandoff::kNone;
  // kExport: leading positions the decode side already holds (its prefix
  // cache), whole blocks; they are not sent.
  int64_t kv_skip_tokens = 0;
  // Opaque to the engine: who the KV goes to or comes from, handed back to
  // the KvHandoffHandler in the layout.
  std::string kv_peer;
};

enum class FinishReason : uint8_t {
  kStop,    // an end token, a stop token id or a stop string
  kLength,  // max_tokens, or the model's context is full
  kAbort,   // Abort() (a client that went away) or shutdown
  kError,   // the request failed (RequestUpdate::error says why)
};
const char* FinishReasonName(FinishReason reason);  // "stop", "length", "abort", "error"

struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.0f;            // of the chosen token, raw model distribution
  std::vector<TokenLogprob> top;   // the top alternatives, most likely first (sampling.top_logprobs)
};

struct SampleUpdate {
  int index = 0;                  // which of the n samples
  std::string text;               // new text: whole UTF-8 characters; text that might start a stop string is held back
  std::vector<int32_t> tokens;    // new token ids
  std::vector<TokenLogprobs> logprobs;  // one per new token when sampling.top_logprobs >= 0
  std::optional<FinishReason> finish;   // set on the sample's last update
  std::string stop_string;        // the stop string that ended it, if any
  std::optional<int32_t> stop_token;    // the stop token id that ended it, if any
};

struct RequestUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // all samples together
  int64_t cached_prompt_tokens = 0;  // prompt tokens taken from the prefix cache
};

struct RequestUpdate {
  uint64_t request_id = 0;
  std::vector<SampleUpdate> samples;  // only samples with news
  bool finished = false;              // the request's last update
  Status error;                       // why it failed (finished, every sample kError)
  RequestUsage usage;                 // so far; final on the last update
};

using UpdateCallback = std::function<void(RequestUpdate&&)>;

// Where a handed-off request's KV lies in this process's cache, as chunks
// of byte spans (KvStorage::LayerRegions). Positions [first_token,
// num_tokens) are cut in pieces: each full block, then, when num_tokens is
// not whole blocks, the open block; chunk p * num_layers + l is layer l of
// piece p. Two engines whose `format` matches lay the same request out in
// chunks of the same sizes.
struct KvHandoffLayout {
  int64_t num_tokens = 0;
  int64_t first_token = 0;  // whole blocks; the positions before it are not moved
  uint32_t num_chunks = 0;
  std::vector<std::vector<std::span<uint8_t>>> chunks;  // kImport: every chunk, in order (kExport: see OnKvWritten)
  std::string format;
  std::vector<int32_t> tokens;  // the prompt tokens of positions [0, num_tokens)
  std::string peer;             // the request's kv_peer
};

// One chunk of a request's KV (KvHandoffLayout): its index and spans.
struct KvHandoffChunk {
  uint32_t index = 0;
  std::vector<std::span<uint8_t>> regions;
  bool open_block = false;  // the open block's f32 keys and values (else a full block's)
};

// Moves KV between engines (the serving layer's transport agent; a test's
// loopback). Called on the engine thread, except OnKvWritten: return
// quickly, except OnKvCancel.
class KvHandoffHandler {
 public:
  virtual ~KvHandoffHandler() = default;
  // kImport: blocks are reserved; fill the layout's spans, then call
  // Engine::KvArrived (from any thread).
  virtual void OnKvReserved(uint64_t request_id, const KvHandoffLayout& layout) = 0;
  // kExport, on the runner thread while a step computes: these chunks of
  // the prompt's KV are written (one layer of the pieces the step
  // completes; the next layer is computing). Queue them to send and return
  // at once; their spans stay valid and unchanged until OnKvCancel.
  // `peer` is the request's kv_peer, `format` this engine's KV format.
  virtual void OnKvWritten(uint64_t request_id, std::string_view peer, std::string_view format,
                           std::vector<KvHandoffChunk> chunks) = 0;
  // kExport: the whole prompt is computed and every one of its
  // layout.num_chunks chunks went to OnKvWritten; finish the transfer, then
  // call Engine::KvSent (from any thread).
  virtual void OnKvReady(uint64_t request_id, const KvHandoffLayout& layout) = 0;
  // The request ends (abort, shutdown, or after KvSent for an export):
  // return only once nothing touches its spans any more.
  virtual void OnKvCancel(uint64_t request_id) = 0;
};

struct EngineOptions {
  int num_threads = 0;              // kernel threads; 0 = one per core
  int max_num_sequences = 64;       // sequences running at once (a batch's rows)
  int max_step_tokens = 512;        // tokens per step: decodes + prefill chunks
  // Prompt tokens a step carries while sequences decode (a step's time is
  // their inter-token gap); steps without decodes take max_step_tokens.
  // 0: max_step_tokens always.
  int max_prefill_tokens_with_decodes = 32;
  int64_t kv_cache_bytes = 0;       // KV pool size; 0 = room for max_num_sequences full contexts, capped at 1/4 of RAM
  int max_waiting_requests = 4096;  // Submit refuses more (kResourceExhausted)
  bool enable_prefix_caching = true;
  bool overlap = true;              // schedule step N+1 while step N computes
  // Prompt chunks deep into a long prompt take fewer tokens, so steps cost
  // about the same (SchedulerOptions::attention_cost_context).
  bool attention_cost_model = true;
  // Speculative decoding (doc/speculative.md): greedy decodes guess up to
  // this many tokens with a suffix proposer and verify them in the step.
  // 0: off (the default until the cost model that decides k is built).
  int spec_max_tokens = 0;
  enum class SpecMethod : uint8_t { kSuffix, kNgram };
  SpecMethod spec_method = SpecMethod::kSuffix;
  bool shared_prefix_attention = true;  // parallel samples read their prompt's KV once per step
  KvHandoffHandler* kv_handoff = nullptr;  // for kExport / kImport requests; not owned, outlives the engine
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Errors a request would meet, without submitting it: empty prompt, ids
  // outside the vocabulary, prompt + max_tokens beyond the context, bad
  // sampling parameters or n. kInvalid, with a message naming the field.
  virtual Status Validate(const EngineRequest& request) const = 0;
  // Queues a request (after Validate); its updates go to on_update. Returns
  // its id. kResourceExhausted when the waiting queue is full, kUnavailable
  // when the engine is stopping.
  virtual StatusOr<uint64_t> Submit(EngineRequest request, UpdateCallback on_update) = 0;
  // Ends a request wherever it is (waiting, prefilling, decoding); its blocks
  // are freed once no step in flight uses them, and its final update says
  // kAbort. Unknown or finished ids are ignored.
  virtual void Abort(uint64_t request_id) = 0;
  // The KV transfer of a kImport request ended: ok, it decodes on; an error,
  // it is prefilled here instead. Any thread; late or unknown ids are ignored.
  virtual void KvArrived(uint64_t request_id, Status status) = 0;
  // The KV of a kExport request was sent (or could not be): the request
  // finishes and its blocks are freed. Any thread.
  virtual void KvSent(uint64_t request_id, Status status) = 0;
  // Stops taking requests, aborts every request still in the engine (each
  // gets its final update) and joins the engine thread. Idempotent.
  virtual void Shutdown() = 0;

  virtual EngineMetrics metrics() const = 0;
  virtual const Model& model() const = 0;
};

// The engine over a loaded model (which must outlive it).
StatusOr<std::unique_ptr<Engine>> CreateEngine(const Model& model, const EngineOptions& options);

}  // namespace tetra
