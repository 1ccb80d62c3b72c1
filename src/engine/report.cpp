#include "engine/report.h"

namespace helix {

namespace {

const char* kKinds[] = {"all_reduce", "all_gather",   "reduce_scatter",
                        "all_to_all", "all_to_all_v", "broadcast"};

// 48-bit counters as two exact floats (24 bits each).
void put_u64(std::vector<float>& v, uint64_t x) {
  v.push_back(static_cast<float>(x >> 24));
  v.push_back(static_cast<float>(x & 0xFFFFFF));
}
uint64_t get_u64(const float*& p) {
  uint64_t hi = static_cast<uint64_t>(p[0]), lo = static_cast<uint64_t>(p[1]);
  p += 2;
  return (hi << 24) | lo;
}

}  // namespace

CommStats stats_minus(const CommStats& a, const CommStats& b) {
  CommStats d = a;
  for (auto& [k, v] : d.bytes_sent) v -= b.bytes_sent.count(k) ? b.bytes_sent.at(k) : 0;
  for (auto& [k, v] : d.bytes_received) v -= b.bytes_received.count(k) ? b.bytes_received.at(k) : 0;
  for (auto& [k, v] : d.calls) v -= b.calls.count(k) ? b.calls.at(k) : 0;
  return d;
}

void stats_add(CommStats& into, const CommStats& d) {
  for (const auto& [k, v] : d.bytes_sent) into.bytes_sent[k] += v;
  for (const auto& [k, v] : d.bytes_received) into.bytes_received[k] += v;
  for (const auto& [k, v] : d.calls) into.calls[k] += v;
}

std::vector<float> report_encode(const RankReport& r) {
  std::vector<float> v = {float(r.rank), float(r.cp_rank), float(r.tp_rank), float(r.kv_tokens),
                          float(r.kv_blocks)};
  for (const CommStats* s : {&r.comm, &r.decode_comm})
    for (const char* k : kKinds) {
      put_u64(v, s->bytes_sent.count(k) ? s->bytes_sent.at(k) : 0);
      put_u64(v, s->bytes_received.count(k) ? s->bytes_received.at(k) : 0);
      put_u64(v, s->calls.count(k) ? s->calls.at(k) : 0);
    }
  for (double t : {r.attn_ms, r.ffn_ms, r.comm_ms}) v.push_back(static_cast<float>(t));
  for (int b : r.blocks_per_step) v.push_back(static_cast<float>(b));
  return v;
}

RankReport report_decode(const float* p, int step_entries) {
  RankReport r;
  r.rank = int(p[0]);
  r.cp_rank = int(p[1]);
  r.tp_rank = int(p[2]);
  r.kv_tokens = int(p[3]);
  r.kv_blocks = int(p[4]);
  p += 5;
  for (CommStats* s : {&r.comm, &r.decode_comm})
    for (const char* k : kKinds) {
      uint64_t sent = get_u64(p), recv = get_u64(p), calls = get_u64(p);
      if (calls == 0) continue;
      s->bytes_sent[k] = sent;
      s->bytes_received[k] = recv;
      s->calls[k] = calls;
    }
  r.attn_ms = p[0];
  r.ffn_ms = p[1];
  r.comm_ms = p[2];
  p += 3;
  for (int i = 0; i < step_entries; ++i) r.blocks_per_step.push_back(int(p[i]));
  return r;
}

}  // namespace helix
