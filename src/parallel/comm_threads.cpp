// Thread-backed communicator: the ranks of a world are threads of one process sharing memory.
//
// Ranks of one communicator share a Group: a generation-counted barrier (mutex + condition
// variable) and one slot per rank where the rank publishes the pointers of its current call.
// A collective publishes, waits at the barrier, then every rank reads the others' buffers
// directly into its own output. Slots (and the all-reduce scratch) come in two sets used by
// alternate calls, so a rank may publish its next call while slower ranks still read the
// previous one: no rank can get two calls ahead, since every call starts with a barrier.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include "core/checked.h"
#include "core/error.h"
#include "parallel/comm.h"

namespace helix {

// ---- stats ------------------------------------------------------------------------------------

CommStatsChain::CommStatsChain() {
  chain_.push_back(std::make_shared<CommStats>());
}

CommStatsChain CommStatsChain::child() const {
  CommStatsChain c;
  c.chain_.insert(c.chain_.end(), chain_.begin(), chain_.end());
  return c;
}

void CommStatsChain::add(const char* kind, uint64_t sent, uint64_t received) {
  const std::string key(kind);
  for (auto& s : chain_) {
    s->bytes_sent[key] += sent;
    s->bytes_received[key] += received;
    s->calls[key] += 1;
  }
}

void CommStatsChain::add_all_reduce(int p, size_t n) {
  const uint64_t b = 2 * uint64_t(p - 1) * n * sizeof(float) / uint64_t(p);
  add("all_reduce", b, b);
}

void CommStatsChain::add_all_gather(int p, size_t n) {
  const uint64_t b = uint64_t(p - 1) * n * sizeof(float);
  add("all_gather", b, b);
}

void CommStatsChain::add_reduce_scatter(int p, size_t n) {
  const uint64_t b = uint64_t(p - 1) * n * sizeof(float);
  add("reduce_scatter", b, b);
}

void CommStatsChain::add_all_to_all(int p, size_t n) {
  const uint64_t b = uint64_t(p - 1) * n * sizeof(float);
  add("all_to_all", b, b);
}

void CommStatsChain::add_all_to_all_v(int rank, const std::vector<size_t>& send_counts,
                                      const std::vector<size_t>& recv_counts) {
  uint64_t sent = 0, received = 0;
  for (size_t j = 0; j < send_counts.size(); ++j)
    if (int(j) != rank) sent += send_counts[j] * sizeof(float);
  for (size_t i = 0; i < recv_counts.size(); ++i)
    if (int(i) != rank) received += recv_counts[i] * sizeof(float);
  add("all_to_all_v", sent, received);
}

void CommStatsChain::add_broadcast(int rank, int p, size_t n_bytes, int root) {
  if (rank == root) {
    add("broadcast", uint64_t(p - 1) * n_bytes, 0);
  } else {
    add("broadcast", 0, n_bytes);
  }
}

namespace {

// ---- shared state -------------------------------------------------------------------------------

// Thrown in the ranks that did not fail when another rank aborts the world.
class AbortedError : public Error {
 public:
  AbortedError() : Error("aborted: another rank failed") {}
};

struct Group;

struct World {
  explicit World(int size) : done(size) {
    for (auto& d : done) d.store(false);
  }
  std::atomic<bool> aborted{false};
  std::vector<std::atomic<bool>> done;  // per world rank: its fn has returned
  std::mutex mu;
  std::vector<std::weak_ptr<Group>> groups;  // every group, to wake on abort

  void register_group(const std::shared_ptr<Group>& g) {
    std::lock_guard lk(mu);
    std::erase_if(groups, [](const std::weak_ptr<Group>& w) { return w.expired(); });
    groups.push_back(g);
  }
  void wake_all();
  void abort() {
    aborted.store(true);
    wake_all();
  }
  void mark_done(int world_rank) {
    done[world_rank].store(true);
    wake_all();
  }
};

struct Slot {
  const void* send = nullptr;
  void* recv = nullptr;
  size_t n = 0;
  const std::vector<size_t>* send_counts = nullptr;
  const std::vector<size_t>* recv_counts = nullptr;
  int root = 0;
  int color = 0;
  int key = 0;
  const float* scratch = nullptr;
  std::shared_ptr<Group> child;  // split: the new group, published by the color's leader
};

struct Group {
  Group(std::shared_ptr<World> w, std::vector<int> members)
      : world(std::move(w)), world_ranks(std::move(members)), size(int(world_ranks.size())) {
    for (int k = 0; k < 2; ++k) {
      slots[k].resize(size);
      scratch[k].resize(size);
    }
    spin = int(std::thread::hardware_concurrency()) >= int(world->done.size());
  }

