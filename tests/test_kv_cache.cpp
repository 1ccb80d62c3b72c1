// KvCache: round-robin block ownership over CP ranks (DESIGN.md's example simulated with one
// KvCache per rank), local block pointers and lengths, per-layer row round trips, freeing, and
// the user-facing errors. The reference is the ownership rule itself: block b on rank b % cp.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "kv/kv_cache.h"

namespace helix {
namespace {

KvCacheConfig make_cfg(int cp, int rank, int tpb, int max_blocks, int layers = 2, int width = 6) {
  KvCacheConfig c;
  c.num_layers = layers;
  c.row_width = width;
  c.tokens_per_block = tpb;
  c.max_blocks = max_blocks;
  c.cp_size = cp;
  c.cp_rank = rank;
  return c;
}

// The global positions a rank holds for a request of length len: those whose block b has
// b % cp == rank, as sorted [begin, end) ranges.
std::vector<std::pair<int, int>> expected_ranges(int len, int tpb, int cp, int rank) {
  std::vector<std::pair<int, int>> r;
  for (int b = rank; b * tpb < len; b += cp) r.push_back({b * tpb, std::min(len, (b + 1) * tpb)});
  return r;
}

// A value that identifies (layer, pos, column).
float tag(int layer, int pos, int col) {
  return layer * 100000.0f + pos * 10.0f + col;
}

TEST(KvCache, OwnershipIsRoundRobinOverBlocks) {
  for (int cp : {1, 2, 3, 4}) {
    for (int tpb : {1, 16, 64}) {
      KvCache kv(make_cfg(cp, 0, tpb, 1));
      for (int pos = 0; pos < 1000; ++pos) {
        ASSERT_EQ(kv.owner_of(pos), (pos / tpb) % cp) << "cp " << cp << " tpb " << tpb;
        ASSERT_EQ(kv.owns(pos), (pos / tpb) % cp == 0);
      }
    }
  }
}

// DESIGN.md: ISL 400, 100 tokens per block, cp 4. After prefill rank r holds [100r, 100r+100);
// after 400 decode steps rank 0 holds [0,100) and [400,500), rank 1 [100,200) and [500,600), ...
TEST(KvCache, DesignExampleIsl400Cp4) {
  const int cp = 4, tpb = 100, layers = 2, width = 5;
  std::vector<KvCache> ranks;
  for (int r = 0; r < cp; ++r) ranks.emplace_back(make_cfg(cp, r, tpb, 4, layers, width));
  const int64_t id = 42;
  for (auto& kv : ranks) kv.add_request(id);

  auto append_and_write = [&](int pos) {
    int owners = 0;
    for (auto& kv : ranks) {
      kv.append(id, pos);
      if (kv.owns(pos)) {
        ++owners;
        for (int l = 0; l < layers; ++l) {
          float* row = kv.row(l, id, pos);
          for (int c = 0; c < width; ++c) row[c] = tag(l, pos, c);
        }
      }
    }
    ASSERT_EQ(owners, 1) << "position " << pos << " must have exactly one active rank";
  };
  // What rank r holds, reconstructed from local_blocks() (contents identify the positions).
  auto held = [&](int r, int layer) {
    std::vector<const float*> ptrs;
    std::vector<int> lens;
    ranks[r].local_blocks(layer, id, ptrs, lens);
    std::vector<std::pair<int, int>> out;
    for (size_t b = 0; b < ptrs.size(); ++b) {
      const int first = static_cast<int>((ptrs[b][0] - tag(layer, 0, 0)) / 10.0f);
      for (int t = 0; t < lens[b]; ++t)
        for (int c = 0; c < width; ++c)
          EXPECT_EQ(ptrs[b][t * width + c], tag(layer, first + t, c))
              << "rank " << r << " block " << b << " token " << t;
      out.push_back({first, first + lens[b]});
    }
    return out;
  };

  for (int pos = 0; pos < 400; ++pos) append_and_write(pos);  // prefill
  for (int r = 0; r < cp; ++r) {
    EXPECT_EQ(ranks[r].global_len(id), 400);
    EXPECT_EQ(ranks[r].local_tokens(id), 100) << r;
    EXPECT_EQ(ranks[r].local_blocks(id), 1) << r;
    for (int l = 0; l < layers; ++l)
      EXPECT_EQ(held(r, l), (std::vector<std::pair<int, int>>{{100 * r, 100 * r + 100}})) << r;
  }
  for (int pos = 400; pos < 800; ++pos) append_and_write(pos);  // 400 decode steps
  for (int r = 0; r < cp; ++r) {
    EXPECT_EQ(ranks[r].global_len(id), 800);
    EXPECT_EQ(ranks[r].local_tokens(id), 200) << r;
    EXPECT_EQ(ranks[r].local_blocks(id), 2) << r;
    EXPECT_EQ(ranks[r].used_blocks(), 2) << r;
    for (int l = 0; l < layers; ++l)
      EXPECT_EQ(held(r, l), (std::vector<std::pair<int, int>>{{100 * r, 100 * r + 100},
                                                              {400 + 100 * r, 500 + 100 * r}}))
          << "rank " << r << " layer " << l;
  }
}

// Many lengths, block sizes and CP sizes: each rank's blocks, lengths and token counts follow
// the rule; the ranks together hold every position exactly once.
TEST(KvCache, LocalBlocksFollowTheRuleAtEveryLength) {
  for (int cp : {1, 2, 3, 5}) {
    for (int tpb : {1, 4, 7}) {
      const int total = 60;
      std::vector<KvCache> ranks;
      for (int r = 0; r < cp; ++r) ranks.emplace_back(make_cfg(cp, r, tpb, 64, 1, 3));
      for (auto& kv : ranks) kv.add_request(7);
      for (int pos = 0; pos < total; ++pos) {
        for (auto& kv : ranks) {
          kv.append(7, pos);
          if (kv.owns(pos)) kv.row(0, 7, pos)[0] = static_cast<float>(pos);
        }
        const int len = pos + 1;
        std::multiset<int> all;
        for (int r = 0; r < cp; ++r) {
          std::vector<const float*> ptrs;
          std::vector<int> lens;
          ranks[r].local_blocks(0, 7, ptrs, lens);
          auto want = expected_ranges(len, tpb, cp, r);
          ASSERT_EQ(ptrs.size(), want.size()) << "cp " << cp << " tpb " << tpb << " len " << len;
          ASSERT_EQ(lens.size(), want.size());
          int tokens = 0;
          for (size_t b = 0; b < want.size(); ++b) {
            ASSERT_EQ(lens[b], want[b].second - want[b].first);
            for (int t = 0; t < lens[b]; ++t) {
              ASSERT_EQ(ptrs[b][t * 3], static_cast<float>(want[b].first + t));
              all.insert(want[b].first + t);
            }
            tokens += lens[b];
          }
          ASSERT_EQ(ranks[r].local_tokens(7), tokens);
          ASSERT_EQ(ranks[r].local_blocks(7), static_cast<int>(want.size()));
        }
        ASSERT_EQ(static_cast<int>(all.size()), len);
        ASSERT_EQ(static_cast<int>(std::set<int>(all.begin(), all.end()).size()), len);
      }
    }
  }
}

TEST(KvCache, RowsRoundTripPerLayerAndRequest) {
  const int layers = 3, width = 7, tpb = 4;
  KvCache kv(make_cfg(1, 0, tpb, 16, layers, width));
  kv.add_request(1);
  kv.add_request(2);
  // Interleave two requests so their blocks alternate in the pool.
  for (int pos = 0; pos < 13; ++pos) {
    for (int64_t id : {1, 2}) {
      kv.append(id, pos);
      for (int l = 0; l < layers; ++l) {
        float* row = kv.row(l, id, pos);
        for (int c = 0; c < width; ++c) row[c] = tag(l, pos, c) + (id == 2 ? 0.5f : 0.0f);
      }
    }
  }
  for (int64_t id : {1, 2})
    for (int l = 0; l < layers; ++l) {
      for (int pos = 0; pos < 13; ++pos)
        for (int c = 0; c < width; ++c)
          ASSERT_EQ(kv.row(l, id, pos)[c], tag(l, pos, c) + (id == 2 ? 0.5f : 0.0f))
              << "id " << id << " layer " << l << " pos " << pos;
      std::vector<const float*> ptrs;
      std::vector<int> lens;
      kv.local_blocks(l, id, ptrs, lens);
      EXPECT_EQ(lens, (std::vector<int>{4, 4, 4, 1}));
      for (size_t b = 0; b < ptrs.size(); ++b)
        for (int t = 0; t < lens[b]; ++t) {
          // local_blocks agrees with row(): same memory.
          EXPECT_EQ(ptrs[b] + t * width, kv.row(l, id, static_cast<int>(b) * tpb + t));
        }
    }
  EXPECT_EQ(kv.used_blocks(), 8);
  EXPECT_EQ(kv.free_blocks(), 8);
}

TEST(KvCache, FreeRequestReturnsBlocks) {
  const int cp = 2;
  KvCache kv(make_cfg(cp, 1, 4, 5));
  EXPECT_EQ(kv.free_blocks(), 5);
  kv.add_request(3);
  for (int pos = 0; pos < 40; ++pos) kv.append(3, pos);  // 10 blocks, 5 on rank 1
  EXPECT_EQ(kv.used_blocks(), 5);
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_TRUE(kv.has_request(3));
  kv.free_request(3);
  EXPECT_FALSE(kv.has_request(3));
  EXPECT_EQ(kv.free_blocks(), 5);
  EXPECT_EQ(kv.used_blocks(), 0);
  kv.free_request(3);  // freeing twice is harmless
  EXPECT_EQ(kv.free_blocks(), 5);
  // The returned blocks serve a new request in full.
  kv.add_request(4);
  for (int pos = 0; pos < 40; ++pos) kv.append(4, pos);
  EXPECT_EQ(kv.local_tokens(4), 20);
  EXPECT_EQ(kv.free_blocks(), 0);
}

TEST(KvCache, OutOfMemoryIsAHelixError) {
  KvCache kv(make_cfg(2, 0, 4, 2));
  kv.add_request(1);
  // Rank 0 owns blocks 0 and 2 (positions 0-3, 8-11); block 4 (position 16) needs a third.
  for (int pos = 0; pos < 16; ++pos) kv.append(1, pos);
  EXPECT_EQ(kv.free_blocks(), 0);
  try {
    kv.append(1, 16);
    ADD_FAILURE() << "no error when the pool is exhausted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache out of memory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(kv.global_len(1), 16) << "a failed append must not grow the request";
  // A rank that does not own the position never allocates and never fails.
  KvCache other(make_cfg(2, 1, 4, 0));
  other.add_request(1);
  for (int pos = 0; pos < 4; ++pos) other.append(1, pos);
  EXPECT_THROW(other.append(1, 4), Error);  // block 1 belongs to rank 1: needs a block
}

TEST(KvCache, MisuseErrors) {
  KvCache kv(make_cfg(1, 0, 4, 4));
  kv.add_request(1);
  kv.append(1, 0);
  kv.append(1, 1);
  try {
    kv.append(1, 3);  // skips position 2
    ADD_FAILURE() << "no error for an out-of-order append";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of order"), std::string::npos) << e.what();
  }
  EXPECT_THROW(kv.append(1, 1), Error);  // repeats position 1
  EXPECT_EQ(kv.global_len(1), 2);        // failed appends change nothing
  kv.append(1, 2);
  EXPECT_THROW(kv.append(9, 0), Error);    // unknown request
  EXPECT_THROW(kv.add_request(1), Error);  // duplicate request
  EXPECT_THROW(kv.row(0, 1, 5), Error);    // not appended yet
  KvCache r1(make_cfg(2, 1, 4, 4));
  r1.add_request(1);
  r1.append(1, 0);
  EXPECT_THROW(r1.row(0, 1, 0), Error);                // position 0 lives on rank 0
  EXPECT_THROW(KvCache(make_cfg(2, 2, 4, 4)), Error);  // rank outside the CP group
  EXPECT_THROW(KvCache(make_cfg(1, 0, 0, 4)), Error);  // zero tokens per block
}

}  // namespace
}  // namespace helix

namespace helix {
namespace {

TEST(KvCacheNeeds, BlocksNeededCountsOnlyNewOwnedBlocks) {
  KvCacheConfig c;
  c.num_layers = 1;
  c.row_width = 4;
  c.tokens_per_block = 4;
  c.max_blocks = 8;
  c.cp_size = 2;
  c.cp_rank = 1;
  KvCache kv(c);
  kv.add_request(0);
  // Positions 0..15 cover blocks 0..3; rank 1 owns blocks 1 and 3.
  EXPECT_EQ(kv.blocks_needed(0, 0, 16), 2);
  EXPECT_EQ(kv.blocks_needed(0, 0, 4), 0);
  for (int p = 0; p < 6; ++p) kv.append(0, p);  // allocates block 1
  EXPECT_EQ(kv.blocks_needed(0, 6, 2), 0);      // still block 1
  EXPECT_EQ(kv.blocks_needed(0, 6, 10), 1);     // block 3 only
}

}  // namespace
}  // namespace helix
