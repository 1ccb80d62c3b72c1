#pragma once
// cudaLaunchKernelEx with the one launch attribute the kernels here use: programmatic dependent
// launch, a cooperative grid or a cluster shape. One place for the config boilerplate.
//   LaunchEx(grid, block, smem, stream).pdl()(kernel, args...);
#include <cuda_runtime.h>

#include <cstddef>
#include <utility>

namespace helix::cuda {

class LaunchEx {
 public:
  LaunchEx(dim3 grid, dim3 block, size_t smem, cudaStream_t stream) {
    cfg_.gridDim = grid;
    cfg_.blockDim = block;
    cfg_.dynamicSmemBytes = smem;
    cfg_.stream = stream;
  }
  LaunchEx& grid(dim3 g) {
    cfg_.gridDim = g;
    return *this;
  }
  LaunchEx& block(dim3 b) {
    cfg_.blockDim = b;
    return *this;
  }
  LaunchEx& smem(size_t bytes) {
    cfg_.dynamicSmemBytes = bytes;
    return *this;
  }
  // A programmatic dependent of the kernel before it on the stream (graph-capturable): its CTAs
  // may be dispatched while that one drains; the kernel waits for it in griddepcontrol.wait.
  LaunchEx& pdl(bool on = true) {
    attr_.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr_.val.programmaticStreamSerializationAllowed = 1;
    n_ = on ? 1 : 0;
    return *this;
  }
  // Every CTA resident at once (a grid barrier); the launch fails rather than assume it.
  LaunchEx& cooperative() {
    attr_.id = cudaLaunchAttributeCooperative;
    attr_.val.cooperative = 1;
    n_ = 1;
    return *this;
  }
  // Thread-block clusters of x CTAs along grid.x.
  LaunchEx& cluster(unsigned x) {
    attr_.id = cudaLaunchAttributeClusterDimension;
    attr_.val.clusterDim.x = x;
    attr_.val.clusterDim.y = 1;
    attr_.val.clusterDim.z = 1;
    n_ = 1;
    return *this;
  }
  // The config as cudaLaunchKernelEx and the occupancy queries take it (valid while *this is).
  const cudaLaunchConfig_t* config() {
    cfg_.attrs = &attr_;
    cfg_.numAttrs = n_;
    return &cfg_;
  }
  template <class... P, class... A>
  cudaError_t operator()(void (*kernel)(P...), A&&... args) {
    return cudaLaunchKernelEx(config(), kernel, std::forward<A>(args)...);
  }

 private:
  cudaLaunchConfig_t cfg_{};
  cudaLaunchAttribute attr_{};
  unsigned n_ = 0;
};

}  // namespace helix::cuda
