#include "parallel/comm_worker.h"

#include <utility>

namespace helix {

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
    queue_.push_back(std::move(task));
  }
  cv_.notify_all();
}

void CommWorker::wait() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return queue_.empty() && !running_; });
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

void CommWorker::cancel() noexcept {
  std::unique_lock lk(mu_);
  queue_.clear();
  cv_.wait(lk, [&] { return !running_; });
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