  std::shared_ptr<World> world;
  std::vector<int> world_ranks;  // group rank -> world rank
  int size;
  bool spin;  // enough cores to spin briefly before sleeping

  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<uint64_t> gen{0};

  std::vector<Slot> slots[2];                  // [call parity][group rank]
  std::vector<std::vector<float>> scratch[2];  // [call parity][group rank], all_reduce partials

  bool member_done() const {
    for (int r : world_ranks)
      if (world->done[r].load()) return true;
    return false;
  }

  // Entry barrier of a call (and barrier()): gives up when the world aborts or a member has
  // returned. The closing barrier of a call (`closing`) never gives up: between the two, every
  // member reads the others' buffers and runs only code of this file, so all of them arrive, and
  // a rank must not unwind (freeing its buffers) while others may still read them.
  void barrier(bool closing = false) {
    std::unique_lock lk(mu);
    if (!closing && world->aborted.load()) throw AbortedError();
    const uint64_t g = gen.load();
    if (++arrived == size) {
      arrived = 0;
      gen.store(g + 1);
      cv.notify_all();
      return;
    }
    if (spin) {
      lk.unlock();
      for (int i = 0; i < 4000; ++i) {
        if (gen.load(std::memory_order_acquire) != g) return;
        if ((i & 63) == 63) std::this_thread::yield();
      }
      lk.lock();
    }
    if (closing) {
      cv.wait(lk, [&] { return gen.load() != g; });
      return;
    }
    cv.wait(lk, [&] { return gen.load() != g || world->aborted.load() || member_done(); });
    if (gen.load() != g) return;
    if (world->aborted.load()) throw AbortedError();
    fail("collective mismatch: a rank returned while the others wait in a collective");
  }
};

void World::wake_all() {
  std::vector<std::shared_ptr<Group>> live;
  {
    std::lock_guard lk(mu);
    for (auto& w : groups)
      if (auto g = w.lock()) live.push_back(std::move(g));
  }
  for (auto& g : live) {
    std::lock_guard lk(g->mu);
    g->cv.notify_all();
  }
}

void copy_floats(float* dst, const float* src, size_t n) {
  if (n == 0 || dst == src) return;
  std::memcpy(dst, src, n * sizeof(float));
}

// [begin, end) of part i of n split over parts, the first n % parts parts one longer.
std::pair<size_t, size_t> chunk(size_t n, int parts, int i) {
  return even_split<size_t>(n, size_t(parts), size_t(i));
}

// ---- the communicator ---------------------------------------------------------------------------

class ThreadComm final : public Communicator {
 public:
  ThreadComm(std::shared_ptr<Group> group, int rank, CommStatsChain stats)
      : group_(std::move(group)), rank_(rank), stats_(std::move(stats)) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  void all_reduce_sum(float* data, size_t n) override {
    const int p = size();
    stats_.add_all_reduce(p, n);
    if (p == 1) return;
    Group& g = *group_;
    const int par = next_parity();
    auto [b0, b1] = chunk(n, p, rank_);
    std::vector<float>& mine = g.scratch[par][rank_];
    if (mine.size() < b1 - b0) mine.resize(b1 - b0);
    Slot& s = publish(par);
    s.recv = data;
    s.n = n;
    s.scratch = mine.data();
    g.barrier();
    check_same_n(par, "all_reduce_sum");
    // Phase 1: sum my chunk over all ranks, in rank order, into my scratch.
    const size_t len = b1 - b0;
    float* acc = mine.data();
    if (len > 0) {
      copy_floats(acc, static_cast<const float*>(g.slots[par][0].recv) + b0, len);
      for (int r = 1; r < p; ++r) {
        const float* x = static_cast<const float*>(g.slots[par][r].recv) + b0;
        for (size_t e = 0; e < len; ++e) acc[e] += x[e];
      }
    }
    g.barrier(true);
    // Phase 2: gather every rank's summed chunk. Nobody reads `data` any more; the scratch stays
    // valid until every rank has entered the next call.
    for (int r = 0; r < p; ++r) {
      auto [c0, c1] = chunk(n, p, r);
      copy_floats(data + c0, g.slots[par][r].scratch, c1 - c0);
    }
  }

