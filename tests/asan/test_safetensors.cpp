// safetensors reader under ASan + UBSan: value conversions against independent double-precision
// formulas, FP8 block dequantisation, sharded checkpoints, row ranges, and every malformed input
// turning into a helix::Error that names the file and the tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using Bytes = std::vector<uint8_t>;

// ---- building test files ------------------------------------------------------------------------

struct Entry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  Bytes bytes;
};

Bytes f32_bytes(const std::vector<float>& v) {
  Bytes b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

Bytes u16_bytes(const std::vector<uint16_t>& v) {
  Bytes b(v.size() * 2);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Header JSON for `entries` laid out back to back; the concatenated data goes to `data`.
json header_for(const std::vector<Entry>& entries, Bytes& data) {
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}, {"note", "skipped"}};
  data.clear();
  for (const auto& e : entries) {
    const size_t begin = data.size();
    data.insert(data.end(), e.bytes.begin(), e.bytes.end());
    h[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {begin, data.size()}}};
  }
  return h;
}

// [8-byte length][header][data]; `len_override` replaces the stored header length.
Bytes file_bytes(const std::string& header, const Bytes& data,
                 const uint64_t* len_override = nullptr) {
  Bytes out(8);
  const uint64_t n = len_override ? *len_override : header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_bytes(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

void write_text(const fs::path& p, const std::string& s) {
  write_bytes(p, Bytes(s.begin(), s.end()));
}

void write_st(const fs::path& p, const std::vector<Entry>& entries) {
  Bytes data;
  const json h = header_for(entries, data);
  write_bytes(p, file_bytes(h.dump(), data));
}

// The message of the helix::Error that `f` throws; a marker string when it throws nothing or
// something else.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const helix::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<not a helix::Error: ") + e.what() + ">";
  }
  return "<no error>";
}

#define EXPECT_ERROR_WITH(stmt, ...)                                                      \
  do {                                                                                    \
    const std::string msg_ = error_of([&] { stmt; });                                     \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << "message is not one line: " << msg_; \
    for (const std::string& s_ : std::initializer_list<std::string>{__VA_ARGS__})         \
      EXPECT_NE(msg_.find(s_), std::string::npos) << "'" << s_ << "' not in: " << msg_;   \
  } while (0)

// ---- independent reference formulas (double precision) -----------------------------------------

double ref_f16(uint16_t v) {
  const int s = v >> 15, e = (v >> 10) & 31, m = v & 1023;
  const double sign = s ? -1.0 : 1.0;
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -24);
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

double ref_bf16(uint16_t v) {
  const int s = v >> 15, e = (v >> 7) & 255, m = v & 127;
  const double sign = s ? -1.0 : 1.0;
  if (e == 255) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(m, -133);  // m/128 * 2^-126
  return sign * std::ldexp(1.0 + m / 128.0, e - 127);
}

double ref_e4m3(uint8_t v) {
  const int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
  const double sign = s ? -1.0 : 1.0;
  if (e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * (m / 8.0) * std::ldexp(1.0, -6);
  return sign * (1.0 + m / 8.0) * std::ldexp(1.0, e - 7);
}

void expect_same(double want, float got, const std::string& what) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what;
  } else {
    EXPECT_EQ(static_cast<double>(got), want) << what;
    EXPECT_EQ(std::signbit(got), std::signbit(want)) << what;
  }
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("helix_st_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path model() const { return dir_ / "model.safetensors"; }
  std::string dir() const { return dir_.string(); }

  // Writes a model.safetensors with a header edited by `edit` and returns its path.
  std::string write_edited(const std::vector<Entry>& entries,
                           const std::function<void(json&)>& edit) {
    Bytes data;
    json h = header_for(entries, data);
    edit(h);
    write_bytes(model(), file_bytes(h.dump(), data));
    return model().string();
  }

  fs::path dir_;
};

