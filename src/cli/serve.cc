#include "cli/serve.h"

#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "base/logging.h"
#include "engine/engine.h"
#include "serving/http_server.h"
#include "serving/discovery.h"
#include "serving/server.h"

namespace tetra::cli {
namespace {

// Each connection is a descriptor: allow as many as the hard limit lets.
void RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

std::string DefaultServedName(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();  // a directory given with a trailing '/'
  std::string name = p.filename().string();
  if (name.size() > 5 && name.ends_with(".gguf")) name.resize(name.size() - 5);
  return name.empty() ? "tetra" : name;
}

}  // namespace

void AddServeCommand(CLI::App& app, ServeFlags& f) {
  CLI::App* cmd = app.add_subcommand("serve", "Serve the model over an OpenAI-compatible HTTP API, with a chat page at /");
  cmd->add_option("-m,--model", f.model, "GGUF file or HF directory (default: the embedded default model)");
  cmd->add_option("--host", f.host, "Address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)");
  cmd->add_option("--port", f.port, "Port (default 8080; 0: any free port)")->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", f.api_key, "Require Authorization: Bearer KEY on /v1/* (default: $TETRA_API_KEY, else none)")
      ->envname("TETRA_API_KEY");
  cmd->add_option("--served-model-name", f.served_model_name,
                  "The model's name in the API (default: the file name without .gguf)");
  cmd->add_option("-t,--threads", f.threads, "Kernel threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--max-num-seqs", f.max_num_seqs, "Sequences decoded together at most (default 64)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-step-tokens", f.max_step_tokens,
                  "Tokens per step: decodes plus prefill chunks (default 512)")
      ->check(CLI::Range(16, 1 << 20));
  cmd->add_option("--max-prefill-with-decodes", f.max_prefill_with_decodes,
                  "Prompt tokens a step carries while other requests decode: shorter keeps their inter-token "
                  "latency low, longer gives new prompts more of each step (default 32; 0: max-step-tokens)")
      ->check(CLI::Range(0, 1 << 20));
  cmd->add_option("--kv-cache-gib", f.kv_cache_gib,
                  "KV-cache pool size in GiB (default: room for max-num-seqs full contexts, at most 1/4 of RAM)")
      ->check(CLI::Range(0.0, 65536.0));
  cmd->add_option("--max-connections", f.max_connections, "Open connections at most; more get 503 (default 1024)")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--max-body-mib", f.max_body_mib, "Largest request body in MiB; larger get 413 (default 32)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--drain-timeout", f.drain_timeout,
                  "On SIGTERM, seconds to let requests in flight finish before cancelling them (default 30)")
      ->check(CLI::Range(0.0, 3600.0));
  cmd->add_flag("--no-prefix-caching", f.no_prefix_caching, "Do not reuse the KV of prompts' common prefixes");
  cmd->add_option("--spec", f.spec,
                  "Speculative decoding of greedy requests: suffix (guesses from a suffix automaton of the "
                  "sequence), ngram (prompt lookup) or off (default, until the cost model that picks k lands)")
      ->check(CLI::IsMember({"off", "suffix", "ngram"}));
  cmd->add_option("--spec-max-tokens", f.spec_max_tokens, "Tokens guessed ahead per step at most (default 4)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--role", f.role,
                  "both (default): prefill and decode here; prefill: compute prompts' KV for decode instances "
                  "(POST /internal/v1/prefill); decode: take requests, prefill them where X-Tetra-Prefill says")
      ->check(CLI::IsMember({"both", "prefill", "decode"}));
  cmd->add_option("--kv-host", f.kv_host, "Decode role: address the KV transport listens on and gives prefill "
                                          "instances (default 127.0.0.1)");
  cmd->add_option("--kv-port", f.kv_port, "Decode role: KV transport port (default 0: any free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--kv-timeout", f.kv_timeout,
                  "Seconds a KV handoff may take (the prefill call and the transfer) before the decode side "
                  "prefills the request itself; a stream stalled this long (or 10 s) fails (default 60)")
      ->check(CLI::Range(0.1, 3600.0));
  cmd->add_option("--etcd", f.etcd,
                  "Prefill and decode roles: register this instance at the etcd endpoint http://HOST:PORT, under a "
                  "lease, for tetra router --etcd to find (doc/disaggregation.md)");
  cmd->add_option("--advertise-url", f.advertise_url,
                  "The URL registered in etcd (default http://HOST:PORT; needed when listening on 0.0.0.0)");
  cmd->add_option("--etcd-ttl", f.etcd_ttl, "Seconds the etcd lease outlives this process (default 10)")
      ->check(CLI::Range(1, 3600));
  cmd->add_option("--kv-streams", f.kv_streams, "TCP streams per prefill-decode pair (default 4)")
      ->check(CLI::Range(1, 64));
  cmd->add_option("--disagg-min-prompt-tokens", f.disagg_min_prompt_tokens,
                  "Decode role: shorter prompts are prefilled here, not on the prefill instance (default 0: "
                  "every prompt goes there; a local prefill takes decode steps' time)")
      ->check(CLI::Range(0, 1 << 30));
  AddPrecisionOptions(cmd, f.precision);
}

int RunServe(const ServeFlags& f) {
  // Signals are taken by sigwait below: block them before any thread starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();

  const std::string model_path = f.model.empty() ? DefaultModelPath() : f.model;
  serving::ServerOptions server_options;
  server_options.served_model_name = f.served_model_name.empty() ? DefaultServedName(model_path) : f.served_model_name;
  server_options.api_key = f.api_key;
  server_options.role = *serving::ParseServeRole(f.role);
  server_options.disagg_min_prompt_tokens = f.disagg_min_prompt_tokens;
  serving::OpenAiServer api(server_options);
  std::unique_ptr<serving::KvAgent> kv_agent;
  if (!f.etcd.empty() && server_options.role == serving::ServeRole::kBoth) {
    return Fail("--etcd registers prefill and decode instances: give --role prefill or --role decode");
  }
  if (server_options.role != serving::ServeRole::kBoth) {
    serving::KvAgentOptions agent_options;
    agent_options.role = server_options.role;
    agent_options.kv_host = f.kv_host;
    agent_options.kv_port = f.kv_port;
    agent_options.num_streams = f.kv_streams;
    agent_options.transfer_timeout = std::chrono::milliseconds(static_cast<int64_t>(f.kv_timeout * 1000));
    auto agent = serving::KvAgent::Create(agent_options);
    if (!agent.ok()) return Fail(agent.status().message());
    kv_agent = std::move(*agent);
  }

  serving::HttpServerOptions http_options;
  http_options.host = f.host;
  http_options.port = f.port;
  http_options.max_connections = f.max_connections;
  http_options.max_body_bytes = static_cast<size_t>(f.max_body_mib) << 20;
  serving::HttpServer http(http_options, [&api](serving::HttpRequest&& request, std::shared_ptr<serving::HttpExchange> exchange) {
    api.Handle(std::move(request), std::move(exchange));
  });
  if (Status s = http.Listen(); !s.ok()) return Fail(s.message());
  std::thread io([&http] { http.Run(); });
  auto stop_io = [&] {
    http.StopAccepting();
    http.Stop(5);
    io.join();
  };

  auto loaded = LoadForCommand(f.model, f.precision, nullptr);
  if (!loaded.ok()) {
    stop_io();
    return Fail(loaded.status().message());
  }
  const Model& model = **loaded;
  EngineOptions engine_options;
  engine_options.num_threads = f.threads;
  engine_options.max_num_sequences = f.max_num_seqs;
  engine_options.max_step_tokens = f.max_step_tokens;
  engine_options.max_prefill_tokens_with_decodes = f.max_prefill_with_decodes;
  engine_options.kv_cache_bytes = static_cast<int64_t>(f.kv_cache_gib * (1ull << 30));
  engine_options.enable_prefix_caching = !f.no_prefix_caching;
  engine_options.spec_max_tokens = f.spec == "off" ? 0 : f.spec_max_tokens;
  engine_options.spec_method = f.spec == "ngram" ? EngineOptions::SpecMethod::kNgram : EngineOptions::SpecMethod::kSuffix;
  engine_options.kv_handoff = kv_agent.get();
  auto engine = CreateEngine(model, engine_options);
  if (!engine.ok()) {
    stop_io();
    return Fail(engine.status().message());
  }
  if (kv_agent) {
    kv_agent->Attach(engine->get());
    api.AttachKvAgent(kv_agent.get());
  }
  api.Attach(engine->get());

  const std::string shown_host = f.host == "0.0.0.0" || f.host == "::" ? "127.0.0.1" : f.host;
  const std::string url = fmt::format("http://{}:{}", shown_host.find(':') != std::string::npos ? "[" + shown_host + "]" : shown_host, http.port());
  const std::string auth = f.api_key.empty() ? "" : " -H 'Authorization: Bearer $TETRA_API_KEY'";
  fmt::print(stderr,
             "tetra serve: {} on {}:{} ({} weights, {} KV cache, {} threads)\n"
             "  chat page:  {}/\n"
             "  try:        curl -s {}/v1/chat/completions{} -H 'Content-Type: application/json' \\\n"
             "                -d '{{\"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}], \"max_tokens\": 64}}'\n"
             "  stop:       Ctrl-C (finishes the requests in flight)\n"
             "{}",
             server_options.served_model_name, f.host, http.port(), f.precision.weights, KvCacheName(f.precision),
             f.threads > 0 ? fmt::format("{}", f.threads) : "all", url, url, auth,
             server_options.role == serving::ServeRole::kBoth
                 ? ""
                 : fmt::format("  role:       {}{}\n", serving::ServeRoleName(server_options.role),
                               kv_agent->kv_port() > 0 ? fmt::format(", KV transfers on {}:{}", f.kv_host,
                                                                      kv_agent->kv_port())
                                                       : ""));
  std::fflush(stderr);

  // Registered only now that requests can be served; gone first at shutdown.
  std::unique_ptr<serving::EtcdRegistration> registration;
  if (!f.etcd.empty()) {
    std::string advertised = f.advertise_url;
    if (advertised.empty()) {
      if (f.host == "0.0.0.0" || f.host == "::") {
        (*engine)->Shutdown();
        stop_io();
        return Fail("--etcd with --host 0.0.0.0: give --advertise-url, the URL others reach this instance at");
      }
      advertised = fmt::format("http://{}:{}", f.host, http.port());
    }
    auto r = serving::EtcdRegistration::Start(f.etcd, f.role, advertised, std::chrono::seconds(f.etcd_ttl));
    if (!r.ok()) {
      (*engine)->Shutdown();
      stop_io();
      return Fail(r.status().message());
    }
    registration = std::move(*r);
    fmt::print(stderr, "  etcd:       registered as {} {}\n", f.role, advertised);
  }

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  fmt::print(stderr, "tetra serve: {}: finishing {} request(s) in flight, then exiting\n",
             signal_number == SIGINT ? "SIGINT" : "SIGTERM", api.calls_in_flight());
  registration.reset();  // routers stop sending here
  api.StopTakingRequests();
  http.StopAccepting();
  if (!api.WaitForCalls(f.drain_timeout)) {
    TETRA_LOG_WARN("{} request(s) still running after {} s: cancelling them", api.calls_in_flight(), f.drain_timeout);
  }
  (*engine)->Shutdown();  // cancels what is left; each call gets its last update
  api.WaitForCalls(5);
  http.Stop(5);
  io.join();
  kv_agent.reset();  // its workers end before the engine they call goes (and after /metrics stopped reading it)
  return 0;
}

}  // namespace tetra::cli
