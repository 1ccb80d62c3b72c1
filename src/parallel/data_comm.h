#pragma once
// The communicator split of DESIGN.md "The GPU path": the data plane. Typed collectives on
// tensors (host or device memory), ordered on the backend's stream: NCCL implements it on GPUs;
// here HostDataComm wraps a Communicator (threads or MPI, host float32 buffers, blocking). The
// control plane (bootstrap, broadcast of sampled ids as int32 bytes, abort) stays on
// Communicator::broadcast_bytes / barrier, which move bytes and never reinterpret them.
// Element counts are integers (int64), never floats.
#include <cstdint>
#include <memory>
#include <vector>

#include "core/view.h"
#include "parallel/comm.h"

namespace helix {

class DataComm {
 public:
  virtual ~DataComm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // buf: summed over ranks in place (same dtype and element count on every rank).
  virtual void all_reduce_sum(const TensorView& buf) = 0;
  // send [size * n] -> recv [size * n]: block j of send goes to rank j.
  virtual void all_to_all(const TensorView& send, const TensorView& recv, int64_t n) = 0;
  // send_counts[j] elements to rank j, recv_counts[i] from rank i, packed in rank order.
  virtual void all_to_all_v(const TensorView& send, const std::vector<int64_t>& send_counts,
                            const TensorView& recv, const std::vector<int64_t>& recv_counts) = 0;
};

// The data plane over a host Communicator: float32 host tensors only (what the CPU backend
// moves); the calls are the Communicator's, so results and byte counters are unchanged.
class HostDataComm final : public DataComm {
 public:
  explicit HostDataComm(Communicator& c) : c_(c) {}
  int rank() const override { return c_.rank(); }
  int size() const override { return c_.size(); }
  void all_reduce_sum(const TensorView& buf) override;
  void all_to_all(const TensorView& send, const TensorView& recv, int64_t n) override;
  void all_to_all_v(const TensorView& send, const std::vector<int64_t>& send_counts,
                    const TensorView& recv, const std::vector<int64_t>& recv_counts) override;

 private:
  Communicator& c_;
};

}  // namespace helix