std::vector<Entry> two_tensors() {
  return {{"a.weight", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
          {"b.bias", "BF16", {2}, u16_bytes({0x3F80, 0xC000})}};
}

// ---- conversions --------------------------------------------------------------------------------

TEST(SafetensorsConvert, F16AllCodes) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t v = static_cast<uint16_t>(c);
    expect_same(ref_f16(v), helix::f16_to_f32(v), "f16 code " + std::to_string(c));
  }
  EXPECT_EQ(helix::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(helix::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(helix::f16_to_f32(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(helix::f16_to_f32(0xFC00), -INFINITY);
}

TEST(SafetensorsConvert, BF16AllCodes) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t v = static_cast<uint16_t>(c);
    expect_same(ref_bf16(v), helix::bf16_to_f32(v), "bf16 code " + std::to_string(c));
  }
  EXPECT_EQ(helix::bf16_to_f32(0x4049), 3.140625f);
  EXPECT_EQ(helix::bf16_to_f32(0x0001), std::ldexp(1.0f, -133));
}

TEST(SafetensorsConvert, E4M3AllCodes) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const uint8_t v = static_cast<uint8_t>(c);
    const float got = helix::f8e4m3_to_f32(v);
    expect_same(ref_e4m3(v), got, "e4m3 code " + std::to_string(c));
    EXPECT_FALSE(std::isinf(got)) << c;
    nans += std::isnan(got);
  }
  EXPECT_EQ(nans, 2);  // 0x7F and 0xFF only
  EXPECT_EQ(helix::f8e4m3_to_f32(0x7E), 448.0f);
  EXPECT_EQ(helix::f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::signbit(helix::f8e4m3_to_f32(0x80)));
}

TEST(SafetensorsConvert, DTypeTable) {
  EXPECT_STREQ(helix::st_dtype_name(helix::StDType::F8_E4M3), "F8_E4M3");
  EXPECT_EQ(helix::st_dtype_size(helix::StDType::BF16), 2u);
  EXPECT_EQ(helix::st_dtype_size(helix::StDType::F64), 8u);
  EXPECT_EQ(helix::st_dtype_size(helix::StDType::BOOL), 1u);
}

// ---- loading ------------------------------------------------------------------------------------

TEST_F(SafetensorsTest, RoundTripF32BF16F16) {
  const std::vector<float> f32 = {1.5f, -2.25f, 0.0f, -0.0f, 1e-40f, INFINITY};
  const std::vector<uint16_t> bf = {0x3F80, 0xC049, 0x0001, 0x8001, 0x7F80, 0xFF80, 0x4049};
  const std::vector<uint16_t> hf = {0x3C00, 0xC000, 0x0001, 0x83FF, 0x7C00, 0xFC00, 0x3555, 0x7BFF};
  write_st(model(), {{"x.f32", "F32", {2, 3}, f32_bytes(f32)},
                     {"x.bf16", "BF16", {7}, u16_bytes(bf)},
                     {"x.f16", "F16", {2, 4}, u16_bytes(hf)},
                     {"x.f8", "F8_E4M3", {4}, Bytes{0x38, 0xB8, 0x01, 0x7E}},
                     {"x.empty", "F32", {0, 5}, Bytes{}}});
  helix::WeightStore ws(dir());
  EXPECT_EQ(ws.names().size(), 5u);
  EXPECT_TRUE(ws.has("x.f16"));
  EXPECT_FALSE(ws.has("__metadata__"));
  EXPECT_EQ(ws.total_bytes(), fs::file_size(model()));

  const helix::Tensor a = ws.load("x.f32", {2, 3});
  ASSERT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  for (size_t i = 0; i < f32.size(); ++i)
    expect_same(f32[i], a.data[i], "f32 " + std::to_string(i));

  const helix::Tensor b = ws.load("x.bf16");
  ASSERT_EQ(b.data.size(), bf.size());
  for (size_t i = 0; i < bf.size(); ++i) expect_same(ref_bf16(bf[i]), b.data[i], "bf16");
  EXPECT_EQ(b.data[1], -3.140625f);

  const helix::Tensor c = ws.load("x.f16", {2, 4});
  for (size_t i = 0; i < hf.size(); ++i) expect_same(ref_f16(hf[i]), c.data[i], "f16");
  EXPECT_EQ(c.data[2], static_cast<float>(std::ldexp(1.0, -24)));
  EXPECT_EQ(c.data[3], static_cast<float>(-1023 * std::ldexp(1.0, -24)));

  const helix::Tensor d = ws.load("x.f8");  // no scale tensor: plain decode
  EXPECT_EQ(d.data, (std::vector<float>{1.0f, -1.0f, std::ldexp(1.0f, -9), 448.0f}));

  const helix::Tensor e = ws.load("x.empty", {0, 5});
  EXPECT_TRUE(e.empty());

  const helix::StView& v = ws.view("x.f16");
  EXPECT_EQ(v.dtype, helix::StDType::F16);
  EXPECT_EQ(v.nbytes, 16u);
}

