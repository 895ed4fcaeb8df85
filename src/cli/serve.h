// `tetra serve`: the OpenAI-compatible server (src/serving/) over the engine.
// Binds first (a taken port fails at once), loads the model while /health
// answers 503, then serves until SIGINT or SIGTERM: it stops accepting,
// lets the calls in flight finish (up to --drain-timeout seconds, then
// cancels them), and exits 0.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "cli/commands.h"

namespace tetra::cli {

struct ServeFlags {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string served_model_name;  // default: the model file's name without .gguf
  int threads = 0;
  int max_num_seqs = 64;
  int max_step_tokens = 512;
  int max_prefill_with_decodes = 32;
  double kv_cache_gib = 0;        // 0: the engine's default
  int max_connections = 1024;
  int max_body_mib = 32;
  double drain_timeout = 30;
  bool no_prefix_caching = false;
  std::string spec = "off";  // speculative decoding: off | suffix | ngram
  int spec_max_tokens = 4;
  // Prefill/decode disaggregation (doc/disaggregation.md).
  std::string role = "both";
  std::string kv_host = "127.0.0.1";
  int kv_port = 0;
  int kv_streams = 4;
  double kv_timeout = 60;
  std::string etcd;           // register in etcd (prefill and decode roles)
  std::string advertise_url;  // the URL registered; default http://HOST:PORT
  int etcd_ttl = 10;
  int disagg_min_prompt_tokens = 0;
  PrecisionFlags precision;
};
void AddServeCommand(CLI::App& app, ServeFlags& flags);
int RunServe(const ServeFlags& flags);

}  // namespace tetra::cli
