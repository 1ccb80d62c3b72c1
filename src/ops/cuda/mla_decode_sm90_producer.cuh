#pragma once
// The producer side of the sm90 MLA decode kernel (mla_decode_sm90.cuh): the TMA thread's loop
// over a CTA's tiles and, for FP8 KV, the converter warps' loop (mla_decode_sm90_fp8.cuh). Both
// walk the tiles as the consumers do: tile i in stage i & 1, sequences in order, empty ones
// skipped.
namespace helix::cuda::mla_sm90 {

#ifdef HELIX_SM90_FP8_SCALE_PROD
constexpr bool kScalesByProducer = true;
#else
constexpr bool kScalesByProducer = false;
#endif

// FP8: converter warp cw's loop over the CTA's tiles (the same walk as the producer's). Lane l of
// warps 0 and 1 also fetches the token scale of row 32 cw + l (0 past the end) as the tile starts
// and stores it in the stage's scale slot once the tile's raw chunk 3 has landed (the raw loads
// wait for the V_L part, the last reader of that slot); the full barriers the warp arrives on
// after that publish it to the consumers.
__device__ __forceinline__ void fp8_converter(const Args& a, uint8_t* smem, const int* s_cum,
                                              uint32_t bar_base, uint32_t raw_base, int cw,
                                              int lane, int n_tiles, int cb, int ck) {
  float* s_sc = reinterpret_cast<float*>(smem + kScaleOff);
  const int sr = 32 * cw + lane;  // the row whose scale this lane fetches (warps 0, 1)
  int ck0 = ck;                   // the first tile of the current sequence piece (pairs from it)
  for (int i = 0; i < n_tiles; ++i) {
    // Tile b of a consumer pair (odd within its piece): WG1 widens groups kWg1Group.. itself.
    const int g_end = kWg1Convert && ((ck - ck0) & 1) ? kWg1Group : 16;
    const int s = i & 1;
    const uint32_t full_par = (i >> 1) & 1, empty_par = ((i >> 1) - 1) & 1;
    const int len = seq_tokens(a, cb);
    const int tok0 = ck * kTile;
    const int valid = tile_valid(len, tok0);
    float scale = 0.f;
    if (!kScalesByProducer && sr < valid) {
      const int tok = tok0 + sr, bs = a.block_size;
      const int64_t prow =
          static_cast<int64_t>(
              __ldg(a.block_table + static_cast<int64_t>(cb) * a.max_blocks_per_seq + tok / bs)) *
              bs +
          tok % bs;
      scale = __ldg(reinterpret_cast<const float*>(a.kv_pool + prow * kFp8RowBytes + kFp8ScaleOff));
    }
    convert_tile(
        smem + kKvOff + s * kStageBytes, cw, kConvWarps, g_end, lane, valid,
        [&](int c) {
          mbar_wait(raw_base + 8 * (4 * s + c), full_par);
          if (!kScalesByProducer && c == 3 && sr < kTile) s_sc[s * kTile + sr] = scale;
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
#ifdef HELIX_SM90_FP8_L2PF
  // Measurement variant: the FP8 tile HELIX_SM90_FP8_L2PF ahead is prefetched into L2 (TMA
  // prefetch of its boxes) before this tile's loads wait for their stage.
  constexpr int kAhead = HELIX_SM90_FP8_L2PF;
  int pcb = cb, pck = ck;
  auto advance = [&](int& b, int& k) {
    const int l = seq_tokens(a, b);
    if (++k >= (l + kTile - 1) / kTile) {
      k = 0;
      ++b;
      while (b < a.batch && s_cum[b + 1] == s_cum[b]) ++b;
    }
  };
  for (int x = 0; x < kAhead && x < n_tiles; ++x) advance(pcb, pck);
#endif
  for (int i = 0; i < n_tiles; ++i) {
    const int s = i & 1;
#ifdef HELIX_SM90_FP8_L2PF
    if (kFp8 && i + kAhead < n_tiles) {
      const int pl = seq_tokens(a, pcb), pt0 = pck * kTile;
      const int pn = (tile_valid(pl, pt0) + box - 1) / box;
      const int32_t* pt = a.block_table + static_cast<int64_t>(pcb) * a.max_blocks_per_seq;
      for (int x = 0; x < pn; ++x) {
        const int tok = pt0 + x * box;
        const int row = pt[tok / bs] * bs + tok % bs;
#pragma unroll
        for (int c = 0; c < 6; ++c)
          asm volatile(
              "cp.async.bulk.prefetch.tensor.2d.L2.global.tile [%0, {%1, %2}];\n" ::"l"(
                  reinterpret_cast<uint64_t>(&kv_map)),
              "r"(128 * c), "r"(row)
              : "memory");
      }
      advance(pcb, pck);
    }
#endif
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
#ifdef HELIX_SM90_FP8_PROD_OLD
      constexpr bool kOld = true;
#else
      constexpr bool kOld = false;
#endif
      // k_pe (bytes 512..639) into the rope slot, then the 4 raw e4m3 chunks into slots 0..3
      // (the V_L part; the converters widen them, see mla_decode_sm90_fp8.cuh), in the order the
      // converters take them (3 first). The token scales go last, after the TMA of raw chunks
      // 3..1 is under way: 64 cp.async of one thread, which only the consumers read, after the
      // tile's last latent chunk (raw 0), whose barrier therefore also waits for them.
      for (int cc = 0; cc < 5; ++cc) {
        if (i >= kStages && cc < 2) mbar_wait(empty_bar(s, cc == 0 ? kPartRope : kPartL), parity);
        const int rc = kOld ? cc - 1 : 4 - cc;  // raw chunk (cc >= 1)
        const int sc_bar = kOld ? 3 : 0;         // the raw barrier the scales complete on
        if (kScalesByProducer && cc >= 1 && rc == sc_bar) {
          // The tile's token scales (0 past the end) into this stage's slot (last read
          // before the V_L part was released); the arrive goes before that barrier's expect_tx.
          const uint32_t sc_dst = smem_u32(smem + kScaleOff) + s * kTile * 4;
#pragma unroll
          for (int x = 0; x < kTile / 16; ++x) {
            if (x * box >= kTile) break;
            for (int rr = 0; rr < box; ++rr) {
              const int r = x * box + rr;
              const int64_t prow = r < valid ? static_cast<int64_t>(rows[x]) + rr : 0;
              cp_async4(sc_dst + 4 * r, a.kv_pool + prow * kFp8RowBytes + kFp8ScaleOff,
                        r < valid ? 4u : 0u);
            }
          }
          cp_async_mbar_arrive(raw_base + 8 * (4 * s + sc_bar));
        }
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
