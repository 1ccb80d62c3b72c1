#include "core/npy.h"

#include <cstring>
#include <fstream>

#include "core/checked.h"
#include "core/error.h"
#include "core/file_io.h"

namespace helix {

void npy_write_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + ",";
    if (shape.size() > 1 && i + 1 < shape.size()) dims += " ";
    n = checked_mul(n, shape[i], "npy element count");
  }
  if (shape.size() > 1) dims.pop_back();  // "(2, 3)" but "(2,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + header length (2) + header must be a multiple of 64 bytes.
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  const char magic[] = "\x93NUMPY\x01\x00";
  const uint16_t hl = static_cast<uint16_t>(header.size());
  const size_t bytes =
      static_cast<size_t>(checked_mul(n, static_cast<int64_t>(sizeof(float)), "npy size"));
  file_write(path,
             {std::string_view(magic, 8), std::string_view(reinterpret_cast<const char*>(&hl), 2),
              header, std::string_view(reinterpret_cast<const char*>(data), bytes)});
}

NpyArray npy_read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  HELIX_CHECK(f.good(), "cannot open '{}'", path);
  char magic[8];
  f.read(magic, 8);
  HELIX_CHECK(f.good() && std::memcmp(magic, "\x93NUMPY", 6) == 0, "'{}' is not a .npy file", path);
  uint32_t hl = 0;
  if (magic[6] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hl = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hl), 4);
  }
  std::string header(hl, '\0');
  f.read(header.data(), hl);
  HELIX_CHECK(f.good(), "'{}': truncated .npy header", path);
  HELIX_CHECK(header.find("'fortran_order': False") != std::string::npos,
              "'{}': fortran-order arrays are not supported", path);
  auto dpos = header.find("'descr': '");
  HELIX_CHECK(dpos != std::string::npos, "'{}': no descr in .npy header", path);
  std::string descr = header.substr(dpos + 10, 3);
  auto sp = header.find('(', header.find("'shape'"));
  auto se = header.find(')', sp);
  NpyArray a;
  std::string dims = header.substr(sp + 1, se - sp - 1);
  size_t pos = 0;
  while (pos < dims.size()) {
    size_t c = dims.find(',', pos);
    std::string tok = dims.substr(pos, c == std::string::npos ? std::string::npos : c - pos);
    if (tok.find_first_not_of(' ') != std::string::npos) a.shape.push_back(std::stoll(tok));
    if (c == std::string::npos) break;
    pos = c + 1;
  }
  int64_t n = 1;
  for (auto d : a.shape) n *= d;
  a.data.resize(static_cast<size_t>(n));
  auto read_as = [&](auto tag) {
    using T = decltype(tag);
    std::vector<T> tmp(static_cast<size_t>(n));
    f.read(reinterpret_cast<char*>(tmp.data()), static_cast<std::streamsize>(n * sizeof(T)));
    HELIX_CHECK(f.good(), "'{}': truncated .npy data", path);
    for (int64_t i = 0; i < n; ++i) a.data[i] = static_cast<float>(tmp[i]);
  };
  if (descr == "<f4")
    read_as(float{});
  else if (descr == "<f8")
    read_as(double{});
  else if (descr == "<i4")
    read_as(int32_t{});
  else if (descr == "<i8")
    read_as(int64_t{});
  else
    fail("'{}': unsupported .npy dtype '{}'", path, descr);
  return a;
}

}  // namespace helix
