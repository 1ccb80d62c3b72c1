#include "kv/kv_cache.h"

#include "core/error.h"

namespace helix {

KvBlockManager::KvBlockManager(const KvCacheConfig& cfg) : cfg_(cfg) {
  HELIX_CHECK(cfg.tokens_per_block > 0, "tokens per block must be positive, got {}",
              cfg.tokens_per_block);
  HELIX_CHECK(cfg.cp_size > 0 && cfg.cp_rank >= 0 && cfg.cp_rank < cfg.cp_size,
              "bad KV cache CP coordinates {}/{}", cfg.cp_rank, cfg.cp_size);
  HELIX_CHECK(cfg.max_blocks >= 0, "negative KV block count");
  free_.reserve(static_cast<size_t>(cfg.max_blocks));
  for (int b = cfg.max_blocks - 1; b >= 0; --b) free_.push_back(b);
}

KvPool::KvPool(const KvCacheConfig& cfg, DTensor storage) : cfg_(cfg), pool_(std::move(storage)) {
  const size_t n =
      static_cast<size_t>(cfg.num_layers) * cfg.max_blocks * cfg.tokens_per_block * cfg.row_width;
  try {
    if (pool_.empty() && n > 0)
      pool_ = DTensor::from_host(
          Tensor({cfg.num_layers, cfg.max_blocks, cfg.tokens_per_block, cfg.row_width}));
  } catch (const std::bad_alloc&) {
    fail("cannot allocate the KV cache: {} blocks x {} layers x {} tokens x {} floats ({:.1f} GiB)",
         cfg.max_blocks, cfg.num_layers, cfg.tokens_per_block, cfg.row_width, n * 4.0 / (1 << 30));
  }
}

void KvBlockManager::add_request(int64_t id) {
  HELIX_CHECK(!seqs_.count(id), "request {} already has a KV cache", id);
  seqs_[id] = Seq{};
}

void KvBlockManager::free_request(int64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  for (int b : it->second.blocks) free_.push_back(b);
  seqs_.erase(it);
}

const KvBlockManager::Seq& KvBlockManager::seq(int64_t id) const {
  auto it = seqs_.find(id);
  HELIX_CHECK(it != seqs_.end(), "unknown KV request {}", id);
  return it->second;
}
KvBlockManager::Seq& KvBlockManager::seq(int64_t id) {
  auto it = seqs_.find(id);
  HELIX_CHECK(it != seqs_.end(), "unknown KV request {}", id);
  return it->second;
}

void KvBlockManager::append(int64_t id, int pos) {
  Seq& s = seq(id);
  HELIX_CHECK(pos == s.len, "KV append out of order: position {} but length {}", pos, s.len);
  if (!owns(pos)) {
    s.len++;
    return;
  }
  const int gb = pos / cfg_.tokens_per_block;
  auto it = s.by_global.find(gb);
  if (it == s.by_global.end()) {
    if (free_.empty())
      fail(
          "KV cache out of memory on CP rank {}: all {} blocks of {} tokens are in use "
          "(raise --kv-blocks)",
          cfg_.cp_rank, cfg_.max_blocks, cfg_.tokens_per_block);
    s.by_global[gb] = static_cast<int>(s.blocks.size());
    s.blocks.push_back(free_.back());
    s.block_len.push_back(0);
    free_.pop_back();
    it = s.by_global.find(gb);
  }
  s.block_len[it->second]++;
  s.local_tokens++;
  s.len++;
}

int KvBlockManager::blocks_needed(int64_t id, int start, int n) const {
  const Seq& s = seq(id);
  int need = 0, last = -1;
  for (int p = start; p < start + n; ++p) {
    const int gb = p / cfg_.tokens_per_block;
    if (gb == last || !owns(p)) continue;
    last = gb;
    if (!s.by_global.count(gb)) ++need;
  }
  return need;
}

float* KvPool::host_row(int layer, int64_t slot) const {
  HELIX_CHECK(pool_.device().is_cpu() && pool_.dtype() == DType::F32,
              "KV rows are host-addressable only in a host float32 pool");
  return pool_.f32() +
         (static_cast<int64_t>(layer) * cfg_.max_blocks * cfg_.tokens_per_block + slot) *
             cfg_.row_width;
}

int64_t KvBlockManager::slot(int64_t id, int pos) const {
  const Seq& s = seq(id);
  HELIX_CHECK(owns(pos) && pos < s.len, "KV row {} is not held by CP rank {}", pos, cfg_.cp_rank);
  const int phys = s.blocks[s.by_global.at(pos / cfg_.tokens_per_block)];
  return static_cast<int64_t>(phys) * cfg_.tokens_per_block + pos % cfg_.tokens_per_block;
}

TensorView KvPool::layer(int layer) const {
  const int64_t shape[3] = {cfg_.max_blocks, cfg_.tokens_per_block, cfg_.stride()};
  const TensorView& v = pool_.view();
  char* base = static_cast<char*>(v.data) + static_cast<int64_t>(layer) * cfg_.max_blocks *
                                                cfg_.tokens_per_block * cfg_.stride() *
                                                static_cast<int64_t>(dtype_size(v.dtype));
  return TensorView::make(base, v.dtype, v.device, shape, 3);
}

void KvCache::local_blocks(int layer, int64_t id, std::vector<const float*>& ptrs,
                           std::vector<int>& lens) const {
  const auto& blocks = block_ids(id);
  ptrs.clear();
  lens = block_lens(id);
  for (int b : blocks)
    ptrs.push_back(pool_.host_row(layer, static_cast<int64_t>(b) * cfg_.tokens_per_block));
}

int KvBlockManager::global_len(int64_t id) const {
  return seq(id).len;
}
int KvBlockManager::local_tokens(int64_t id) const {
  return seq(id).local_tokens;
}
int KvBlockManager::local_blocks(int64_t id) const {
  return static_cast<int>(seq(id).blocks.size());
}

}  // namespace helix
