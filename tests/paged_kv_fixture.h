#pragma once
// The paged latent cache of a test batch, shared by the FP8 KV tests on the CPU
// (tests/test_kv_fp8.cpp) and on the GPU (tests/cuda/backend_ops_kv_fp8.cpp): the block table and
// the slots of a batch of sequences, and the MlaDecodeArgs that decode over them.
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "ops/backend.h"

namespace helix::test {

// Sequences of lens[b] tokens in blocks of `block` tokens: B * max_blocks physical blocks of
// num_blocks (= that + spare) in a shuffled order, each used once (so the writes never collide),
// and the slot of every token, sequence after sequence, then one padding slot -1 (kv_write skips
// it).
struct PagedKv {
  int max_blocks = 1, num_blocks = 0;
  std::vector<int> table;      // [B, max_blocks] physical block ids
  std::vector<int64_t> slots;  // [tokens + 1] block * block_size + offset
};

inline PagedKv paged_kv(const std::vector<int>& lens, int block, int spare, std::mt19937& rng) {
  PagedKv kv;
  const int B = static_cast<int>(lens.size());
  for (int n : lens) kv.max_blocks = std::max(kv.max_blocks, (n + block - 1) / block);
  kv.num_blocks = B * kv.max_blocks + spare;
  kv.table.resize(kv.num_blocks);
  std::iota(kv.table.begin(), kv.table.end(), 0);
  std::shuffle(kv.table.begin(), kv.table.end(), rng);
  kv.table.resize(static_cast<size_t>(B) * kv.max_blocks);
  for (int b = 0; b < B; ++b)
    for (int p = 0; p < lens[b]; ++p)
      kv.slots.push_back(static_cast<int64_t>(kv.table[b * kv.max_blocks + p / block]) * block +
                         p % block);
  kv.slots.push_back(-1);
  return kv;
}

// The sizes and host fields of a decode over `kv` (lens must outlive the args); the caller sets
// the views: q, pool, out, lse, and block_table / seq_lens on a device.
inline MlaDecodeArgs mla_decode_args(const PagedKv& kv, const std::vector<int>& lens, int heads,
                                     int kv_lora_rank, int rope_dim, int block, float scale) {
  MlaDecodeArgs a;
  a.batch = static_cast<int>(lens.size());
  a.num_heads = heads;
  a.kv_lora_rank = kv_lora_rank;
  a.rope_dim = rope_dim;
  a.block_size = block;
  a.max_blocks_per_seq = kv.max_blocks;
  a.max_seq_len = kv.max_blocks * block;
  a.scale = scale;
  a.block_table_host = kv.table.data();
  a.seq_lens_host = lens.data();
  return a;
}

}  // namespace helix::test
