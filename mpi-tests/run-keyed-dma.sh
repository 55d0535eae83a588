#!/bin/sh
# Build the test shim (libmpi_tests.a), compile c/keyed_dma.c with mpicc,
# run it under Open MPI on one node. Needs: openmpi-bin libopenmpi-dev.
# Usage: mpi-tests/run-keyed-dma.sh [NP]   (default 2; extra args to mpirun
# via MPIRUN_ARGS). REGCACHE_TRANSPORT_FORCE_BOUNCE=1 forces the bounce path.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
np=${1:-2}
cargo build -q -p mpi-tests --manifest-path "$root/Cargo.toml"
target=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target/mpi"
mpicc -O2 -Wall -Wextra -o "$target/mpi/keyed_dma" "$here/c/keyed_dma.c" \
    "$target/debug/libmpi_tests.a" -lpthread -ldl -lm
export OMPI_MCA_btl=self,vader
export REGCACHE_TRANSPORT_FORCE_BOUNCE=${REGCACHE_TRANSPORT_FORCE_BOUNCE:-0}
exec mpirun --allow-run-as-root --oversubscribe -np "$np" \
    -x REGCACHE_TRANSPORT_FORCE_BOUNCE ${MPIRUN_ARGS:-} "$target/mpi/keyed_dma"
