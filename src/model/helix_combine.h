#pragma once
// The Helix step after local attention: one all-to-all over the CP group split by heads (every
// rank sends each peer that peer's head range of its partial latent outputs and LSEs), then the
// exact LSE combine of the cp partials of the heads this rank owns.
#include "parallel/comm.h"

namespace helix {

struct HelixCombineParams {
  int batch = 0;               // B decode tokens
  int local_heads = 0;         // Hl heads of the TP group (every CP rank computed all of them)
  int kv_lora_rank = 0;        // L
  const float* o = nullptr;    // [B, Hl, L] this rank's partial outputs (normalised)
  const float* lse = nullptr;  // [B, Hl] their log-sum-exp (-inf: no local KV)
  float* out = nullptr;        // [B, Ho, L] combined outputs of this rank's heads
};

// Heads are split with split_range(Hl, cp, j) (uneven when cp does not divide Hl).
void helix_combine(Communicator& cp_comm, const HelixCombineParams& p);

}  // namespace helix
