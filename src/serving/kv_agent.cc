#include "serving/kv_agent.h"

#include <nlohmann/json.hpp>

#include "base/logging.h"
#include "serving/http_client.h"
#include "serving/prometheus.h"

namespace tetra::serving {

StatusOr<ServeRole> ParseServeRole(const std::string& name) {
  if (name == "both") return ServeRole::kBoth;
  if (name == "prefill") return ServeRole::kPrefill;
  if (name == "decode") return ServeRole::kDecode;
  return Status::Errorf("unknown role '{}': expected both, prefill or decode", name);
}

const char* ServeRoleName(ServeRole role) {
  switch (role) {
    case ServeRole::kBoth: return "both";
    case ServeRole::kPrefill: return "prefill";
    case ServeRole::kDecode: return "decode";
  }
  return "?";
}

StatusOr<std::unique_ptr<KvAgent>> KvAgent::Create(const KvAgentOptions& options) {
  std::unique_ptr<KvAgent> agent(new KvAgent(options));
  if (options.role == ServeRole::kDecode) {
    transport::TransportOptions t;
    t.num_streams = options.num_streams;
    t.io_timeout = std::min(t.io_timeout, options.transfer_timeout);
    TETRA_ASSIGN_OR_RETURN(agent->receiver_, transport::TransferReceiver::Listen(options.kv_host, options.kv_port, t));
  }
  return agent;
}

KvAgent::KvAgent(const KvAgentOptions& options) : options_(options) {
  for (int i = 0; i < std::max(1, options.num_workers); ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

KvAgent::~KvAgent() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
  receiver_.reset();  // fails what is still expected (the engine is gone or stopped by now)
}

KvAgentStats KvAgent::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string RenderKvAgentMetrics(const KvAgent& agent, const std::string& model_name) {
  const KvAgentStats s = agent.stats();
  PrometheusWriter w(PrometheusLabel("model_name", model_name) + "," +
                     PrometheusLabel("role", ServeRoleName(agent.options().role)));
  w.Counter("kv_transfer_bytes_total", static_cast<double>(s.bytes),
            "KV bytes sent (prefill) or received (decode) by the KV transport.");
  w.Header("kv_transfers_total", "counter", "KV transfers that ended, by result.");
  w.Sample("kv_transfers_total", static_cast<double>(s.transfers_ok), R"(result="ok")");
  w.Sample("kv_transfers_total", static_cast<double>(s.transfers_failed), R"(result="failed")");
  w.Counter("kv_transfer_fallbacks_total", static_cast<double>(s.fallbacks),
            "Requests prefilled on the decode instance after a failed handoff.");
  w.Histo("kv_transfer_seconds", agent.transfer_seconds(),
          "Decode: from blocks reserved to KV in place (the remote prefill included). Prefill: from the "
          "prompt's last step to the decode side's verdict (the part of the transfer not hidden by compute).");
  return w.Take();
}

std::string KvAgent::ExportPeer(const std::string& host, int port, uint64_t transfer_id, const std::string& format) {
  return fmt::format("{}:{}/{}|{}", host, port, transfer_id, format);
}

void KvAgent::Post(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

void KvAgent::WorkerLoop() {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, nothing left
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    job();
  }
}

// ------------------------------------------------------------------ decode

void KvAgent::OnKvReserved(uint64_t request_id, const KvHandoffLayout& layout) {
  if (receiver_ == nullptr) {
    engine_->KvArrived(request_id, Status::Error("this instance does not receive KV (not --role decode)"));
    return;
  }
  Engine* engine = engine_;
  int64_t bytes = 0;
  for (const auto& chunk : layout.chunks) {
    for (const auto& part : chunk) bytes += static_cast<int64_t>(part.size());
  }
  const auto start = transport::Clock::now();
  const Status expected = receiver_->Expect(request_id, layout.chunks, start + options_.transfer_timeout,
                                            [this, engine, request_id, bytes, start](Status status) {
                                              if (status.ok()) {
                                                transfer_seconds_.Observe(std::chrono::duration<double>(
                                                    transport::Clock::now() - start).count());
                                              }
                                              {
                                                std::lock_guard<std::mutex> lock(mu_);
                                                ++(status.ok() ? stats_.transfers_ok : stats_.transfers_failed);
                                                if (status.ok()) stats_.bytes += bytes;
                                                if (!status.ok()) ++stats_.fallbacks;
                                              }
                                              if (!status.ok()) {
                                                TETRA_LOG_WARN("request {}: KV handoff failed ({}); prefilling here",
                                                               request_id, status.message());
                                              }
                                              engine->KvArrived(request_id, std::move(status));
                                            });
  if (!expected.ok()) {
    engine_->KvArrived(request_id, expected);
    return;
  }
  nlohmann::json body = {{"tokens", layout.tokens},
                         {"kv_skip_tokens", layout.first_token},
                         {"kv_host", options_.kv_host},
                         {"kv_port", receiver_->port()},
                         {"transfer_id", request_id},
                         {"kv_format", layout.format}};
  Post([this, request_id, url = layout.peer, text = body.dump()] { AskPrefill(request_id, url, text); });
}

void KvAgent::AskPrefill(uint64_t request_id, std::string url, std::string body) {
  auto address = ParseHttpUrl(url);
  Status status = address.status();
  if (address.ok()) {
    auto response = HttpCall("POST", address->first, address->second, "/internal/v1/prefill", body,
                             options_.transfer_timeout);
    status = response.status();
    if (response.ok() && response->status != 200) {
      status = Status::WithCode(StatusCode::kUnavailable,
                                fmt::format("{} answered {}: {}", url, response->status, response->body));
    }
  }
  // On success the transfer's own verdict has reached (or will reach) the
  // engine; on failure the transfer is cancelled and the engine prefills here.
  if (!status.ok()) {
    TETRA_LOG_WARN("request {}: prefill at {} failed: {}", request_id, url, status.message());
    receiver_->Cancel(request_id);
  }
}

// ----------------------------------------------------------------- prefill

transport::TransferSender& KvAgent::SenderForLocked(const std::string& host, int port) {
  const std::string key = fmt::format("{}:{}", host, port);
  auto& sender = senders_[key];
  if (!sender) {
    transport::TransportOptions t;
    t.num_streams = options_.num_streams;
    t.io_timeout = std::min(t.io_timeout, options_.transfer_timeout);
    sender = transport::TransferSender::Create(host, port, t);
  }
  return *sender;
}

// kv_peer: "host:port/transfer_id|format" (ExportPeer).
Status KvAgent::StartExportLocked(uint64_t request_id, std::string_view peer, std::string_view format,
                                  Export* e) {
  const size_t bar = peer.find('|');
  const std::string address(peer.substr(0, bar));
  const std::string_view peer_format = bar == std::string_view::npos ? "" : peer.substr(bar + 1);
  const size_t slash = address.rfind('/');
  const size_t colon = address.rfind(':', slash);
  if (slash == std::string::npos || colon == std::string::npos) {
    return Status::Errorf("request {}: bad KV peer '{}'", request_id, peer);
  }
  if (peer_format != format) {
    // Another dtype (W4A8 prefill with a BF16 cache beside an FP8 decode
    // pool, say): full blocks are converted here, on the prefill side, so
    // the decode instance's CPU stays on decoding; the receiver sees its
    // own format.
    auto from = ParseKvTransferFormat(format);
    auto to = ParseKvTransferFormat(peer_format);
    if (!from.ok() || !to.ok() || from->block_tokens != to->block_tokens ||
        from->geometry.num_layers != to->geometry.num_layers ||
        from->geometry.num_kv_heads != to->geometry.num_kv_heads || from->geometry.head_dim != to->geometry.head_dim) {
      return Status::Errorf("KV format mismatch: the decode instance has '{}', this prefill instance '{}' (only the "
                            "dtype may differ)", peer_format, format);
    }
    e->convert = std::make_pair(*from, *to);
  }
  const std::string host = address.substr(0, colon);
  const int port = std::atoi(address.substr(colon + 1, slash - colon - 1).c_str());
  const uint64_t transfer_id = std::strtoull(address.c_str() + slash + 1, nullptr, 10);
  e->out = SenderForLocked(host, port).Start(transfer_id);
  return Status::Ok();
}

void KvAgent::OnKvWritten(uint64_t request_id, std::string_view peer, std::string_view format,
                          std::vector<KvHandoffChunk> chunks) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, started] = exports_.try_emplace(request_id);
  Export& e = it->second;
  if (started) e.status = StartExportLocked(request_id, peer, format, &e);
  if (!e.status.ok()) return;  // reported by OnKvReady
  for (KvHandoffChunk& chunk : chunks) {
    if (e.convert && !chunk.open_block) {
      auto& buffer = e.converted.emplace_back(std::make_unique<std::vector<uint8_t>>());
      e.status = ConvertKvBlock(e.convert->first, chunk.regions, e.convert->second, buffer.get());
      if (!e.status.ok()) return;
      chunk.regions = {std::span<uint8_t>(*buffer)};
    }
    for (const auto& region : chunk.regions) e.bytes += static_cast<int64_t>(region.size());
    e.out->Send(chunk.index, transport::ChunkParts(chunk.regions.begin(), chunk.regions.end()));
  }
}

