/* The PMPI library's counters for pmpi_fortran.f90 (Fortran cannot look a
 * symbol up at run time): -1 when libregcache_pmpi.so is not loaded. */
#include <dlfcn.h>
#include <stddef.h>

static long long counter(const char *name)
{
    size_t (*f)(void) = (size_t (*)(void))dlsym(RTLD_DEFAULT, name);
    return f != NULL ? (long long)f() : -1;
}

long long rcft_acquired(void)
{
    return counter("regcache_pmpi_acquired");
}

long long rcft_held(void)
{
    return counter("regcache_pmpi_held");
}
