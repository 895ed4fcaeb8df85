// Prefill/decode disaggregation through two real engines in one process,
// joined by the real KV transport over loopback: a decode engine (kImport)
// reserves blocks and registers the transfer, a prefill engine (kExport)
// computes the prompt's KV but the last token and sends it layer by layer
// from its cache pages into the decode engine's. Greedy output equals
// single-sequence generation (which reference_test ties to transformers)
// for prompts shorter than a block, exactly one block, many blocks, and
// with a prefix-cache hit on either side; a prefill that fails is redone on
// the decode side; aborts and shutdown free every block on both sides.
#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "engine/generator.h"
#include "model/model.h"
#include "transport/kv_transfer.h"
#include "../model/test_paths.h"

namespace tetra {
namespace {

using KvHandoff = EngineRequest::KvHandoff;
using namespace std::chrono_literals;

struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> tokens;
  std::optional<FinishReason> finish;
  RequestUsage usage;
  Status error;
  bool finished = false;
  UpdateCallback Callback() {
    return [this](RequestUpdate&& u) {
      std::lock_guard<std::mutex> lock(mu);
      for (const SampleUpdate& s : u.samples) {
        tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
        if (s.finish) finish = s.finish;
      }
      usage = u.usage;
      if (u.finished) {
        finished = true;
        error = u.error;
      }
      cv.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 120s, [&] { return finished; })) << "request did not finish";
  }
};

// The two engines and the transport between them. Transfer id = the decode
// engine's request id.
class Disaggregated {
 public:
  explicit Disaggregated(const Model& model) {
    receiver_ = transport::TransferReceiver::Listen("127.0.0.1", 0).value();
    sender_ = transport::TransferSender::Create("127.0.0.1", receiver_->port());
    EngineOptions o;
    o.num_threads = 1;
    o.max_num_sequences = 8;
    o.max_step_tokens = 16;  // prompts in several chunks
    o.attention_cost_model = false;  // chunks of exactly the step's tokens (FP8 results depend on where chunks end)
    model_layers_ = model.config().num_layers;
    o.kv_handoff = &decode_side_;
    decode_ = std::move(CreateEngine(model, o).value());
    o.kv_handoff = &prefill_side_;
    prefill_ = std::move(CreateEngine(model, o).value());
  }
  ~Disaggregated() {
    decode_->Shutdown();
    prefill_->Shutdown();
    for (auto& t : senders_) t.join();
  }

  // Submits to the decode engine; its prompt goes to the prefill engine.
  uint64_t Submit(const EngineRequest& r, Collector& out) {
    EngineRequest d = r;
    d.kv_handoff = KvHandoff::kImport;
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t id = decode_->Submit(d, out.Callback()).value();
    prompts_[id] = r.prompt;
    return id;
  }

  Engine& decode() { return *decode_; }
  Engine& prefill() { return *prefill_; }
  int num_reserved() const { return num_reserved_; }
  int num_exports() const { return num_exports_; }
  int max_written_calls() const { return max_written_calls_; }  // of one export
  std::function<bool(uint64_t)> fail_prefill;  // test hook: true fails the export of that decode request

 private:
  struct DecodeSide : KvHandoffHandler {
    Disaggregated* self;
    explicit DecodeSide(Disaggregated* s) : self(s) {}
    void OnKvReserved(uint64_t id, const KvHandoffLayout& layout) override { self->Reserved(id, layout); }
    void OnKvWritten(uint64_t, std::string_view, std::string_view, std::vector<KvHandoffChunk>) override {
      ADD_FAILURE() << "the decode engine exported";
    }
    void OnKvReady(uint64_t, const KvHandoffLayout&) override { ADD_FAILURE() << "the decode engine exported"; }
    void OnKvCancel(uint64_t id) override { self->receiver_->Cancel(id); }
  };
  struct PrefillSide : KvHandoffHandler {
    Disaggregated* self;
    explicit PrefillSide(Disaggregated* s) : self(s) {}
    void OnKvReserved(uint64_t, const KvHandoffLayout&) override { ADD_FAILURE() << "the prefill engine imported"; }
    void OnKvWritten(uint64_t id, std::string_view, std::string_view format,
                     std::vector<KvHandoffChunk> chunks) override {
      self->Written(id, format, std::move(chunks));
    }
    void OnKvReady(uint64_t id, const KvHandoffLayout& layout) override { self->Ready(id, layout); }
    void OnKvCancel(uint64_t id) override { self->Cancelled(id); }
  };

