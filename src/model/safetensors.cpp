// safetensors reader. The file is mapped read-only; every offset and size in the header is
// checked against the mapping before a StView is handed out, so later reads through a view
// never leave the file.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_io.h"
#include "core/float_codec.h"

static_assert(std::endian::native == std::endian::little,
              "the loader assumes a little-endian host");

namespace helix {
namespace {

using json = nlohmann::json;

struct DTypeInfo {
  StDType dtype;
  const char* name;
  size_t size;
};

constexpr std::array<DTypeInfo, 12> kDTypes = {{
    {StDType::F32, "F32", 4},
    {StDType::F16, "F16", 2},
    {StDType::BF16, "BF16", 2},
    {StDType::F8_E4M3, "F8_E4M3", 1},
    {StDType::F64, "F64", 8},
    {StDType::I64, "I64", 8},
    {StDType::I32, "I32", 4},
    {StDType::I16, "I16", 2},
    {StDType::I8, "I8", 1},
    {StDType::U8, "U8", 1},
    {StDType::BOOL, "BOOL", 1},
    {StDType::F8_E5M2, "F8_E5M2", 1},
}};

// A JSON value as a non-negative integer that fits int64; false for anything else.
bool as_count(const json& v, uint64_t& out) {
  if (v.is_number_unsigned()) {
    out = v.get<uint64_t>();
  } else if (v.is_number_integer()) {
    const int64_t x = v.get<int64_t>();
    if (x < 0) return false;
    out = static_cast<uint64_t>(x);
  } else {
    return false;
  }
  return out <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
}

// nlohmann's parser is iterative, but cap the nesting anyway: a header has depth 3.
void check_nesting(const uint8_t* p, size_t n, const std::string& file) {
  constexpr int kMaxDepth = 64;
  int depth = 0;
  bool in_string = false, escape = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t c = p[i];
    if (in_string) {
      if (escape) {
        escape = false;
      } else if (c == '\\') {
        escape = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) fail("{}: safetensors header nests deeper than {}", file, kMaxDepth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

inline uint16_t read_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

const char* st_dtype_name(StDType d) {
  for (const auto& t : kDTypes)
    if (t.dtype == d) return t.name;
  return "?";
}

size_t st_dtype_size(StDType d) {
  for (const auto& t : kDTypes)
    if (t.dtype == d) return t.size;
  return 0;
}

float bf16_to_f32(uint16_t v) {
  return bf16_to_float(v);
}

float f16_to_f32(uint16_t v) {
  const uint32_t sign = static_cast<uint32_t>(v >> 15) << 31;
  const uint32_t exp = (v >> 10) & 0x1F;
  const uint32_t mant = v & 0x3FF;
  if (exp == 0) {
    // zero or subnormal: mant * 2^-24, exact in fp32
    const float mag = static_cast<float>(mant) * 0x1p-24f;
    return std::bit_cast<float>(std::bit_cast<uint32_t>(mag) | sign);
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));  // inf / nan
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

float f8e4m3_to_f32(uint8_t v) {
  return fp8_e4m3_to_float(v);
}

// ---- header -----------------------------------------------------------------------------------

std::map<std::string, StView> safetensors_parse_header(const uint8_t* header, size_t header_len,
                                                       const uint8_t* data, size_t data_size,
                                                       const std::string& file_name) {
  const std::string file = printable(file_name);
  check_nesting(header, header_len, file);
  // nlohmann stops at a NUL byte as if the input ended there: allow NULs only as trailing padding
  size_t json_len = header_len;
  if (const void* z = header_len ? std::memchr(header, 0, header_len) : nullptr) {
    json_len = static_cast<size_t>(static_cast<const uint8_t*>(z) - header);
    for (size_t i = json_len; i < header_len; ++i)
      if (header[i] != 0)
        fail("{}: safetensors header has a NUL byte at offset {}", file, json_len);
  }
  json root;
  try {
    // nlohmann keeps the last of two equal keys; a header naming one tensor twice is ambiguous,
    // so the callback sees every key and rejects a repeat within its object.
    std::vector<std::set<std::string>> keys;
    auto on_event = [&](int depth, json::parse_event_t ev, json& parsed) {
      if (ev == json::parse_event_t::object_start) {
        keys.resize(static_cast<size_t>(depth) + 1);
        keys[static_cast<size_t>(depth)].clear();
      } else if (ev == json::parse_event_t::key) {
        // key events come at the depth of the object's members
        const size_t d = depth > 0 ? static_cast<size_t>(depth - 1) : 0;
        if (d < keys.size() && !keys[d].insert(parsed.get<std::string>()).second)
          fail("{}: safetensors header has the key '{}' twice", file,
               printable(parsed.get<std::string>()));
      }
      return true;
    };
    root = json::parse(header, header + json_len, on_event);
  } catch (const json::exception& e) {
    fail("{}: safetensors header is not valid JSON: {}", file, printable(e.what()));
  }
  if (!root.is_object()) fail("{}: safetensors header is not a JSON object", file);

  struct Span {
    uint64_t begin, end;
    const std::string* name;
  };
  std::map<std::string, StView> out;
  std::vector<Span> spans;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    const json& e = it.value();
    if (key == "__metadata__") {
      if (!e.is_object()) fail("{}: '__metadata__' is not a JSON object", file);
      continue;
    }
    const std::string name = printable(key);
    if (!e.is_object()) fail("{}: tensor '{}': entry is not a JSON object", file, name);

    auto dt = e.find("dtype");
    if (dt == e.end() || !dt->is_string())
      fail("{}: tensor '{}': missing or non-string 'dtype'", file, name);
    const std::string& dts = dt->get_ref<const std::string&>();
    const DTypeInfo* info = nullptr;
    for (const auto& t : kDTypes)
      if (dts == t.name) info = &t;
    if (!info) fail("{}: tensor '{}': unknown dtype '{}'", file, name, printable(dts));

    auto sh = e.find("shape");
    if (sh == e.end() || !sh->is_array())
      fail("{}: tensor '{}': 'shape' is missing or not a list", file, name);
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      uint64_t n = 0;
      if (!as_count(d, n))
        fail("{}: tensor '{}': 'shape' must be a list of non-negative integers", file, name);
      if (__builtin_mul_overflow(numel, n, &numel))
        fail("{}: tensor '{}': element count overflows", file, name);
      shape.push_back(static_cast<int64_t>(n));
    }
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(info->size), &nbytes))
      fail("{}: tensor '{}': byte size overflows", file, name);

    auto off = e.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == e.end() || !off->is_array() || off->size() != 2 || !as_count((*off)[0], begin) ||
        !as_count((*off)[1], end))
      fail("{}: tensor '{}': 'data_offsets' must be two non-negative integers", file, name);
    if (begin > end)
      fail("{}: tensor '{}': data_offsets begin {} > end {}", file, name, begin, end);
    if (end > data_size)
      fail("{}: tensor '{}': data_offsets end {} is past the data section ({} bytes)", file, name,
           end, data_size);
    if (end - begin != nbytes)
      fail("{}: tensor '{}': {} bytes in data_offsets, but shape {} of {} needs {}", file, name,
           end - begin, shape_str(shape), info->name, nbytes);

