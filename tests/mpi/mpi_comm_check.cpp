// Runs every collective of the MPI communicator under mpiexec (-np 2 or 4) and checks the results
// against values computed directly. Prints "OK" on rank 0 and returns 0 when all ranks pass.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "parallel/comm.h"
#include "parallel/mapping.h"

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what, int rank) {
  if (ok) return;
  if (g_failures++ < 20) std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
}

float val(int rank, size_t e) {
  return float(rank + 1) * 0.1f + std::sin(float(e) * 0.37f + float(rank)) * 1e-3f * float(e + 1);
}

std::vector<float> ordered_sum(const std::vector<int>& ranks, size_t n, size_t offset = 0) {
  std::vector<float> out(n);
  for (size_t e = 0; e < n; ++e) {
    float acc = val(ranks[0], offset + e);
    for (size_t k = 1; k < ranks.size(); ++k) acc += val(ranks[k], offset + e);
    out[e] = acc;
  }
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

size_t v_count(int from, int to) {
  return size_t((from + 2 * to + 1) % 4);
}

// Every collective on `c`, whose rank r is world rank world_of[r].
void run_collectives(helix::Communicator& c, const std::vector<int>& world_of, const char* tag) {
  const int p = c.size(), me = c.rank(), wr = world_of[me];
  const std::string t = tag;
  // all_reduce: bitwise the rank-ordered sum; then every rank must hold the same bits.
  for (size_t n : {size_t(0), size_t(1), size_t(5), size_t(1001)}) {
    std::vector<float> d(n);
    for (size_t e = 0; e < n; ++e) d[e] = val(wr, e);
    c.all_reduce_sum(d.data(), n);
    check(same_bits(d, ordered_sum(world_of, n)), t + " all_reduce n=" + std::to_string(n), wr);
  }
  const size_t n = 17;
  {
    std::vector<float> send(n), recv(n * p);
    for (size_t e = 0; e < n; ++e) send[e] = val(wr, e);
    c.all_gather(send.data(), recv.data(), n);
    bool ok = true;
    for (int r = 0; r < p; ++r)
      for (size_t e = 0; e < n; ++e) ok &= recv[r * n + e] == val(world_of[r], e);
    check(ok, t + " all_gather", wr);
  }
  {
    std::vector<float> send(n * p), recv(n);
    for (size_t e = 0; e < n * p; ++e) send[e] = val(wr, e);
    c.reduce_scatter_sum(send.data(), recv.data(), n);
    check(same_bits(recv, ordered_sum(world_of, n, size_t(me) * n)), t + " reduce_scatter", wr);
  }
  {
    std::vector<float> send(n * p), recv(n * p);
    for (int j = 0; j < p; ++j)
      for (size_t k = 0; k < n; ++k) send[j * n + k] = float(10000 * me + 100 * j + int(k));
    c.all_to_all(send.data(), recv.data(), n);
    bool ok = true;
    for (int i = 0; i < p; ++i)
      for (size_t k = 0; k < n; ++k) ok &= recv[i * n + k] == float(10000 * i + 100 * me + int(k));
    check(ok, t + " all_to_all", wr);
  }
  {
    std::vector<size_t> sc(p), rc(p);
    size_t ns = 0, nr = 0;
    for (int j = 0; j < p; ++j) {
      sc[j] = v_count(me, j);
      rc[j] = v_count(j, me);
      ns += sc[j];
      nr += rc[j];
    }
    std::vector<float> send(ns + 1), recv(nr + 1, -7.f);
    size_t o = 0;
    for (int j = 0; j < p; ++j)
      for (size_t k = 0; k < sc[j]; ++k) send[o++] = float(10000 * me + 100 * j + int(k));
    c.all_to_all_v(send.data(), sc, recv.data(), rc);
    bool ok = recv[nr] == -7.f;
    o = 0;
    for (int i = 0; i < p; ++i)
      for (size_t k = 0; k < rc[i]; ++k) ok &= recv[o++] == float(10000 * i + 100 * me + int(k));
    check(ok, t + " all_to_all_v", wr);
  }
  for (int root = 0; root < p; ++root) {
    std::vector<unsigned char> buf(9, 0);
    if (me == root)
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = (unsigned char)(root * 16 + i);
    c.broadcast_bytes(buf.data(), buf.size(), root);
    bool ok = true;
    for (size_t i = 0; i < buf.size(); ++i) ok &= buf[i] == (unsigned char)(root * 16 + i);
    check(ok, t + " broadcast root " + std::to_string(root), wr);
  }
  c.barrier();
}

}  // namespace

int main() {
  int world_rank = -1;
  try {
    auto world = helix::make_mpi_world();
    world_rank = world->rank();
    const int p = world->size();
    std::vector<int> all(p);
    for (int r = 0; r < p; ++r) all[r] = r;
    run_collectives(*world, all, "world");

    // The ring stats convention, checked on one call.
    world->reset_stats();
    std::vector<float> d(10, 1.f);
    world->all_reduce_sum(d.data(), 10);
    const uint64_t ar = 2 * uint64_t(p - 1) * 40 / uint64_t(p);
    check(world->stats().bytes_sent.at("all_reduce") == ar &&
              world->stats().bytes_received.at("all_reduce") == ar &&
              world->stats().calls.at("all_reduce") == 1,
          "stats", world_rank);

    // Helix groups: tp x cp = 2 x 2 on 4 ranks, cp = 2 (tp 1) on 2 ranks.
    const int tp = p >= 4 ? 2 : 1, cp = p / tp;
    if (tp * cp == p) {
      helix::Mapping m(p, world_rank, tp, cp, false);
      auto tpc = world->split(m.cp_rank(), m.tp_rank());
      auto cpc = world->split(m.tp_rank(), m.cp_rank());
      check(tpc->size() == tp && tpc->rank() == m.tp_rank(), "tp group " + m.str(), world_rank);
      check(cpc->size() == cp && cpc->rank() == m.cp_rank(), "cp group " + m.str(), world_rank);
      std::vector<int> row, col;
      for (int t = 0; t < tp; ++t) row.push_back(m.cp_rank() * tp + t);
      for (int c = 0; c < cp; ++c) col.push_back(c * tp + m.tp_rank());
      world->reset_stats();
      run_collectives(*tpc, row, "tp");
      run_collectives(*cpc, col, "cp");
      // The world's counters include the calls of the groups split from it.
      check(world->stats().calls.at("all_gather") == 2, "stats of split groups", world_rank);
      auto none = world->split(-1, 0);
      check(none == nullptr, "negative color", world_rank);
    }
    world->barrier();

    int local = g_failures, total = 0;
    std::vector<float> f = {float(local)};
    world->all_reduce_sum(f.data(), 1);
    total = int(f[0]);
    if (total != 0) {
      if (world_rank == 0) std::printf("FAILED (%d checks)\n", total);
      return 1;
    }
    if (world_rank == 0) std::printf("OK\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", world_rank, e.what());
    return 1;
  }
}
