! The PMPI library under a Fortran MPI program (Open MPI's mpif.h and
! `use mpi` bindings, which call the PMPI_ C functions directly and so
! bypass the C wrappers). Two ranks. Every call's result is checked
! against what MPI must compute, and the library's counters (through
! pmpi_counters.c) against what the call must register: one registration
! per buffer moved (REGCACHE_PMPI_MIN_BYTES=1), none for MPI_IN_PLACE or
! MPI_BOTTOM, nonblocking ones held until the Wait/Test that completes
! them. Prints "pmpi_fortran: PASSED (2 ranks)" on rank 0.
module counters
  use iso_c_binding, only: c_long_long
  implicit none
  interface
    function acquired() bind(C, name='rcft_acquired')
      import c_long_long
      integer(c_long_long) :: acquired
    end function
    function held() bind(C, name='rcft_held')
      import c_long_long
      integer(c_long_long) :: held
    end function
  end interface
  integer :: failures = 0
  integer(c_long_long) :: mark = 0
contains
  subroutine check(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    if (.not. ok) then
      failures = failures + 1
      print '(a, a)', 'pmpi_fortran: FAILED: ', what
    end if
  end subroutine
  ! Registrations taken since the last call, checked against `want`.
  subroutine took(want, what)
    integer, intent(in) :: want
    character(*), intent(in) :: what
    integer(c_long_long) :: now
    now = acquired()
    if (now - mark /= want) then
      failures = failures + 1
      print '(a, a, a, i0, a, i0)', 'pmpi_fortran: FAILED: ', what, &
        ': registrations taken ', now - mark, ', expected ', want
    end if
    mark = now
  end subroutine
  subroutine holding(want, what)
    integer, intent(in) :: want
    character(*), intent(in) :: what
    if (held() /= want) then
      failures = failures + 1
      print '(a, a, a, i0, a, i0)', 'pmpi_fortran: FAILED: ', what, &
        ': registrations held ', held(), ', expected ', want
    end if
  end subroutine
end module

! The mpif.h binding (the same mpi_send_/mpi_recv_ symbols, no module).
subroutine old_style(rank, n, a, b, expect)
  use counters
  implicit none
  include 'mpif.h'
  integer, intent(in) :: rank, n
  double precision :: a(n), b(n), expect(n)
  integer :: ierr, st(MPI_STATUS_SIZE)
  mark = acquired()
  if (rank == 0) then
    call mpi_send(a, n, MPI_DOUBLE_PRECISION, 1, 7, MPI_COMM_WORLD, ierr)
  else
    b = 0
    call mpi_recv(b, n, MPI_DOUBLE_PRECISION, 0, 7, MPI_COMM_WORLD, st, ierr)
    call check(all(b == expect), 'mpif.h recv data')
  end if
  call took(1, 'mpif.h send/recv')
end subroutine

program pmpi_fortran
  use mpi
  use counters
  implicit none
  integer, parameter :: n = 65536
  integer :: ierr, rank, nranks, peer, i, k, idx, outn, done, provided
  integer :: reqs(4), idxs(4), counts(2), displs(2), types(2), st(MPI_STATUS_SIZE)
  integer :: bottom_type, blen(1)
  integer(kind=MPI_ADDRESS_KIND) :: addr(1)
  double precision, allocatable :: a(:), b(:), c(:), d(:), mine(:), theirs(:), mine_two(:)
  character, allocatable :: bsend_buf(:)
  logical :: flag
  integer :: t0

  call mpi_init_thread(MPI_THREAD_SINGLE, provided, ierr)
  call mpi_comm_rank(MPI_COMM_WORLD, rank, ierr)
  call mpi_comm_size(MPI_COMM_WORLD, nranks, ierr)
  if (nranks /= 2) then
    print *, 'pmpi_fortran: needs 2 ranks'
    call mpi_abort(MPI_COMM_WORLD, 2, ierr)
  end if
  if (acquired() < 0) then
    print *, 'pmpi_fortran: FAILED: libregcache_pmpi.so is not preloaded'
    call mpi_abort(MPI_COMM_WORLD, 3, ierr)
  end if
  peer = 1 - rank
  allocate (a(n), b(n), c(2 * n), d(2 * n), mine(n), theirs(n), mine_two(2 * n))
  do i = 1, n
    mine(i) = rank * 1d6 + i
    theirs(i) = peer * 1d6 + i
  end do
  a = mine
  mark = acquired()

  ! ---- blocking point-to-point ----
  b = 0
  if (rank == 0) then
    call mpi_send(a, n, MPI_DOUBLE_PRECISION, 1, 1, MPI_COMM_WORLD, ierr)
    call took(1, 'send')
    call mpi_recv(b, n, MPI_DOUBLE_PRECISION, 1, 2, MPI_COMM_WORLD, MPI_STATUS_IGNORE, ierr)
    call took(1, 'recv')
  else
    call mpi_recv(b, n, MPI_DOUBLE_PRECISION, 0, 1, MPI_COMM_WORLD, st, ierr)
    call took(1, 'recv')
    call mpi_ssend(a, n, MPI_DOUBLE_PRECISION, 0, 2, MPI_COMM_WORLD, ierr)
    call took(1, 'ssend')
  end if
  call check(all(b == theirs), 'send/recv/ssend data')
  call check(ierr == MPI_SUCCESS, 'ierr written')

  b = 0
  call mpi_sendrecv(a, n, MPI_DOUBLE_PRECISION, peer, 3, b, n, MPI_DOUBLE_PRECISION, peer, 3, &
                    MPI_COMM_WORLD, st, ierr)
  call took(2, 'sendrecv')
  call check(all(b == theirs), 'sendrecv data')
  b = mine
  call mpi_sendrecv_replace(b, n, MPI_DOUBLE_PRECISION, peer, 4, peer, 4, MPI_COMM_WORLD, &
                            MPI_STATUS_IGNORE, ierr)
  call took(1, 'sendrecv_replace')
  call check(all(b == theirs), 'sendrecv_replace data')

  ! Rsend to a posted receive; Bsend through an attached buffer.
  b = 0
  if (rank == 1) call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, 0, 5, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_barrier(MPI_COMM_WORLD, ierr)
  if (rank == 0) then
    call mpi_rsend(a, n, MPI_DOUBLE_PRECISION, 1, 5, MPI_COMM_WORLD, ierr)
  else
    call mpi_wait(reqs(1), st, ierr)
    call check(reqs(1) == MPI_REQUEST_NULL, 'wait nulls the request')
    call check(all(b == theirs), 'rsend data')
  end if
  call took(1, 'rsend / irecv')
  call holding(0, 'after rsend')
  allocate (bsend_buf(8 * n + MPI_BSEND_OVERHEAD))
  call mpi_buffer_attach(bsend_buf, size(bsend_buf), ierr)
  b = 0
  if (rank == 0) then
    call mpi_bsend(a, n, MPI_DOUBLE_PRECISION, 1, 6, MPI_COMM_WORLD, ierr)
  else
    call mpi_recv(b, n, MPI_DOUBLE_PRECISION, 0, 6, MPI_COMM_WORLD, st, ierr)
    call check(all(b == theirs), 'bsend data')
  end if
  call took(1, 'bsend / recv')
  call mpi_buffer_detach(bsend_buf, k, ierr)

  call old_style(rank, n, a, b, theirs)

  ! ---- nonblocking point-to-point ----
  ! Waitall: both held until it returns.
  b = 0
  mark = acquired()
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 10, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_isend(a, n, MPI_DOUBLE_PRECISION, peer, 10, MPI_COMM_WORLD, reqs(2), ierr)
  call took(2, 'irecv + isend')
  call holding(2, 'irecv + isend in flight')
  call mpi_waitall(2, reqs, MPI_STATUSES_IGNORE, ierr)
  call holding(0, 'after waitall')
  call check(all(b == theirs), 'waitall data')

  ! Testany until both are done (1-based index, MPI_UNDEFINED at the end).
  b = 0
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 11, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_issend(a, n, MPI_DOUBLE_PRECISION, peer, 11, MPI_COMM_WORLD, reqs(2), ierr)
  call took(2, 'irecv + issend')
  done = 0
  do while (done < 2)
    call mpi_testany(2, reqs, idx, flag, st, ierr)
    if (flag .and. idx /= MPI_UNDEFINED) then
      call check(idx == 1 .or. idx == 2, 'testany index')
      done = done + 1
      call holding(2 - done, 'after testany')
    end if
  end do
  call mpi_testany(2, reqs, idx, flag, st, ierr)
  call check(flag .and. idx == MPI_UNDEFINED, 'testany on null requests')
  call check(all(b == theirs), 'testany data')

  ! Waitany twice.
  b = 0
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 12, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_isend(a, n, MPI_DOUBLE_PRECISION, peer, 12, MPI_COMM_WORLD, reqs(2), ierr)
  do k = 1, 2
    call mpi_waitany(2, reqs, idx, st, ierr)
    call holding(2 - k, 'after waitany')
  end do
  call check(all(b == theirs), 'waitany data')

  ! Waitsome and Testsome.
  b = 0
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 13, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_isend(a, n, MPI_DOUBLE_PRECISION, peer, 13, MPI_COMM_WORLD, reqs(2), ierr)
  done = 0
  do while (done < 2)
    call mpi_waitsome(2, reqs, outn, idxs, MPI_STATUSES_IGNORE, ierr)
    if (outn /= MPI_UNDEFINED .and. outn > 0) then
      done = done + outn
      call check(all(idxs(1:outn) >= 1 .and. idxs(1:outn) <= 2), 'waitsome indices')
      call holding(2 - done, 'after waitsome')
    end if
  end do
  call check(all(b == theirs), 'waitsome data')
  b = 0
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 14, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_buffer_attach(bsend_buf, size(bsend_buf), ierr)
  call mpi_ibsend(a, n, MPI_DOUBLE_PRECISION, peer, 14, MPI_COMM_WORLD, reqs(2), ierr)
  done = 0
  do while (done < 2)
    call mpi_testsome(2, reqs, outn, idxs, MPI_STATUSES_IGNORE, ierr)
    if (outn /= MPI_UNDEFINED .and. outn > 0) then
      done = done + outn
      call check(all(idxs(1:outn) >= 1 .and. idxs(1:outn) <= 2), 'testsome indices')
      call holding(2 - done, 'after testsome')
    end if
  end do
  call check(all(b == theirs), 'testsome data')
  call mpi_buffer_detach(bsend_buf, k, ierr)

  ! Test and Testall until done.
  b = 0
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 15, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_isend(a, n, MPI_DOUBLE_PRECISION, peer, 15, MPI_COMM_WORLD, reqs(2), ierr)
  flag = .false.
  do while (.not. flag)
    call mpi_test(reqs(2), flag, st, ierr)
  end do
  call holding(1, 'after test')
  flag = .false.
  do while (.not. flag)
    call mpi_testall(2, reqs, flag, MPI_STATUSES_IGNORE, ierr)
  end do
  call holding(0, 'after testall')
  call check(all(b == theirs), 'test/testall data')

  ! A freed active send releases at once; the receive still gets the data.
  b = 0
  mark = acquired()
  call mpi_irecv(b, n, MPI_DOUBLE_PRECISION, peer, 16, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_isend(a, n, MPI_DOUBLE_PRECISION, peer, 16, MPI_COMM_WORLD, reqs(2), ierr)
  call mpi_request_free(reqs(2), ierr)
  call took(2, 'irecv + isend before free')
  call holding(1, 'after request_free')
  call mpi_wait(reqs(1), MPI_STATUS_IGNORE, ierr)
  call holding(0, 'after wait')
  call check(all(b == theirs), 'freed send data')
  call mpi_barrier(MPI_COMM_WORLD, ierr)

  ! ---- persistent requests: registered at each start ----
  call mpi_recv_init(b, n, MPI_DOUBLE_PRECISION, peer, 20, MPI_COMM_WORLD, reqs(1), ierr)
  call mpi_send_init(a, n, MPI_DOUBLE_PRECISION, peer, 20, MPI_COMM_WORLD, reqs(2), ierr)
  mark = acquired()
  call holding(0, 'persistent, inactive')
  do k = 1, 3
    b = 0
    if (k == 1) then
      call mpi_start(reqs(1), ierr)
      call mpi_start(reqs(2), ierr)
    else
      call mpi_startall(2, reqs, ierr)
    end if
    call holding(2, 'persistent, started')
    call mpi_waitall(2, reqs, MPI_STATUSES_IGNORE, ierr)
    call holding(0, 'persistent, completed')
    call check(reqs(1) /= MPI_REQUEST_NULL, 'persistent request stays')
    call check(all(b == theirs), 'persistent data')
  end do
  call took(6, 'three starts of two persistent requests')
  call mpi_request_free(reqs(1), ierr)
  call mpi_request_free(reqs(2), ierr)

  ! ---- collectives ----
  mark = acquired()
  b = mine
  call mpi_bcast(b, n, MPI_DOUBLE_PRECISION, 1, MPI_COMM_WORLD, ierr)
  call took(1, 'bcast')
  call check(all(b == 1d6 + [(dble(i), i = 1, n)]), 'bcast data')

  call mpi_allreduce(a, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(2, 'allreduce')
  call check(all(b == mine + theirs), 'allreduce data')
  b = mine
  call mpi_allreduce(MPI_IN_PLACE, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(1, 'allreduce with MPI_IN_PLACE (the receive buffer only)')
  call check(all(b == mine + theirs), 'allreduce in place data')

  b = mine
  if (rank == 0) then
    call mpi_reduce(MPI_IN_PLACE, b, n, MPI_DOUBLE_PRECISION, MPI_MAX, 0, MPI_COMM_WORLD, ierr)
    call check(all(b == theirs), 'reduce in place at the root')
  else
    call mpi_reduce(b, c, n, MPI_DOUBLE_PRECISION, MPI_MAX, 0, MPI_COMM_WORLD, ierr)
  end if
  call took(1, 'reduce (in place at the root; send buffer elsewhere)')

  call mpi_scan(a, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(2, 'scan')
  if (rank == 1) call check(all(b == mine + theirs), 'scan data')
  call mpi_exscan(a, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(2, 'exscan')
  if (rank == 1) call check(all(b == theirs), 'exscan data')

  ! Gather/Scatter at root 0: the root's full buffer, a block elsewhere.
  c = -1
  call mpi_gather(a, n, MPI_DOUBLE_PRECISION, c, n, MPI_DOUBLE_PRECISION, 0, MPI_COMM_WORLD, ierr)
  call took(merge(2, 1, rank == 0), 'gather')
  if (rank == 0) call check(all(c(1:n) == mine) .and. all(c(n + 1:) == theirs), 'gather data')
  counts = [n / 2, n]
  displs = [n, 0]
  c = -1
  call mpi_gatherv(a, counts(rank + 1), MPI_DOUBLE_PRECISION, c, counts, displs, &
                   MPI_DOUBLE_PRECISION, 0, MPI_COMM_WORLD, ierr)
  call took(merge(2, 1, rank == 0), 'gatherv')
  if (rank == 0) call check(all(c(n + 1:n + n / 2) == mine(1:n / 2)) .and. all(c(1:n) == theirs), &
                            'gatherv data')
  do i = 1, 2 * n
    c(i) = i
  end do
  b = 0
  call mpi_scatter(c, n, MPI_DOUBLE_PRECISION, b, n, MPI_DOUBLE_PRECISION, 1, MPI_COMM_WORLD, ierr)
  call took(merge(2, 1, rank == 1), 'scatter')
  call check(all(b == [(dble(i + rank * n), i = 1, n)]), 'scatter data')
  b = 0
  call mpi_scatterv(c, counts, displs, MPI_DOUBLE_PRECISION, b, counts(rank + 1), &
                    MPI_DOUBLE_PRECISION, 1, MPI_COMM_WORLD, ierr)
  call took(merge(2, 1, rank == 1), 'scatterv')
  call check(all(b(1:counts(rank + 1)) == [(dble(i + displs(rank + 1)), i = 1, counts(rank + 1))]), &
             'scatterv data')

  c = -1
  call mpi_allgather(a, n, MPI_DOUBLE_PRECISION, c, n, MPI_DOUBLE_PRECISION, MPI_COMM_WORLD, ierr)
  call took(2, 'allgather')
  call check(all(c(rank * n + 1:rank * n + n) == mine) .and. all(c(peer * n + 1:peer * n + n) == theirs), &
             'allgather data')
  c = -1
  c(rank * n + 1:rank * n + n) = mine
  call mpi_allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, c, n, MPI_DOUBLE_PRECISION, &
                     MPI_COMM_WORLD, ierr)
  call took(1, 'allgather with MPI_IN_PLACE')
  call check(all(c(peer * n + 1:peer * n + n) == theirs), 'allgather in place data')
  c = -1
  call mpi_allgatherv(a, counts(rank + 1), MPI_DOUBLE_PRECISION, c, counts, displs, &
                      MPI_DOUBLE_PRECISION, MPI_COMM_WORLD, ierr)
  call took(2, 'allgatherv')
  call check(all(c(displs(peer + 1) + 1:displs(peer + 1) + counts(peer + 1)) == &
                 theirs(1:counts(peer + 1))), 'allgatherv data')

  ! Alltoall: block j of a goes to rank j.
  do i = 1, 2 * n
    c(i) = rank * 1d6 + i
  end do
  mine_two = -1
  call mpi_alltoall(c, n, MPI_DOUBLE_PRECISION, mine_two, n, MPI_DOUBLE_PRECISION, &
                    MPI_COMM_WORLD, ierr)
  call took(2, 'alltoall')
  call check(all(mine_two(peer * n + 1:peer * n + n) == &
                 [(peer * 1d6 + rank * n + i, i = 1, n)]), 'alltoall data')
  mine_two = -1
  counts = [n, n]
  displs = [0, n]
  call mpi_alltoallv(c, counts, displs, MPI_DOUBLE_PRECISION, mine_two, counts, displs, &
                     MPI_DOUBLE_PRECISION, MPI_COMM_WORLD, ierr)
  call took(2, 'alltoallv')
  call check(all(mine_two(peer * n + 1:peer * n + n) == &
                 [(peer * 1d6 + rank * n + i, i = 1, n)]), 'alltoallv data')
  mine_two = -1
  types = [MPI_DOUBLE_PRECISION, MPI_DOUBLE_PRECISION]
  displs = [0, 8 * n]
  call mpi_alltoallw(c, counts, displs, types, mine_two, counts, displs, types, &
                     MPI_COMM_WORLD, ierr)
  call took(2, 'alltoallw')
  call check(all(mine_two(peer * n + 1:peer * n + n) == &
                 [(peer * 1d6 + rank * n + i, i = 1, n)]), 'alltoallw data')

  ! Reduce_scatter(_block): block r of the sum goes to rank r.
  b = 0
  call mpi_reduce_scatter_block(c, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(2, 'reduce_scatter_block')
  call check(all(b == [(1d6 + 2 * (rank * n + i), i = 1, n)]), 'reduce_scatter_block data')
  b = 0
  call mpi_reduce_scatter(c, b, counts, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, ierr)
  call took(2, 'reduce_scatter')
  call check(all(b == [(1d6 + 2 * (rank * n + i), i = 1, n)]), 'reduce_scatter data')
  call holding(0, 'after the blocking collectives')

  ! ---- nonblocking collectives: held until completed ----
  call mpi_iallreduce(a, b, n, MPI_DOUBLE_PRECISION, MPI_SUM, MPI_COMM_WORLD, reqs(1), ierr)
  call holding(2, 'iallreduce in flight')
  call mpi_wait(reqs(1), MPI_STATUS_IGNORE, ierr)
  call holding(0, 'iallreduce completed')
  call check(all(b == mine + theirs), 'iallreduce data')
  b = mine
  call mpi_ibcast(b, n, MPI_DOUBLE_PRECISION, 0, MPI_COMM_WORLD, reqs(1), ierr)
  mine_two = -1
  call mpi_ialltoall(c, n, MPI_DOUBLE_PRECISION, mine_two, n, MPI_DOUBLE_PRECISION, &
                     MPI_COMM_WORLD, reqs(2), ierr)
  d = -1
  d(rank * n + 1:rank * n + n) = mine
  call mpi_iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, d, n, MPI_DOUBLE_PRECISION, &
                      MPI_COMM_WORLD, reqs(3), ierr)
  call holding(4, 'ibcast + ialltoall + iallgather(in place) in flight')
  flag = .false.
  do while (.not. flag)
    call mpi_testall(3, reqs, flag, MPI_STATUSES_IGNORE, ierr)
  end do
  call holding(0, 'nonblocking collectives completed')
  call check(all(b == [(dble(i), i = 1, n)]), 'ibcast data')
  call check(all(mine_two(peer * n + 1:peer * n + n) == &
                 [(peer * 1d6 + rank * n + i, i = 1, n)]), 'ialltoall data')
  call check(all(d(peer * n + 1:peer * n + n) == theirs), 'iallgather in place data')

  ! ---- MPI_BOTTOM: absolute addresses, never ranged ----
  call mpi_get_address(a, addr(1), ierr)
  blen(1) = n
  call mpi_type_create_hindexed(1, blen, addr, MPI_DOUBLE_PRECISION, bottom_type, ierr)
  call mpi_type_commit(bottom_type, ierr)
  mark = acquired()
  b = 0
  if (rank == 0) then
    call mpi_send(MPI_BOTTOM, 1, bottom_type, 1, 30, MPI_COMM_WORLD, ierr)
    call took(0, 'send from MPI_BOTTOM')
  else
    call mpi_recv(b, n, MPI_DOUBLE_PRECISION, 0, 30, MPI_COMM_WORLD, st, ierr)
    call took(1, 'recv')
    call check(all(b == theirs), 'MPI_BOTTOM data')
  end if
  call mpi_type_free(bottom_type, ierr)

  call holding(0, 'at the end')
  t0 = failures
  call mpi_allreduce(t0, failures, 1, MPI_INTEGER, MPI_SUM, MPI_COMM_WORLD, ierr)
  if (rank == 0 .and. failures == 0) print '(a)', 'pmpi_fortran: PASSED (2 ranks)'
  call mpi_finalize(ierr)
  if (failures /= 0) stop 1
end program
