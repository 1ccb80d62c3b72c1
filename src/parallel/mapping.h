#pragma once
// Mapping: the topology of one Helix deployment as a small value class (global rank ->
// coordinates). Attention runs on a tp x cp grid; the FFN reuses all tp*cp ranks as one group.
//
//   rank = (dp_rank * cp + cp_rank) * tp + tp_rank   (tp innermost, like TensorRT-LLM)
//   attention group:    same dp_rank, tp*cp ranks (o_proj row-parallel + all-reduce over it)
//   CP group:           same dp_rank and tp_rank  (KV sharded over it, all-to-all by heads)
//   FFN group:          all world ranks           (dense TP; experts TP or EP)
// dp > 1 (world = dp*tp*cp) replicates the attention grid so that EP can be wider than tp*cp:
// `--ep 4` alone runs 4 attention replicas and 4-way expert parallelism.
#include <string>
#include <utility>

namespace helix {

struct Mapping {
  int world_size = 1;
  int rank = 0;
  int tp = 1;           // attention tensor parallel size (TPA)
  int cp = 1;           // context parallel size (KVP)
  bool moe_ep = false;  // routed experts expert-parallel over the FFN group (else TP)

  Mapping() = default;
  Mapping(int world_size, int rank, int tp, int cp, bool moe_ep);

  int dp() const { return world_size / (tp * cp); }
  int tp_rank() const { return rank % tp; }
  int cp_rank() const { return (rank / tp) % cp; }
  int dp_rank() const { return rank / (tp * cp); }
  int attn_size() const { return tp * cp; }
  int ffn_size() const { return world_size; }
  int ffn_rank() const { return rank; }

  // Checks the mapping against the model: num_heads % tp == 0, experts % ffn_size == 0 under EP.
  // Throws helix::Error naming the problem.
  void validate(int num_heads, int num_experts) const;

  std::string str() const;
};

// [begin, end) of part `i` when `n` items are split over `parts` as evenly as possible: the first
// n % parts parts get one more. Some parts are empty when parts > n.
std::pair<int, int> split_range(int n, int parts, int i);

}  // namespace helix
