#include "parallel/data_comm.h"

#include "core/error.h"

namespace helix {

namespace {
float* host_f32(const TensorView& v, const char* what) {
  HELIX_CHECK(v.device.is_cpu() && v.dtype == DType::F32,
              "{}: the host data plane moves host float32 tensors (got {} on {})", what,
              dtype_name(v.dtype), v.device.is_cpu() ? "cpu" : "cuda");
  return v.f32();
}
std::vector<size_t> sizes(const std::vector<int64_t>& v) {
  return {v.begin(), v.end()};
}
}  // namespace

void HostDataComm::all_reduce_sum(const TensorView& buf) {
  c_.all_reduce_sum(host_f32(buf, "all_reduce_sum"), static_cast<size_t>(buf.numel()));
}

void HostDataComm::all_to_all(const TensorView& send, const TensorView& recv, int64_t n) {
  c_.all_to_all(host_f32(send, "all_to_all"), host_f32(recv, "all_to_all"), static_cast<size_t>(n));
}

void HostDataComm::all_to_all_v(const TensorView& send, const std::vector<int64_t>& send_counts,
                                const TensorView& recv, const std::vector<int64_t>& recv_counts) {
  c_.all_to_all_v(send.data ? host_f32(send, "all_to_all_v") : nullptr, sizes(send_counts),
                  recv.data ? host_f32(recv, "all_to_all_v") : nullptr, sizes(recv_counts));
}

}  // namespace helix
