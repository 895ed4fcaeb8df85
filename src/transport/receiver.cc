// TransferReceiver over TCP: an acceptor thread, one reader thread per
// stream, one timer thread for deadlines. Transfers live in a map under one
// mutex; a chunk's payload is read without the lock, straight into the
// transfer's regions, and `writers` counts such reads so that a transfer
// ends (its done runs, its regions go back to the owner) only when none is
// in progress.
#include <atomic>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "base/logging.h"
#include "transport/kv_transfer.h"
#include "transport/socket.h"
#include "transport/wire.h"

namespace tetra::transport {
namespace {

constexpr size_t kRecentlyEnded = 4096;  // verdicts kept for late finish frames

struct Stream {
  Socket socket;
  std::mutex write_mu;  // results may be written by any stream's thread
  std::thread thread;
  std::atomic<bool> done{false};
  // The stream thread's read-ahead: a payload is read together with up to
  // a header's worth of what follows it (the next frame's header), which
  // saves a receive call per frame. Only header bytes are ever read ahead.
  uint8_t ahead[kFrameHeaderBytes];
  size_t ahead_bytes = 0;
};

// The next frame's header: the read-ahead bytes, then the rest from the socket.
Status ReadHeader(Stream& stream, uint8_t (&bytes)[kFrameHeaderBytes], std::chrono::milliseconds first_byte_timeout,
                  std::chrono::milliseconds io_timeout) {
  std::memcpy(bytes, stream.ahead, stream.ahead_bytes);
  const size_t have = stream.ahead_bytes;
  stream.ahead_bytes = 0;
  if (have == kFrameHeaderBytes) return Status::Ok();
  iovec rest{bytes + have, kFrameHeaderBytes - have};
  return ReadExact(stream.socket, std::span<iovec>(&rest, 1), have == 0 ? first_byte_timeout : io_timeout, io_timeout);
}

// Exactly the payload into iov, plus whatever of the next header has arrived.
Status ReadPayload(Stream& stream, std::vector<iovec> iov, size_t payload_bytes, std::chrono::milliseconds io_timeout) {
  iov.push_back({stream.ahead, sizeof(stream.ahead)});
  auto read = ReadAtLeast(stream.socket, iov, payload_bytes, io_timeout, io_timeout);
  if (!read.ok()) return read.status();
  stream.ahead_bytes = *read - payload_bytes;
  return Status::Ok();
}

// Writes a kResult frame; failures only close the stream (the sender times out).
void WriteResult(Stream& stream, uint64_t id, const Status& status) {
  FrameHeader h;
  h.type = FrameType::kResult;
  h.transfer_id = id;
  h.status = static_cast<uint32_t>(status.code());
  const std::string& message = status.message();
  const size_t n = std::min<size_t>(message.size(), kMaxMessageBytes);
  h.payload_bytes = n;
  h.payload_hash = n == 0 ? 0 : HashPayload({reinterpret_cast<const uint8_t*>(message.data()), n});
  uint8_t header[kFrameHeaderBytes];
  EncodeFrameHeader(h, header);
  iovec iov[2] = {{header, sizeof(header)}, {const_cast<char*>(message.data()), n}};
  std::lock_guard<std::mutex> lock(stream.write_mu);
  if (!WriteAll(stream.socket, std::span<iovec>(iov, n == 0 ? 1 : 2), false, nullptr).ok()) stream.socket.Shutdown();
}

class Receiver final : public TransferReceiver {
 public:
  Receiver(Socket listener, const TransportOptions& options) : options_(options), listener_(std::move(listener)) {
    port_ = LocalPort(listener_);
    acceptor_ = std::thread([this] { AcceptLoop(); });
    timer_ = std::thread([this] { TimerLoop(); });
  }