TEST_F(SafetensorsTest, LoadErrors) {
  write_st(model(),
           {{"w", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})}, {"ids", "I32", {2}, Bytes(8, 0)}});
  helix::WeightStore ws(dir());
  EXPECT_ERROR_WITH(ws.load("nope"), "missing tensor 'nope' in checkpoint " + dir());
  EXPECT_ERROR_WITH(ws.view("nope"), "missing tensor 'nope'");
  EXPECT_ERROR_WITH(ws.load("w", {3, 2}), "tensor 'w' has shape [2, 3], expected [3, 2]");
  EXPECT_ERROR_WITH(ws.load("w", {2, 3, 1}), "tensor 'w' has shape [2, 3], expected [2, 3, 1]");
  EXPECT_ERROR_WITH(ws.load("ids"), "'ids'", "I32");
  EXPECT_ERROR_WITH(ws.load_rows("ids", 0, 1), "'ids'");
}

TEST_F(SafetensorsTest, LoadRows) {
  std::vector<float> w(5 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) - 4.5f;
  std::vector<uint16_t> wb(4 * 2);
  for (size_t i = 0; i < wb.size(); ++i) wb[i] = static_cast<uint16_t>(0x3F80 + 0x80 * i);
  write_st(model(), {{"w", "F32", {5, 3}, f32_bytes(w)},
                     {"wb", "BF16", {4, 2}, u16_bytes(wb)},
                     {"v", "F32", {3}, f32_bytes({1, 2, 3})}});
  helix::WeightStore ws(dir());

  const helix::Tensor r = ws.load_rows("w", 1, 4);
  ASSERT_EQ(r.shape, (std::vector<int64_t>{3, 3}));
  for (int i = 0; i < 9; ++i) EXPECT_EQ(r.data[i], w[3 + i]);
  const helix::Tensor all = ws.load_rows("w", 0, 5);
  EXPECT_EQ(all.data, w);
  const helix::Tensor none = ws.load_rows("w", 5, 5);
  EXPECT_EQ(none.shape, (std::vector<int64_t>{0, 3}));

  const helix::Tensor rb = ws.load_rows("wb", 2, 4);
  ASSERT_EQ(rb.data.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(rb.data[i], helix::bf16_to_f32(wb[4 + i]));

  EXPECT_ERROR_WITH(ws.load_rows("w", -1, 2), "'w'", "[-1, 2)");
  EXPECT_ERROR_WITH(ws.load_rows("w", 3, 2), "'w'");
  EXPECT_ERROR_WITH(ws.load_rows("w", 0, 6), "'w'", "[5, 3]");
  EXPECT_ERROR_WITH(ws.load_rows("v", 0, 1), "'v'", "2-D");
  EXPECT_ERROR_WITH(ws.load_rows("zz", 0, 1), "missing tensor 'zz'");
}

// FP8 weight of 130x260 with a [2, 3] block-scale tensor: partial blocks on both edges.
class Fp8BlockTest : public SafetensorsTest {
 protected:
  static constexpr int64_t R = 130, C = 260;
  static uint8_t code(int64_t i, int64_t j) {
    const auto c = static_cast<uint8_t>((i * 7 + j * 13 + 3) & 0xFF);
    return (c & 0x7F) == 0x7F ? 0x30 : c;  // keep NaN out so every element compares exactly
  }
  Bytes weight() const {
    Bytes b(R * C);
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < C; ++j) b[i * C + j] = code(i, j);
    return b;
  }
  const std::vector<float> scale = {0.5f, 2.0f, 0.375f, -1.25f, 3.0f, 0.0078125f};
  float expected(int64_t i, int64_t j) const {
    const double s = scale[(i / 128) * 3 + j / 128];
    return static_cast<float>(ref_e4m3(code(i, j)) * s);  // exact: 4-bit x 24-bit mantissas
  }
};

