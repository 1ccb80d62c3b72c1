#pragma once
// safetensors reader: one memory-mapped file, or a sharded checkpoint through
// model.safetensors.index.json. Every malformed input is a helix::Error naming the file and the
// tensor; nothing is read outside the mapping.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace helix {

enum class StDType { F32, F16, BF16, F8_E4M3, F64, I64, I32, I16, I8, U8, BOOL, F8_E5M2 };

const char* st_dtype_name(StDType d);
size_t st_dtype_size(StDType d);

struct StView {
  std::string name;
  StDType dtype = StDType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
};

// Parses a safetensors header (the JSON after the 8-byte length) against a data section of
// `data_size` bytes. Checks: valid JSON object, known dtypes, integer shapes, offsets in range,
// ordered, non-overlapping, and byte size == numel * dtype size. Exposed for the fuzzer.
std::map<std::string, StView> safetensors_parse_header(const uint8_t* header, size_t header_len,
                                                       const uint8_t* data, size_t data_size,
                                                       const std::string& file_name);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);  // mmaps the file, parses the header
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::map<std::string, StView>& tensors() const { return tensors_; }
  const std::string& path() const { return path_; }
  size_t size() const { return map_size_; }  // bytes of the whole file

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  std::map<std::string, StView> tensors_;
};

// All tensors of a checkpoint directory (model.safetensors or the shards named by
// model.safetensors.index.json).
class WeightStore {
 public:
  explicit WeightStore(const std::string& dir);

  bool has(const std::string& name) const;
  const StView& view(const std::string& name) const;  // throws naming the missing tensor
  std::vector<std::string> names() const;

  // Loads as fp32 (F32/F16/BF16 converted; F8_E4M3 dequantised with the companion
  // `<name>_scale_inv` tensor of per-128x128-block scales when present). When `expect_shape` is
  // non-empty the shape must match exactly, else helix::Error names the tensor and both shapes.
  Tensor load(const std::string& name, const std::vector<int64_t>& expect_shape = {}) const;

  // Row range [row_begin, row_end) of a 2-D tensor (dim 0), as fp32. Used to load only this
  // rank's shard of a tensor-parallel weight.
  Tensor load_rows(const std::string& name, int64_t row_begin, int64_t row_end) const;

  // Total bytes of the mapped files (for progress and stats).
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const StView*> index_;
  std::map<std::string, const SafetensorsFile*> owner_;  // tensor name -> the file holding it

  // Converts elements [elem_begin, elem_begin + count) of `v` to fp32 into `out`.
  void convert(const StView& v, size_t elem_begin, size_t count, float* out) const;
  // Multiplies rows [row_begin, row_begin + rows) of an FP8 weight by its block scales, when a
  // `<name>_scale_inv` tensor exists.
  void apply_block_scale(const StView& v, int64_t row_begin, int64_t rows, float* out) const;
};

// Conversions used by the loader, exposed for tests. bf16 and e4m3 are the core codec
// (core/float_codec.h: bf16_to_float, fp8_e4m3_to_float) under the loader's names.
float bf16_to_f32(uint16_t v);
float f16_to_f32(uint16_t v);
float f8e4m3_to_f32(uint8_t v);

}  // namespace helix
