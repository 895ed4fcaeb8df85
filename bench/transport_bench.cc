// The KV transport over loopback: a TransferReceiver and a TransferSender in
// this process (so both ends share the machine's cores, as iperf3's client
// and server do), moving transfers of --transfer-mib between two pools in
// chunks of one block each, for every block size and stream count given.
// GB/s = payload bytes landed and verified (XXH3) / wall time, from the first
// Expect to the last verdict; the receiver registers the next transfer while
// the current one runs, as a decode instance would.
//
//   build/bench/transport_bench --block-kib 16,64,256,1024,4096 --streams 1,2,4,8
//
// Output: one line per configuration, a markdown table, and with --json the
// figures for bench/transport_compare.py.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <random>

#include "transport/kv_transfer.h"

namespace tetra::transport {
namespace {

struct Flags {
  std::vector<int> block_kib = {16, 64, 256, 1024, 4096};
  std::vector<int> streams = {1, 2, 4, 8};
  int transfer_mib = 64;
  double seconds = 2.0;  // per configuration, at least one transfer
  int rounds = 2;
  std::string zerocopy = "on";
  std::string json;
};

struct Result {
  int block_kib, streams;
  std::vector<double> gbps;  // per round
};

double RunConfig(const Flags& f, int block_kib, int num_streams, std::vector<uint8_t>& src,
                 std::vector<uint8_t>& dst) {
  TransportOptions options;
  options.num_streams = num_streams;
  options.zerocopy = f.zerocopy == "on";
  auto receiver = TransferReceiver::Listen("127.0.0.1", 0, options);
  if (!receiver.ok()) {
    std::fprintf(stderr, "transport_bench: %s\n", receiver.status().message().c_str());
    std::exit(1);
  }
  auto sender = TransferSender::Create("127.0.0.1", (*receiver)->port(), options);
  const size_t block = static_cast<size_t>(block_kib) << 10;
  const size_t num_blocks = src.size() / block;
  // Chunk i: block i of the source into block (i * 7 + 3) % n of the destination
  // (scattered ids, as in a KV pool), one part each.
  auto run_one = [&](uint64_t id) {
    std::vector<ChunkRegions> regions(num_blocks);
    for (size_t i = 0; i < num_blocks; ++i) regions[i] = {{dst.data() + ((i * 7 + 3) % num_blocks) * block, block}};
    std::promise<Status> done;
    auto received = done.get_future();
    Status expected = (*receiver)->Expect(id, std::move(regions), Clock::now() + std::chrono::seconds(60),
                                          [&](Status s) { done.set_value(std::move(s)); });
    if (!expected.ok()) {
      std::fprintf(stderr, "transport_bench: %s\n", expected.message().c_str());
      std::exit(1);
    }
    auto out = sender->Start(id);
    for (size_t i = 0; i < num_blocks; ++i) out->Send(static_cast<uint32_t>(i), {{src.data() + i * block, block}});
    const Status sent = out->Finish(static_cast<uint32_t>(num_blocks), Clock::now() + std::chrono::seconds(60));
    const Status got = received.get();
    if (!sent.ok() || !got.ok()) {
      std::fprintf(stderr, "transport_bench: transfer failed: %s / %s\n", sent.message().c_str(), got.message().c_str());
      std::exit(1);
    }
  };
  run_one(1);  // warm-up: connections, page faults
  uint64_t id = 2;
  size_t bytes = 0;
  const auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    run_one(id++);
    bytes += num_blocks * block;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  } while (elapsed < f.seconds);
  // Spot check: the last transfer's first and last chunks landed where they should.
  for (size_t i : {size_t{0}, num_blocks - 1}) {
    if (std::memcmp(dst.data() + ((i * 7 + 3) % num_blocks) * block, src.data() + i * block, block) != 0) {
      std::fprintf(stderr, "transport_bench: chunk %zu did not land intact\n", i);
      std::exit(1);
    }
  }
  return static_cast<double>(bytes) / elapsed / 1e9;
}

int Main(int argc, char** argv) {
  Flags f;
  CLI::App app("tetra KV transport benchmark over loopback");
  app.add_option("--block-kib", f.block_kib, "block (chunk) sizes in KiB")->delimiter(',');
  app.add_option("--streams", f.streams, "stream counts")->delimiter(',');
  app.add_option("--transfer-mib", f.transfer_mib, "bytes per transfer, MiB");
  app.add_option("--seconds", f.seconds, "time per configuration and round");
  app.add_option("-r,--rounds", f.rounds, "rounds (the configurations alternate)");
  app.add_option("--zerocopy", f.zerocopy, "on | off")->check(CLI::IsMember({"on", "off"}));
  app.add_option("--json", f.json, "write the figures here");
  CLI11_PARSE(app, argc, argv);

  std::vector<uint8_t> src(static_cast<size_t>(f.transfer_mib) << 20), dst(src.size());
  std::mt19937_64 rng(1);
  for (size_t i = 0; i + 8 <= src.size(); i += 8) {
    const uint64_t v = rng();
    std::memcpy(src.data() + i, &v, 8);
  }
  std::fill(dst.begin(), dst.end(), 0);  // fault the pages in

  std::vector<Result> results;
  for (int kib : f.block_kib) {
    for (int s : f.streams) results.push_back({kib, s, {}});
  }
  for (int round = 0; round < f.rounds; ++round) {
    for (Result& r : results) {
      const double gbps = RunConfig(f, r.block_kib, r.streams, src, dst);
      r.gbps.push_back(gbps);
      std::printf("round %d block %5d KiB streams %d: %6.2f GB/s\n", round, r.block_kib, r.streams, gbps);
      std::fflush(stdout);
    }
  }
  std::printf("\n| block | streams | GB/s mean (range) |\n|---|---|---|\n");
  for (const Result& r : results) {
    double sum = 0;
    for (double g : r.gbps) sum += g;
    const auto [lo, hi] = std::minmax_element(r.gbps.begin(), r.gbps.end());
    std::printf("| %d KiB | %d | %.2f (%.2f-%.2f) |\n", r.block_kib, r.streams, sum / r.gbps.size(), *lo, *hi);
  }
  if (!f.json.empty()) {
    FILE* out = std::fopen(f.json.c_str(), "w");
    if (out == nullptr) {
      std::fprintf(stderr, "transport_bench: cannot write %s\n", f.json.c_str());
      return 1;
    }
    std::fprintf(out, "[");
    for (size_t i = 0; i < results.size(); ++i) {
      std::fprintf(out, "%s{\"block_kib\": %d, \"streams\": %d, \"gbps\": [", i ? ", " : "", results[i].block_kib,
                   results[i].streams);
      for (size_t j = 0; j < results[i].gbps.size(); ++j) std::fprintf(out, "%s%.4f", j ? ", " : "", results[i].gbps[j]);
      std::fprintf(out, "]}");
    }
    std::fprintf(out, "]\n");
    std::fclose(out);
  }
  return 0;
}

}  // namespace
}  // namespace tetra::transport

int main(int argc, char** argv) { return tetra::transport::Main(argc, argv); }
