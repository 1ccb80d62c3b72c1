#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "parallel/comm.h"
#include "parallel/mapping.h"

namespace helix {
namespace {

// A distinct, order-sensitive value per (rank, element): sums in different orders differ in bits.
float val(int rank, size_t e) {
  return float(rank + 1) * 0.1f + std::sin(float(e) * 0.37f + float(rank)) * 1e-3f * float(e + 1);
}

// Sum over ranks 0..p-1 in rank order, the order the communicators promise.
std::vector<float> ordered_sum(const std::vector<int>& ranks, size_t n,
                               float (*f)(int, size_t) = val, size_t offset = 0) {
  std::vector<float> out(n);
  for (size_t e = 0; e < n; ++e) {
    float acc = f(ranks[0], offset + e);
    for (size_t k = 1; k < ranks.size(); ++k) acc += f(ranks[k], offset + e);
    out[e] = acc;
  }
  return out;
}

bool same_bits(const float* a, const float* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(float)) == 0;
}

std::vector<int> iota_ranks(int p) {
  std::vector<int> r(p);
  for (int i = 0; i < p; ++i) r[i] = i;
  return r;
}

// Collects per-rank failures (gtest assertions are not meant for worker threads).
struct Failures {
  std::mutex mu;
  std::vector<std::string> msgs;
  void add(const std::string& m) {
    std::lock_guard lk(mu);
    if (msgs.size() < 20) msgs.push_back(m);
  }
};

#define RANK_EXPECT(fails, cond, msg)                                       \
  do {                                                                      \
    if (!(cond)) (fails).add(std::string(#cond) + ": " + std::string(msg)); \
  } while (0)

class CommWorld : public ::testing::TestWithParam<int> {};

TEST_P(CommWorld, AllReduceMatchesOrderedSumBitwise) {
  const int p = GetParam();
  Failures fails;
  for (size_t n : {size_t(0), size_t(1), size_t(3), size_t(1000), size_t(4099)}) {
    std::vector<std::vector<float>> results(p);
    run_threads(p, [&](Communicator& c) {
      RANK_EXPECT(fails, c.size() == p, "size");
      std::vector<float> d(n);
      for (size_t e = 0; e < n; ++e) d[e] = val(c.rank(), e);
      c.all_reduce_sum(d.data(), n);
      results[c.rank()] = d;
    });
    const auto expected = ordered_sum(iota_ranks(p), n);
    for (int r = 0; r < p; ++r) {
      ASSERT_EQ(results[r].size(), n);
      EXPECT_TRUE(same_bits(results[r].data(), expected.data(), n)) << "rank " << r << " n " << n;
    }
  }
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, AllGather) {
  const int p = GetParam();
  const size_t n = 37;
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    std::vector<float> send(n), recv(n * p, -1.f);
    for (size_t e = 0; e < n; ++e) send[e] = val(c.rank(), e);
    c.all_gather(send.data(), recv.data(), n);
    for (int r = 0; r < p; ++r)
      for (size_t e = 0; e < n; ++e)
        RANK_EXPECT(fails, recv[r * n + e] == val(r, e), "rank " + std::to_string(c.rank()));
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, ReduceScatter) {
  const int p = GetParam();
  const size_t n = 53;
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    std::vector<float> send(n * p), recv(n, -1.f);
    for (size_t e = 0; e < n * p; ++e) send[e] = val(c.rank(), e);
    c.reduce_scatter_sum(send.data(), recv.data(), n);
    const auto expected = ordered_sum(iota_ranks(p), n, val, size_t(c.rank()) * n);
    RANK_EXPECT(fails, same_bits(recv.data(), expected.data(), n),
                "rank " + std::to_string(c.rank()));
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, AllToAll) {
  const int p = GetParam();
  const size_t n = 11;
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    const int me = c.rank();
    // Block j of rank i holds 10000 i + 100 j + k.
    std::vector<float> send(n * p), recv(n * p, -1.f);
    for (int j = 0; j < p; ++j)
      for (size_t k = 0; k < n; ++k) send[j * n + k] = float(10000 * me + 100 * j + int(k));
    c.all_to_all(send.data(), recv.data(), n);
    for (int i = 0; i < p; ++i)
      for (size_t k = 0; k < n; ++k)
        RANK_EXPECT(fails, recv[i * n + k] == float(10000 * i + 100 * me + int(k)),
                    "rank " + std::to_string(me));
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

// Rank i sends (i + 2 j + 1) % 4 floats to rank j: uneven, with zero counts.
size_t v_count(int from, int to) {
  return size_t((from + 2 * to + 1) % 4);
}

TEST_P(CommWorld, AllToAllVUnevenAndZeroCounts) {
  const int p = GetParam();
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    const int me = c.rank();
    std::vector<size_t> sc(p), rc(p);
    size_t ns = 0, nr = 0;
    for (int j = 0; j < p; ++j) {
      sc[j] = v_count(me, j);
      rc[j] = v_count(j, me);
      ns += sc[j];
      nr += rc[j];
    }
    std::vector<float> send(ns), recv(nr + 1, -7.f);
    size_t o = 0;
    for (int j = 0; j < p; ++j)
      for (size_t k = 0; k < sc[j]; ++k) send[o++] = float(10000 * me + 100 * j + int(k));
    c.all_to_all_v(send.data(), sc, recv.data(), rc);
    o = 0;
    for (int i = 0; i < p; ++i)
      for (size_t k = 0; k < rc[i]; ++k)
        RANK_EXPECT(fails, recv[o++] == float(10000 * i + 100 * me + int(k)),
                    "rank " + std::to_string(me));
    RANK_EXPECT(fails, recv[nr] == -7.f, "wrote past the end");
    // All zero: a no-op that must not touch recv.
    std::vector<size_t> zeros(p, 0);
    c.all_to_all_v(nullptr, zeros, recv.data(), zeros);
    RANK_EXPECT(fails, recv[nr] == -7.f, "zero counts wrote");
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, BroadcastFromEveryRoot) {
  const int p = GetParam();
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    for (int root = 0; root < p; ++root) {
      std::vector<unsigned char> buf(13, 0);
      if (c.rank() == root)
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = (unsigned char)(root * 16 + i);
      c.broadcast_bytes(buf.data(), buf.size(), root);
      for (size_t i = 0; i < buf.size(); ++i)
        RANK_EXPECT(fails, buf[i] == (unsigned char)(root * 16 + i),
                    "rank " + std::to_string(c.rank()) + " root " + std::to_string(root));
    }
    c.barrier();
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

// Every tp x cp factorisation of the world: TP and CP groups from the Mapping conventions.
TEST_P(CommWorld, SplitIntoTpAndCpGroups) {
  const int p = GetParam();
  for (int tp = 1; tp <= p; ++tp) {
    if (p % tp != 0) continue;
    const int cp = p / tp;
    Failures fails;
    run_threads(p, [&](Communicator& world) {
      Mapping m(p, world.rank(), tp, cp, false);
      auto tpc = world.split(m.cp_rank(), m.tp_rank());
      auto cpc = world.split(m.tp_rank(), m.cp_rank());
      RANK_EXPECT(fails, tpc->size() == tp && tpc->rank() == m.tp_rank(), m.str());
      RANK_EXPECT(fails, cpc->size() == cp && cpc->rank() == m.cp_rank(), m.str());
      // all_reduce inside the TP group: the sum over world ranks of my cp row, in tp order.
      const size_t n = 29;
      std::vector<float> d(n);
      for (size_t e = 0; e < n; ++e) d[e] = val(world.rank(), e);
      tpc->all_reduce_sum(d.data(), n);
      std::vector<int> row;
      for (int t = 0; t < tp; ++t) row.push_back(m.cp_rank() * tp + t);
      const auto exp_tp = ordered_sum(row, n);
      RANK_EXPECT(fails, same_bits(d.data(), exp_tp.data(), n), m.str());
      // all_gather inside the CP group: block c comes from world rank c * tp + tp_rank.
      std::vector<float> send(n), recv(n * cp);
      for (size_t e = 0; e < n; ++e) send[e] = val(world.rank(), e);
      cpc->all_gather(send.data(), recv.data(), n);
      for (int c = 0; c < cp; ++c)
        for (size_t e = 0; e < n; ++e)
          RANK_EXPECT(fails, recv[c * n + e] == val(c * tp + m.tp_rank(), e), m.str());
      // all_to_all inside the CP group (the Helix head exchange).
      std::vector<float> a(cp * 3), b(cp * 3);
      for (int j = 0; j < cp; ++j)
        for (int k = 0; k < 3; ++k) a[j * 3 + k] = float(1000 * world.rank() + 10 * j + k);
      cpc->all_to_all(a.data(), b.data(), 3);
      for (int i = 0; i < cp; ++i)
        for (int k = 0; k < 3; ++k)
          RANK_EXPECT(fails,
                      b[i * 3 + k] == float(1000 * (i * tp + m.tp_rank()) + 10 * m.cp_rank() + k),
                      m.str());
      // A split of a split, and the world still works afterwards.
      auto again = cpc->split(0, -cpc->rank());
      RANK_EXPECT(fails, again->rank() == cp - 1 - cpc->rank(), m.str());
      again->barrier();
      std::vector<float> w(5);
      for (size_t e = 0; e < 5; ++e) w[e] = val(world.rank(), e);
      world.all_reduce_sum(w.data(), 5);
      const auto exp_w = ordered_sum(iota_ranks(p), 5);
      RANK_EXPECT(fails, same_bits(w.data(), exp_w.data(), 5), m.str());
    });
    for (auto& msg : fails.msgs) ADD_FAILURE() << "tp " << tp << ": " << msg;
  }
}

TEST_P(CommWorld, SplitOrdersByKeyThenRankAndSkipsNegativeColor) {
  const int p = GetParam();
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    const int me = c.rank();
    // Equal keys everywhere: order is by parent rank.
    auto all = c.split(7, 0);
    RANK_EXPECT(fails, all && all->rank() == me && all->size() == p, "same key");
    // Descending keys: reversed.
    auto rev = c.split(1, p - me);
    RANK_EXPECT(fails, rev && rev->rank() == p - 1 - me, "reversed");
    // Odd ranks opt out.
    auto even = c.split(me % 2 == 0 ? 0 : -1, 0);
    if (me % 2 == 0) {
      RANK_EXPECT(fails, even && even->rank() == me / 2 && even->size() == (p + 1) / 2, "even");
      float x = float(me);
      even->all_reduce_sum(&x, 1);
      float expect = 0;
      for (int r = 0; r < p; r += 2) expect += float(r);
      RANK_EXPECT(fails, x == expect, "even sum");
    } else {
      RANK_EXPECT(fails, even == nullptr, "odd gets nullptr");
    }
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, StatsFollowTheRingConvention) {
  const int p = GetParam();
  const uint64_t P = uint64_t(p);
  Failures fails;
  std::vector<CommStats> world_stats(p), sub_stats(p);
  run_threads(p, [&](Communicator& c) {
    const int me = c.rank();
    const size_t n = 10;
    std::vector<float> a(n * p, 1.f), b(n * p);
    c.all_reduce_sum(a.data(), n);
    c.all_reduce_sum(a.data(), n);
    c.all_gather(a.data(), b.data(), n);
    c.reduce_scatter_sum(a.data(), b.data(), n);
    c.all_to_all(a.data(), b.data(), n);
    std::vector<size_t> sc(p), rc(p);
    for (int j = 0; j < p; ++j) {
      sc[j] = v_count(me, j);
      rc[j] = v_count(j, me);
    }
    c.all_to_all_v(a.data(), sc, b.data(), rc);
    char bytes[6] = {};
    c.broadcast_bytes(bytes, 6, 0);
    c.barrier();
    auto sub = c.split(0, 0);
    sub->all_gather(a.data(), b.data(), 2);
    world_stats[me] = c.stats();
    sub_stats[me] = sub->stats();
  });
  for (int r = 0; r < p; ++r) {
    const CommStats& s = world_stats[r];
    const uint64_t ar = 2 * (P - 1) * 40 / P;
    EXPECT_EQ(s.calls.at("all_reduce"), 2u);
    EXPECT_EQ(s.bytes_sent.at("all_reduce"), 2 * ar);
    EXPECT_EQ(s.bytes_received.at("all_reduce"), 2 * ar);
    // The world's counters include the split communicator's all_gather of 2 floats.
    EXPECT_EQ(s.calls.at("all_gather"), 2u);
    EXPECT_EQ(s.bytes_sent.at("all_gather"), (P - 1) * 40 + (P - 1) * 8);
    EXPECT_EQ(s.bytes_received.at("all_gather"), (P - 1) * 40 + (P - 1) * 8);
    EXPECT_EQ(s.bytes_sent.at("reduce_scatter"), (P - 1) * 40);
    EXPECT_EQ(s.bytes_received.at("reduce_scatter"), (P - 1) * 40);
    EXPECT_EQ(s.bytes_sent.at("all_to_all"), (P - 1) * 40);
    EXPECT_EQ(s.bytes_received.at("all_to_all"), (P - 1) * 40);
    uint64_t vs = 0, vr = 0;
    for (int j = 0; j < p; ++j) {
      if (j == r) continue;
      vs += v_count(r, j) * 4;
      vr += v_count(j, r) * 4;
    }
    EXPECT_EQ(s.bytes_sent.at("all_to_all_v"), vs);
    EXPECT_EQ(s.bytes_received.at("all_to_all_v"), vr);
    EXPECT_EQ(s.bytes_sent.at("broadcast"), r == 0 ? (P - 1) * 6 : 0u);
    EXPECT_EQ(s.bytes_received.at("broadcast"), r == 0 ? 0u : 6u);
    EXPECT_EQ(s.calls.count("barrier"), 0u);
    // The split communicator counts only its own call.
    const CommStats& t = sub_stats[r];
    EXPECT_EQ(t.calls.size(), 1u);
    EXPECT_EQ(t.calls.at("all_gather"), 1u);
    EXPECT_EQ(t.bytes_sent.at("all_gather"), (P - 1) * 8);
  }
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, ManyMixedCallsStayInStep) {
  const int p = GetParam();
  Failures fails;
  run_threads(p, [&](Communicator& c) {
    const int me = c.rank();
    std::vector<float> d(257), g(257 * p);
    for (int it = 0; it < 300; ++it) {
      const size_t n = size_t(1 + (it * 37) % 257);
      for (size_t e = 0; e < n; ++e) d[e] = float(me + it) + float(e);
      c.all_reduce_sum(d.data(), n);
      // Sum over r of (r + it + e) = p(p-1)/2 + p(it + e): exact in float at these sizes.
      const float base = float(p * (p - 1) / 2 + p * it);
      RANK_EXPECT(fails, d[0] == base && d[n - 1] == base + float(p) * float(n - 1),
                  "iteration " + std::to_string(it));
      if (it % 3 == 0) {
        c.all_gather(d.data(), g.data(), 1);
        RANK_EXPECT(fails, g[p - 1] == base, "gather " + std::to_string(it));
      }
    }
  });
  for (auto& m : fails.msgs) ADD_FAILURE() << m;
}

TEST_P(CommWorld, OneRankThrowsOthersAbortAndFirstErrorIsRethrown) {
  const int p = GetParam();
  std::atomic<int> aborted{0};
  try {
    run_threads(p, [&](Communicator& c) {
      auto sub = c.split(c.rank() % 2, 0);
      std::vector<float> d(8, 1.f);
      c.all_reduce_sum(d.data(), 8);
      if (c.rank() == p - 1) throw std::runtime_error("boom on the last rank");
      try {
        // Everyone else waits in a collective the last rank never joins.
        for (int i = 0; i < 3; ++i) sub->all_reduce_sum(d.data(), 8);
        c.all_reduce_sum(d.data(), 8);
      } catch (const Error& e) {
        if (std::string(e.what()) == "aborted: another rank failed") ++aborted;
        throw;
      }
    });
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "boom on the last rank");
  }
  EXPECT_EQ(aborted.load(), p - 1);
}

TEST_P(CommWorld, RankReturningEarlyDoesNotHang) {
  const int p = GetParam();
  if (p == 1) GTEST_SKIP();
  EXPECT_THROW(run_threads(p,
                           [&](Communicator& c) {
                             if (c.rank() == 0) return;
                             float x = 1;
                             c.all_reduce_sum(&x, 1);
                           }),
               Error);
}

TEST_P(CommWorld, MismatchedSizesFailOnEveryRank) {
  const int p = GetParam();
  if (p == 1) GTEST_SKIP();
  try {
    run_threads(p, [&](Communicator& c) {
      std::vector<float> d(8);
      c.all_reduce_sum(d.data(), c.rank() == 1 ? 4 : 8);
    });
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_reduce_sum"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, CommWorld, ::testing::Values(1, 2, 3, 4, 8),
                         [](const auto& info) { return "world" + std::to_string(info.param); });

TEST(SingleComm, CollectivesAreCopies) {
  auto c = make_single_comm();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  std::vector<float> a = {1, 2, 3}, b(3);
  c->all_reduce_sum(a.data(), 3);
  EXPECT_EQ(a, (std::vector<float>{1, 2, 3}));
  c->all_gather(a.data(), b.data(), 3);
  EXPECT_EQ(b, a);
  std::fill(b.begin(), b.end(), 0.f);
  c->reduce_scatter_sum(a.data(), b.data(), 3);
  EXPECT_EQ(b, a);
  std::fill(b.begin(), b.end(), 0.f);
  c->all_to_all(a.data(), b.data(), 3);
  EXPECT_EQ(b, a);
  std::fill(b.begin(), b.end(), 0.f);
  c->all_to_all_v(a.data(), {2}, b.data(), {2});
  EXPECT_EQ(b, (std::vector<float>{1, 2, 0}));
  char s[3] = {'a', 'b', 'c'};
  c->broadcast_bytes(s, 3, 0);
  EXPECT_EQ(s[2], 'c');
  c->barrier();
  auto sub = c->split(3, 9);
  ASSERT_TRUE(sub);
  EXPECT_EQ(sub->size(), 1);
  sub->all_reduce_sum(a.data(), 3);
  EXPECT_EQ(c->stats().calls.at("all_reduce"), 2u);
  EXPECT_EQ(c->stats().bytes_sent.at("all_reduce"), 0u);
  EXPECT_EQ(sub->stats().calls.at("all_reduce"), 1u);
  c->reset_stats();
  EXPECT_TRUE(c->stats().calls.empty());
  EXPECT_EQ(c->split(-1, 0), nullptr);
  EXPECT_THROW(c->all_to_all_v(a.data(), {2}, b.data(), {3}), Error);
}

}  // namespace
}  // namespace helix