  ~Receiver() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    listener_.Shutdown();
    acceptor_.join();
    timer_.join();
    std::vector<std::shared_ptr<Stream>> streams;
    {
      std::lock_guard<std::mutex> lock(mu_);
      streams = streams_;
    }
    for (auto& s : streams) s->socket.Shutdown();
    for (auto& s : streams) s->thread.join();
    std::vector<Ended> ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& [id, t] : transfers_) Fail(*t, Status::WithCode(StatusCode::kUnavailable, "receiver stopped"));
      for (auto it = transfers_.begin(); it != transfers_.end();) {
        auto next = std::next(it);
        Finalize(*it->second, &ended);
        it = next;
      }
    }
    Run(ended);
  }

  int port() const override { return port_; }

  Status Expect(uint64_t id, std::vector<ChunkRegions> regions, Clock::time_point deadline,
                std::function<void(Status)> done) override {
    if (regions.empty()) return Status::Errorf("kv transfer {}: no chunks", id);
    auto t = std::make_unique<Transfer>();
    t->id = id;
    t->chunk_bytes.resize(regions.size());
    for (size_t i = 0; i < regions.size(); ++i) {
      for (const auto& r : regions[i]) t->chunk_bytes[i] += r.size();
    }
    t->regions = std::move(regions);
    t->state.assign(t->regions.size(), kMissing);
    t->deadline = deadline;
    t->done = std::move(done);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return Status::WithCode(StatusCode::kUnavailable, "receiver stopped");
      if (transfers_.count(id) != 0) return Status::Errorf("kv transfer {}: id already expected", id);
      ended_.erase(id);
      transfers_[id] = std::move(t);
    }
    cv_.notify_all();  // the timer may need an earlier wake-up
    return Status::Ok();
  }

  void Cancel(uint64_t id) override {
    std::vector<Ended> ended;
    {
      std::unique_lock<std::mutex> lock(mu_);
      auto it = transfers_.find(id);
      if (it == transfers_.end()) return;
      Fail(*it->second, Status::WithCode(StatusCode::kCancelled, fmt::format("kv transfer {}: cancelled", id)));
      Finalize(*it->second, &ended);
      // A stream still reading into the regions finalizes when it stops.
      cv_.wait(lock, [&] { return transfers_.count(id) == 0; });
    }
    Run(ended);
  }

  TransferStats stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

 private:
  enum ChunkState : uint8_t { kMissing, kWriting, kDone };
  struct Transfer {
    uint64_t id = 0;
    std::vector<ChunkRegions> regions;
    std::vector<uint64_t> chunk_bytes;
    std::vector<ChunkState> state;
    size_t num_done = 0;
    int writers = 0;
    bool failed = false;
    Status failure;
    bool finish_seen = false;
    uint32_t finish_count = 0;
    std::shared_ptr<Stream> finish_stream;
    Clock::time_point deadline;
    std::function<void(Status)> done;
  };
  // What ending a transfer leaves to do outside the lock.
  struct Ended {
    uint64_t id;
    Status status;
    std::function<void(Status)> done;
    std::shared_ptr<Stream> reply_to;
  };

  // Marks the first failure (under mu_).
  void Fail(Transfer& t, Status status) {
    if (t.failed) return;
    t.failed = true;
    t.failure = std::move(status);
  }

  // Ends t if it can (under mu_): failed with no read in progress, or
  // finished with every chunk in. Erases it from transfers_.
  void Finalize(Transfer& t, std::vector<Ended>* ended) {
    if (!t.failed && t.finish_seen && t.finish_count != t.regions.size()) {
      Fail(t, Status::Errorf("kv transfer {}: the sender finished after {} chunks, {} expected", t.id, t.finish_count,
                             t.regions.size()));
    }
    const bool complete = !t.failed && t.finish_seen && t.num_done == t.regions.size();
    if (!(complete || (t.failed && t.writers == 0))) return;
    Status status = complete ? Status::Ok() : t.failure;
    if (complete) {
      ++stats_.transfers_ok;
    } else {
      ++stats_.transfers_failed;
    }
    ended->push_back({t.id, status, std::move(t.done), t.finish_stream});
    ended_[t.id] = status;
    ended_order_.push_back(t.id);
    while (ended_order_.size() > kRecentlyEnded) {
      ended_.erase(ended_order_.front());
      ended_order_.pop_front();
    }
    transfers_.erase(t.id);  // t is gone from here on
    cv_.notify_all();
  }

  void Run(std::vector<Ended>& ended) {
    for (Ended& e : ended) {
      if (e.done) e.done(e.status);
      if (e.reply_to) WriteResult(*e.reply_to, e.id, e.status);
    }
    ended.clear();
  }

  void AcceptLoop() {
    for (;;) {
      auto accepted = AcceptTcp(listener_, options_.io_timeout);
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_ || !accepted.ok()) return;
      auto stream = std::make_shared<Stream>();
      stream->socket = std::move(*accepted);
      ++stats_.streams_opened;
      // Drop streams whose threads ended.
      for (auto it = streams_.begin(); it != streams_.end();) {
        if ((*it)->done.load()) {
          (*it)->thread.join();
          it = streams_.erase(it);
        } else {
          ++it;
        }
      }
      stream->thread = std::thread([this, stream] { StreamLoop(stream); });
      streams_.push_back(std::move(stream));
    }
  }

  void TimerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stopping_) {
      Clock::time_point next = Clock::now() + std::chrono::seconds(1);
      for (auto& [id, t] : transfers_) next = std::min(next, t->deadline);
      cv_.wait_until(lock, next);
      const Clock::time_point now = Clock::now();
      std::vector<Ended> ended;
      std::vector<Transfer*> expired;
      for (auto& [id, t] : transfers_) {
        if (t->deadline <= now && !t->failed) expired.push_back(t.get());
      }
      for (Transfer* t : expired) {
        Fail(*t, Status::WithCode(StatusCode::kUnavailable,
                                  fmt::format("kv transfer {}: deadline passed with {} of {} chunks", t->id,
                                              t->num_done, t->regions.size())));
        Finalize(*t, &ended);
      }
      if (!ended.empty()) {
        lock.unlock();
        Run(ended);
        lock.lock();
      }
    }
  }

  void StreamLoop(const std::shared_ptr<Stream>& stream) {
    const Status end = ServeStream(stream);
    if (!end.ok()) {
      TETRA_LOG_DEBUG("kv transfer stream ended: {}", end.message());
      std::lock_guard<std::mutex> lock(mu_);
      ++stats_.streams_failed;
    }
    stream->socket.Shutdown();
    stream->done.store(true);
  }

  Status ServeStream(const std::shared_ptr<Stream>& stream) {
    bool greeted = false;
    for (;;) {
      uint8_t bytes[kFrameHeaderBytes];
      Status read = ReadHeader(*stream, bytes, std::chrono::milliseconds(-1), options_.io_timeout);
      if (!read.ok()) return greeted ? Status::Ok() : read;  // a closed idle stream is the normal end
      TETRA_ASSIGN_OR_RETURN(FrameHeader h, DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes)));
      if (!greeted) {
        if (h.type != FrameType::kHello) return Status::Errorf("kv transfer stream: {} before hello", FrameTypeName(h.type));
        TETRA_RETURN_IF_ERROR(DiscardExact(stream->socket, h.payload_bytes, options_.io_timeout));
        greeted = true;
        continue;
      }
      switch (h.type) {
        case FrameType::kChunk: TETRA_RETURN_IF_ERROR(ReceiveChunk(h, *stream)); break;
        case FrameType::kFinish: OnFinish(h, stream); break;
        case FrameType::kAbort: OnAbort(h); break;
        default: return Status::Errorf("kv transfer stream: unexpected {} frame", FrameTypeName(h.type));
      }
    }
  }

  // Reads one chunk's payload into its regions (or drops it). An error ends
  // the stream: the payload may be partly read.
  Status ReceiveChunk(const FrameHeader& h, Stream& stream) {
    std::vector<iovec> iov;
    std::vector<Ended> ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = transfers_.find(h.transfer_id);
      Transfer* t = it == transfers_.end() ? nullptr : it->second.get();
      if (t != nullptr && !t->failed) {
        if (h.index >= t->regions.size()) {
          Fail(*t, Status::Errorf("kv transfer {}: chunk {} of {}", t->id, h.index, t->regions.size()));
        } else if (t->state[h.index] != kMissing) {
          Fail(*t, Status::Errorf("kv transfer {}: chunk {} sent twice", t->id, h.index));
        } else if (t->chunk_bytes[h.index] != h.payload_bytes) {
          Fail(*t, Status::Errorf("kv transfer {}: chunk {} has {} bytes, {} expected", t->id, h.index,
                                  h.payload_bytes, t->chunk_bytes[h.index]));
        } else {
          t->state[h.index] = kWriting;
          ++t->writers;
          for (const auto& r : t->regions[h.index]) iov.push_back({r.data(), r.size()});
        }
        if (t->failed) Finalize(*t, &ended);
      }
    }
    Run(ended);
    if (iov.empty() && h.payload_bytes > 0) return DiscardExact(stream.socket, h.payload_bytes, options_.io_timeout);
    if (iov.empty()) return Status::Ok();  // an empty chunk nobody expects

    const Status read = ReadPayload(stream, iov, h.payload_bytes, options_.io_timeout);
    uint64_t hash = 0;
    if (read.ok()) {
      PayloadHasher hasher;
      for (const iovec& v : iov) hasher.Update({static_cast<const uint8_t*>(v.iov_base), v.iov_len});
      hash = hasher.Digest();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      Transfer& t = *transfers_.at(h.transfer_id);  // it cannot end while writers > 0
      --t.writers;
      if (!read.ok()) {
        Fail(t, read.WithPrefix(fmt::format("kv transfer {}: chunk {}: ", t.id, h.index)));
      } else if (hash != h.payload_hash) {
        Fail(t, Status::Errorf("kv transfer {}: chunk {} is corrupt (hash {:016x}, sent {:016x})", t.id, h.index, hash,
                               h.payload_hash));
      } else {
        t.state[h.index] = kDone;
        ++t.num_done;
        stats_.bytes += h.payload_bytes;
        ++stats_.chunks;
      }
      Finalize(t, &ended);
    }
    Run(ended);
    return read;
  }

  void OnFinish(const FrameHeader& h, const std::shared_ptr<Stream>& stream) {
    std::vector<Ended> ended;
    Status verdict;
    bool reply_now = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = transfers_.find(h.transfer_id);
      if (it != transfers_.end()) {
        it->second->finish_seen = true;
        it->second->finish_count = h.index;
        it->second->finish_stream = stream;
        Finalize(*it->second, &ended);
      } else {
        auto e = ended_.find(h.transfer_id);
        verdict = e != ended_.end() ? e->second
                                    : Status::Errorf("kv transfer {}: not expected by the receiver", h.transfer_id);
        if (verdict.ok()) verdict = Status::Errorf("kv transfer {}: finished twice", h.transfer_id);
        reply_now = true;
      }
    }
    Run(ended);
    if (reply_now) WriteResult(*stream, h.transfer_id, verdict);
  }

  void OnAbort(const FrameHeader& h) {
    std::vector<Ended> ended;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = transfers_.find(h.transfer_id);
      if (it == transfers_.end()) return;
      Fail(*it->second,
           Status::WithCode(StatusCode::kCancelled, fmt::format("kv transfer {}: the sender aborted", h.transfer_id)));
      Finalize(*it->second, &ended);
    }
    Run(ended);
  }

  const TransportOptions options_;
  Socket listener_;
  int port_ = 0;
  std::thread acceptor_;
  std::thread timer_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                                                // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, std::unique_ptr<Transfer>> transfers_;   // GUARDED_BY(mu_)
  std::unordered_map<uint64_t, Status> ended_;                          // GUARDED_BY(mu_)
  std::deque<uint64_t> ended_order_;                                    // GUARDED_BY(mu_)
  std::vector<std::shared_ptr<Stream>> streams_;                        // GUARDED_BY(mu_)
  TransferStats stats_;                                                 // GUARDED_BY(mu_)
};

}  // namespace

StatusOr<std::unique_ptr<TransferReceiver>> TransferReceiver::Listen(const std::string& host, int port,
                                                                     const TransportOptions& options) {
  TETRA_ASSIGN_OR_RETURN(Socket listener, ListenTcp(host, port));
  return std::unique_ptr<TransferReceiver>(new Receiver(std::move(listener), options));
}

}  // namespace tetra::transport