  void Reserved(uint64_t decode_id, const KvHandoffLayout& layout) {
    ++num_reserved_;
    std::lock_guard<std::mutex> lock(mu_);
    formats_[decode_id] = layout.format;
    const Status expected = receiver_->Expect(decode_id, layout.chunks, transport::Clock::now() + 60s,
                                              [this, decode_id](Status s) { decode_->KvArrived(decode_id, s); });
    ASSERT_TRUE(expected.ok()) << expected.message();
    EngineRequest p;
    const std::vector<int32_t>& prompt = prompts_.at(decode_id);
    p.prompt.assign(prompt.begin(), prompt.end() - 1);
    p.max_tokens = 1;
    p.kv_handoff = KvHandoff::kExport;
    p.kv_skip_tokens = layout.first_token;
    auto collector = std::make_shared<Collector>();
    const uint64_t prefill_id = prefill_->Submit(p, collector->Callback()).value();
    Export& e = exports_[prefill_id];
    e.decode_id = decode_id;
    e.collector = collector;
  }

  // Runner thread: chunks go onto the streams at once.
  void Written(uint64_t prefill_id, std::string_view format, std::vector<KvHandoffChunk> chunks) {
    std::lock_guard<std::mutex> lock(mu_);
    Export& e = exports_.at(prefill_id);
    EXPECT_EQ(format, formats_.at(e.decode_id));
    if (!e.out) e.out = sender_->Start(e.decode_id);
    ++e.written_calls;
    for (KvHandoffChunk& c : chunks) {
      if (fail_prefill && fail_prefill(e.decode_id) && e.written_calls > 1) break;  // as if it died after one layer
      e.out->Send(c.index, transport::ChunkParts(c.regions.begin(), c.regions.end()));
    }
  }

  void Ready(uint64_t prefill_id, const KvHandoffLayout& layout) {
    ++num_exports_;
    std::lock_guard<std::mutex> lock(mu_);
    Export& e = exports_.at(prefill_id);
    EXPECT_EQ(layout.format, formats_.at(e.decode_id));
    EXPECT_GT(e.written_calls, 0);
    // Layer by layer: one call per layer of each step that completed pieces.
    EXPECT_EQ(e.written_calls % model_layers_, 0);
    max_written_calls_ = std::max(max_written_calls_, e.written_calls);
    const bool fail = fail_prefill && fail_prefill(e.decode_id);
    if (!e.out) e.out = sender_->Start(e.decode_id);
    e.finishing = true;
    transport::OutgoingTransfer* out = e.out.get();
    // Finished from a thread of its own: the engine thread must not block.
    senders_.emplace_back([this, prefill_id, out, n = layout.num_chunks, fail] {
      Status status;
      if (fail) {
        out->Abort();
        status = Status::WithCode(StatusCode::kUnavailable, "prefill failed (test)");
      } else {
        status = out->Finish(n, transport::Clock::now() + 60s);
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        Export& e = exports_.at(prefill_id);
        e.finishing = false;
        e.ended = true;
      }
      cv_.notify_all();
      prefill_->KvSent(prefill_id, status);
    });
  }

  // The export ends (after KvSent, or aborted): once nothing sends from its
  // blocks, return.
  void Cancelled(uint64_t prefill_id) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !exports_.at(prefill_id).finishing; });
    Export& e = exports_.at(prefill_id);
    if (e.out && !e.ended) e.out->Abort();
    e.ended = true;
  }

  struct Export {
    uint64_t decode_id = 0;
    std::shared_ptr<Collector> collector;
    std::unique_ptr<transport::OutgoingTransfer> out;
    int written_calls = 0;
    bool finishing = false;  // a sender thread is in Finish
    bool ended = false;      // Finish or Abort returned
  };
  std::unique_ptr<transport::TransferReceiver> receiver_;
  std::unique_ptr<transport::TransferSender> sender_;
  DecodeSide decode_side_{this};
  PrefillSide prefill_side_{this};
  std::unique_ptr<Engine> decode_, prefill_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, std::vector<int32_t>> prompts_;
  std::map<uint64_t, std::string> formats_;
  std::map<uint64_t, Export> exports_;
  std::vector<std::thread> senders_;
  std::atomic<int> num_reserved_{0}, num_exports_{0};
  int max_written_calls_ = 0;  // GUARDED_BY(mu_)
  int model_layers_ = 0;
};

