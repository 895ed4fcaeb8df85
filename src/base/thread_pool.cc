#include "base/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TETRA_CPU_RELAX() _mm_pause()
#else
#define TETRA_CPU_RELAX() std::this_thread::yield()
#endif

namespace tetra {

namespace {
// How long an idle worker spins before it sleeps.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);

uint32_t GenerationOf(uint64_t state) { return static_cast<uint32_t>(state >> 32); }
uint64_t IndexOf(uint64_t state) { return state & 0xffffffffu; }
// The index of a finished job: no chunk count reaches it, so no late claim succeeds.
constexpr uint64_t kClosedIndex = 0xffffffffu;
}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_.store(true, std::memory_order_seq_cst);
  }
  work_ready_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t generation) {
  uint64_t state = state_.load(std::memory_order_acquire);
  for (;;) {
    if (GenerationOf(state) != generation) return;
    const int64_t index = static_cast<int64_t>(IndexOf(state));
    if (index >= job_num_chunks_.load(std::memory_order_relaxed)) return;
    if (!state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      continue;  // `state` now holds the current value
    }
    // Claimed chunk `index` of this job: its fields are stable until we report it done.
    const int64_t grain = job_grain_.load(std::memory_order_relaxed);
    const int64_t size = job_size_.load(std::memory_order_relaxed);
    const int64_t begin = index * grain;
    RunChunk(job_call_.load(std::memory_order_relaxed), job_fn_.load(std::memory_order_relaxed), begin,
             std::min(size, begin + grain));
    chunks_done_.fetch_add(1, std::memory_order_acq_rel);
    state = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::RunChunk(ChunkCall call, void* fn, int64_t begin, int64_t end) noexcept {
  if (job_failed_.load(std::memory_order_relaxed)) return;  // the job already failed: skip the rest
  try {
    call(fn, begin, end);
  } catch (...) {
    if (!first_error_taken_.test_and_set(std::memory_order_acq_rel)) job_error_ = std::current_exception();
    job_failed_.store(true, std::memory_order_release);
  }
}

bool ThreadPool::WaitForJob(uint32_t seen) {
  const auto spin_until = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  for (int i = 0;; ++i) {
    if (GenerationOf(state_.load(std::memory_order_acquire)) != seen) return true;
    if (stopping_.load(std::memory_order_acquire)) return false;
    TETRA_CPU_RELAX();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > spin_until) break;
  }
  std::unique_lock<std::mutex> lock(mu_);
  num_sleeping_.fetch_add(1, std::memory_order_seq_cst);
  work_ready_.wait(lock, [&] {
    return stopping_.load(std::memory_order_seq_cst) ||
           GenerationOf(state_.load(std::memory_order_seq_cst)) != seen;
  });
  num_sleeping_.fetch_sub(1, std::memory_order_relaxed);
  return !stopping_.load(std::memory_order_acquire);
}

void ThreadPool::WorkerLoop() {
  uint32_t seen = 0;
  while (WaitForJob(seen)) {
    seen = GenerationOf(state_.load(std::memory_order_acquire));
    RunChunks(seen);
  }
}

void ThreadPool::Run(int64_t n, int64_t grain, void* fn, ChunkCall call) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t num_chunks = (n + grain - 1) / grain;
  job_failed_.store(false, std::memory_order_relaxed);
  first_error_taken_.clear(std::memory_order_relaxed);
  job_error_ = nullptr;
  if (workers_.empty() || num_chunks == 1) {
    for (int64_t b = 0; b < n; b += grain) RunChunk(call, fn, b, std::min(n, b + grain));
    RethrowJobError();
    return;
  }
  // No worker can be inside a chunk now: the previous job's chunks are all
  // done and it is closed, so stale workers fail their claims.
  job_fn_.store(fn, std::memory_order_relaxed);
  job_call_.store(call, std::memory_order_relaxed);
  job_size_.store(n, std::memory_order_relaxed);
  job_grain_.store(grain, std::memory_order_relaxed);
  job_num_chunks_.store(num_chunks, std::memory_order_relaxed);
  chunks_done_.store(0, std::memory_order_relaxed);
  const uint32_t generation = GenerationOf(state_.load(std::memory_order_relaxed)) + 1;
  state_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_seq_cst);
  if (num_sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);  // orders the wake after a worker's predicate check
    work_ready_.notify_all();
  }
  RunChunks(generation);
  for (int i = 0; chunks_done_.load(std::memory_order_acquire) != num_chunks; ++i) {
    if (i < 4096) {
      TETRA_CPU_RELAX();
    } else {
      std::this_thread::yield();  // the worker running the last chunk was preempted
    }
  }
  // Close the job before the next one rewrites the job fields: a worker that
  // read this job's state but has not claimed yet now fails its claim.
  state_.store((static_cast<uint64_t>(generation) << 32) | kClosedIndex, std::memory_order_seq_cst);
  RethrowJobError();
}

void ThreadPool::RethrowJobError() {
  if (!job_failed_.load(std::memory_order_acquire)) return;
  // Every chunk has reported done (acquire), so the failing chunk's store is visible.
  std::exception_ptr error = std::exchange(job_error_, nullptr);
  std::rethrow_exception(error);
}

}  // namespace tetra
