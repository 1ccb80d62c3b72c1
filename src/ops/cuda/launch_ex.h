#pragma once
// cudaLaunchKernelEx with the launch attributes the kernels here use: programmatic dependent
// launch, a cooperative grid and/or a cluster shape (up to two at once, e.g. PDL + cluster). One
// place for the config boilerplate.
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
    if (!on) {
      drop(cudaLaunchAttributeProgrammaticStreamSerialization);
      return *this;
    }
    slot(cudaLaunchAttributeProgrammaticStreamSerialization)
        .val.programmaticStreamSerializationAllowed = 1;
    return *this;
  }
  // Every CTA resident at once (a grid barrier); the launch fails rather than assume it.
  LaunchEx& cooperative() {
    slot(cudaLaunchAttributeCooperative).val.cooperative = 1;
    return *this;
  }
  // Thread-block clusters of x CTAs along grid.x.
  LaunchEx& cluster(unsigned x) {
    cudaLaunchAttribute& at = slot(cudaLaunchAttributeClusterDimension);
    at.val.clusterDim.x = x;
    at.val.clusterDim.y = 1;
    at.val.clusterDim.z = 1;
    return *this;
  }
  // The config as cudaLaunchKernelEx and the occupancy queries take it (valid while *this is).
  const cudaLaunchConfig_t* config() {
    cfg_.attrs = attrs_;
    cfg_.numAttrs = n_;
    return &cfg_;
  }
  template <class... P, class... A>
  cudaError_t operator()(void (*kernel)(P...), A&&... args) {
    return cudaLaunchKernelEx(config(), kernel, std::forward<A>(args)...);
  }

 private:
  // The attribute of this id (set again in place), else a new one (a third kind replaces the
  // last: no launch here needs three).
  cudaLaunchAttribute& slot(cudaLaunchAttributeID id) {
    for (unsigned i = 0; i < n_; ++i)
      if (attrs_[i].id == id) return attrs_[i];
    if (n_ < kMax) ++n_;
    attrs_[n_ - 1] = cudaLaunchAttribute{};
    attrs_[n_ - 1].id = id;
    return attrs_[n_ - 1];
  }
  void drop(cudaLaunchAttributeID id) {
    for (unsigned i = 0; i < n_; ++i)
      if (attrs_[i].id == id) {
        attrs_[i] = attrs_[n_ - 1];
        --n_;
        return;
      }
  }
  static constexpr unsigned kMax = 2;
  cudaLaunchConfig_t cfg_{};
  cudaLaunchAttribute attrs_[kMax]{};
  unsigned n_ = 0;
};

}  // namespace helix::cuda
