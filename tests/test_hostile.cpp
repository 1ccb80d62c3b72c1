// Hostile input (issue 10): one regression test per class the adversarial probe found. Every
// failure must be exit 2 with exactly one `error:` line naming the problem, fast (no hang on a
// FIFO, no allocation sized by an absurd flag), with nothing printed before it; every success
// must be finite.
#include <sys/stat.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli_util.h"
#include "core/checked.h"
#include "core/error.h"
#include "core/file_io.h"
#include "model/safetensors.h"

namespace helix {
namespace {

namespace fs = std::filesystem;
using namespace helix::test;

const std::vector<std::string> kGen = {
    "generate", "--model", "models/tiny", "--tokens", "1,2,3", "--max-new-tokens", "3"};

std::vector<std::string> gen(std::vector<std::string> extra) {
  std::vector<std::string> a = kGen;
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

// Sets element `elem` of tensor `name` (F32, F16 or BF16) to `v`: Inf, or NaN (all-ones bits).
void poke_float(const fs::path& file, const std::string& name, size_t elem, float v) {
  std::string raw = read_file(file);
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  const auto h = nlohmann::json::parse(raw.substr(8, n)).at(name);
  const std::string dtype = h.at("dtype");
  const size_t es = dtype == "F32" ? 4 : 2;
  char* p = raw.data() + 8 + n + h.at("data_offsets")[0].get<size_t>() + elem * es;
  if (std::isnan(v)) {
    std::memset(p, 0xff, es);
  } else if (es == 4) {
    std::memcpy(p, &v, 4);
  } else {
    const uint16_t inf = dtype == "BF16" ? 0x7f80 : 0x7c00;
    std::memcpy(p, &inf, 2);
  }
  std::ofstream(file, std::ios::binary | std::ios::trunc) << raw;
}

// ---- checked arithmetic -----------------------------------------------------------------------

TEST(Checked, OverflowIsAnError) {
  EXPECT_EQ(checked_mul(1 << 20, 1 << 20, "x"), int64_t{1} << 40);
  EXPECT_THROW(checked_mul(int64_t{1} << 40, int64_t{1} << 40, "x"), Error);
  EXPECT_THROW(checked_product({65536, 65536, 65536, 65536}, "grid"), Error);
  EXPECT_THROW(checked_int(int64_t{1} << 31, "ranks"), Error);
  EXPECT_THROW(checked_add(INT64_MAX, 1, "blocks"), Error);
  try {
    checked_mul(int64_t{1} << 62, 4, "--tp x --cp");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tp x --cp overflows"), std::string::npos) << e.what();
  }
}

TEST(Checked, EvenSplitCoversEveryItemOnce) {
  for (int n : {0, 1, 7, 64, 1000})
    for (int parts : {1, 2, 3, 7, 64}) {
      int next = 0;
      for (int i = 0; i < parts; ++i) {
        auto [b, e] = even_split(n, parts, i);
        EXPECT_EQ(b, next);
        EXPECT_LE(e - b, n / parts + 1);
        EXPECT_GE(e - b, n / parts);
        next = e;
      }
      EXPECT_EQ(next, n);
    }
}

// ---- files ------------------------------------------------------------------------------------

TEST(FileIo, WriteIsAtomicAndChecked) {
  TempDir d;
  const std::string p = (d.path / "out.json").string();
  file_write(p, "first");
  file_write(p, std::vector<std::string_view>{"sec", "ond"});
  EXPECT_EQ(read_file(p), "second");
  for (const auto& e : fs::directory_iterator(d.path))  // no temporary left behind
    EXPECT_EQ(e.path().filename(), "out.json");
  EXPECT_THROW(file_write("/dev/full", "x"), Error);
  EXPECT_THROW(file_write(d.path.string(), "x"), Error);  // a directory
  EXPECT_THROW(file_write((d.path / "no/such/dir/f").string(), "x"), Error);
}

TEST(FileIo, ReadRefusesNonRegularFiles) {
  TempDir d;
  const std::string fifo = (d.path / "fifo").string();
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_THROW(file_read_text(fifo), Error);  // returns at once, never blocks in open()
  EXPECT_THROW(file_read_text("/dev/zero"), Error);
  EXPECT_THROW(file_read_text(d.path.string()), Error);
  EXPECT_FALSE(regular_file_exists(fifo));
}

// nlohmann keeps the last of two equal keys; the header parser must see and reject the repeat.
TEST(Safetensors, DuplicateTensorNameRejected) {
  const std::string one = R"("a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  const std::string two = R"("a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]})";
  const uint8_t data[8] = {};
  const std::string ok = "{" + one + "}";
  EXPECT_EQ(
      safetensors_parse_header(reinterpret_cast<const uint8_t*>(ok.data()), ok.size(), data, 8, "t")
          .size(),
      1u);
  const std::string dup = "{" + one + ", " + two + "}";
  try {
    safetensors_parse_header(reinterpret_cast<const uint8_t*>(dup.data()), dup.size(), data, 8,
                             "t");
    ADD_FAILURE() << "duplicate accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'a' twice"), std::string::npos) << e.what();
  }
  // Equal keys in different objects are fine; a repeated key inside an entry is not.
  const std::string nested =
      R"({"a": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  EXPECT_THROW(safetensors_parse_header(reinterpret_cast<const uint8_t*>(nested.data()),
                                        nested.size(), data, 8, "t"),
               Error);
}

