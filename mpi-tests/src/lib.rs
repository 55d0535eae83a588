//! # mpi-tests — MPI programs and runners
//!
//! Skeleton. The C MPI programs and the `mpirun` runners land with the
//! C API / PMPI issue.
