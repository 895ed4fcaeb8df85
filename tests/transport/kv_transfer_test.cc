// The KV transport over loopback: a sender and a receiver in one process,
// moving "KV blocks" between two pools laid out like the cache (per layer,
// scattered block ids on both sides), directly and through a fault proxy.
#include "transport/kv_transfer.h"

#include <gtest/gtest.h>

#include <future>
#include <random>
#include <thread>

#include "fault_proxy.h"

namespace tetra::transport {
namespace {

using namespace std::chrono_literals;

// [layers][blocks][block_bytes] of bytes.
struct Pool {
  int layers, blocks;
  size_t block_bytes;
  std::vector<uint8_t> bytes;
  Pool(int l, int b, size_t bb) : layers(l), blocks(b), block_bytes(bb), bytes(static_cast<size_t>(l) * b * bb) {}
  uint8_t* block(int layer, int id) { return bytes.data() + (static_cast<size_t>(layer) * blocks + id) * block_bytes; }
};

Pool RandomPool(int layers, int blocks, size_t block_bytes, uint32_t seed) {
  Pool p(layers, blocks, block_bytes);
  std::mt19937 rng(seed);
  for (auto& b : p.bytes) b = static_cast<uint8_t>(rng());
  return p;
}

// Chunk per layer: the table's blocks in order.
std::vector<ChunkRegions> Regions(Pool& pool, const std::vector<int>& table) {
  std::vector<ChunkRegions> chunks(pool.layers);
  for (int l = 0; l < pool.layers; ++l) {
    for (int id : table) chunks[l].push_back({pool.block(l, id), pool.block_bytes});
  }
  return chunks;
}
ChunkParts Parts(Pool& pool, int layer, const std::vector<int>& table) {
  ChunkParts parts;
  for (int id : table) parts.push_back({pool.block(layer, id), pool.block_bytes});
  return parts;
}

struct Waiter {
  std::promise<Status> promise;
  std::future<Status> future = promise.get_future();
  std::function<void(Status)> callback() {
    return [this](Status s) { promise.set_value(std::move(s)); };
  }
  Status Get() {
    EXPECT_EQ(future.wait_for(30s), std::future_status::ready) << "done never ran";
    return future.get();
  }
};

struct Loopback {
  std::unique_ptr<TransferReceiver> receiver;
  std::unique_ptr<TransferSender> sender;
  explicit Loopback(TransportOptions options = {}, int via_port = 0) {
    receiver = TransferReceiver::Listen("127.0.0.1", 0, options).value();
    sender = TransferSender::Create("127.0.0.1", via_port != 0 ? via_port : receiver->port(), options);
  }
};

// Sends src's `from` blocks into dst's `to` blocks as transfer id; returns
// the sender's and the receiver's results.
std::pair<Status, Status> Move(Loopback& link, uint64_t id, Pool& src, const std::vector<int>& from, Pool& dst,
                               const std::vector<int>& to, std::chrono::milliseconds deadline = 20s) {
  Waiter waiter;
  const Status expected = link.receiver->Expect(id, Regions(dst, to), Clock::now() + deadline, waiter.callback());
  EXPECT_TRUE(expected.ok()) << expected.message();
  auto out = link.sender->Start(id);
  for (int l = 0; l < src.layers; ++l) out->Send(l, Parts(src, l, from));
  const Status sent = out->Finish(src.layers, Clock::now() + deadline);
  return {sent, waiter.Get()};
}

void ExpectMoved(Pool& src, const std::vector<int>& from, Pool& dst, const std::vector<int>& to) {
  for (int l = 0; l < src.layers; ++l) {
    for (size_t i = 0; i < from.size(); ++i) {
      ASSERT_EQ(0, std::memcmp(src.block(l, from[i]), dst.block(l, to[i]), src.block_bytes))
          << "layer " << l << " block " << i;
    }
  }
}

TEST(KvTransfer, ScatteredBlocksLandInPlaceForEveryStreamCount) {
  for (int streams : {1, 2, 4, 8}) {
    for (bool zerocopy : {false, true}) {
      SCOPED_TRACE(::testing::Message() << streams << " streams, zerocopy " << zerocopy);
      TransportOptions options;
      options.num_streams = streams;
      options.zerocopy = zerocopy;
      options.zerocopy_min_bytes = 1024;
      Loopback link(options);
      Pool src = RandomPool(6, 16, 12288, 1);
      Pool dst(6, 16, 12288);
      const std::vector<int> from = {3, 9, 0, 15, 4}, to = {1, 2, 14, 7, 8};
      auto [sent, received] = Move(link, 42, src, from, dst, to);
      ASSERT_TRUE(sent.ok()) << sent.message();
      ASSERT_TRUE(received.ok()) << received.message();
      ExpectMoved(src, from, dst, to);
      // Blocks outside the table are untouched.
      for (int l = 0; l < dst.layers; ++l) {
        for (int id : {0, 3, 5}) {
          const uint8_t* b = dst.block(l, id);
          EXPECT_TRUE(std::all_of(b, b + dst.block_bytes, [](uint8_t x) { return x == 0; }));
        }
      }
      EXPECT_EQ(link.receiver->stats().bytes, 6u * 5 * 12288);
      EXPECT_EQ(link.sender->stats().transfers_ok, 1u);
      // Linux has had MSG_ZEROCOPY since 4.14; 12 KiB parts are over the 1 KiB floor.
      if (zerocopy) {
        EXPECT_GT(link.sender->stats().zerocopy_sends, 0u);
      }
    }
  }
}

TEST(KvTransfer, ChunksSentLayerByLayerWhileTheReceiverWaits) {
  Loopback link;
  Pool src = RandomPool(8, 4, 4096, 2);
  Pool dst(8, 4, 4096);
  const std::vector<int> table = {0, 1, 2, 3};
  Waiter waiter;
  ASSERT_TRUE(link.receiver->Expect(7, Regions(dst, table), Clock::now() + 20s, waiter.callback()).ok());
  auto out = link.sender->Start(7);
  for (int l = 0; l < 8; ++l) {  // as if each layer took 5 ms to compute, sent out of order in pairs
    const int layer = l ^ 1;
    std::this_thread::sleep_for(5ms);
    out->Send(layer, Parts(src, layer, table));
  }
  EXPECT_EQ(waiter.future.wait_for(0ms), std::future_status::timeout) << "done before finish";
  ASSERT_TRUE(out->Finish(8, Clock::now() + 20s).ok());
  ASSERT_TRUE(waiter.Get().ok());
  ExpectMoved(src, table, dst, table);
}

TEST(KvTransfer, ManyConcurrentTransfersFromTwoSenders) {
  TransportOptions options;
  options.num_streams = 3;
  auto receiver = TransferReceiver::Listen("127.0.0.1", 0, options).value();
  std::vector<std::unique_ptr<TransferSender>> senders;
  for (int i = 0; i < 2; ++i) senders.push_back(TransferSender::Create("127.0.0.1", receiver->port(), options));
  constexpr int kTransfers = 24;
  Pool src = RandomPool(4, kTransfers * 2, 2048, 3);
  Pool dst(4, kTransfers * 2, 2048);
  std::vector<Waiter> waiters(kTransfers);
  for (int t = 0; t < kTransfers; ++t) {
    ASSERT_TRUE(receiver->Expect(1000 + t, Regions(dst, {2 * t + 1, 2 * t}), Clock::now() + 20s, waiters[t].callback()).ok());
  }
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < kTransfers; ++t) {
    threads.emplace_back([&, t] {
      auto out = senders[t % 2]->Start(1000 + t);
      for (int l = 0; l < 4; ++l) out->Send(l, Parts(src, l, {2 * t, 2 * t + 1}));
      if (out->Finish(4, Clock::now() + 20s).ok()) ++ok;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok.load(), kTransfers);
  for (int t = 0; t < kTransfers; ++t) {
    ASSERT_TRUE(waiters[t].Get().ok());
    ExpectMoved(src, {2 * t, 2 * t + 1}, dst, {2 * t + 1, 2 * t});
  }
}

TEST(KvTransfer, WrongSizesAndCountsFailBothSidesAndNothingSticks) {
  Loopback link;
  Pool src = RandomPool(2, 4, 1024, 4);
  Pool dst(2, 4, 1024);
  {  // a chunk one block short
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(1, Regions(dst, {0, 1}), Clock::now() + 20s, waiter.callback()).ok());
    auto out = link.sender->Start(1);
    out->Send(0, Parts(src, 0, {0, 1}));
    out->Send(1, Parts(src, 1, {0}));
    const Status sent = out->Finish(2, Clock::now() + 20s);
    EXPECT_FALSE(sent.ok());
    const Status received = waiter.Get();
    EXPECT_NE(received.message().find("chunk 1 has 1024 bytes, 2048 expected"), std::string::npos) << received.message();
    EXPECT_NE(sent.message().find("2048 expected"), std::string::npos) << sent.message();
  }
  {  // a chunk index past the end, and a finish with the wrong count
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(2, Regions(dst, {2}), Clock::now() + 20s, waiter.callback()).ok());
    auto out = link.sender->Start(2);
    out->Send(0, Parts(src, 0, {2}));
    out->Send(1, Parts(src, 1, {2}));
    out->Send(5, Parts(src, 1, {2}));
    EXPECT_FALSE(out->Finish(3, Clock::now() + 20s).ok());
    EXPECT_FALSE(waiter.Get().ok());
  }
  {  // nobody expects this id
    auto out = link.sender->Start(99);
    out->Send(0, Parts(src, 0, {0}));
    const Status sent = out->Finish(1, Clock::now() + 20s);
    EXPECT_NE(sent.message().find("not expected"), std::string::npos) << sent.message();
  }
  {  // an id already expected
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(3, Regions(dst, {3}), Clock::now() + 20s, waiter.callback()).ok());
    EXPECT_FALSE(link.receiver->Expect(3, Regions(dst, {3}), Clock::now() + 20s, [](Status) {}).ok());
    link.receiver->Cancel(3);
    EXPECT_EQ(waiter.Get().code(), StatusCode::kCancelled);
  }
  // The same link still moves a good transfer.
  auto [sent, received] = Move(link, 4, src, {0, 1, 2}, dst, {3, 2, 1});
  ASSERT_TRUE(sent.ok()) << sent.message();
  ASSERT_TRUE(received.ok()) << received.message();
  ExpectMoved(src, {0, 1, 2}, dst, {3, 2, 1});
}

