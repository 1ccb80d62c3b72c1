#include "model/helix_combine.h"

#include <cstring>
#include <vector>

#include "ops/ops.h"
#include "parallel/mapping.h"

namespace helix {

void helix_combine(Communicator& cp_comm, const HelixCombineParams& p) {
  const int cp = cp_comm.size(), B = p.batch, Hl = p.local_heads, L = p.kv_lora_rank;
  auto [mb, me] = split_range(Hl, cp, cp_comm.rank());
  const int Ho = me - mb;
  // Per peer j: [B, Hj, L] outputs then [B, Hj] LSEs, so one message carries both.
  std::vector<size_t> send_counts(cp), recv_counts(cp, static_cast<size_t>(B) * Ho * (L + 1));
  std::vector<float> send;
  for (int j = 0; j < cp; ++j) {
    auto [hb, he] = split_range(Hl, cp, j);
    send_counts[j] = static_cast<size_t>(B) * (he - hb) * (L + 1);
    for (int b = 0; b < B; ++b)
      send.insert(send.end(), p.o + (static_cast<int64_t>(b) * Hl + hb) * L,
                  p.o + (static_cast<int64_t>(b) * Hl + he) * L);
    for (int b = 0; b < B; ++b)
      send.insert(send.end(), p.lse + static_cast<int64_t>(b) * Hl + hb,
                  p.lse + static_cast<int64_t>(b) * Hl + he);
  }
  std::vector<float> recv(static_cast<size_t>(cp) * B * Ho * (L + 1));
  cp_comm.all_to_all_v(send.data(), send_counts, recv.data(), recv_counts);
  // Unpack into [cp, B*Ho, L] and [cp, B*Ho] for the combine op.
  const size_t rows = static_cast<size_t>(B) * Ho;
  std::vector<float> parts(cp * rows * L), plse(cp * rows);
  for (int i = 0; i < cp; ++i) {
    const float* blk = recv.data() + i * rows * (L + 1);
    std::memcpy(parts.data() + i * rows * L, blk, rows * L * sizeof(float));
    std::memcpy(plse.data() + i * rows, blk + rows * L, rows * sizeof(float));
  }
  AttnCombineParams cb;
  cb.num_parts = cp;
  cb.rows = static_cast<int>(rows);
  cb.dim = L;
  cb.parts = parts.data();
  cb.lse = plse.data();
  cb.out = p.out;
  attn_combine(cb);
}

}  // namespace helix