  void all_gather(const float* send, float* recv, size_t n) override {
    const int p = size();
    stats_.add_all_gather(p, n);
    if (p == 1) return copy_floats(recv, send, n);
    Group& g = *group_;
    const int par = post_send(send, n, "all_gather");
    for (int r = 0; r < p; ++r)
      copy_floats(recv + size_t(r) * n, static_cast<const float*>(g.slots[par][r].send), n);
    g.barrier(true);
  }

  void reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    const int p = size();
    stats_.add_reduce_scatter(p, n);
    if (p == 1) return copy_floats(recv, send, n);
    Group& g = *group_;
    const int par = post_send(send, n, "reduce_scatter_sum");
    const size_t off = size_t(rank_) * n;
    // recv may alias nothing that others read (they read send buffers only).
    copy_floats(recv, static_cast<const float*>(g.slots[par][0].send) + off, n);
    for (int r = 1; r < p; ++r) {
      const float* x = static_cast<const float*>(g.slots[par][r].send) + off;
      for (size_t e = 0; e < n; ++e) recv[e] += x[e];
    }
    g.barrier(true);
  }

  void all_to_all(const float* send, float* recv, size_t n) override {
    const int p = size();
    stats_.add_all_to_all(p, n);
    if (p == 1) return copy_floats(recv, send, n);
    Group& g = *group_;
    const int par = post_send(send, n, "all_to_all");
    const size_t off = size_t(rank_) * n;
    for (int r = 0; r < p; ++r)
      copy_floats(recv + size_t(r) * n, static_cast<const float*>(g.slots[par][r].send) + off, n);
    g.barrier(true);
  }

  void all_to_all_v(const float* send, const std::vector<size_t>& send_counts, float* recv,
                    const std::vector<size_t>& recv_counts) override {
    const int p = size();
    HELIX_CHECK(int(send_counts.size()) == p && int(recv_counts.size()) == p,
                "all_to_all_v: {} send counts and {} recv counts for a group of {}",
                send_counts.size(), recv_counts.size(), p);
    stats_.add_all_to_all_v(rank_, send_counts, recv_counts);
    if (p == 1) {
      HELIX_CHECK(send_counts[0] == recv_counts[0],
                  "all_to_all_v: rank 0 sends {} floats to itself but expects {}", send_counts[0],
                  recv_counts[0]);
      return copy_floats(recv, send, send_counts[0]);
    }
    Group& g = *group_;
    const int par = next_parity();
    Slot& s = publish(par);
    s.send = send;
    s.send_counts = &send_counts;
    s.recv_counts = &recv_counts;
    g.barrier();
    // Every rank checks the whole count matrix so that all of them fail together on a mismatch.
    for (int i = 0; i < p; ++i)
      for (int j = 0; j < p; ++j) {
        const size_t sent = (*g.slots[par][j].send_counts)[i];
        const size_t expected = (*g.slots[par][i].recv_counts)[j];
        if (sent != expected) {
          g.barrier(true);
          fail("all_to_all_v: rank {} sends {} floats to rank {}, which expects {}", j, sent, i,
               expected);
        }
      }
    size_t out = 0;
    for (int r = 0; r < p; ++r) {
      const Slot& o = g.slots[par][r];
      size_t in = 0;
      for (int k = 0; k < rank_; ++k) in += (*o.send_counts)[k];
      copy_floats(recv + out, static_cast<const float*>(o.send) + in, recv_counts[r]);
      out += recv_counts[r];
    }
    g.barrier(true);
  }

  void broadcast_bytes(void* data, size_t n, int root) override {
    const int p = size();
    HELIX_CHECK(root >= 0 && root < p, "broadcast: root {} out of range for a group of {}", root,
                p);
    stats_.add_broadcast(rank_, p, n, root);
    if (p == 1) return;
    Group& g = *group_;
    const int par = next_parity();
    Slot& s = publish(par);
    s.send = data;
    s.n = n;
    s.root = root;
    g.barrier();
    check_same_n(par, "broadcast_bytes");
    for (int r = 0; r < p; ++r)
      if (g.slots[par][r].root != root) {
        g.barrier(true);
        fail("broadcast_bytes: ranks disagree on the root ({} vs {})", g.slots[par][r].root, root);
      }
    if (rank_ != root && n > 0) std::memcpy(data, g.slots[par][root].send, n);
    g.barrier(true);
  }

