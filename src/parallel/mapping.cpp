#include "parallel/mapping.h"

#include <fmt/format.h>

#include "core/checked.h"
#include "core/error.h"

namespace helix {

Mapping::Mapping(int world_size_, int rank_, int tp_, int cp_, bool moe_ep_)
    : world_size(world_size_), rank(rank_), tp(tp_), cp(cp_), moe_ep(moe_ep_) {
  if (tp < 1) fail("--tp must be at least 1 (got {})", tp);
  if (cp < 1) fail("--cp must be at least 1 (got {})", cp);
  const int64_t grid = checked_mul(tp, cp, "--tp x --cp");
  if (world_size < grid || world_size % grid != 0) {
    fail("world size {} is not a multiple of --tp {} x --cp {} = {}", world_size, tp, cp, grid);
  }
  if (world_size != tp * cp && !moe_ep) {
    fail("world size {} exceeds --tp {} x --cp {}: only expert parallelism (--ep) may be wider",
         world_size, tp, cp);
  }
  if (rank < 0 || rank >= world_size) {
    fail("rank {} is out of range for world size {}", rank, world_size);
  }
}

void Mapping::validate(int num_heads, int num_experts) const {
  if (num_heads % tp != 0) {
    fail("num_attention_heads ({}) is not divisible by --tp {}", num_heads, tp);
  }
  if (moe_ep && num_experts > 0 && num_experts % ffn_size() != 0) {
    fail("n_routed_experts ({}) is not divisible by the expert-parallel size {}", num_experts,
         ffn_size());
  }
}

std::string Mapping::str() const {
  return fmt::format("rank {}/{} tp {} (tp_rank {}) cp {} (cp_rank {}) dp {} ffn {} moe {}", rank,
                     world_size, tp, tp_rank(), cp, cp_rank(), dp(), ffn_size(),
                     moe_ep ? "ep" : "tp");
}

std::pair<int, int> split_range(int n, int parts, int i) {
  HELIX_CHECK(parts >= 1, "split_range: parts must be >= 1 (got {})", parts);
  HELIX_CHECK(n >= 0, "split_range: n must be >= 0 (got {})", n);
  HELIX_CHECK(i >= 0 && i < parts, "split_range: part {} out of range [0, {})", i, parts);
  return even_split(n, parts, i);
}

}  // namespace helix
