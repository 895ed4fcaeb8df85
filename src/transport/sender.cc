// TransferSender over TCP: per stream a writer thread (a queue of frames to
// send, connecting on demand) and, while connected, a reader thread for the
// receiver's verdicts. A transfer counts its frames in flight; a chunk stops
// counting once it is on the wire and, for MSG_ZEROCOPY sends, once the
// kernel reports it no longer needs the pages.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "base/logging.h"
#include "transport/kv_transfer.h"
#include "transport/socket.h"
#include "transport/wire.h"

namespace tetra::transport {
namespace {

// What the transfer's owner and the stream threads share.
struct TransferState {
  uint64_t id = 0;
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;       // frames queued, being written, or awaiting zerocopy completion
  bool aborted = false;    // queued chunks are skipped
  Status error;            // the first failure
  bool has_verdict = false;
  Status verdict;

  void FrameDone(const Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    if (!status.ok() && error.ok()) error = status;
    --in_flight;
    cv.notify_all();
  }
  void SetVerdict(Status status) {
    std::lock_guard<std::mutex> lock(mu);
    if (has_verdict) return;
    has_verdict = true;
    verdict = std::move(status);
    cv.notify_all();
  }
};

struct Job {
  std::shared_ptr<TransferState> transfer;
  FrameHeader header;
  ChunkParts parts;
};

class Sender;

class StreamWorker {
 public:
  StreamWorker(Sender& sender, int index);
  ~StreamWorker();
  void Push(Job job);

 private:
  void WriterLoop();
  Status EnsureConnected();
  void Disconnect(const Status& why);
  void ReaderLoop(std::shared_ptr<Socket> socket);
  // Sends the frames (one zerocopy chunk, or several plain frames) in one go.
  // Ok: each frame is done or awaits its zerocopy completion, and jobs is
  // emptied; an error: none is (the caller fails them).
  Status Write(std::vector<Job>& jobs);
  static uint64_t PayloadBytes(const Job& job);
  bool UsesZeroCopy(const Job& job) const;
  void ReleaseCompleted(bool wait);

  static constexpr size_t kMaxBatchFrames = 64;
  static constexpr uint64_t kMaxBatchBytes = uint64_t{1} << 20;
  struct HeaderBytes {
    uint8_t bytes[kFrameHeaderBytes];
  };
  std::vector<HeaderBytes> headers_;  // the batch's encoded headers

  Sender& sender_;
  const int index_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;  // GUARDED_BY(mu_)
  bool stopping_ = false;  // GUARDED_BY(mu_)
  std::thread writer_;

  // Writer thread only, except awaiting_ (shared with the reader).
  std::shared_ptr<Socket> socket_;
  std::thread reader_;
  bool zerocopy_ = false;  // wanted (from the options) until the socket refuses or the kernel copies
  uint32_t zerocopy_calls_ = 0;
  uint32_t zerocopy_completed_ = 0;
  struct Unreleased {
    uint32_t calls;  // released once zerocopy_completed_ reaches it
    std::shared_ptr<TransferState> transfer;
  };
  std::deque<Unreleased> unreleased_;
  std::mutex awaiting_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<TransferState>> awaiting_;  // GUARDED_BY(awaiting_mu_)
  bool reader_alive_ = false;                                              // GUARDED_BY(awaiting_mu_)
};

class Sender final : public TransferSender {
 public:
  Sender(std::string host, int port, const TransportOptions& options)
      : host_(std::move(host)), port_(port), options_(options), session_(std::random_device{}()) {
    const int n = std::max(1, options_.num_streams);
    for (int i = 0; i < n; ++i) streams_.push_back(std::make_unique<StreamWorker>(*this, i));
  }
  ~Sender() override { streams_.clear(); }

  std::unique_ptr<OutgoingTransfer> Start(uint64_t id) override;
  TransferStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mu_);
    return stats_;
  }

  void Enqueue(size_t stream, Job job) { streams_[stream % streams_.size()]->Push(std::move(job)); }
  size_t num_streams() const { return streams_.size(); }

  const std::string host_;
  const int port_;
  const TransportOptions options_;
  const uint64_t session_;
  mutable std::mutex stats_mu_;
  TransferStats stats_;  // GUARDED_BY(stats_mu_)

 private:
  std::vector<std::unique_ptr<StreamWorker>> streams_;
};

StreamWorker::StreamWorker(Sender& sender, int index)
    : sender_(sender), index_(index), zerocopy_(sender.options_.zerocopy) {
  writer_ = std::thread([this] { WriterLoop(); });
}

StreamWorker::~StreamWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  writer_.join();
}

void StreamWorker::Push(Job job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
}