TEST_F(Fp8BlockTest, DequantF32Scale) {
  write_st(model(), {{"l.weight", "F8_E4M3", {R, C}, weight()},
                     {"l.weight_scale_inv", "F32", {2, 3}, f32_bytes(scale)}});
  helix::WeightStore ws(dir());
  const helix::Tensor t = ws.load("l.weight", {R, C});
  ASSERT_EQ(t.data.size(), static_cast<size_t>(R * C));
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) ASSERT_EQ(t.data[i * C + j], expected(i, j)) << i << "," << j;

  const helix::Tensor rows = ws.load_rows("l.weight", 100, 130);  // crosses the block boundary
  ASSERT_EQ(rows.shape, (std::vector<int64_t>{30, C}));
  for (int64_t i = 0; i < 30; ++i)
    for (int64_t j = 0; j < C; ++j)
      ASSERT_EQ(rows.data[i * C + j], expected(100 + i, j)) << i << "," << j;
  const helix::Tensor last = ws.load_rows("l.weight", 128, 130);
  for (int64_t j = 0; j < C; ++j) ASSERT_EQ(last.data[C + j], expected(129, j));
}

TEST_F(Fp8BlockTest, DequantBF16Scale) {
  // bf16 scales: the upper halves of the fp32 values above (all exact in bf16)
  std::vector<uint16_t> sb;
  for (float s : scale) {
    uint32_t u;
    std::memcpy(&u, &s, 4);
    sb.push_back(static_cast<uint16_t>(u >> 16));
  }
  write_st(model(), {{"l.weight", "F8_E4M3", {R, C}, weight()},
                     {"l.weight_scale_inv", "BF16", {2, 3}, u16_bytes(sb)}});
  helix::WeightStore ws(dir());
  const helix::Tensor t = ws.load("l.weight");
  for (int64_t i = 0; i < R; ++i)
    for (int64_t j = 0; j < C; ++j) ASSERT_EQ(t.data[i * C + j], expected(i, j)) << i << "," << j;
}

TEST_F(Fp8BlockTest, BadScale) {
  write_st(model(), {{"l.weight", "F8_E4M3", {R, C}, weight()},
                     {"l.weight_scale_inv", "F32", {3, 2}, f32_bytes(scale)},
                     {"m.weight", "F8_E4M3", {R, C}, weight()},
                     {"m.weight_scale_inv", "I32", {2, 3}, Bytes(24, 0)},
                     {"v.weight", "F8_E4M3", {4}, Bytes(4, 0x38)},
                     {"v.weight_scale_inv", "F32", {1, 1}, f32_bytes({2.0f})}});
  helix::WeightStore ws(dir());
  EXPECT_ERROR_WITH(ws.load("l.weight"), "l.weight_scale_inv", "[3, 2]", "[2, 3]");
  EXPECT_ERROR_WITH(ws.load_rows("l.weight", 0, 1), "l.weight_scale_inv", "[2, 3]");
  EXPECT_ERROR_WITH(ws.load("m.weight"), "m.weight_scale_inv", "I32");
  EXPECT_ERROR_WITH(ws.load("v.weight"), "v.weight", "2-D");
}

// ---- sharded checkpoints ------------------------------------------------------------------------

