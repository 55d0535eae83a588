/* The version script of libregcache_pmpi.so's MPI entry points, made from
 * mpi_functions.def by the C preprocessor (build.rs: cc -E -P): every
 * MPI_<name>, and the four Fortran manglings of the F(lower, UPPER) rows.
 *
 * rustc links the cdylib with its own version script, which exports the
 * Rust #[no_mangle] functions and makes every other symbol local, the C
 * objects' included; build.rs passes this one as well, and the linker
 * (rust-lld, rustc's default on x86_64 Linux) merges the two: a name
 * listed here beats rustc's `local: *`. */
#define MPI_FN(name, fortran, shape, how, ...) MPI_##name; EXPORT_##fortran
#define EXPORT_C
#define EXPORT_F(lower, UPPER) mpi_##lower##_; mpi_##lower; mpi_##lower##__; MPI_##UPPER;
{
  global:
#include "mpi_functions.def"
};