  void barrier() override {
    if (size() > 1) group_->barrier();
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    Group& g = *group_;
    const int p = size();
    const int par = next_parity();
    Slot& s = publish(par);
    s.color = color;
    s.key = key;
    if (p > 1) g.barrier();
    // Members of my color ordered by (key, rank); the lowest rank of the color creates the group.
    std::vector<int> members;
    int leader = -1;
    for (int r = 0; r < p; ++r)
      if (g.slots[par][r].color == color) {
        members.push_back(r);
        if (leader < 0) leader = r;
      }
    std::stable_sort(members.begin(), members.end(),
                     [&](int a, int b) { return g.slots[par][a].key < g.slots[par][b].key; });
    if (color >= 0 && leader == rank_) {
      std::vector<int> world_ranks;
      for (int r : members) world_ranks.push_back(g.world_ranks[r]);
      auto child = std::make_shared<Group>(g.world, std::move(world_ranks));
      g.world->register_group(child);
      s.child = std::move(child);
    }
    if (p > 1) g.barrier(true);
    if (color < 0) return nullptr;
    const int new_rank = int(std::find(members.begin(), members.end(), rank_) - members.begin());
    return std::make_unique<ThreadComm>(g.slots[par][leader].child, new_rank, stats_.child());
  }

  const CommStats& stats() const override { return stats_.own(); }
  void reset_stats() override { stats_.reset(); }

 private:
  int next_parity() { return int(calls_++ & 1); }

  Slot& publish(int par) {
    Slot& s = group_->slots[par][rank_];
    s = Slot{};
    return s;
  }

  // The first half of the send-buffer collectives: publish (send, n), wait for every rank, check
  // that all passed the same n. Returns the parity whose slots now hold every rank's buffer.
  int post_send(const float* send, size_t n, const char* what) {
    const int par = next_parity();
    Slot& s = publish(par);
    s.send = send;
    s.n = n;
    group_->barrier();
    check_same_n(par, what);
    return par;
  }

  // Called after the first barrier: every rank sees the same sizes, so all fail together.
  void check_same_n(int par, const char* what) {
    const auto& slots = group_->slots[par];
    for (int r = 1; r < size(); ++r)
      if (slots[r].n != slots[0].n) {
        group_->barrier(true);
        fail("{}: rank 0 passes n = {} but rank {} passes n = {}", what, slots[0].n, r, slots[r].n);
      }
  }

  std::shared_ptr<Group> group_;
  int rank_;
  CommStatsChain stats_;
  uint64_t calls_ = 0;
};

std::shared_ptr<Group> make_world_group(const std::shared_ptr<World>& world, int size) {
  std::vector<int> ranks(size);
  for (int r = 0; r < size; ++r) ranks[r] = r;
  auto g = std::make_shared<Group>(world, std::move(ranks));
  world->register_group(g);
  return g;
}

}  // namespace

std::unique_ptr<Communicator> make_single_comm() {
  auto world = std::make_shared<World>(1);
  return std::make_unique<ThreadComm>(make_world_group(world, 1), 0, CommStatsChain{});
}

void run_threads(int world_size, const std::function<void(Communicator&)>& fn) {
  HELIX_CHECK(world_size >= 1, "run_threads: world size must be at least 1 (got {})", world_size);
  auto world = std::make_shared<World>(world_size);
  auto group = make_world_group(world, world_size);

  std::mutex err_mu;
  std::exception_ptr first_error;  // the first real failure
  std::exception_ptr first_abort;  // kept only in case no real failure was recorded
  auto body = [&](int rank) {
    try {
      ThreadComm comm(group, rank, CommStatsChain{});
      fn(comm);
      world->mark_done(rank);
    } catch (const AbortedError&) {
      {
        std::lock_guard lk(err_mu);
        if (!first_abort) first_abort = std::current_exception();
      }
      world->abort();
    } catch (...) {
      {
        std::lock_guard lk(err_mu);
        if (!first_error) first_error = std::current_exception();
      }
      world->abort();
    }
  };

  if (world_size == 1) {
    body(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(world_size);
    try {
      for (int r = 0; r < world_size; ++r) threads.emplace_back(body, r);
    } catch (const std::system_error& e) {
      // The ranks already started wait in collectives for ones that never come: abort them,
      // join, and report instead of std::terminate.
      world->abort();
      for (auto& t : threads) t.join();
      fail("cannot start {} rank threads (started {}): {}", world_size, threads.size(), e.what());
    }
    for (auto& t : threads) t.join();
  }
  if (first_error) std::rethrow_exception(first_error);
  if (first_abort) std::rethrow_exception(first_abort);
}

}  // namespace helix
