// One persistent pool of worker threads shared by all kernels. The caller's
// thread takes part in the work, so a pool of N threads has N-1 workers.
// Chunks are claimed from one atomic counter tagged with the job's
// generation, and the caller waits for the chunks to be done, not for every
// worker to check in: a worker that is descheduled (another process on its
// core) never holds up a step it took no part in. Between jobs, workers spin
// for a short while (decode steps come every few hundred microseconds, and
// waking a sleeping thread costs more than a small job) and then sleep.
// ParallelFor may be called from one thread at a time (the engine thread);
// calls do not nest. An exception thrown by fn in any chunk (on any thread)
// reaches ParallelFor's caller: the first one is rethrown there once every
// claimed chunk has returned, and chunks not yet started are skipped.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <type_traits>
#include <mutex>
#include <thread>
#include <vector>

namespace tetra {

class ThreadPool {
 public:
  // num_threads <= 0 means one per hardware thread.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) over disjoint chunks covering [0, n), each chunk at
  // most `grain` long, handed out dynamically. Returns when all are done.
  // fn is called through a plain pointer (no std::function), so a call
  // allocates nothing: decode runs dozens of these per token.
  template <typename Fn>
  void ParallelFor(int64_t n, int64_t grain, Fn&& fn) {
    using Callable = std::remove_reference_t<Fn>;
    Run(n, grain, const_cast<void*>(static_cast<const void*>(&fn)),
        [](void* f, int64_t begin, int64_t end) { (*static_cast<Callable*>(f))(begin, end); });
  }

 private:
  using ChunkCall = void (*)(void* fn, int64_t begin, int64_t end);
  void Run(int64_t n, int64_t grain, void* fn, ChunkCall call);
  void WorkerLoop();
  // Claims and runs chunks of job `generation` until none are left.
  void RunChunks(uint32_t generation);
  // Runs one chunk, keeping its exception (the job's first) for the caller.
  void RunChunk(ChunkCall call, void* fn, int64_t begin, int64_t end) noexcept;
  void RethrowJobError();
  // Waits until the job generation differs from `seen`; false when stopping.
  bool WaitForJob(uint32_t seen);

  int num_threads_;
  std::vector<std::thread> workers_;

  // (generation << 32) | next chunk index. A chunk is claimed by a CAS that
  // also checks the generation, so the job fields below are read only while
  // the job is still running (it cannot finish before the claimed chunk).
  // A finished job's index is set to a closed value before the fields of the
  // next job are written, so no late claim can succeed in between.
  std::atomic<uint64_t> state_{0};
  std::atomic<void*> job_fn_{nullptr};
  std::atomic<ChunkCall> job_call_{nullptr};
  std::atomic<int64_t> job_size_{0};
  std::atomic<int64_t> job_grain_{1};
  std::atomic<int64_t> job_num_chunks_{0};
  std::atomic<int64_t> chunks_done_{0};
  // The job's first exception; set once (first_error_taken_) and read by the caller after the job.
  std::atomic<bool> job_failed_{false};
  std::atomic_flag first_error_taken_ = ATOMIC_FLAG_INIT;
  std::exception_ptr job_error_;
  std::atomic<bool> stopping_{false};

  std::mutex mu_;  // only for sleeping and waking
  std::condition_variable work_ready_;
  std::atomic<int> num_sleeping_{0};
};

}  // namespace tetra
