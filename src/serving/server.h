// The OpenAI-compatible front of the engine: routes HTTP requests to the
// engine and its answers back as JSON or Server-Sent Events.
//
//   GET  /health               200 once the engine is attached, 503 before
//   GET  /v1/models            the served model
//   GET  /metrics              Prometheus text (doc/metrics.md)
//   GET  /                     the chat page
//   POST /v1/completions       prompt (string, list of strings, ids, list of ids)
//   POST /v1/chat/completions  messages through the model's chat template
//
// With an API key, /v1/* needs "Authorization: Bearer KEY" (401 otherwise);
// /health, /metrics and / stay open, as vLLM's do.
//
// Threads: Handle runs on an HTTP IO thread; engine callbacks on the engine
// thread; a call's state is shared between them under its own mutex.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "engine/engine.h"
#include "serving/http_server.h"
#include "serving/kv_agent.h"
#include "serving/openai_protocol.h"

namespace tetra::serving {

struct ServerOptions {
  std::string served_model_name;  // what /v1/models lists and requests name
  std::string api_key;            // "" = no authentication
  // Disaggregation (doc/disaggregation.md). kDecode: a request with an
  // X-Tetra-Prefill header and at least disagg_min_prompt_tokens prompt
  // tokens is prefilled there (kImport). kPrefill: POST /internal/v1/prefill
  // is served.
  ServeRole role = ServeRole::kBoth;
  int disagg_min_prompt_tokens = 0;
};

class OpenAiServer {
 public:
  explicit OpenAiServer(ServerOptions options);

  // The engine serving requests (it and its model outlive this server's use
  // of them). Until then /health answers 503 and /v1/* 503.
  void Attach(Engine* engine);
  // The KV agent of a prefill or decode instance, for /metrics (it outlives
  // this server's use of it).
  void AttachKvAgent(const KvAgent* agent) { kv_agent_.store(agent); }
  // Refuse new generation requests (503) from now on; calls in flight go on.
  void StopTakingRequests();

  void Handle(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

  // Generation calls not answered yet.
  int calls_in_flight() const { return in_flight_.load(); }
  // Waits until no call is in flight or `seconds` pass; true when none is.
  bool WaitForCalls(double seconds);

  // Called by a call when it ends.
  void CallEnded();

 private:
  void HandleGeneration(ApiKind kind, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);
  // Prefill role: computes a decode instance's prompt KV and sends it there.
  void HandlePrefill(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

  ServerOptions options_;
  std::atomic<Engine*> engine_{nullptr};
  std::atomic<const KvAgent*> kv_agent_{nullptr};
  std::atomic<bool> taking_requests_{true};
  std::atomic<int> in_flight_{0};
  std::atomic<uint64_t> next_call_id_{1};
  std::mutex mu_;
  std::condition_variable idle_;
};

}  // namespace tetra::serving
