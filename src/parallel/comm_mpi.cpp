// OpenMPI communicator: one rank per process. Reductions do not use MPI_SUM, whose order of
// summation is up to the library: each rank receives its chunk from every rank, sums it in rank
// order, and the sums are gathered back, so every rank (and the thread backend) gets the same
// bits.
// Only the C API: the deprecated C++ bindings would need another library at link time.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "core/checked.h"
#include "core/error.h"
#include "parallel/comm.h"

namespace helix {

namespace {

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("{} failed: {}", what, std::string(msg, size_t(len)));
}

int to_int(size_t n, const char* what) {
  if (n > size_t(INT_MAX)) fail("{}: count {} exceeds the MPI limit of {}", what, n, INT_MAX);
  return int(n);
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm comm, bool owned, CommStatsChain stats)
      : comm_(comm), owned_(owned), stats_(std::move(stats)) {
    check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    counts_.resize(size_);
    displs_.resize(size_);
    counts2_.resize(size_);
    displs2_.resize(size_);
  }
  ~MpiComm() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_reduce_sum(float* data, size_t n) override {
    stats_.add_all_reduce(size_, n);
    if (size_ == 1) return;
    const int p = size_;
    // Chunk r of the vector is summed on rank r: all-to-all of chunks, ordered sum, all-gather.
    for (int r = 0; r < p; ++r) {
      auto [b0, b1] = chunk(n, r);
      counts_[r] = to_int(b1 - b0, "all_reduce_sum");
      displs_[r] = to_int(b0, "all_reduce_sum");
    }
    auto [m0, m1] = chunk(n, rank_);
    const size_t len = m1 - m0;
    const int ilen = to_int(len, "all_reduce_sum");
    if (buf_.size() < len * size_t(p) + len) buf_.resize(len * size_t(p) + len);
    for (int r = 0; r < p; ++r) {
      counts2_[r] = ilen;
      displs2_[r] = to_int(size_t(r) * len, "all_reduce_sum");
    }
    check_mpi(MPI_Alltoallv(data, counts_.data(), displs_.data(), MPI_FLOAT, buf_.data(),
                            counts2_.data(), displs2_.data(), MPI_FLOAT, comm_),
              "MPI_Alltoallv");
    float* acc = buf_.data() + len * size_t(p);
    if (len > 0) {
      std::memcpy(acc, buf_.data(), len * sizeof(float));
      for (int r = 1; r < p; ++r) {
        const float* x = buf_.data() + size_t(r) * len;
        for (size_t e = 0; e < len; ++e) acc[e] += x[e];
      }
    }
    check_mpi(MPI_Allgatherv(acc, ilen, MPI_FLOAT, data, counts_.data(), displs_.data(), MPI_FLOAT,
                             comm_),
              "MPI_Allgatherv");
  }

  void all_gather(const float* send, float* recv, size_t n) override {
    stats_.add_all_gather(size_, n);
    check_mpi(
        MPI_Allgather(send, to_int(n, "all_gather"), MPI_FLOAT, recv, int(n), MPI_FLOAT, comm_),
        "MPI_Allgather");
  }

  void reduce_scatter_sum(const float* send, float* recv, size_t n) override {
    stats_.add_reduce_scatter(size_, n);
    const int p = size_;
    const int in = to_int(n, "reduce_scatter_sum");
    if (buf_.size() < n * size_t(p)) buf_.resize(n * size_t(p));
    check_mpi(MPI_Alltoall(send, in, MPI_FLOAT, buf_.data(), in, MPI_FLOAT, comm_), "MPI_Alltoall");
    if (n == 0) return;
    std::memcpy(recv, buf_.data(), n * sizeof(float));
    for (int r = 1; r < p; ++r) {
      const float* x = buf_.data() + size_t(r) * n;
      for (size_t e = 0; e < n; ++e) recv[e] += x[e];
    }
  }

  void all_to_all(const float* send, float* recv, size_t n) override {
    stats_.add_all_to_all(size_, n);
    const int in = to_int(n, "all_to_all");
    check_mpi(MPI_Alltoall(send, in, MPI_FLOAT, recv, in, MPI_FLOAT, comm_), "MPI_Alltoall");
  }

  void all_to_all_v(const float* send, const std::vector<size_t>& send_counts, float* recv,
                    const std::vector<size_t>& recv_counts) override {
    HELIX_CHECK(int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
                "all_to_all_v: {} send counts and {} recv counts for a group of {}",
                send_counts.size(), recv_counts.size(), size_);
    stats_.add_all_to_all_v(rank_, send_counts, recv_counts);
    size_t so = 0, ro = 0;
    for (int r = 0; r < size_; ++r) {
      counts_[r] = to_int(send_counts[r], "all_to_all_v");
      displs_[r] = to_int(so, "all_to_all_v");
      counts2_[r] = to_int(recv_counts[r], "all_to_all_v");
      displs2_[r] = to_int(ro, "all_to_all_v");
      so += send_counts[r];
      ro += recv_counts[r];
    }
    check_mpi(MPI_Alltoallv(send, counts_.data(), displs_.data(), MPI_FLOAT, recv, counts2_.data(),
                            displs2_.data(), MPI_FLOAT, comm_),
              "MPI_Alltoallv");
  }

  void broadcast_bytes(void* data, size_t n, int root) override {
    HELIX_CHECK(root >= 0 && root < size_, "broadcast: root {} out of range for a group of {}",
                root, size_);
    stats_.add_broadcast(rank_, size_, n, root);
    auto* p = static_cast<char*>(data);
    constexpr size_t kPiece = size_t(1) << 30;
    for (size_t off = 0; off < n; off += kPiece) {
      const size_t len = std::min(kPiece, n - off);
      check_mpi(MPI_Bcast(p + off, int(len), MPI_BYTE, root, comm_), "MPI_Bcast");
    }
  }

  void barrier() override { check_mpi(MPI_Barrier(comm_), "MPI_Barrier"); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm out = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &out),
              "MPI_Comm_split");
    if (out == MPI_COMM_NULL) return nullptr;
    MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
    return std::make_unique<MpiComm>(out, true, stats_.child());
  }

  bool supports_worker_thread() const override {
    int level = MPI_THREAD_SINGLE;
    return MPI_Query_thread(&level) == MPI_SUCCESS && level >= MPI_THREAD_SERIALIZED;
  }

  const CommStats& stats() const override { return stats_.own(); }
  void reset_stats() override { stats_.reset(); }

 private:
  std::pair<size_t, size_t> chunk(size_t n, int i) const {
    return even_split<size_t>(n, size_t(size_), size_t(i));
  }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
  CommStatsChain stats_;
  std::vector<int> counts_, displs_, counts2_, displs2_;
  std::vector<float> buf_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_world() {
  int initialized = 0;
  check_mpi(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = 0;
    // SERIALIZED lets a worker thread run the CP all-to-all (HOP-B); with less, the model does
    // not overlap (supports_worker_thread() reads the level actually provided).
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided),
              "MPI_Init_thread");
    std::atexit(finalize_at_exit);
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  return std::make_unique<MpiComm>(MPI_COMM_WORLD, false, CommStatsChain{});
}

void mpi_abort_if_running(int code) {
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

}  // namespace helix
