#pragma once
// Tensors. `Tensor` is a dense row-major host fp32 tensor that owns its storage (what the loader
// returns and the CPU reference computes in). `DTensor` is the typed, device-aware one the layer
// graph uses: an owning handle over a shared Buffer plus a view, so slices and tied weights alias
// instead of copying. TensorView (core/view.h) is the non-owning form the ops take.
#include <cstdint>
#include <functional>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/view.h"

namespace helix {

// "[a, b, c]": shapes in error messages.
inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)) {
    data.assign(static_cast<size_t>(numel_of(shape)), fill);
  }

  static int64_t numel_of(const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
  }
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  int64_t dim(int i) const { return shape.at(static_cast<size_t>(i < 0 ? i + rank() : i)); }
  int rank() const { return static_cast<int>(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  bool empty() const { return data.empty(); }
  TensorView view() {
    return TensorView::make(data.data(), DType::F32, Device::cpu(), shape.data(), rank());
  }
};

// Memory of one device; `release` frees it when the last DTensor over it goes.
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device;
  std::function<void(void*)> release;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (release) release(ptr);
  }
};

class DTensor {
 public:
  DTensor() = default;
  DTensor(std::shared_ptr<Buffer> buf, const TensorView& v) : buf_(std::move(buf)), v_(v) {}
  // A host fp32 tensor, zero-copy: the DTensor takes over t's storage.
  static DTensor from_host(Tensor&& t) {
    auto holder = std::make_shared<std::vector<float>>(std::move(t.data));
    auto buf = std::make_shared<Buffer>();
    buf->ptr = holder->data();
    buf->bytes = holder->size() * sizeof(float);
    buf->release = [holder](void*) mutable { holder.reset(); };
    return DTensor(buf, TensorView::make(buf->ptr, DType::F32, Device::cpu(), t.shape.data(),
                                         static_cast<int>(t.shape.size())));
  }
  const TensorView& view() const { return v_; }
  bool empty() const { return v_.empty(); }
  int64_t numel() const { return v_.numel(); }
  int64_t dim(int i) const { return v_.dim(i); }
  DType dtype() const { return v_.dtype; }
  Device device() const { return v_.device; }
  float* f32() const { return v_.f32(); }
  // Rows [r0, r1) along dim 0, sharing the buffer.
  DTensor rows(int64_t r0, int64_t r1) const { return DTensor(buf_, v_.rows(r0, r1)); }
  // Same storage, another (contiguous) shape of the same element count.
  DTensor reshaped(std::vector<int64_t> s) const {
    HELIX_CHECK(Tensor::numel_of(s) == numel() && v_.contiguous(), "cannot reshape {} to {}",
                shape_str({v_.shape, v_.shape + v_.rank}), shape_str(s));
    return DTensor(
        buf_, TensorView::make(v_.data, v_.dtype, v_.device, s.data(), static_cast<int>(s.size())));
  }
  const std::shared_ptr<Buffer>& buffer() const { return buf_; }
  // FP8 weights: their per-128x128-block scales (fp32 [ceil(rows/128), ceil(cols/128)]).
  const DTensor* scale() const { return scale_.get(); }
  DTensor with_scale(DTensor s) const {
    DTensor t = *this;
    t.scale_ = std::make_shared<const DTensor>(std::move(s));
    return t;
  }

 private:
  std::shared_ptr<Buffer> buf_;
  TensorView v_;
  std::shared_ptr<const DTensor> scale_;
};

}  // namespace helix
