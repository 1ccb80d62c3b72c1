#pragma once
// Communicator: the collectives the engine needs, over a group of ranks. Backends: ranks as
// threads in one process (comm_threads.cpp, the default and what tests use) and OpenMPI
// processes (comm_mpi.cpp). NCCL joins later behind the same interface.
//
// Every call is collective: all ranks of the group call it, in the same order, with matching
// sizes. Buffers hold float32 unless the name says bytes. Results are bitwise identical on
// every rank (reductions sum in rank order) so that replicated state never drifts apart.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace helix {

// Bytes moved per collective kind ("all_reduce", "all_gather", "reduce_scatter", "all_to_all",
// "all_to_all_v", "broadcast"), counted on this rank. Convention, with p = group size and B = the
// bytes of one rank's block (n floats * 4, or n bytes for broadcast), as a ring algorithm moves
// them whatever the backend really does:
//   all_reduce      sent = received = 2 * (p - 1) * B / p   (integer division)
//   all_gather      sent = received = (p - 1) * B
//   reduce_scatter  sent = received = (p - 1) * B            (B = one output block)
//   all_to_all      sent = received = (p - 1) * B            (B = one block; self excluded)
//   all_to_all_v    sent = bytes addressed to other ranks, received = bytes from other ranks
//   broadcast       root sends (p - 1) * B and receives 0; every other rank receives B
// A group of one moves nothing (calls are still counted). barrier() and split() are not counted.
struct CommStats {
  std::map<std::string, uint64_t> bytes_sent;
  std::map<std::string, uint64_t> bytes_received;
  std::map<std::string, uint64_t> calls;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // data [n]: summed over ranks in place.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  // send [n] from every rank -> recv [size * n], rank i's block at i * n.
  virtual void all_gather(const float* send, float* recv, size_t n) = 0;
  // send [size * n] -> recv [n]: block r summed over ranks lands on rank r.
  virtual void reduce_scatter_sum(const float* send, float* recv, size_t n) = 0;
  // send [size * n]: block j goes to rank j; recv [size * n]: block i came from rank i.
  virtual void all_to_all(const float* send, float* recv, size_t n) = 0;
  // Variable splits: send_counts[j] floats go to rank j (blocks packed in rank order);
  // recv_counts[i] floats arrive from rank i (packed in rank order).
  virtual void all_to_all_v(const float* send, const std::vector<size_t>& send_counts, float* recv,
                            const std::vector<size_t>& recv_counts) = 0;
  // data [n] bytes copied from root to every rank.
  virtual void broadcast_bytes(void* data, size_t n, int root) = 0;
  virtual void barrier() = 0;

  // A sub-communicator of the ranks that pass the same color, ordered by key then by rank in this
  // communicator (MPI_Comm_split). Collective over this communicator. A negative color takes
  // part in the call but gets no communicator (nullptr), like MPI_UNDEFINED.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Whether collectives may be issued from a thread other than the one that created the
  // communicator (one thread at a time, handed over with proper synchronisation; see
  // CommWorker). MPI needs MPI_THREAD_SERIALIZED for that.
  virtual bool supports_worker_thread() const { return true; }

  // Counters of this communicator and every communicator split from it (a split communicator adds
  // its counts into its parents' too). reset_stats() clears this communicator's counters only.
  // Stats belong to the rank: use a rank's communicators from one thread at a time (a worker
  // thread may take them over between synchronisation points, never concurrently).
  virtual const CommStats& stats() const = 0;
  virtual void reset_stats() = 0;
};

// Backend helper: a rank's counters for one communicator plus those of the communicators it was
// split from, so that one call is counted in all of them.
class CommStatsChain {
 public:
  CommStatsChain();
  // The chain of a communicator split from this one: fresh counters, this chain as ancestors.
  CommStatsChain child() const;
  const CommStats& own() const { return *chain_.front(); }
  void reset() { *chain_.front() = CommStats{}; }
  void add(const char* kind, uint64_t sent, uint64_t received);
  // Adds one call of `kind` with the byte counts of the convention above (block of n floats).
  void add_all_reduce(int p, size_t n);
  void add_all_gather(int p, size_t n);
  void add_reduce_scatter(int p, size_t n);
  void add_all_to_all(int p, size_t n);
  void add_all_to_all_v(int rank, const std::vector<size_t>& send_counts,
                        const std::vector<size_t>& recv_counts);
  void add_broadcast(int rank, int p, size_t n_bytes, int root);

 private:
  std::vector<std::shared_ptr<CommStats>> chain_;  // own counters first, then the ancestors
};

// A communicator of one rank: every collective is a copy. Used by single-rank runs.
std::unique_ptr<Communicator> make_single_comm();

// Runs fn(comm) on `world_size` threads, each with its own rank of one thread-backed world.
// Exceptions thrown by any rank are rethrown here (the first one) after all threads end; a rank
// that throws aborts the world so that the others do not wait forever.
void run_threads(int world_size, const std::function<void(Communicator&)>& fn);

// The MPI_COMM_WORLD communicator. Calls MPI_Init on first use; MPI_Finalize runs at exit.
std::unique_ptr<Communicator> make_mpi_world();
// After a fatal error on one process: MPI_Abort the whole job (when MPI runs with more than one
// process) so that the peers do not wait forever in a collective. No-op otherwise.
void mpi_abort_if_running(int code);

}  // namespace helix