std::unique_ptr<Model> Load(const std::string& name, KvDtype kv) {
  auto model = LoadModel(testing::FixturePath("models/" + name + "/model-f32.gguf"),
                         LoadOptions{.weights = WeightFormat::kReference, .pool = nullptr, .kv_dtype = kv,
                                     .kv_block_tokens = 4});
  EXPECT_TRUE(model.ok()) << model.status().message();
  return model.ok() ? std::move(model).value() : nullptr;
}

std::vector<int32_t> GreedyAlone(Model& model, const std::vector<int32_t>& prompt, int max_tokens) {
  ThreadPool pool(1);
  GenerateOptions options;
  options.max_new_tokens = max_tokens;
  options.sampling.temperature = 0.0f;
  options.stop_at_eos = false;
  return Generate(model, prompt, options, pool, nullptr)->token_ids;
}

EngineRequest Greedy(std::vector<int32_t> prompt, int max_tokens) {
  EngineRequest r;
  r.prompt = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampling.temperature = 0.0f;
  r.ignore_eos = true;
  return r;
}

std::vector<int32_t> Prompt(int length, int seed, int64_t vocab) {
  std::vector<int32_t> p(length);
  for (int i = 0; i < length; ++i) p[i] = static_cast<int32_t>((seed * 37 + i * 101 + 7) % vocab);
  return p;
}

// The same request through one engine doing both (`tetra serve --role both`).
// step_tokens: its chunk budget (the disaggregated engines use 16).
std::vector<int32_t> Colocated(const Model& model, const EngineRequest& r, int step_tokens = 16) {
  EngineOptions o;
  o.num_threads = 1;
  o.max_num_sequences = 8;
  o.max_step_tokens = step_tokens;
  o.attention_cost_model = false;
  auto engine = CreateEngine(model, o).value();
  Collector out;
  EXPECT_TRUE(engine->Submit(r, out.Callback()).ok());
  out.Wait();
  return out.tokens;
}