void KvAgent::OnKvReady(uint64_t request_id, const KvHandoffLayout& layout) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, started] = exports_.try_emplace(request_id);
    if (started) it->second.status = StartExportLocked(request_id, layout.peer, layout.format, &it->second);
    it->second.finishing = true;
    it->second.computed = transport::Clock::now();
  }
  Post([this, request_id, num_chunks = layout.num_chunks] { FinishExport(request_id, num_chunks); });
}

void KvAgent::FinishExport(uint64_t request_id, uint32_t num_chunks) {
  transport::OutgoingTransfer* out = nullptr;
  Status status;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Export& e = exports_.at(request_id);
    status = e.status;
    out = e.out.get();
  }
  // Every chunk was queued by OnKvWritten; wait for them and the verdict.
  if (status.ok()) status = out->Finish(num_chunks, transport::Clock::now() + options_.transfer_timeout);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (status.ok()) {
      transfer_seconds_.Observe(
          std::chrono::duration<double>(transport::Clock::now() - exports_.at(request_id).computed).count());
    }
    ++(status.ok() ? stats_.transfers_ok : stats_.transfers_failed);
    if (status.ok()) stats_.bytes += exports_.at(request_id).bytes;
    exports_.erase(request_id);  // its transfer has ended either way: no stream reads the blocks
  }
  cv_.notify_all();
  engine_->KvSent(request_id, status);
}

void KvAgent::OnKvCancel(uint64_t request_id) {
  if (options_.role == ServeRole::kDecode) {
    if (receiver_) receiver_->Cancel(request_id);
    return;
  }
  // Prefill: a finishing transfer reads the blocks until Finish returns
  // (bounded by the transfer timeout): wait for it; else stop the sends.
  std::unique_ptr<transport::OutgoingTransfer> out;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] {
      const auto it = exports_.find(request_id);
      return it == exports_.end() || !it->second.finishing;
    });
    const auto it = exports_.find(request_id);
    if (it == exports_.end()) return;
    out = std::move(it->second.out);
    exports_.erase(it);
    ++stats_.transfers_failed;
  }
  if (out) out->Abort();  // returns once no stream reads the parts
}

}  // namespace tetra::serving
