#pragma once
// Paged latent KV cache of one rank. A request's tokens are cut into blocks of
// tokens_per_block; block b lives on CP rank b % cp (prompt and decode blocks alike), so every
// rank's share grows evenly. One physical block holds the same token range for every layer.
// Row layout per token: [c (kv_lora_rank, normalised latent), k_pe (rope dim, roped)].
// Bookkeeping (ownership, free lists, lengths) lives on the host; the rows live in a storage
// tensor on the backend's device (host fp32 by default; bf16 or fp32 GPU memory on CUDA; FP8
// rows of config.stride() bytes on either with --kv-cache-dtype fp8).
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "core/tensor.h"

namespace helix {

struct KvCacheConfig {
  int num_layers = 0;
  int row_width = 0;  // kv_lora_rank + qk_rope_head_dim
  // Elements of the storage dtype per token row; 0: row_width. An FP8 pool (F8E4M3 storage,
  // --kv-cache-dtype fp8) stores kv_fp8_row_bytes() bytes per row (ops.h, kv_fp8.cpp).
  int row_stride = 0;
  int stride() const { return row_stride > 0 ? row_stride : row_width; }
  int tokens_per_block = 64;
  int max_blocks = 0;  // physical blocks on this rank
  int cp_size = 1;
  int cp_rank = 0;
};

// Host bookkeeping of one rank's KV blocks: ownership (block b on CP rank b % cp), free list,
// per-request lengths and block lists. Touches no KV data; the engine reserves a step's rows
// here before the step runs.
class KvBlockManager {
 public:
  explicit KvBlockManager(const KvCacheConfig& cfg);

  void add_request(int64_t id);
  void free_request(int64_t id);  // returns its blocks to the free list
  bool has_request(int64_t id) const { return seqs_.count(id) != 0; }

  // The CP rank that owns global position pos.
  int owner_of(int pos) const { return (pos / cfg_.tokens_per_block) % cfg_.cp_size; }
  bool owns(int pos) const { return owner_of(pos) == cfg_.cp_rank; }

  // Appends global position pos (must equal the current length). Every rank calls it; only the
  // owner allocates. Throws helix::Error when the pool is exhausted.
  void append(int64_t id, int pos);
  // Blocks this rank must allocate to append positions [start, start + n) of a request.
  int blocks_needed(int64_t id, int start, int n) const;
  // Row index of an owned position inside a layer's pool (physical block * block + offset).
  int64_t slot(int64_t id, int pos) const;
  // This rank's physical blocks of a request, in global block order.
  const std::vector<int>& block_ids(int64_t id) const { return seq(id).blocks; }
  // Valid tokens in each of block_ids(id).
  const std::vector<int>& block_lens(int64_t id) const { return seq(id).block_len; }

  int global_len(int64_t id) const;
  int local_tokens(int64_t id) const;
  int local_blocks(int64_t id) const;
  int free_blocks() const { return static_cast<int>(free_.size()); }
  int used_blocks() const { return cfg_.max_blocks - free_blocks(); }
  const KvCacheConfig& config() const { return cfg_; }

 protected:
  struct Seq {
    int len = 0;  // global tokens
    int local_tokens = 0;
    std::vector<int> blocks;       // physical ids of this rank's blocks, in global block order
    std::vector<int> block_len;    // valid tokens in each
    std::map<int, int> by_global;  // global block index -> position in `blocks`
  };
  const Seq& seq(int64_t id) const;
  Seq& seq(int64_t id);

  KvCacheConfig cfg_;
  std::vector<int> free_;
  std::map<int64_t, Seq> seqs_;
};

// Storage of the latent rows: [num_layers, max_blocks, tokens_per_block, stride()] on the
// backend's device (host fp32 by default; bf16 or fp32 GPU memory on CUDA), zero-filled.
class KvPool {
 public:
  // storage empty: a host fp32 pool.
  KvPool(const KvCacheConfig& cfg, DTensor storage);
  // One layer's rows: [max_blocks, tokens_per_block, stride()].
  TensorView layer(int layer) const;
  // Row `slot` of a layer (host fp32 pool only).
  float* host_row(int layer, int64_t slot) const;
  size_t bytes() const { return pool_.view().bytes(); }

 private:
  KvCacheConfig cfg_;
  DTensor pool_;
};

// One rank's paged KV: the block manager plus its pool.
class KvCache : public KvBlockManager {
 public:
  explicit KvCache(const KvCacheConfig& cfg, DTensor storage = {})
      : KvBlockManager(cfg), pool_(cfg, std::move(storage)) {}
  using KvBlockManager::local_blocks;

  // Row of an owned position, for writing its latent (host fp32 pool only).  -> [row_width]
  float* row(int layer, int64_t id, int pos) { return pool_.host_row(layer, slot(id, pos)); }
  TensorView layer_pool(int layer) const { return pool_.layer(layer); }
  // This rank's blocks of a request for one layer: pointers and valid token counts (host pool).
  void local_blocks(int layer, int64_t id, std::vector<const float*>& ptrs,
                    std::vector<int>& lens) const;
  size_t bytes() const { return pool_.bytes(); }
  const KvPool& pool() const { return pool_; }

 private:
  KvPool pool_;
};

}  // namespace helix
