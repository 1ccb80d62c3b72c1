#pragma once
// CommWorker: one thread that runs tasks (collectives) in submission order, one at a time, so that
// a rank's communication overlaps its own compute on the calling thread (HOP-B, DESIGN.md).
//
// A communicator used through a worker must not be used by any other thread (nor its parent or
// children: split communicators share stats counters) until wait() has returned. submit() and
// wait() synchronise through a mutex, so buffers written before submit() are visible to the task
// and what the task writes is visible after wait().
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace helix {

class CommWorker {
 public:
  CommWorker();
  ~CommWorker();  // drops queued tasks, waits for the running one, joins
  CommWorker(const CommWorker&) = delete;
  CommWorker& operator=(const CommWorker&) = delete;

  // Queues a task. Tasks run in submission order on the worker thread.
  void submit(std::function<void()> task);
  // Waits until every submitted task has run. If one threw, the tasks queued after it are
  // skipped (their collectives would no longer match the peers') and its exception is rethrown.
  void wait();
  // Drops the tasks not yet started and waits for the running one; keeps no error. For a caller
  // that unwinds while tasks still reference its buffers.
  void cancel() noexcept;

  // Evidence of overlap, summed over every worker of the process: tasks run; tasks submitted
  // while an earlier one was still unwaited (the submitter went on with its own work between
  // submit and wait: a pipeline by program order, so it does not depend on timing); and tasks
  // that started while their submitter was still busy (not blocked in wait()), which depends on
  // thread timing and is reported, not relied on.
  struct Counters {
    uint64_t tasks = 0;
    uint64_t pipelined_submits = 0;
    uint64_t started_while_caller_busy = 0;
  };
  static Counters counters();

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;  // the worker waits for tasks, callers for completion
  std::deque<std::function<void()>> queue_;
  bool running_ = false;  // a task is executing on the worker
  bool stop_ = false;
  bool waiting_ = false;  // the submitter is blocked in wait() or cancel()
  int unwaited_ = 0;      // tasks submitted since the last wait() or cancel()
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace helix