TEST(KvTransfer, SenderAbortAndReceiverCancelAndDeadline) {
  Loopback link;
  Pool src = RandomPool(2, 2, 4096, 5);
  Pool dst(2, 2, 4096);
  {
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(10, Regions(dst, {0}), Clock::now() + 20s, waiter.callback()).ok());
    auto out = link.sender->Start(10);
    out->Send(0, Parts(src, 0, {0}));
    out->Abort();
    const Status received = waiter.Get();
    EXPECT_EQ(received.code(), StatusCode::kCancelled);
    EXPECT_NE(received.message().find("sender aborted"), std::string::npos) << received.message();
  }
  {  // the receiver cancels: the sender's finish gets the verdict
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(11, Regions(dst, {1}), Clock::now() + 20s, waiter.callback()).ok());
    link.receiver->Cancel(11);
    EXPECT_EQ(waiter.Get().code(), StatusCode::kCancelled);
    auto out = link.sender->Start(11);
    out->Send(0, Parts(src, 0, {1}));
    out->Send(1, Parts(src, 1, {1}));
    const Status sent = out->Finish(2, Clock::now() + 20s);
    EXPECT_EQ(sent.code(), StatusCode::kCancelled) << sent.message();
  }
  {  // nothing is sent: the deadline ends it
    Waiter waiter;
    const auto start = Clock::now();
    ASSERT_TRUE(link.receiver->Expect(12, Regions(dst, {1}), start + 200ms, waiter.callback()).ok());
    const Status received = waiter.Get();
    EXPECT_NE(received.message().find("deadline passed with 0 of 2 chunks"), std::string::npos) << received.message();
    EXPECT_GE(Clock::now() - start, 200ms);
  }
  // The sender's side of a deadline: the receiver never answers in time.
  {
    Waiter waiter;
    ASSERT_TRUE(link.receiver->Expect(13, Regions(dst, {0}), Clock::now() + 20s, waiter.callback()).ok());
    auto out = link.sender->Start(13);
    out->Send(0, Parts(src, 0, {0}));  // chunk 1 never sent, finish says 2
    const Status sent = out->Finish(2, Clock::now() + 300ms);
    EXPECT_EQ(sent.code(), StatusCode::kUnavailable) << sent.message();
    EXPECT_EQ(waiter.Get().code(), StatusCode::kCancelled);  // the failed finish aborted it
  }
}

