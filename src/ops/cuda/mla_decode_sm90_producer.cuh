#pragma once
// The producer side of the sm90 MLA decode kernel (mla_decode_sm90.cuh): the TMA thread's loop
// over a CTA's tiles and, for FP8 KV, the converter warps' loop (mla_decode_sm90_fp8.cuh). Both
// walk the tiles as the consumers do: tile i in stage i & 1, sequences in order, empty ones
// skipped.
namespace helix::cuda::mla_sm90 {

// FP8: converter warp cw's loop over the CTA's tiles (the same walk as the producer's). It widens
// row groups kWg0Groups..15 of tile a of each consumer pair (even within its sequence piece; WG0
// widens the others); tile b (odd) WG1 widens itself,
// and the converter warps only wait for its raw chunks and arrive on its full barriers. Lane l of
// warps 0 and 1 also fetches the token scale of row 32 cw + l (0 past the end) as a tile starts
// and stores it in the stage's scale slot once the tile's raw chunk 3 has landed (the raw loads
// wait for the V_L part, after the last reader of that slot); the full barriers the warp arrives
// on after that publish it to the consumers.
__device__ __forceinline__ void fp8_converter(const Args& a, uint8_t* smem, const int* s_cum,
                                              uint32_t bar_base, uint32_t raw_base, int cw,
                                              int lane, int n_tiles, int cb, int ck) {
  float* s_sc = reinterpret_cast<float*>(smem + kScaleOff);
  const int sr = 32 * cw + lane;  // the row whose scale this lane fetches (warps 0, 1)
  int ck0 = ck;                   // the first tile of the current sequence piece (pairs from it)
  for (int i = 0; i < n_tiles; ++i) {
    // 4-row groups to widen: kWg0Groups.. of a tile a (WG0 widens the others), none of a tile b
    const int g_end = (ck - ck0) & 1 ? 0 : 16;
    const int s = i & 1;
    const uint32_t full_par = (i >> 1) & 1, empty_par = ((i >> 1) - 1) & 1;
    const int len = seq_tokens(a, cb);
    const int tok0 = ck * kTile;
    const int valid = tile_valid(len, tok0);
    float scale = 0.f;
    if (sr < valid) {
      const int tok = tok0 + sr, bs = a.block_size;
      const int64_t prow =
          static_cast<int64_t>(
              __ldg(a.block_table + static_cast<int64_t>(cb) * a.max_blocks_per_seq + tok / bs)) *
              bs +
          tok % bs;
      scale = __ldg(reinterpret_cast<const float*>(a.kv_pool + prow * kFp8RowBytes + kFp8ScaleOff));
    }
    convert_tile<kConvGroups>(
        smem + kKvOff + s * kStageBytes, kWg0Groups + cw, kConvWarps, g_end, lane, valid,
        [&](int c) {
          mbar_wait(raw_base + 8 * (4 * s + c), full_par);
          if (c == 3 && sr < kTile) s_sc[s * kTile + sr] = scale * kFp8ScaleBias;
        },
        [&] {
          if (i >= kStages)
            mbar_wait(bar_base + 8 * (kStages * kChunks + 3 * s + kPartR), empty_par);
        },
        [&](int c) {
          mbar_arrive(bar_base + 8 * (s * kChunks + 2 * c));
          mbar_arrive(bar_base + 8 * (s * kChunks + 2 * c + 1));
        });
    if (++ck >= (len + kTile - 1) / kTile) {
      ck = 0;
      ck0 = 0;
      ++cb;
      while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
    }
  }
}

// The TMA thread (warp 8, lane 0): each tile's pool rows from the block table (one box per
// block piece of up to 64 tokens), then its chunks, each part of a stage once its readers
// released it (parities of the stage's previous fill).
template <bool kFp8>
__device__ __forceinline__ void producer(const CUtensorMap& kv_map, const Args& a, uint8_t* smem,
                                         const int* s_cum, uint32_t bar_base, uint32_t raw_base,
                                         int n_tiles, int cb, int ck) {
  auto full_bar = [&](int s) { return bar_base + 8 * (s * kChunks); };  // + 8 c
  auto empty_bar = [&](int s, int part) {
    return bar_base + 8 * (kStages * kChunks + 3 * s + part);
  };
  const int bs = a.block_size;
  const int box = bs < kTile ? bs : kTile;  // rows per TMA box (the map's box height)
  const uint32_t kv_smem = smem_u32(smem + kKvOff);
  for (int i = 0; i < n_tiles; ++i) {
    const int s = i & 1;
    const int len = seq_tokens(a, cb);
    const int tok0 = ck * kTile;
    const int valid = tile_valid(len, tok0);
    const int nbox = (valid + box - 1) / box;
    int rows[kTile / 16];  // block sizes >= 16
    const int32_t* table = a.block_table + static_cast<int64_t>(cb) * a.max_blocks_per_seq;
#pragma unroll
    for (int x = 0; x < kTile / 16; ++x) {
      const int tok = tok0 + x * box;
      rows[x] = x < nbox ? table[tok / bs] * bs + tok % bs : 0;
    }
    const uint32_t dst = kv_smem + s * kStageBytes;
    const uint32_t parity = ((i >> 1) - 1) & 1;
    if constexpr (kFp8) {
      // k_pe (bytes 512..639) into the rope slot, then the 4 raw e4m3 chunks into slots 0..3
      // (the V_L part; widened in place, see mla_decode_sm90_fp8.cuh), in the order they are
      // widened (3 first). The token scales are the converter warps' (they once were 64 cp.async
      // of this thread per tile, completing on raw chunk 3's barrier: 1.3x slower at 8 x 16K).
      for (int cc = 0; cc < 5; ++cc) {
        if (i >= kStages && cc < 2) mbar_wait(empty_bar(s, cc == 0 ? kPartRope : kPartL), parity);
        const int rc = 4 - cc;  // raw chunk (cc >= 1)
        const int slot = cc == 0 ? kChunks - 1 : rc;
        const uint32_t fb = cc == 0 ? full_bar(s) + 8 * (kChunks - 1) : raw_base + 8 * (4 * s + rc);
        mbar_expect_tx(fb, static_cast<uint32_t>(nbox * box * 128));
#pragma unroll
        for (int x = 0; x < kTile / 16; ++x)
          if (x < nbox)
            tma_load_2d(dst + slot * kChunkBytes + x * box * 128, &kv_map, cc == 0 ? kL : 128 * rc,
                        rows[x], fb);
      }
    } else {
      // Rope chunk first (free first, read first), then V_L, then V_R. A part's barrier wait
      // also means this CTA's full barriers of those chunks are past the stage's last fill.
      for (int cc = 0; cc < kChunks; ++cc) {
        const int c = cc == 0 ? kChunks - 1 : cc - 1;
        const int part = cc == 0 ? kPartRope : cc <= 4 ? kPartL : kPartR;
        if (i >= kStages && (cc == 0 || cc == 1 || cc == 5)) mbar_wait(empty_bar(s, part), parity);
        const uint32_t fb = full_bar(s) + 8 * c;
        mbar_expect_tx(fb, static_cast<uint32_t>(nbox * box * 128));
#pragma unroll
        for (int x = 0; x < kTile / 16; ++x)
          if (x < nbox)
            tma_load_2d(dst + c * kChunkBytes + x * box * 128, &kv_map, 64 * c, rows[x], fb);
      }
    }
    if (++ck >= (len + kTile - 1) / kTile) {
      ck = 0;
      ++cb;
      while (cb < a.batch && s_cum[cb + 1] == s_cum[cb]) ++cb;
    }
  }
}

}  // namespace helix::cuda::mla_sm90