void StreamWorker::WriterLoop() {
  std::vector<Job> batch;
  for (;;) {
    batch.clear();
    {
      std::unique_lock<std::mutex> lock(mu_);
      while (queue_.empty() && !stopping_) {
        if (unreleased_.empty()) {
          cv_.wait(lock);
        } else {
          lock.unlock();
          ReleaseCompleted(/*wait=*/true);
          lock.lock();
        }
      }
      if (queue_.empty()) break;  // stopping
      // Small frames queued together go in one sendmsg; a zerocopy chunk goes alone.
      uint64_t bytes = 0;
      while (!queue_.empty() && batch.size() < kMaxBatchFrames && bytes < kMaxBatchBytes) {
        const uint64_t next = PayloadBytes(queue_.front());
        if (!batch.empty() && (UsesZeroCopy(batch.front()) || UsesZeroCopy(queue_.front()))) break;
        bytes += next;
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    // Chunks of an aborted transfer are dropped.
    std::erase_if(batch, [](Job& job) {
      bool skip;
      {
        std::lock_guard<std::mutex> lock(job.transfer->mu);
        skip = job.transfer->aborted && job.header.type == FrameType::kChunk;
      }
      if (skip) job.transfer->FrameDone(Status::Ok());
      return skip;
    });
    if (batch.empty()) continue;
    const Status status = Write(batch);
    if (!status.ok()) {
      for (Job& job : batch) job.transfer->FrameDone(status);
      Disconnect(status);
    }
    ReleaseCompleted(/*wait=*/false);
  }
  // Stopping: fail what is left.
  const Status stopped = Status::WithCode(StatusCode::kUnavailable, "kv transfer sender stopped");
  for (Job& job : queue_) job.transfer->FrameDone(stopped);
  queue_.clear();
  Disconnect(stopped);
}

uint64_t StreamWorker::PayloadBytes(const Job& job) {
  uint64_t bytes = 0;
  for (const auto& p : job.parts) bytes += p.size();
  return bytes;
}

bool StreamWorker::UsesZeroCopy(const Job& job) const {
  return zerocopy_ && PayloadBytes(job) >= sender_.options_.zerocopy_min_bytes;
}

Status StreamWorker::EnsureConnected() {
  if (socket_) {
    std::lock_guard<std::mutex> lock(awaiting_mu_);
    if (reader_alive_) return Status::Ok();
  }
  // Not connected, or the peer closed it (the reader saw that): start over.
  Disconnect(Status::Ok());
  TETRA_ASSIGN_OR_RETURN(Socket s, ConnectTcp(sender_.host_, sender_.port_, sender_.options_.connect_timeout,
                                              sender_.options_.io_timeout));
  zerocopy_ = zerocopy_ && EnableZeroCopy(s);
  zerocopy_calls_ = 0;
  zerocopy_completed_ = 0;
  // Hello: the stream's index and the sender's session.
  uint8_t payload[16];
  for (int i = 0; i < 8; ++i) payload[i] = static_cast<uint8_t>(static_cast<uint64_t>(index_) >> (8 * i));
  for (int i = 0; i < 8; ++i) payload[8 + i] = static_cast<uint8_t>(sender_.session_ >> (8 * i));
  FrameHeader h;
  h.type = FrameType::kHello;
  h.payload_bytes = sizeof(payload);
  h.payload_hash = HashPayload(payload);
  uint8_t header[kFrameHeaderBytes];
  EncodeFrameHeader(h, header);
  iovec iov[2] = {{header, sizeof(header)}, {payload, sizeof(payload)}};
  TETRA_RETURN_IF_ERROR(WriteAll(s, iov, false, nullptr));
  socket_ = std::make_shared<Socket>(std::move(s));
  {
    std::lock_guard<std::mutex> lock(awaiting_mu_);
    reader_alive_ = true;
  }
  reader_ = std::thread([this, socket = socket_] { ReaderLoop(socket); });
  std::lock_guard<std::mutex> lock(sender_.stats_mu_);
  ++sender_.stats_.streams_opened;
  return Status::Ok();
}

void StreamWorker::Disconnect(const Status& why) {
  if (!socket_) return;
  socket_->Shutdown();
  reader_.join();  // fails every transfer awaiting a verdict here
  socket_.reset();
  // Pages of unconfirmed zerocopy sends: the socket is gone, so is its use of them.
  for (Unreleased& u : unreleased_) u.transfer->FrameDone(why);
  unreleased_.clear();
  std::lock_guard<std::mutex> lock(sender_.stats_mu_);
  if (!why.ok()) ++sender_.stats_.streams_failed;
}

Status StreamWorker::Write(std::vector<Job>& jobs) {
  TETRA_RETURN_IF_ERROR(EnsureConnected());
  const bool zerocopy = jobs.size() == 1 && UsesZeroCopy(jobs[0]);
  // Headers outlive the sendmsg calls (a vector, not the stack), and the
  // kernel may read zerocopy pages later: those headers go as plain sends.
  headers_.resize(jobs.size());
  std::vector<iovec> iov;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& job = jobs[i];
    job.header.payload_bytes = PayloadBytes(job);
    if (job.header.payload_bytes > 0) {
      PayloadHasher hasher;
      for (const auto& p : job.parts) hasher.Update(p);
      job.header.payload_hash = hasher.Digest();
    }
    EncodeFrameHeader(job.header, headers_[i].bytes);
    iov.push_back({headers_[i].bytes, kFrameHeaderBytes});
    for (const auto& p : job.parts) {
      if (!p.empty()) iov.push_back({const_cast<uint8_t*>(p.data()), p.size()});
    }
    if (job.header.type == FrameType::kFinish) {
      std::lock_guard<std::mutex> lock(awaiting_mu_);
      if (!reader_alive_) {
        return Status::WithCode(StatusCode::kUnavailable,
                                fmt::format("kv transfer {}: the receiver closed the stream", job.header.transfer_id));
      }
      awaiting_[job.header.transfer_id] = job.transfer;
    }
  }
  const uint32_t calls_before = zerocopy_calls_;
  Status status;
  if (zerocopy) {
    status = WriteAll(*socket_, std::span<iovec>(iov.data(), 1), false, nullptr, /*more=*/true);
    if (status.ok()) status = WriteAll(*socket_, std::span<iovec>(iov).subspan(1), true, &zerocopy_calls_);
  } else {
    status = WriteAll(*socket_, iov, false, nullptr);
  }
  if (!status.ok()) {
    std::lock_guard<std::mutex> lock(awaiting_mu_);
    for (const Job& job : jobs) {
      if (job.header.type == FrameType::kFinish) awaiting_.erase(job.header.transfer_id);
    }
    const FrameHeader& h = jobs.front().header;
    return status.WithPrefix(fmt::format("kv transfer {}: {} {}: ", h.transfer_id, FrameTypeName(h.type), h.index));
  }
  {
    std::lock_guard<std::mutex> lock(sender_.stats_mu_);
    for (const Job& job : jobs) {
      if (job.header.type == FrameType::kChunk) {
        sender_.stats_.bytes += job.header.payload_bytes;
        ++sender_.stats_.chunks;
      }
    }
    sender_.stats_.zerocopy_sends += zerocopy_calls_ - calls_before;
  }
  for (Job& job : jobs) {
    if (zerocopy_calls_ != calls_before) {
      unreleased_.push_back({zerocopy_calls_, std::move(job.transfer)});
    } else {
      job.transfer->FrameDone(Status::Ok());
    }
  }
  jobs.clear();  // every frame is accounted for
  return Status::Ok();
}

void StreamWorker::ReleaseCompleted(bool wait) {
  if (unreleased_.empty() || !socket_) return;
  bool copied = false;
  const Status status = DrainZeroCopyCompletions(*socket_, std::chrono::milliseconds(wait ? 5 : 0),
                                                 &zerocopy_completed_, &copied);
  if (copied) {
    // The kernel copied anyway (loopback, or a device without scatter-gather):
    // zerocopy only adds page pinning and completions, so this stream stops.
    zerocopy_ = false;
    std::lock_guard<std::mutex> lock(sender_.stats_mu_);
    sender_.stats_.zerocopy_copied = true;
  }
  if (!status.ok()) {
    Disconnect(status);
    return;
  }
  while (!unreleased_.empty() && static_cast<int32_t>(zerocopy_completed_ - unreleased_.front().calls) >= 0) {
    unreleased_.front().transfer->FrameDone(Status::Ok());
    unreleased_.pop_front();
  }
}

void StreamWorker::ReaderLoop(std::shared_ptr<Socket> socket) {
  Status end;
  for (;;) {
    uint8_t bytes[kFrameHeaderBytes];
    iovec iov{bytes, sizeof(bytes)};
    end = ReadExact(*socket, std::span<iovec>(&iov, 1), std::chrono::milliseconds(-1), sender_.options_.io_timeout);
    if (!end.ok()) break;
    auto header = DecodeFrameHeader(std::span<const uint8_t, kFrameHeaderBytes>(bytes));
    if (!header.ok()) {
      end = header.status();
      break;
    }
    if (header->type != FrameType::kResult) {
      end = Status::Errorf("kv transfer: the receiver sent a {} frame", FrameTypeName(header->type));
      break;
    }
    std::string message(header->payload_bytes, '\0');
    iovec payload{message.data(), message.size()};
    if (!message.empty()) {
      end = ReadExact(*socket, std::span<iovec>(&payload, 1), sender_.options_.io_timeout, sender_.options_.io_timeout);
      if (!end.ok()) break;
    }
    std::shared_ptr<TransferState> transfer;
    {
      std::lock_guard<std::mutex> lock(awaiting_mu_);
      auto it = awaiting_.find(header->transfer_id);
      if (it == awaiting_.end()) continue;  // a verdict for an abandoned transfer
      transfer = std::move(it->second);
      awaiting_.erase(it);
    }
    const auto code = static_cast<StatusCode>(header->status);
    transfer->SetVerdict(code == StatusCode::kOk ? Status::Ok() : Status::WithCode(code, "receiver: " + message));
  }
  socket->Shutdown();
  std::lock_guard<std::mutex> lock(awaiting_mu_);
  reader_alive_ = false;
  const Status lost = Status::WithCode(StatusCode::kUnavailable,
                                       "kv transfer: connection lost before the receiver's verdict (" + end.message() + ")");
  for (auto& [id, transfer] : awaiting_) transfer->SetVerdict(lost);
  awaiting_.clear();
}

class Outgoing final : public OutgoingTransfer {
 public:
  Outgoing(Sender& sender, uint64_t id) : sender_(sender), state_(std::make_shared<TransferState>()) {
    state_->id = id;
  }
  ~Outgoing() override {
    if (!finished_) Abort();
  }

  void Send(uint32_t index, ChunkParts parts) override {
    Job job{state_, {}, std::move(parts)};
    job.header.type = FrameType::kChunk;
    job.header.transfer_id = state_->id;
    job.header.index = index;
    Push(index, std::move(job));
  }

  Status Finish(uint32_t num_chunks, Clock::time_point deadline) override {
    Status status = WaitForFrames(deadline);
    if (status.ok()) {
      Job job{state_, {}, {}};
      job.header.type = FrameType::kFinish;
      job.header.transfer_id = state_->id;
      job.header.index = num_chunks;
      Push(HomeStream(), std::move(job));
      std::unique_lock<std::mutex> lock(state_->mu);
      if (!state_->cv.wait_until(lock, deadline, [&] { return state_->has_verdict || !state_->error.ok(); })) {
        status = Status::WithCode(StatusCode::kUnavailable,
                                  fmt::format("kv transfer {}: no verdict from the receiver by the deadline", state_->id));
      } else {
        status = !state_->error.ok() ? state_->error : state_->verdict;
      }
    }
    finished_ = true;
    if (!status.ok()) AbortQuietly();
    std::lock_guard<std::mutex> lock(sender_.stats_mu_);
    ++(status.ok() ? sender_.stats_.transfers_ok : sender_.stats_.transfers_failed);
    return status;
  }

  void Abort() override {
    finished_ = true;
    AbortQuietly();
    std::lock_guard<std::mutex> lock(sender_.stats_mu_);
    ++sender_.stats_.transfers_failed;
  }

 private:
  size_t HomeStream() const { return static_cast<size_t>(state_->id % sender_.num_streams()); }

  void Push(size_t stream, Job job) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      ++state_->in_flight;
    }
    sender_.Enqueue(stream, std::move(job));
  }

  // Until every queued frame is written (and its pages released) or failed.
  Status WaitForFrames(Clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(state_->mu);
    if (!state_->cv.wait_until(lock, deadline, [&] { return state_->in_flight == 0; })) {
      return Status::WithCode(StatusCode::kUnavailable,
                              fmt::format("kv transfer {}: chunks still sending at the deadline", state_->id));
    }
    return state_->error;
  }

  // Skips queued chunks, waits for the ones being written, tells the receiver.
  void AbortQuietly() {
    std::unique_lock<std::mutex> lock(state_->mu);
    if (aborted_) return;
    aborted_ = true;
    state_->aborted = true;
    state_->cv.wait(lock, [&] { return state_->in_flight == 0; });
    lock.unlock();
    auto note = std::make_shared<TransferState>();  // nobody waits on the abort frame
    note->id = state_->id;
    note->in_flight = 1;
    Job job{note, {}, {}};
    job.header.type = FrameType::kAbort;
    job.header.transfer_id = state_->id;
    sender_.Enqueue(HomeStream(), std::move(job));
  }

  Sender& sender_;
  std::shared_ptr<TransferState> state_;
  bool finished_ = false;
  bool aborted_ = false;
};

std::unique_ptr<OutgoingTransfer> Sender::Start(uint64_t id) { return std::make_unique<Outgoing>(*this, id); }

}  // namespace

std::unique_ptr<TransferSender> TransferSender::Create(const std::string& host, int port,
                                                       const TransportOptions& options) {
  return std::make_unique<Sender>(host, port, options);
}

}  // namespace tetra::transport