TEST(KvTransfer, ReceiverGoneMidTransferFailsTheSenderCleanly) {
  TransportOptions options;
  options.io_timeout = 2000ms;
  auto receiver = TransferReceiver::Listen("127.0.0.1", 0, options).value();
  auto sender = TransferSender::Create("127.0.0.1", receiver->port(), options);
  Pool src = RandomPool(2, 1, 1 << 20, 6);
  Pool dst(2, 1, 1 << 20);
  Waiter waiter;
  ASSERT_TRUE(receiver->Expect(5, Regions(dst, {0}), Clock::now() + 20s, waiter.callback()).ok());
  auto out = sender->Start(5);
  out->Send(0, Parts(src, 0, {0}));
  receiver.reset();  // the decode side stops: its pending transfer fails
  EXPECT_EQ(waiter.Get().code(), StatusCode::kUnavailable);
  out->Send(1, Parts(src, 1, {0}));
  const Status sent = out->Finish(2, Clock::now() + 10s);
  EXPECT_FALSE(sent.ok());
}

TEST(KvTransfer, UnreachableReceiverIsAnErrorNotAHang) {
  int port;
  {
    auto receiver = TransferReceiver::Listen("127.0.0.1", 0).value();
    port = receiver->port();
  }
  auto sender = TransferSender::Create("127.0.0.1", port);
  Pool src = RandomPool(1, 1, 64, 7);
  auto out = sender->Start(1);
  out->Send(0, Parts(src, 0, {0}));
  const Status sent = out->Finish(1, Clock::now() + 5s);
  EXPECT_EQ(sent.code(), StatusCode::kUnavailable);
  EXPECT_NE(sent.message().find("connect"), std::string::npos) << sent.message();
}

