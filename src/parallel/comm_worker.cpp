#include "parallel/comm_worker.h"

#include <atomic>
#include <utility>

namespace helix {

namespace {
std::atomic<uint64_t> g_tasks{0}, g_pipelined{0}, g_busy{0};
}  // namespace

CommWorker::Counters CommWorker::counters() {
  return {g_tasks.load(), g_pipelined.load(), g_busy.load()};
}

CommWorker::CommWorker() : thread_([this] { loop(); }) {}

CommWorker::~CommWorker() {
  cancel();
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CommWorker::submit(std::function<void()> task) {
  {
    std::lock_guard lk(mu_);
    if (unwaited_++ > 0) g_pipelined.fetch_add(1, std::memory_order_relaxed);
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void CommWorker::wait() {
  std::unique_lock lk(mu_);
  waiting_ = true;
  cv_.wait(lk, [&] { return queue_.empty() && !running_; });
  waiting_ = false;
  unwaited_ = 0;
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

void CommWorker::cancel() noexcept {
  std::unique_lock lk(mu_);
  queue_.clear();
  waiting_ = true;
  cv_.wait(lk, [&] { return !running_; });
  waiting_ = false;
  unwaited_ = 0;
  error_ = nullptr;
}

void CommWorker::loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    if (error_) {  // an earlier task failed: skip the rest of this batch
      cv_.notify_all();
      continue;
    }
    running_ = true;
    g_tasks.fetch_add(1, std::memory_order_relaxed);
    if (!waiting_) g_busy.fetch_add(1, std::memory_order_relaxed);
    lk.unlock();
    std::exception_ptr err;
    try {
      task();
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    running_ = false;
    if (err && !error_) error_ = err;
    cv_.notify_all();
  }
}

}  // namespace helix