void ExpectIdle(const Engine& engine) {
  for (int i = 0; i < 400; ++i) {
    const EngineMetrics m = engine.metrics();
    if (m.kv_cache_usage == 0.0 && m.num_requests_running == 0 && m.num_requests_waiting == 0) return;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(engine.metrics().kv_cache_usage, 0.0);
  EXPECT_EQ(engine.metrics().num_requests_running, 0);
}

TEST(EngineDisaggregation, GreedyThroughPrefillAndDecodeEqualsGreedyAlone) {
  for (KvDtype kv : {KvDtype::kFp8E4M3, KvDtype::kF32}) {
    for (const char* name : {"qwen3_moe", "llama"}) {
      SCOPED_TRACE(std::string(name) + " " + KvDtypeName(kv));
      std::unique_ptr<Model> model = Load(name, kv);
      ASSERT_NE(model, nullptr);
      const int64_t vocab = model->config().vocab_size;
      Disaggregated cluster(*model);
      // 3: shorter than a block; 5: one block and the last token; 4: a block's worth with
      // the last token in it; 23: many blocks and an open one.
      for (int length : {3, 5, 4, 23}) {
        const EngineRequest r = Greedy(Prompt(length, length, vocab), 9);
        Collector out;
        cluster.Submit(r, out);
        out.Wait();
        EXPECT_TRUE(out.error.ok()) << out.error.message();
        // The disaggregated path computes the prompt in chunks that end at
        // the last token (the prefill side's, then the decode side's one
        // token). With FP8 KV a chunk boundary inside a KV block changes the
        // numbers (rows before it attend to the open block's f32 values, in
        // one pass to the quantized block), so the oracle is the colocated
        // engine whose chunks end there too; for 23 tokens the boundary at 22
        // is not in a full block and the default chunks agree.
        EXPECT_EQ(out.tokens, Colocated(*model, r, length <= 17 ? length - 1 : 16)) << "prompt of " << length;
        // The exact KV path does not depend on chunks: it equals
        // single-sequence generation and the default colocated engine.
        if (kv == KvDtype::kF32) {
          EXPECT_EQ(out.tokens, GreedyAlone(*model, r.prompt, 9)) << "prompt of " << length;
          EXPECT_EQ(out.tokens, Colocated(*model, r)) << "prompt of " << length;
        }
        EXPECT_EQ(out.finish, FinishReason::kLength);
        EXPECT_EQ(out.usage.prompt_tokens, length);
      }
      EXPECT_EQ(cluster.num_exports(), 4);
      // The 23-token prompt (22 exported) takes two prefill steps of 16 and
      // 6 tokens: the first step's blocks went out while it computed, layer
      // by layer, before the second step ran.
      EXPECT_EQ(cluster.max_written_calls(), 2 * model->config().num_layers);
      ExpectIdle(cluster.decode());
      ExpectIdle(cluster.prefill());
    }
  }
}

TEST(EngineDisaggregation, PrefixHitsOnEitherSide) {
  std::unique_ptr<Model> model = Load("llama", KvDtype::kFp8E4M3);
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  Disaggregated cluster(*model);
  std::vector<int32_t> shared = Prompt(16, 1, vocab);
  std::vector<int32_t> a = shared, b = shared;
  a.insert(a.end(), {5, 6, 7});
  b.insert(b.end(), {9, 10, 11, 12, 13, 14});
  for (const auto& prompt : {a, b, a}) {  // b hits both caches' shared blocks; a again hits everything
    Collector out;
    cluster.Submit(Greedy(prompt, 6), out);
    out.Wait();
    EXPECT_EQ(out.tokens, Colocated(*model, Greedy(prompt, 6)));
  }
  EXPECT_GT(cluster.decode().metrics().prefix_cache_hits, 0);
  EXPECT_GT(cluster.prefill().metrics().prefix_cache_hits, 0);
  ExpectIdle(cluster.decode());
  ExpectIdle(cluster.prefill());
}

TEST(EngineDisaggregation, AFailedPrefillIsRedoneOnTheDecodeSide) {
  std::unique_ptr<Model> model = Load("qwen3_moe", KvDtype::kFp8E4M3);
  ASSERT_NE(model, nullptr);
  Disaggregated cluster(*model);
  cluster.fail_prefill = [](uint64_t) { return true; };
  const std::vector<int32_t> prompt = Prompt(21, 3, model->config().vocab_size);
  Collector out;
  cluster.Submit(Greedy(prompt, 7), out);
  out.Wait();
  EXPECT_TRUE(out.error.ok()) << out.error.message();
  EXPECT_EQ(out.tokens, Colocated(*model, Greedy(prompt, 7)));
  EXPECT_EQ(cluster.num_reserved(), 1);
  EXPECT_EQ(cluster.num_exports(), 1);  // the transfer was started, and failed
  ExpectIdle(cluster.decode());
  ExpectIdle(cluster.prefill());
}

TEST(EngineDisaggregation, ConcurrentRequestsAndAShutdownMidway) {
  std::unique_ptr<Model> model = Load("qwen3_moe", KvDtype::kFp8E4M3);
  ASSERT_NE(model, nullptr);
  const int64_t vocab = model->config().vocab_size;
  std::vector<Collector> outs(6);
  {
    Disaggregated cluster(*model);
    for (int i = 0; i < 6; ++i) cluster.Submit(Greedy(Prompt(6 + 5 * i, i, vocab), 40), outs[i]);
    outs[0].Wait();
    // The destructor shuts both engines down with requests in every state.
  }
  for (Collector& out : outs) {
    std::unique_lock<std::mutex> lock(out.mu);
    EXPECT_TRUE(out.finished) << "every request gets its final update";
  }
}

}  // namespace
}  // namespace tetra