    StView v;
    v.name = key;
    v.dtype = info->dtype;
    v.shape = std::move(shape);
    v.data = data ? data + begin : nullptr;
    v.nbytes = static_cast<size_t>(nbytes);
    auto [pos, inserted] = out.emplace(key, std::move(v));
    if (!inserted) fail("{}: tensor '{}' appears twice", file, name);
    if (nbytes > 0) spans.push_back({begin, end, &pos->first});
  }

  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end)
      fail("{}: tensors '{}' and '{}' overlap in the data section", file,
           printable(*spans[i - 1].name), printable(*spans[i].name));
  }
  return out;
}

// ---- one file ---------------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const std::string file = printable(path);
  // Type first: open() on a FIFO would block until a writer came.
  struct stat pre {};
  if (::stat(path.c_str(), &pre) != 0) fail("{}: cannot open: {}", file, std::strerror(errno));
  if (!S_ISREG(pre.st_mode)) fail("{}: not a regular file", file);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail("{}: cannot open: {}", file, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat: {}", file, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("{}: not a regular file", file);
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail("{}: file is {} bytes, shorter than the 8-byte safetensors header length", file, size);
  }
  void* m = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (m == MAP_FAILED) fail("{}: mmap failed: {}", file, std::strerror(map_err));
  map_ = m;
  map_size_ = size;

  try {
    const uint8_t* base = static_cast<const uint8_t*>(map_);
    uint64_t n = 0;
    std::memcpy(&n, base, 8);
    if (n > size - 8)
      fail("{}: header length {} is past the end of the file ({} bytes)", file, n, size);
    const uint8_t* header = base + 8;
    const uint8_t* data = header + n;
    tensors_ = safetensors_parse_header(header, static_cast<size_t>(n), data,
                                        size - 8 - static_cast<size_t>(n), path);
  } catch (...) {
    ::munmap(map_, map_size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

// ---- checkpoint directory ---------------------------------------------------------------------

WeightStore::WeightStore(const std::string& dir) : dir_(dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  const fs::path index_path = root / "model.safetensors.index.json";
  const fs::path single_path = root / "model.safetensors";
  std::error_code ec;

  // weight_map entries, checked against the shards once they are open
  std::vector<std::pair<std::string, std::string>> mapped;
  std::map<std::string, const SafetensorsFile*> shard_files;
  if (fs::exists(index_path, ec)) {
    const std::string ipath = printable(index_path.string());
    const std::string text = file_read_text(index_path.string());
    check_nesting(reinterpret_cast<const uint8_t*>(text.data()), text.size(), ipath);
    json idx;
    try {
      idx = json::parse(text);
    } catch (const json::exception& e) {
      fail("{}: not valid JSON: {}", ipath, printable(e.what()));
    }
    if (!idx.is_object()) fail("{}: not a JSON object", ipath);
    auto wm = idx.find("weight_map");
    if (wm == idx.end() || !wm->is_object()) fail("{}: missing 'weight_map' object", ipath);
    std::vector<std::string> shards;  // distinct, in order of first use
    std::set<std::string> seen;
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      if (!it.value().is_string())
        fail("{}: weight_map entry for tensor '{}' is not a file name", ipath, printable(it.key()));
      const std::string& shard = it.value().get_ref<const std::string&>();
      const fs::path sp(shard);
      bool bad = shard.empty() || sp.is_absolute();
      for (const auto& part : sp)
        if (part == "..") bad = true;
      if (bad)
        fail("{}: tensor '{}' maps to shard '{}', which is not a file inside {}", ipath,
             printable(it.key()), printable(shard), printable(dir));
      mapped.emplace_back(it.key(), shard);
      if (seen.insert(shard).second) shards.push_back(shard);
    }
    // A shard's folder must resolve (symlinks included) to the model folder or one below it.
    // The file itself may be a symlink: the Hugging Face cache links snapshot files to blobs.
    const fs::path real_root = fs::canonical(root, ec);
    if (ec) fail("{}: {}", printable(dir), ec.message());
    for (const auto& s : shards) {
      std::error_code sec;
      const fs::path real = fs::canonical((root / s).parent_path(), sec);
      if (sec) fail("{}: shard '{}': {}", ipath, printable(s), sec.message());
      const auto rel = real.lexically_relative(real_root);
      if (rel.empty() || *rel.begin() == "..")
        fail("{}: shard '{}' resolves to {}, outside the model folder {}", ipath, printable(s),
             printable(real.string()), printable(real_root.string()));
      files_.push_back(std::make_unique<SafetensorsFile>((root / s).string()));
      shard_files[s] = files_.back().get();
    }
  } else if (fs::exists(single_path, ec)) {
    files_.push_back(std::make_unique<SafetensorsFile>(single_path.string()));
  } else {
    fail("no model.safetensors or model.safetensors.index.json in {}", printable(dir));
  }

  for (const auto& f : files_) {
    for (const auto& [name, view] : f->tensors()) {
      auto [it, inserted] = index_.emplace(name, &view);
      if (!inserted)
        fail("tensor '{}' appears in two shards: {} and {}", printable(name),
             printable(owner_.at(name)->path()), printable(f->path()));
      owner_.emplace(name, f.get());
    }
  }
  for (const auto& [name, shard] : mapped) {
    const SafetensorsFile* f = shard_files.at(shard);
    if (!f->tensors().count(name))
      fail("tensor '{}' is listed in the index but missing from shard {}", printable(name),
           printable(f->path()));
  }
}

bool WeightStore::has(const std::string& name) const {
  return index_.count(name) != 0;
}

const StView& WeightStore::view(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    fail("missing tensor '{}' in checkpoint {}", printable(name), printable(dir_));
  return *it->second;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> r;
  r.reserve(index_.size());
  for (const auto& kv : index_) r.push_back(kv.first);
  return r;
}

size_t WeightStore::total_bytes() const {
  size_t n = 0;
  for (const auto& f : files_) n += f->size();
  return n;
}

void WeightStore::convert(const StView& v, size_t elem_begin, size_t count, float* out) const {
  const size_t es = st_dtype_size(v.dtype);
  // the caller keeps [elem_begin, elem_begin + count) inside the tensor; check it anyway
  HELIX_CHECK(es > 0 && (elem_begin + count) * es <= v.nbytes,
              "tensor '{}': element range out of bounds", printable(v.name));
  if (count == 0) return;
  const uint8_t* src = v.data + elem_begin * es;
  switch (v.dtype) {
    case StDType::F32:
      std::memcpy(out, src, count * 4);
      break;
    case StDType::BF16:
      for (size_t i = 0; i < count; ++i) out[i] = bf16_to_float(read_u16(src + 2 * i));
      break;
    case StDType::F16:
      for (size_t i = 0; i < count; ++i) out[i] = f16_to_f32(read_u16(src + 2 * i));
      break;
    case StDType::F8_E4M3: {
      const float* t = fp8_e4m3_table().data();
      for (size_t i = 0; i < count; ++i) out[i] = t[src[i]];
      break;
    }
    default:
      fail("tensor '{}' has dtype {}, which cannot be loaded as fp32", printable(v.name),
           st_dtype_name(v.dtype));
  }
}

void WeightStore::apply_block_scale(const StView& v, int64_t row_begin, int64_t rows,
                                    float* out) const {
  if (v.dtype != StDType::F8_E4M3) return;
  const std::string sname = v.name + "_scale_inv";
  auto it = index_.find(sname);
  if (it == index_.end()) return;
  const StView& s = *it->second;
  const std::string name = printable(v.name);
  if (v.shape.size() != 2)
    fail("tensor '{}' has block scales '{}' but shape {} is not 2-D", name, printable(sname),
         shape_str(v.shape));
  if (s.dtype != StDType::F32 && s.dtype != StDType::BF16)
    fail("scale tensor '{}' has dtype {}, expected F32 or BF16", printable(sname),
         st_dtype_name(s.dtype));
  constexpr int64_t kBlock = 128;
  const int64_t R = v.shape[0], C = v.shape[1];
  const std::vector<int64_t> want = {(R + kBlock - 1) / kBlock, (C + kBlock - 1) / kBlock};
  if (s.shape != want)
    fail("scale tensor '{}' has shape {}, expected {} for weight '{}' of shape {}",
         printable(sname), shape_str(s.shape), shape_str(want), name, shape_str(v.shape));
  std::vector<float> scale(static_cast<size_t>(want[0] * want[1]));
  convert(s, 0, scale.size(), scale.data());
  for (int64_t i = 0; i < rows; ++i) {
    const float* srow = scale.data() + ((row_begin + i) / kBlock) * want[1];
    float* o = out + i * C;
    for (int64_t j = 0; j < C; ++j) o[j] *= srow[j / kBlock];
  }
}

Tensor WeightStore::load(const std::string& name, const std::vector<int64_t>& expect_shape) const {
  const StView& v = view(name);
  if (!expect_shape.empty() && expect_shape != v.shape)
    fail("tensor '{}' has shape {}, expected {}", printable(name), shape_str(v.shape),
         shape_str(expect_shape));
  Tensor t(v.shape);
  convert(v, 0, t.data.size(), t.ptr());
  apply_block_scale(v, 0, v.shape.size() == 2 ? v.shape[0] : 0, t.ptr());
  return t;
}

Tensor WeightStore::load_rows(const std::string& name, int64_t row_begin, int64_t row_end) const {
  const StView& v = view(name);
  if (v.shape.size() < 2)
    fail("load_rows: tensor '{}' has shape {}, expected at least 2-D", printable(name),
         shape_str(v.shape));
  // A "row" is one index of dim 0 (a whole expert of a fused 3-D tensor, say).
  const int64_t R = v.shape[0];
  int64_t C = 1;
  for (size_t i = 1; i < v.shape.size(); ++i) C *= v.shape[i];
  if (row_begin < 0 || row_begin > row_end || row_end > R)
    fail("load_rows: rows [{}, {}) out of range for tensor '{}' of shape {}", row_begin, row_end,
         printable(name), shape_str(v.shape));
  std::vector<int64_t> shape = v.shape;
  shape[0] = row_end - row_begin;
  Tensor t(shape);
  convert(v, static_cast<size_t>(row_begin * C), t.data.size(), t.ptr());
  apply_block_scale(v, row_begin, row_end - row_begin, t.ptr());
  return t;
}

}  // namespace helix
