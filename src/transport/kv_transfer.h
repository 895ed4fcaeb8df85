// Moves KV-cache bytes from a prefill process to a decode process over a
// connection set of N TCP streams, with no intermediate buffers on either
// side (doc/transport.md).
//
// The decode side registers a transfer before anything is sent: an id and,
// per chunk, the regions its bytes land in (a chunk is typically one
// layer's K, V and scales for the request's blocks: several spans, each a
// slice of a pre-allocated KV block). The prefill side sends chunks as they
// are ready (layer by layer, while the next layer computes), each gathered
// straight from its KV pages with sendmsg (MSG_ZEROCOPY for large chunks
// where the kernel supports it), spread over the streams; the receiver
// reads each chunk's payload with readv straight into its regions, checks
// its XXH3 hash, and when the sender's finish and every chunk are in,
// reports the result both to its own callback and back to the sender.
//
// Failures are per transfer and never sticky: a corrupt chunk, a size
// mismatch, an abort, a deadline or a lost stream fails the transfers it
// touches; a broken stream is reconnected on next use.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace tetra::transport {

using Clock = std::chrono::steady_clock;

struct TransportOptions {
  int num_streams = 4;                          // per sender-receiver pair
  // MSG_ZEROCOPY where supported; a stream whose sends the kernel reports
  // as copied anyway (loopback does) goes back to plain sends.
  bool zerocopy = true;
  size_t zerocopy_min_bytes = size_t{64} << 10;  // smaller chunks copy (cheaper than pinning pages)
  std::chrono::milliseconds connect_timeout{2000};
  // A send or receive that makes no progress this long fails its stream.
  std::chrono::milliseconds io_timeout{10000};
};

// Counters since start; safe to read from any thread.
struct TransferStats {
  uint64_t bytes = 0;               // payload bytes that landed (receiver) or were sent (sender)
  uint64_t chunks = 0;
  uint64_t transfers_ok = 0;
  uint64_t transfers_failed = 0;
  uint64_t streams_opened = 0;
  uint64_t streams_failed = 0;
  uint64_t zerocopy_sends = 0;      // sender: sendmsg calls with MSG_ZEROCOPY
  bool zerocopy_copied = false;     // sender: the kernel copied some (loopback does)
};

// The regions one chunk's payload fills, in order.
using ChunkRegions = std::vector<std::span<uint8_t>>;
// The bytes one chunk sends, in order.
using ChunkParts = std::vector<std::span<const uint8_t>>;

// The decode side: listens and accepts streams from any number of senders.
// Thread-safe. Callbacks run on a stream or timer thread, once per
// transfer, without locks held; they must not block for long.
class TransferReceiver {
 public:
  static StatusOr<std::unique_ptr<TransferReceiver>> Listen(const std::string& host, int port,
                                                            const TransportOptions& options = {});
  virtual ~TransferReceiver() = default;  // stops; pending transfers fail (their done runs)

  virtual int port() const = 0;
  // Registers transfer `id`: chunk i's payload fills regions[i]. done runs
  // once: ok when every chunk arrived with its hash and the sender
  // finished; else an error (sender abort, corruption, size mismatch, lost
  // stream, or `deadline` passed first). Until done has run (or Cancel has
  // returned) the regions are the transport's: keep them alive, do not read.
  // Invalid when the id is in use.
  virtual Status Expect(uint64_t id, std::vector<ChunkRegions> regions, Clock::time_point deadline,
                        std::function<void(Status)> done) = 0;
  // Fails transfer `id` (done runs with kCancelled) unless it already
  // ended. When Cancel returns, nothing writes into its regions any more.
  virtual void Cancel(uint64_t id) = 0;
  virtual TransferStats stats() const = 0;
};

class OutgoingTransfer;

// The prefill side: N streams to one receiver, connected on first use and
// reconnected after a failure. Thread-safe; transfers share the streams.
class TransferSender {
 public:
  static std::unique_ptr<TransferSender> Create(const std::string& host, int port,
                                                const TransportOptions& options = {});
  virtual ~TransferSender() = default;  // fails transfers still sending

  // Starts sending to the receiver's transfer `id` (which it registered).
  virtual std::unique_ptr<OutgoingTransfer> Start(uint64_t id) = 0;
  virtual TransferStats stats() const = 0;
};

class OutgoingTransfer {
 public:
  virtual ~OutgoingTransfer() = default;  // aborts unless finished
  // Queues chunk `index` and returns; a stream thread sends it. The parts'
  // bytes must stay valid and unchanged until Finish or Abort returns.
  virtual void Send(uint32_t index, ChunkParts parts) = 0;
  // After every Send: waits until each chunk is on the wire, then for the
  // receiver's verdict, until deadline. Ok only when the receiver has every
  // chunk intact; an error otherwise (the transfer is then aborted).
  virtual Status Finish(uint32_t num_chunks, Clock::time_point deadline) = 0;
  // Tells the receiver to give up (best effort) and waits until no stream
  // reads the parts any more.
  virtual void Abort() = 0;
};

}  // namespace tetra::transport
