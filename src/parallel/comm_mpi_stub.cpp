// Built when OpenMPI is not found: the MPI backend reports itself missing.
#include "core/error.h"
#include "parallel/comm.h"

namespace helix {

std::unique_ptr<Communicator> make_mpi_world() {
  fail("helix was built without MPI");
}

void mpi_abort_if_running(int) {}

}  // namespace helix