TEST(CliHostile, FifoInPlaceOfModelFiles) {
  for (const char* victim : {"config.json", "model.safetensors", "generation_config.json"}) {
    ModelCopy m;
    fs::remove(m.path / victim);
    ASSERT_EQ(mkfifo((m.path / victim).c_str(), 0600), 0);
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2"},
                      {victim, "not a regular file"}, std::string("FIFO ") + victim);
  }
}

TEST(CliHostile, ShardFolderSymlinkLeavingModelDir) {
  TempDir outside;
  ModelCopy m;
  fs::create_directory(outside.path / "w");
  fs::rename(m.path / "model.safetensors", outside.path / "w" / "model.safetensors");
  std::string raw = read_file(outside.path / "w" / "model.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, raw.data(), 8);
  nlohmann::json wm;
  const nlohmann::json header = nlohmann::json::parse(raw.substr(8, n));
  for (auto it = header.begin(); it != header.end(); ++it)
    if (it.key() != "__metadata__") wm[it.key()] = "sub/model.safetensors";
  std::ofstream(m.path / "model.safetensors.index.json") << nlohmann::json{{"weight_map", wm}};
  fs::create_directory_symlink(outside.path / "w", m.path / "sub");
  expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2"},
                    {"outside the model folder"}, "shard through a symlinked folder");
  // The same shard in a real sub-folder, reached through a file symlink (as in the Hugging Face
  // cache), loads.
  fs::remove(m.path / "sub");
  fs::create_directory(m.path / "sub");
  fs::create_symlink(outside.path / "w" / "model.safetensors", m.path / "sub/model.safetensors");
  Result r = run_helix({"generate", "--model", m.dir(), "--tokens", "1,2", "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(CliHostile, MalformedGenerationConfigAndEos) {
  {
    ModelCopy m;
    std::ofstream(m.path / "generation_config.json", std::ios::trunc) << "{\"eos_token_id\": [1,";
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2"},
                      {"generation_config.json", "invalid JSON"}, "truncated generation config");
  }
  {
    ModelCopy m;
    std::ofstream(m.path / "generation_config.json", std::ios::trunc)
        << "{\"eos_token_id\": 4294967297}";
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2"}, {"eos_token_id"},
                      "eos outside int range");
  }
}

// ---- flags ------------------------------------------------------------------------------------