TEST_F(SafetensorsTest, ShardedIndex) {
  write_st(dir_ / "model-00001-of-00002.safetensors",
           {{"a", "F32", {2}, f32_bytes({1, 2})}, {"b", "BF16", {1}, u16_bytes({0x4000})}});
  write_st(dir_ / "model-00002-of-00002.safetensors", {{"c", "F16", {1}, u16_bytes({0x3C00})}});
  const json idx = {{"metadata", {{"total_size", 10}}},
                    {"weight_map",
                     {{"a", "model-00001-of-00002.safetensors"},
                      {"b", "model-00001-of-00002.safetensors"},
                      {"c", "model-00002-of-00002.safetensors"}}}};
  write_text(dir_ / "model.safetensors.index.json", idx.dump(2));
  // a stray model.safetensors is ignored when the index exists
  write_st(model(), {{"stray", "F32", {1}, f32_bytes({9})}});

  helix::WeightStore ws(dir());
  EXPECT_EQ(ws.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(ws.load("a").data, (std::vector<float>{1, 2}));
  EXPECT_EQ(ws.load("b").data, (std::vector<float>{2}));
  EXPECT_EQ(ws.load("c").data, (std::vector<float>{1}));
  EXPECT_FALSE(ws.has("stray"));
  EXPECT_EQ(ws.total_bytes(), fs::file_size(dir_ / "model-00001-of-00002.safetensors") +
                                  fs::file_size(dir_ / "model-00002-of-00002.safetensors"));
}

TEST_F(SafetensorsTest, ShardedErrors) {
  const fs::path s1 = dir_ / "s1.safetensors", s2 = dir_ / "s2.safetensors";
  const fs::path index = dir_ / "model.safetensors.index.json";
  write_st(s1, {{"a", "F32", {1}, f32_bytes({1})}});
  write_st(s2, {{"b", "F32", {1}, f32_bytes({2})}});

  // index names a tensor that its shard lacks
  write_text(index,
             json{{"weight_map", {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}}}}.dump());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "'b'", s1.string());

  // the same tensor in two shards
  write_st(s2, {{"a", "F32", {1}, f32_bytes({3})}});
  write_text(index,
             json{{"weight_map", {{"a", "s1.safetensors"}, {"x", "s2.safetensors"}}}}.dump());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "'a'", "s1.safetensors", "s2.safetensors");

  // a shard that does not exist
  write_text(index, json{{"weight_map", {{"a", "gone.safetensors"}}}}.dump());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "gone.safetensors");

  // shard outside the directory
  write_text(index, json{{"weight_map", {{"a", "../s1.safetensors"}}}}.dump());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "'a'", "../s1.safetensors");

  // malformed index files
  write_text(index, "{\"weight_map\": {");
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "model.safetensors.index.json", "JSON");
  write_text(index, "[]");
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "model.safetensors.index.json");
  write_text(index, "{\"metadata\": {}}");
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "model.safetensors.index.json", "weight_map");
  write_text(index, "{\"weight_map\": {\"a\": 7}}");
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), "'a'");
  // a corrupt shard is reported with its own file name
  write_bytes(s1, Bytes{1, 2, 3});
  write_text(index, json{{"weight_map", {{"a", "s1.safetensors"}}}}.dump());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()), s1.string(), "shorter than");
}

TEST_F(SafetensorsTest, EmptyDirectory) {
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir()),
                    "no model.safetensors or model.safetensors.index.json in " + dir());
  EXPECT_ERROR_WITH(helix::WeightStore ws(dir() + "/does-not-exist"), "does-not-exist");
}

// ---- malformed files
// ------------------------------------------------------------------------------

TEST_F(SafetensorsTest, ShortFileAndHeaderLength) {
  const std::string p = model().string();
  for (size_t n : {0, 1, 7}) {
    write_bytes(model(), Bytes(n, 0));
    EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "shorter than");
  }
  Bytes data;
  const std::string h = header_for(two_tensors(), data).dump();
  for (uint64_t len : {uint64_t{h.size() + data.size() + 1}, uint64_t{1} << 40,
                       std::numeric_limits<uint64_t>::max()}) {
    write_bytes(model(), file_bytes(h, data, &len));
    EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "header length");
  }
  // header length shorter than the JSON: the tail lands in the data section, JSON is cut off
  const uint64_t shorter = h.size() - 5;
  write_bytes(model(), file_bytes(h, data, &shorter));
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "JSON");
  // header length that takes in the data: JSON followed by garbage
  const uint64_t longer = h.size() + data.size();
  write_bytes(model(), file_bytes(h, data, &longer));
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "NUL");  // the data starts with a 0 byte
  // NUL padding after the JSON is accepted; a NUL inside it is not
  std::string padded = h + std::string(3, '\0');
  write_bytes(model(), file_bytes(padded, data));
  EXPECT_EQ(helix::SafetensorsFile(p).tensors().size(), 2u);
  padded = h + std::string(1, '\0') + " ";
  write_bytes(model(), file_bytes(padded, data));
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "NUL");
  // not a regular file
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(dir()), dir());
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(dir() + "/missing.safetensors"),
                    "missing.safetensors");
}

