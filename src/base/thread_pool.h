// One persistent pool of worker threads shared by all kernels. The caller's
// thread takes part in the work, so a pool of N threads has N-1 workers.
// ParallelFor may be called from one thread at a time (the engine thread);
// calls do not nest.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
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
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  void WorkerLoop();
  void RunChunks();

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  uint64_t generation_ = 0;     // guarded by mu_
  int num_active_workers_ = 0;  // guarded by mu_
  bool stopping_ = false;       // guarded by mu_
  // The current job, published under mu_ before generation_ changes.
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  int64_t job_grain_ = 1;
  std::atomic<int64_t> next_chunk_{0};
};

}  // namespace tetra
