// libFuzzer target for the safetensors header parser. The input is read as a whole file,
// [u64 little-endian header length][header][data], when the length fits; otherwise the whole
// input is the header and the data section is a fixed 64-byte buffer. Header and data are copied
// into buffers of their exact size so that AddressSanitizer sees any read past either one.
// Anything but a helix::Error escaping the parser, or a view that leaves the data section, is a
// crash.
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "model/safetensors.h"

namespace {

void check_views(const std::map<std::string, helix::StView>& views, const uint8_t* data,
                 size_t data_size) {
  volatile float sink = 0.0f;
  for (const auto& [name, v] : views) {
    if (v.name != name) __builtin_trap();
    const size_t es = helix::st_dtype_size(v.dtype);
    if (es == 0) __builtin_trap();
    size_t numel = 1;
    for (int64_t d : v.shape) {
      if (d < 0) __builtin_trap();
      numel *= static_cast<size_t>(d);
    }
    if (numel * es != v.nbytes) __builtin_trap();
    if (v.nbytes == 0) continue;
    if (v.data < data || v.data + v.nbytes > data + data_size) __builtin_trap();
    // touch every byte through the conversions the loader uses
    for (size_t i = 0; i + 1 < v.nbytes; i += 2) {
      uint16_t u;
      std::memcpy(&u, v.data + i, 2);
      sink = sink + helix::f16_to_f32(u) + helix::bf16_to_f32(u);
    }
    for (size_t i = 0; i < v.nbytes; ++i) sink = sink + helix::f8e4m3_to_f32(v.data[i]);
  }
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* in, size_t size) {
  std::vector<uint8_t> header, data;
  uint64_t n = 0;
  if (size >= 8) std::memcpy(&n, in, 8);
  if (size >= 8 && n <= size - 8) {
    header.assign(in + 8, in + 8 + n);
    data.assign(in + 8 + n, in + size);
  } else {
    header.assign(in, in + size);
    data.assign(64, 0x3C);
  }
  try {
    const auto views = helix::safetensors_parse_header(header.data(), header.size(), data.data(),
                                                       data.size(), "fuzz.safetensors");
    check_views(views, data.data(), data.size());
  } catch (const helix::Error&) {
    // rejected input: fine
  }
  return 0;
}
