#pragma once
// Minimal .npy (format 1.0) reader/writer for float32 and int32 arrays: the machine-readable
// output of `helix score` and the format of the reference fixtures.
#include <cstdint>
#include <string>
#include <vector>

namespace helix {

void npy_write_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<float> data;  // converted to float32 whatever the stored dtype (<f4, <f8, <i4, <i8)
};
NpyArray npy_read(const std::string& path);

}  // namespace helix
