#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "parallel/mapping.h"

namespace helix {
namespace {

TEST(Mapping, CoordinatesTpInnermost) {
  const int tp = 2, cp = 4;
  for (int r = 0; r < tp * cp; ++r) {
    Mapping m(tp * cp, r, tp, cp, false);
    EXPECT_EQ(m.tp_rank(), r % tp);
    EXPECT_EQ(m.cp_rank(), r / tp);
    EXPECT_EQ(m.cp_rank() * tp + m.tp_rank(), r);
    EXPECT_EQ(m.ffn_size(), 8);
    EXPECT_EQ(m.ffn_rank(), r);
  }
  Mapping m(8, 5, 2, 4, true);
  EXPECT_EQ(m.tp_rank(), 1);
  EXPECT_EQ(m.cp_rank(), 2);
}

TEST(Mapping, DefaultIsSingleRank) {
  Mapping m;
  EXPECT_EQ(m.world_size, 1);
  EXPECT_EQ(m.tp_rank(), 0);
  EXPECT_EQ(m.cp_rank(), 0);
  EXPECT_EQ(m.ffn_size(), 1);
  EXPECT_NO_THROW(m.validate(128, 256));
}

TEST(Mapping, ConstructorRejectsBadShapes) {
  EXPECT_THROW(Mapping(4, 0, 2, 3, false), Error);   // world != tp * cp
  EXPECT_THROW(Mapping(4, 4, 2, 2, false), Error);   // rank out of range
  EXPECT_THROW(Mapping(4, -1, 2, 2, false), Error);  // negative rank
  EXPECT_THROW(Mapping(0, 0, 0, 1, false), Error);   // tp < 1
  EXPECT_THROW(Mapping(0, 0, 1, 0, false), Error);   // cp < 1
  EXPECT_NO_THROW(Mapping(6, 5, 3, 2, false));
  try {
    Mapping(4, 0, 2, 3, false);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--tp"), std::string::npos) << msg;
  }
}

TEST(Mapping, ValidateHeads) {
  Mapping m(6, 0, 3, 2, false);
  EXPECT_NO_THROW(m.validate(12, 7));  // experts unchecked under TP
  try {
    m.validate(16, 8);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "num_attention_heads (16) is not divisible by --tp 3");
  }
}

TEST(Mapping, ValidateExpertsUnderEp) {
  Mapping ep(8, 3, 2, 4, true);
  EXPECT_NO_THROW(ep.validate(16, 256));
  EXPECT_THROW(ep.validate(16, 12), Error);
  Mapping tp(8, 3, 2, 4, false);
  EXPECT_NO_THROW(tp.validate(16, 12));
  try {
    ep.validate(16, 12);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("12"), std::string::npos);
  }
}

TEST(Mapping, Str) {
  const std::string s = Mapping(8, 5, 2, 4, true).str();
  EXPECT_NE(s.find("tp 2"), std::string::npos) << s;
  EXPECT_NE(s.find("cp 4"), std::string::npos) << s;
  EXPECT_NE(s.find("rank 5"), std::string::npos) << s;
}

TEST(SplitRange, EvenAndUneven) {
  for (int n : {0, 1, 2, 3, 7, 10, 16, 128, 129}) {
    for (int parts : {1, 2, 3, 4, 5, 8, 17}) {
      int total = 0, prev_end = 0, lo = n + 1, hi = -1;
      for (int i = 0; i < parts; ++i) {
        auto [b, e] = split_range(n, parts, i);
        EXPECT_EQ(b, prev_end) << n << " " << parts << " " << i;
        EXPECT_LE(b, e);
        prev_end = e;
        total += e - b;
        lo = std::min(lo, e - b);
        hi = std::max(hi, e - b);
        // The first n % parts parts are the longer ones.
        EXPECT_EQ(e - b, n / parts + (i < n % parts ? 1 : 0));
      }
      EXPECT_EQ(total, n);
      EXPECT_EQ(prev_end, n);
      EXPECT_LE(hi - lo, 1);
    }
  }
}

TEST(SplitRange, EmptyPartsWhenMorePartsThanItems) {
  // 2 heads over cp 3: ranks 0 and 1 own one head, rank 2 none.
  EXPECT_EQ(split_range(2, 3, 0), std::make_pair(0, 1));
  EXPECT_EQ(split_range(2, 3, 1), std::make_pair(1, 2));
  EXPECT_EQ(split_range(2, 3, 2), std::make_pair(2, 2));
  EXPECT_EQ(split_range(10, 4, 0), std::make_pair(0, 3));
  EXPECT_EQ(split_range(10, 4, 3), std::make_pair(8, 10));
  EXPECT_THROW(split_range(4, 0, 0), Error);
  EXPECT_THROW(split_range(4, 2, 2), Error);
}

}  // namespace
}  // namespace helix

namespace helix {
namespace {

// ep wider than tp*cp: the attention grid is replicated dp = world / (tp*cp) times.
TEST(MappingDp, ReplicatedAttentionGrids) {
  EXPECT_THROW(Mapping(8, 0, 2, 2, false), Error);  // wider than tp*cp without EP
  EXPECT_THROW(Mapping(6, 0, 2, 2, true), Error);   // not a multiple of tp*cp
  for (int r = 0; r < 8; ++r) {
    Mapping m(8, r, 2, 2, true);
    EXPECT_EQ(m.dp(), 2);
    EXPECT_EQ(m.tp_rank(), r % 2);
    EXPECT_EQ(m.cp_rank(), (r / 2) % 2);
    EXPECT_EQ(m.dp_rank(), r / 4);
    EXPECT_EQ(m.ffn_size(), 8);
    EXPECT_EQ(m.attn_size(), 4);
  }
  Mapping m(8, 0, 2, 2, true);
  EXPECT_NO_THROW(m.validate(4, 16));
  EXPECT_THROW(m.validate(4, 12), Error);  // 12 experts over 8 EP ranks
}

}  // namespace
}  // namespace helix
