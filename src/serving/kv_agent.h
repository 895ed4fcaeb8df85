// The KV handoff of a disaggregated deployment (doc/disaggregation.md): the
// engine's KvHandoffHandler for `tetra serve --role decode` and `--role
// prefill`, over the KV transport.
//
// Decode role: listens for transfers on kv_host:kv_port. A kImport request's
// kv_peer is the prefill instance's URL; when the engine has reserved the
// blocks, the agent registers the transfer (id = the engine's request id)
// and, on a worker thread, POSTs /internal/v1/prefill to the prefill
// instance with the tokens, its own KV address, the transfer id, the
// positions it already holds and its KV format. A failed call cancels the
// transfer, and the engine prefills the request itself.
//
// Prefill role: /internal/v1/prefill submits a kExport request whose kv_peer
// names the decode side (ExportPeer). As each step writes a layer of the
// prompt's blocks the engine hands over their chunks (OnKvWritten), which
// go straight onto the streams of the TransferSender for that decode
// instance while the next layer computes; when the whole prompt is
// computed a worker waits for the receiver's verdict and tells the engine
// (KvSent), which finishes the request; the HTTP answer follows its end.
//
// Threads: the KvHandoffHandler calls come on the engine thread (OnKvWritten
// on the runner thread) and return at once (the work goes to the agent's
// workers and the transport's streams); OnKvCancel waits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "model/kv_cache.h"
#include "transport/kv_transfer.h"

namespace tetra::serving {

enum class ServeRole : uint8_t { kBoth, kPrefill, kDecode };
StatusOr<ServeRole> ParseServeRole(const std::string& name);
const char* ServeRoleName(ServeRole role);

struct KvAgentOptions {
  ServeRole role = ServeRole::kDecode;
  std::string kv_host = "127.0.0.1";  // decode: where it listens, and the address it gives prefill instances
  int kv_port = 0;                    // decode: 0 = any free port
  int num_streams = 4;                // prefill: streams per decode instance
  int num_workers = 4;                // threads for prefill calls and sends
  std::chrono::milliseconds transfer_timeout{60000};
};

struct KvAgentStats {
  int64_t transfers_ok = 0;
  int64_t transfers_failed = 0;
  int64_t bytes = 0;
  int64_t fallbacks = 0;  // decode: prefilled locally after a failed handoff
};

class KvAgent;
// Prometheus text of the agent's counters (doc/metrics.md), for /metrics.
std::string RenderKvAgentMetrics(const KvAgent& agent, const std::string& model_name);

class KvAgent : public KvHandoffHandler {
 public:
  static StatusOr<std::unique_ptr<KvAgent>> Create(const KvAgentOptions& options);
  ~KvAgent() override;

  // The engine it hands off for (it outlives the agent's use of it).
  void Attach(Engine* engine) { engine_ = engine; }
  int kv_port() const { return receiver_ ? receiver_->port() : 0; }
  const KvAgentOptions& options() const { return options_; }
  KvAgentStats stats() const;
  Histogram::Snapshot transfer_seconds() const { return transfer_seconds_.snapshot(); }

  void OnKvReserved(uint64_t request_id, const KvHandoffLayout& layout) override;
  void OnKvWritten(uint64_t request_id, std::string_view peer, std::string_view format,
                   std::vector<KvHandoffChunk> chunks) override;
  void OnKvReady(uint64_t request_id, const KvHandoffLayout& layout) override;
  void OnKvCancel(uint64_t request_id) override;

  // Prefill role: the kv_peer of an export for this decode address,
  // transfer and the decode side's KV format ("host:port/id|format").
  static std::string ExportPeer(const std::string& host, int port, uint64_t transfer_id, const std::string& format);

 private:
  explicit KvAgent(const KvAgentOptions& options);
  void Post(std::function<void()> job);
  void WorkerLoop();
  void AskPrefill(uint64_t request_id, std::string url, std::string body);
  // Prefill role: one export's transfer, from its first chunk to its end.
  struct Export {
    std::unique_ptr<transport::OutgoingTransfer> out;
    Status status;           // why it cannot be sent (bad peer, format mismatch)
    int64_t bytes = 0;       // queued so far
    bool finishing = false;  // FinishExport owns it
    // Formats differ in dtype: full blocks are converted (from, to) into
    // buffers that live until the transfer ends.
    std::optional<std::pair<KvTransferFormat, KvTransferFormat>> convert;
    std::vector<std::unique_ptr<std::vector<uint8_t>>> converted;
    transport::Clock::time_point computed;  // when the prompt's last step ended
  };
  Status StartExportLocked(uint64_t request_id, std::string_view peer, std::string_view format, Export* e);
  void FinishExport(uint64_t request_id, uint32_t num_chunks);
  transport::TransferSender& SenderForLocked(const std::string& host, int port);

  KvAgentOptions options_;
  Engine* engine_ = nullptr;
  std::unique_ptr<transport::TransferReceiver> receiver_;  // decode role

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;  // GUARDED_BY(mu_)
  bool stopping_ = false;                   // GUARDED_BY(mu_)
  std::map<std::string, std::unique_ptr<transport::TransferSender>> senders_;  // GUARDED_BY(mu_)
  std::map<uint64_t, Export> exports_;      // prefill: by request id; GUARDED_BY(mu_)
  KvAgentStats stats_;                      // GUARDED_BY(mu_)
  Histogram transfer_seconds_{Histogram::TransferBuckets()};
  std::vector<std::thread> workers_;
};

}  // namespace tetra::serving