TEST_F(SafetensorsTest, HeaderNotJsonObject) {
  const std::string p = model().string();
  for (const std::string& h :
       std::vector<std::string>{"", "{", "not json", "[1, 2]", "\"str\"", "42", "null",
                                "{\"a\": 1,}", std::string(100, '[')}) {
    SCOPED_TRACE("header: " + h);
    write_bytes(model(), file_bytes(h, {}));
    EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p);
  }
  write_bytes(model(), file_bytes("{}", {}));
  helix::SafetensorsFile empty(p);
  EXPECT_TRUE(empty.tensors().empty());
}

TEST_F(SafetensorsTest, BadEntries) {
  const auto ents = two_tensors();
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"entry not object",
       [](json& h) {
         h["a.weight"] = json::array({1, 2});
       },
       {"'a.weight'"}},
      {"entry is string", [](json& h) { h["b.bias"] = "F32"; }, {"'b.bias'"}},
      {"metadata not object", [](json& h) { h["__metadata__"] = 3; }, {"__metadata__"}},
      {"unknown dtype", [](json& h) { h["a.weight"]["dtype"] = "F7"; }, {"'a.weight'", "F7"}},
      {"dtype not string", [](json& h) { h["a.weight"]["dtype"] = 4; }, {"'a.weight'", "dtype"}},
      {"missing dtype", [](json& h) { h["a.weight"].erase("dtype"); }, {"'a.weight'", "dtype"}},
      {"lower-case dtype", [](json& h) { h["b.bias"]["dtype"] = "bf16"; }, {"'b.bias'", "bf16"}},
      {"shape not list", [](json& h) { h["a.weight"]["shape"] = 6; }, {"'a.weight'", "shape"}},
      {"missing shape", [](json& h) { h["a.weight"].erase("shape"); }, {"'a.weight'", "shape"}},
      {"negative dim",
       [](json& h) {
         h["a.weight"]["shape"] = {-2, -3};
       },
       {"'a.weight'", "shape"}},
      {"float dim",
       [](json& h) {
         h["a.weight"]["shape"] = {2.0, 3};
       },
       {"'a.weight'", "shape"}},
      {"string dim",
       [](json& h) {
         h["a.weight"]["shape"] = {"2", 3};
       },
       {"'a.weight'", "shape"}},
      {"bool dim",
       [](json& h) {
         h["a.weight"]["shape"] = {true, 6};
       },
       {"'a.weight'", "shape"}},
      {"huge dim",
       [](json& h) {
         h["a.weight"]["shape"] = {std::numeric_limits<uint64_t>::max(), 1};
       },
       {"'a.weight'", "shape"}},
      {"numel overflow",
       [](json& h) {
         h["a.weight"]["shape"] = {int64_t{1} << 32, int64_t{1} << 32, 16};
       },
       {"'a.weight'", "overflow"}},
      {"bytes overflow",
       [](json& h) {
         h["a.weight"]["shape"] = {int64_t{1} << 62, 4};
       },
       {"'a.weight'", "overflow"}},
      {"offsets missing",
       [](json& h) { h["a.weight"].erase("data_offsets"); },
       {"'a.weight'", "data_offsets"}},
      {"offsets one int",
       [](json& h) { h["a.weight"]["data_offsets"] = {0}; },
       {"'a.weight'", "data_offsets"}},
      {"offsets three ints",
       [](json& h) {
         h["a.weight"]["data_offsets"] = {0, 24, 24};
       },
       {"'a.weight'", "data_offsets"}},
      {"offsets not list",
       [](json& h) { h["a.weight"]["data_offsets"] = 24; },
       {"'a.weight'", "data_offsets"}},
      {"offsets strings",
       [](json& h) {
         h["a.weight"]["data_offsets"] = {"0", "24"};
       },
       {"'a.weight'", "data_offsets"}},
      {"offsets negative",
       [](json& h) {
         h["a.weight"]["data_offsets"] = {-4, 20};
       },
       {"'a.weight'", "data_offsets"}},
      {"offsets float",
       [](json& h) {
         h["a.weight"]["data_offsets"] = {0.0, 24.0};
       },
       {"'a.weight'", "data_offsets"}},
      {"begin > end",
       [](json& h) {
         h["b.bias"]["data_offsets"] = {28, 24};
       },
       {"'b.bias'", "begin"}},
      {"end past data",
       [](json& h) {
         h["b.bias"]["data_offsets"] = {26, 30};
       },
       {"'b.bias'", "past the data section"}},
      {"end far past data",
       [](json& h) {
         h["b.bias"]["data_offsets"] = {std::numeric_limits<uint64_t>::max() - 1,
                                        std::numeric_limits<uint64_t>::max()};
       },
       {"'b.bias'", "data_offsets"}},
      {"size mismatch",
       [](json& h) {
         h["a.weight"]["shape"] = {2, 2};
       },
       {"'a.weight'", "[2, 2]", "24 bytes"}},
      {"dtype size mismatch", [](json& h) { h["b.bias"]["dtype"] = "F32"; }, {"'b.bias'", "F32"}},
      {"overlap",
       [](json& h) {
         h["b.bias"]["data_offsets"] = {20, 24};
       },
       {"'a.weight'", "'b.bias'", "overlap"}},
      {"same range",
       [](json& h) {
         h["c"] = {{"dtype", "F32"}, {"shape", {6}}, {"data_offsets", {0, 24}}};
       },
       {"'a.weight'", "'c'", "overlap"}},
  };
  for (const auto& c : cases) {
    const std::string p = write_edited(ents, c.edit);
    const std::string msg = error_of([&] { helix::SafetensorsFile f(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << c.what << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << c.what << ": " << msg;
    for (const auto& n : c.needles)
      EXPECT_NE(msg.find(n), std::string::npos) << c.what << ": '" << n << "' not in: " << msg;
    // the same through the directory loader
    const std::string msg2 = error_of([&] { helix::WeightStore ws(dir()); });
    EXPECT_NE(msg2.find(p), std::string::npos) << c.what << ": " << msg2;
  }
}

TEST_F(SafetensorsTest, HostileNamesStayOneLine) {
  const std::string p = write_edited(two_tensors(), [](json& h) {
    h["evil\nname"] = {{"dtype", "XX"}, {"shape", {1}}, {"data_offsets", {0, 1}}};
  });
  EXPECT_ERROR_WITH(helix::SafetensorsFile f(p), p, "evil?name");
}

TEST(SafetensorsParse, ViewsPointIntoData) {
  const std::string h =
      R"({"__metadata__": {"k": "v"},
          "x": {"dtype": "F16", "shape": [2], "data_offsets": [4, 8]},
          "y": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
          "z": {"dtype": "F64", "shape": [0], "data_offsets": [8, 8]},
          "s": {"dtype": "BOOL", "shape": [], "data_offsets": [8, 9]}})";
  const Bytes data(9, 0xAB);
  const auto views = helix::safetensors_parse_header(reinterpret_cast<const uint8_t*>(h.data()),
                                                     h.size(), data.data(), data.size(), "mem");
  ASSERT_EQ(views.size(), 4u);
  EXPECT_EQ(views.at("x").data, data.data() + 4);
  EXPECT_EQ(views.at("x").nbytes, 4u);
  EXPECT_EQ(views.at("y").data, data.data());
  EXPECT_EQ(views.at("y").dtype, helix::StDType::U8);
  EXPECT_EQ(views.at("z").nbytes, 0u);
  EXPECT_TRUE(views.at("s").shape.empty());
  EXPECT_EQ(views.at("s").nbytes, 1u);
  EXPECT_EQ(views.at("s").name, "s");
}

