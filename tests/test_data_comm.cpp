// The host data plane (parallel/data_comm.h) over thread ranks: typed views in, the same sums and
// exchanges as the float communicator, integer counts; non-host or non-fp32 tensors refused.
#include <gtest/gtest.h>

#include "core/error.h"
#include "parallel/data_comm.h"

namespace helix {
namespace {

TensorView f32_view(std::vector<float>& v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return TensorView::make(v.data(), DType::F32, Device::cpu(), &n, 1);
}

TEST(HostDataComm, AllReduceAndAllToAllV) {
  run_threads(3, [](Communicator& c) {
    HostDataComm d(c);
    std::vector<float> x = {1.0f * (d.rank() + 1), 10.0f};
    d.all_reduce_sum(f32_view(x));
    EXPECT_EQ(x[0], 6.0f);
    EXPECT_EQ(x[1], 30.0f);
    // Rank r sends r + 1 copies of its rank to every peer.
    std::vector<int64_t> sc(3, d.rank() + 1), rc = {1, 2, 3};
    std::vector<float> send(3 * (d.rank() + 1), static_cast<float>(d.rank())), recv(6, -1.0f);
    d.all_to_all_v(f32_view(send), sc, f32_view(recv), rc);
    EXPECT_EQ(recv, (std::vector<float>{0, 1, 1, 2, 2, 2}));
  });
}

TEST(HostDataComm, RefusesNonFloat32) {
  auto c = make_single_comm();
  HostDataComm d(*c);
  std::vector<int32_t> ids = {1, 2};
  const int64_t n = 2;
  EXPECT_THROW(d.all_reduce_sum(TensorView::make(ids.data(), DType::I32, Device::cpu(), &n, 1)),
               Error);
  std::vector<float> x = {1, 2};
  EXPECT_THROW(d.all_reduce_sum(TensorView::make(x.data(), DType::F32, Device::cuda(0), &n, 1)),
               Error);
}

}  // namespace
}  // namespace helix