// Through the fault proxy. One stream, so the byte offsets are predictable:
// hello (48 + 16), then chunk 0's header (48) and payload.
class KvTransferFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.num_streams = 1;
    options_.io_timeout = 1000ms;
    receiver_ = TransferReceiver::Listen("127.0.0.1", 0, options_).value();
  }
  std::pair<Status, Status> MoveVia(testing::FaultProxy& proxy, uint64_t id) {
    Loopback link;
    link.receiver = std::move(receiver_);
    link.sender = TransferSender::Create("127.0.0.1", proxy.port(), options_);
    auto result = Move(link, id, src_, {0, 1}, dst_, {1, 0}, 3s);
    receiver_ = std::move(link.receiver);
    return result;
  }
  TransportOptions options_;
  std::unique_ptr<TransferReceiver> receiver_;
  Pool src_ = RandomPool(3, 2, 8192, 8);
  Pool dst_ = Pool(3, 2, 8192);
};

TEST_F(KvTransferFaults, AFlippedPayloadByteIsCaughtByTheHash) {
  testing::FaultProxy proxy(receiver_->port(), {.flip_byte_at = 64 + 48 + 5000});
  auto [sent, received] = MoveVia(proxy, 1);
  EXPECT_NE(received.message().find("chunk 0 is corrupt"), std::string::npos) << received.message();
  EXPECT_FALSE(sent.ok());
}

TEST_F(KvTransferFaults, AFlippedHeaderByteEndsTheStream) {
  testing::FaultProxy proxy(receiver_->port(), {.flip_byte_at = 64 + 10});
  auto [sent, received] = MoveVia(proxy, 2);
  EXPECT_FALSE(sent.ok());
  EXPECT_FALSE(received.ok());  // never finished: the deadline or the stream's end
}

TEST_F(KvTransferFaults, ATruncatedTransferFailsBothSides) {
  for (int64_t cut : {int64_t{64 + 20}, int64_t{64 + 48 + 100}, int64_t{64 + 2 * (48 + 16384) + 7}}) {
    SCOPED_TRACE(cut);
    testing::FaultProxy proxy(receiver_->port(), {.close_after = cut});
    auto [sent, received] = MoveVia(proxy, 100 + cut);
    EXPECT_FALSE(sent.ok());
    EXPECT_FALSE(received.ok());
  }
}

TEST_F(KvTransferFaults, DelaysAreOnlySlowAndTheNextConnectionRecovers) {
  testing::FaultProxy proxy(receiver_->port(), {.delay = 20ms});
  auto [sent, received] = MoveVia(proxy, 3);
  ASSERT_TRUE(sent.ok()) << sent.message();
  ASSERT_TRUE(received.ok()) << received.message();
  ExpectMoved(src_, {0, 1}, dst_, {1, 0});

  // First connection dies mid-chunk; the same sender reconnects for the next.
  proxy.set_faults({.close_after = 64 + 48 + 3000, .connections = 1});
  Loopback link;
  link.receiver = std::move(receiver_);
  link.sender = TransferSender::Create("127.0.0.1", proxy.port(), options_);
  auto [sent1, received1] = Move(link, 4, src_, {0, 1}, dst_, {1, 0}, 3s);
  EXPECT_FALSE(sent1.ok());
  EXPECT_FALSE(received1.ok());
  std::fill(dst_.bytes.begin(), dst_.bytes.end(), 0);
  auto [sent2, received2] = Move(link, 5, src_, {0, 1}, dst_, {1, 0});
  ASSERT_TRUE(sent2.ok()) << sent2.message();
  ASSERT_TRUE(received2.ok()) << received2.message();
  ExpectMoved(src_, {0, 1}, dst_, {1, 0});
  EXPECT_GE(link.sender->stats().streams_opened, 2u);
  receiver_ = std::move(link.receiver);
}

}  // namespace
}  // namespace tetra::transport