TEST(SafetensorsParse, EmptyInputs) {
  // found by the fuzzer: an empty header must not pass a null pointer to memchr
  EXPECT_ERROR_WITH(helix::safetensors_parse_header(nullptr, 0, nullptr, 0, "mem.st"), "mem.st",
                    "JSON");
  const std::string h = "{}";
  EXPECT_TRUE(helix::safetensors_parse_header(reinterpret_cast<const uint8_t*>(h.data()), h.size(),
                                              nullptr, 0, "mem.st")
                  .empty());
  const std::string z = R"({"z": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})";
  const auto v = helix::safetensors_parse_header(reinterpret_cast<const uint8_t*>(z.data()),
                                                 z.size(), nullptr, 0, "mem.st");
  EXPECT_EQ(v.at("z").nbytes, 0u);
}

// Every prefix of a valid file either loads or throws helix::Error; nothing reads outside the
// mapping (ASan would abort).
TEST_F(SafetensorsTest, TruncatedFilesNeverCrash) {
  Bytes data;
  std::vector<Entry> ents = two_tensors();
  ents.push_back({"h", "F16", {3}, u16_bytes({0x3C00, 0x0001, 0x7C00})});
  ents.push_back({"q.weight", "F8_E4M3", {2, 2}, Bytes{0x38, 0x40, 0x48, 0x50}});
  ents.push_back({"q.weight_scale_inv", "F32", {1, 1}, f32_bytes({0.5f})});
  const Bytes full = file_bytes(header_for(ents, data).dump(), data);
  int loaded = 0, errors = 0;
  for (size_t n = 0; n <= full.size(); ++n) {
    write_bytes(model(), Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
    try {
      helix::WeightStore ws(dir());
      for (const auto& name : ws.names()) {
        const helix::StView& v = ws.view(name);
        if (v.dtype == helix::StDType::F32 || v.dtype == helix::StDType::BF16 ||
            v.dtype == helix::StDType::F16 || v.dtype == helix::StDType::F8_E4M3)
          (void)ws.load(name);
      }
      ++loaded;
    } catch (const helix::Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find(model().string()), std::string::npos) << e.what();
    } catch (...) {
      ADD_FAILURE() << "truncation to " << n << " bytes threw something other than helix::Error";
    }
  }
  EXPECT_EQ(loaded, 1);  // only the complete file is valid (the data section is exactly full)
  EXPECT_EQ(errors, static_cast<int>(full.size()));
}

// Single-byte corruptions of the header: the same guarantee.
TEST_F(SafetensorsTest, CorruptedBytesNeverCrash) {
  Bytes data;
  const Bytes full = file_bytes(header_for(two_tensors(), data).dump(), data);
  uint32_t rng = 12345;
  auto next = [&] { return rng = rng * 1664525u + 1013904223u; };
  const uint8_t specials[] = {'"', '{', '}', '[', ']', ',', ':', '-', '9', '0', 0, 0xFF};
  for (int iter = 0; iter < 600; ++iter) {
    Bytes b = full;
    const int flips = 1 + static_cast<int>(next() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t pos = next() % b.size();
      b[pos] = (next() & 1) ? specials[next() % sizeof(specials)] : static_cast<uint8_t>(next());
    }
    write_bytes(model(), b);
    try {
      helix::WeightStore ws(dir());
      for (const auto& name : ws.names()) {
        const auto d = ws.view(name).dtype;
        if (d == helix::StDType::F32 || d == helix::StDType::BF16 || d == helix::StDType::F16)
          (void)ws.load(name);
      }
    } catch (const helix::Error&) {
    } catch (...) {
      ADD_FAILURE() << "corruption " << iter << " threw something other than helix::Error";
    }
  }
}

}  // namespace
