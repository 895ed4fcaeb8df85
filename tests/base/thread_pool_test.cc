#include "base/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

namespace tetra {
namespace {

TEST(ThreadPoolTest, CoversEveryIndexOnce) {
  ThreadPool pool(3);
  for (int64_t n : {1, 7, 64, 1001}) {
    for (int64_t grain : {1, 5, 100}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
        ASSERT_LE(e - b, grain);
        for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << n << " " << grain << " " << i;
    }
  }
}

TEST(ThreadPoolTest, ManyCallsInARow) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
  }
  EXPECT_EQ(sum.load(), 20000);
}

}  // namespace
}  // namespace tetra

namespace tetra {
namespace {

// More threads than cores, jobs of every size back to back: every index is
// covered exactly once per job, whatever the scheduling.
TEST(ThreadPoolTest, OversubscribedJobsOfEverySize) {
  ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(300);
  for (int rep = 0; rep < 3000; ++rep) {
    const int64_t n = 1 + (rep * 37) % 300;
    const int64_t grain = 1 + rep % 7;
    pool.ParallelFor(n, grain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].exchange(0), 1) << "rep " << rep << " index " << i;
  }
}

}  // namespace
}  // namespace tetra

namespace tetra {
namespace {

// An exception in any chunk, on a worker or on the caller, reaches the
// caller of ParallelFor (instead of std::terminate), and the pool keeps working.
TEST(ThreadPoolTest, ExceptionInAChunkReachesTheCaller) {
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int64_t failing : {0, 5, 63}) {
      std::atomic<int> ran{0};
      try {
        pool.ParallelFor(64, 1, [&](int64_t b, int64_t e) {
          ran.fetch_add(1);
          if (b == failing) throw std::runtime_error("chunk " + std::to_string(b));
        });
        FAIL() << "no exception reached the caller";
      } catch (const std::runtime_error& e) {
        EXPECT_EQ(std::string(e.what()), "chunk " + std::to_string(failing));
      }
      EXPECT_GE(ran.load(), 1);
      // The next job runs every chunk.
      std::atomic<int64_t> sum{0};
      pool.ParallelFor(100, 3, [&](int64_t b, int64_t e) { sum.fetch_add(e - b); });
      EXPECT_EQ(sum.load(), 100);
    }
  }
}

}  // namespace
}  // namespace tetra