TEST(CliHostile, HugeLayoutsFailBeforeAllocating) {
  const auto t0 = std::chrono::steady_clock::now();
  expect_user_error(gen({"--tp", "65536", "--cp", "65536"}), {"--tp"}, "tp 65536 x cp 65536");
  expect_user_error(gen({"--cp", "2147483647"}), {"ranks"}, "cp 2^31-1");
  expect_user_error(gen({"--cp", "100000"}), {"ranks", "threads backend"}, "cp 100000 threads");
  expect_user_error(gen({"--ep", "1048576"}), {"--ep"}, "ep 2^20");
  expect_user_error(gen({"--ep", "2", "--eplb-slots", "2000000000"}), {"--eplb-slots"},
                    "eplb-slots 2e9");
  expect_user_error(gen({"--ep", "2", "--eplb-slots", "34"}), {"--eplb-slots"},
                    "eplb-slots > experts x ranks");
  expect_user_error(gen({"--tokens-per-block", "2000000000"}), {"--tokens-per-block"},
                    "tokens-per-block 2e9");
  // A huge --kv-blocks is clamped to what the requests can use (max_position_embeddings): it
  // runs, quickly, instead of allocating gigabytes that are never touched.
  Result r = run_helix(gen({"--kv-blocks", "2000000000", "--quiet"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 30.0) << "bound checks must come before the expensive work";
}

TEST(CliHostile, SamplingParametersFiniteAndInRange) {
  for (const char* v : {"nan", "inf", "-inf", "-1", "1e9"})
    expect_user_error(gen({"--temperature", v}), {"--temperature", "[0, 1000]"},
                      std::string("--temperature ") + v);
  for (const char* v : {"nan", "inf", "-0.5", "2"})
    expect_user_error(gen({"--top-p", v}), {"--top-p", "[0, 1]"}, std::string("--top-p ") + v);
  // In range: runs.
  Result r = run_helix(gen({"--temperature", "0.7", "--top-p", "0.9", "--seed", "3", "--quiet"}));
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(CliHostile, ErrorsStayOnOneReadableLine) {
  // A newline inside an echoed argument is escaped, not a second line.
  expect_user_error({"generate", "--model", "models/tiny", "--tokens", "1\n2"}, {"\\n"},
                    "newline in --tokens");
  expect_user_error(gen({"--comm", "threads\nmpi"}), {"--comm"}, "newline in --comm");
  expect_user_error({"generate", "--model", "/nonexistent\n/x", "--tokens", "1"}, {"nonexistent"},
                    "newline in --model");
  // Bounds are short numbers, never 300-digit doubles.
  Result r = run_helix(gen({"--temperature", "-1"}));
  EXPECT_LT(r.err.size(), 200u) << r.err;
}

// ---- outputs ----------------------------------------------------------------------------------

TEST(CliHostile, FailedWritesAreErrors) {
  TempDir d;
  expect_user_error(gen({"--stats-json", "/dev/full"}), {"/dev/full"}, "--stats-json /dev/full");
  expect_user_error(gen({"--logits-out", "/dev/full"}), {"/dev/full"}, "--logits-out /dev/full");
  expect_user_error(gen({"--ep", "2", "--eplb-record", "/dev/full"}), {"/dev/full"},
                    "--eplb-record /dev/full");
  expect_user_error({"score", "--model", "models/tiny", "--tokens", "1,2", "--out", "/dev/full"},
                    {"/dev/full"}, "score --out /dev/full");
  expect_user_error(
      {"score", "--model", "models/tiny", "--tokens", "1,2", "--out", d.path.string()},
      {d.path.string()}, "score --out a directory");
  const std::string load = (d.path / "load.json").string();
  std::ofstream(load) << R"({"load": [[5, 1, 3, 7], [1, 1, 1, 9]]})";
  // The per-layer table is not printed before the error.
  expect_user_error(
      {"eplb", "plan", "--load", load, "--slots", "8", "--ranks", "2", "--out", "/dev/full"},
      {"/dev/full"}, "eplb plan --out /dev/full");
}

// ---- EPLB -------------------------------------------------------------------------------------

TEST(CliHostile, PlacementWithAbsurdSlotsRejectedBeforeWeights) {
  TempDir d;
  const std::string p = (d.path / "placement.json").string();
  const int E = nlohmann::json::parse(
      read_file(fs::path(HELIX_SOURCE_DIR) / "models/tiny/config.json"))["n_routed_experts"];
  std::ofstream(p) << nlohmann::json{{"num_slots", 16000000},
                                     {"num_ranks", 2},
                                     {"num_experts", E},
                                     {"layers", nlohmann::json::array()}};
  expect_user_error(gen({"--ep", "2", "--eplb-placement", p}), {"num_slots"},
                    "16M slots placement");
  std::vector<int> s2e(4 * E);
  for (int s = 0; s < 4 * E; ++s) s2e[s] = s % E;
  std::ofstream(p, std::ios::trunc) << nlohmann::json{
      {"num_slots", 4 * E}, {"num_ranks", 4}, {"layers", {{{"slot_to_expert", s2e}}}}};
  expect_user_error(gen({"--ep", "2", "--eplb-placement", p}), {"ranks"}, "placement for 4 ranks");
}

TEST(CliHostile, EplbPlanLoadsNearDoubleRange) {
  TempDir d;
  const std::string load = (d.path / "load.json").string(), out = (d.path / "p.json").string();
  std::ofstream(load) << R"({"load": [[1.7e308, 1.6e308, 1e308, 1.5e308]]})";
  Result r = run_helix(
      {"eplb", "plan", "--load", load, "--slots", "8", "--ranks", "2", "--out", out, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  for (const char* k : {"mean_before", "mean_greedy", "mean_ours"}) {
    ASSERT_TRUE(j[k].is_number()) << k << " is " << j[k].dump();  // NaN dumps as null
    EXPECT_TRUE(std::isfinite(j[k].get<double>())) << k;
    EXPECT_GE(j[k].get<double>(), 1.0) << k;
  }
  std::ofstream(load, std::ios::trunc) << R"({"load": [[1, 2, 3, 4]]})";
  expect_user_error(
      {"eplb", "plan", "--load", load, "--slots", "2000000000", "--ranks", "2", "--out", out},
      {"--slots"}, "eplb plan --slots 2e9");
}

// ---- non-finite guard -------------------------------------------------------------------------

TEST(CliHostile, NonFiniteWeightsNameLayerAndStep) {
  {
    ModelCopy m;
    poke_float(m.path / "model.safetensors", "model.layers.1.self_attn.o_proj.weight", 5, NAN);
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2,3"},
                      {"prefill", "after layer 1", "nan"}, "NaN in layer 1 o_proj");
    expect_user_error(
        {"score", "--model", m.dir(), "--tokens", "1,2", "--out", (m.path / "x.npy").string()},
        {"after layer 1"}, "score, NaN in layer 1");
    EXPECT_FALSE(fs::exists(m.path / "x.npy"));
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2,3", "--check-weights"},
                      {"--check-weights", "model.layers.1.self_attn.o_proj.weight", "NaN"},
                      "--check-weights names the tensor");
  }
  {
    ModelCopy m;  // Inf only in the lm_head: the hidden state is fine, the logits are not
    poke_float(m.path / "model.safetensors", "lm_head.weight", 7, INFINITY);
    expect_user_error({"generate", "--model", m.dir(), "--tokens", "1,2,3", "--cp", "2"},
                      {"logits"}, "Inf in lm_head, cp 2");
  }
  {
    // A NaN that only a decode step reaches: the embedding row of a token that is not in the
    // prompt but is generated (the greedy id that follows 1,2,3 on the tiny model).
    ModelCopy m;
    Result ok = run_helix(
        {"generate", "--model", m.dir(), "--tokens", "1,2,3", "--max-new-tokens", "2", "--quiet"});
    ASSERT_EQ(ok.exit_code, 0) << ok.err;
    const int first = std::stoi(lines_of(ok.out).back());
    const size_t hidden =
        nlohmann::json::parse(read_file(m.path / "config.json"))["hidden_size"].get<size_t>();
    poke_float(m.path / "model.safetensors", "model.embed_tokens.weight", size_t(first) * hidden,
               NAN);
    expect_user_error(
        {"generate", "--model", m.dir(), "--tokens", "1,2,3", "--max-new-tokens", "2"},
        {"decode step 0", "after layer 0"}, "NaN reached at decode step 0");
  }
}

// ---- MPI ----------------------------------------------------------------------------------------

// --comm mpi outside mpirun: with MPI built in, a singleton world of one rank that gives the same
// ids as the threads backend; without it, a clear error (not a crash, not a silent fallback).
TEST(CliMpi, SingletonWorldOrClearError) {
  const std::vector<std::string> base = {"generate", "--model",          "models/tiny", "--tokens",
                                         "5,9,14,2", "--max-new-tokens", "6",           "--quiet"};
  std::vector<std::string> mpi = base;
  mpi.insert(mpi.end(), {"--comm", "mpi"});
#ifdef HELIX_HAVE_MPI
  Result a = run_helix(base), b = run_helix(mpi);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(lines_of(b.out).back(), lines_of(a.out).back());
  // A layout the singleton cannot hold fails on the size check.
  mpi.insert(mpi.end(), {"--cp", "2"});
  expect_user_error(mpi, {"mpirun started 1 processes"}, "mpi singleton with cp 2");
#else
  expect_user_error(mpi, {"without MPI"}, "mpi backend missing");
#endif
}

}  // namespace
}  // namespace helix
