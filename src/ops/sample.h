#pragma once
// Sampling of token ids from logits rows, the form the GPU runs it in (DESIGN.md "The GPU path":
// argmax/sampling on the device, only the ids come back). Per row: temperature <= 0 is the
// argmax (first on ties); else p_i = exp((l_i - max) / T) (relative to the top token, p = 1),
// with p_i < kSampleMinP = 2^-30 taken as 0 (such tokens are never drawn: at most 1.2e-4 of the
// mass over 129280 tokens, and the rest fit in the GPU's shared memory), truncated to the top_k
// most probable tokens (0: no limit; every token tied with the k-th is kept), then to the most
// probable ones whose mass reaches top_p of what is left (again ties kept), and one token drawn
// from those in proportion to p_i. The draw is counter-based: Philox-4x32-10 with key = seed and
// counter = (counter, stream) (Salmon et al., SC'11), so token `counter` of stream `stream` under
// `seed` is the same draw whatever the batch or the step it runs in. sample_row is the CPU
// reference of the CUDA kernel (ops/cuda/sample.cu): the same thresholds and the same random bits,
// sums in float64 instead of the GPU's float32 tree, so the two agree except where rounding moves a
// threshold or the uniform across a token boundary. C++17 (included by .cu files).
#include <cstdint>

namespace helix {

constexpr float kSampleMinP = 9.313225746154785e-10f;  // 2^-30

struct SampleRow {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // in [0, 1]
  int32_t top_k = 0;         // 0: no limit
  uint32_t pad = 0;
  uint64_t seed = 0;
  uint64_t stream = 0;   // e.g. the request's index in its batch
  uint64_t counter = 0;  // e.g. the index of the token being drawn
};
static_assert(sizeof(SampleRow) == 40, "SampleRow travels to the device as 5 int64 words");

// Philox-4x32-10: 4 random words for counter (c0..c3), key (k0, k1).
struct Philox4 {
  uint32_t x, y, z, w;
};
inline Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                             uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = uint64_t{0xD2511F53u} * c0, p1 = uint64_t{0xCD9E8D57u} * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

// The uniform of a row's draw, in [0, 1) with 24 bits: the first Philox word of (seed, stream,
// counter).
inline float sample_uniform(const SampleRow& r) {
  const Philox4 b =
      philox4x32_10(static_cast<uint32_t>(r.counter), static_cast<uint32_t>(r.counter >> 32),
                    static_cast<uint32_t>(r.stream), static_cast<uint32_t>(r.stream >> 32),
                    static_cast<uint32_t>(r.seed), static_cast<uint32_t>(r.seed >> 32));
  return static_cast<float>(b.x >> 8) * (1.0f / 16777216.0f);
}

// The CPU reference: the id drawn from logits[0, vocab) under r; -1 when the row holds a NaN or
// an Inf. *kept_out (optional) gets the threshold tau: the kept tokens are those with
// p_i >= tau (p of the top token is 1).
int sample_row(const float* logits, int vocab, const SampleRow& r, float* tau_out = nullptr);

}  // namespace helix
