// Rank and size of MPI_COMM_WORLD for multi-rank tests.
#pragma once

#include <mpi.h>

namespace daedalus::testing {

inline int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

inline int world_size() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

}  // namespace daedalus::testing
