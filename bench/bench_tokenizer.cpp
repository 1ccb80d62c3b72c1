// Tokenizer speed on a long prompt: load time, encode (bytes/s, tokens/s), decode and streaming
// decode of the ids. The text is --file (e.g. a 100K-token prompt) or a built-in mix repeated to
// --min-bytes.
//   bench_tokenizer --model DIR [--file text.txt] [--min-bytes 400000] [--iters 5] [--json
//   out.json]
#include <cstdio>
#include <fstream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench_common.h"
#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app{"Tokenizer encode/decode speed on a long text"};
  std::string model = "models/tiny", file, json_path;
  size_t min_bytes = 400000;
  int iters = 5;
  app.add_option("--model", model, "directory with tokenizer.json")->capture_default_str();
  app.add_option("--file", file, "text to encode (default: a built-in mix)");
  app.add_option("--min-bytes", min_bytes, "repeat the text to at least this many bytes")
      ->capture_default_str();
  app.add_option("--iters", iters, "timed runs (median reported)")->capture_default_str();
  app.add_option("--json", json_path, "write the results as JSON here");
  CLI11_PARSE(app, argc, argv);

  std::string unit =
      "In the beginning God created the heaven and the earth. 深度求索的模型。日本語のテキスト。"
      "\n    for (int i = 0; i < 1000000; ++i) x += i;  // code\n\n😀 12345678 ...\n";
  if (!file.empty()) {
    std::ifstream f(file, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    unit = ss.str();
  }
  std::string text = unit;
  while (text.size() < min_bytes) text += unit;

  const double t0 = helix::bench::now_ms();
  const helix::Tokenizer tok = helix::Tokenizer::load(model);
  const double load_ms = helix::bench::now_ms() - t0;
  std::vector<int> ids;
  const double enc_ms = helix::bench::median_ms(iters, [&] { ids = tok.encode(text, false); });
  std::string back;
  const double dec_ms = helix::bench::median_ms(iters, [&] { back = tok.decode(ids); });
  const double stream_ms = helix::bench::median_ms(iters, [&] {
    helix::StreamDecoder sd(tok);
    back.clear();
    for (int id : ids) back += sd.push(id);
    back += sd.finish();
  });
  if (back != text) {
    std::fprintf(stderr, "error: decode does not round-trip\n");
    return 1;
  }
  std::printf(
      "%s: %zu bytes -> %zu tokens | load %.0f ms | encode %.1f ms (%.2f MB/s, %.0f "
      "tokens/s) | decode %.1f ms | stream decode %.1f ms | %s\n",
      model.c_str(), text.size(), ids.size(), load_ms, enc_ms, text.size() / enc_ms / 1e3,
      ids.size() / enc_ms * 1e3, dec_ms, stream_ms, helix::bench::cpu_name().c_str());
  if (!json_path.empty()) {
    nlohmann::json j = {{"model", model},
                        {"bytes", text.size()},
                        {"tokens", ids.size()},
                        {"load_ms", load_ms},
                        {"encode_ms", enc_ms},
                        {"decode_ms", dec_ms},
                        {"stream_decode_ms", stream_ms},
                        {"cpu", helix::bench::cpu_name()}};
    std::ofstream(json_path) << j.dump(2) << "\n";
  }
  return 0;
}
