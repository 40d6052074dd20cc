# MPI tests (COPROC_MPI): the transport's C unit and the coproc.mpi specs,
# each run by mpirun on this one machine, over shared memory and once more
# over TCP (--mca btl self,tcp) as between nodes. Included from tests.cmake.
# As root, Open MPI wants OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM); set either way.

add_executable(test_transport_mpi ${PROJECT_SOURCE_DIR}/tests/mpi/test_transport_mpi.c
  ${PROJECT_SOURCE_DIR}/src/transport_mpi.c)
target_link_libraries(test_transport_mpi PRIVATE coproc_c MPI::MPI_C)
target_include_directories(test_transport_mpi PRIVATE ${PROJECT_SOURCE_DIR}/tests/c)

set(CP_MPIRUN ${MPIEXEC_EXECUTABLE} --oversubscribe)
set(CP_MPI_ENV "OMPI_ALLOW_RUN_AS_ROOT=1" "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
  # a VM's network may be down: keep Open MPI on loopback and quiet
  "OMPI_MCA_btl_tcp_if_include=lo" "OMPI_MCA_oob_tcp_if_include=lo"
  # rank 0 reports a dead rank between the launcher's SIGTERM and SIGKILL:
  # on a loaded CI machine (valgrind, ASan) Open MPI's default 1 s is not always enough
  "OMPI_MCA_odls_base_sigkill_timeout=2")
if(COPROC_SANITIZE)
  # Open MPI leaks at MPI_Finalize (its components are unloaded by then, so
  # their frames cannot be suppressed by name); coproc's own allocations were
  # checked without this (no coproc frame in the reports).
  list(APPEND CP_MPI_ENV "ASAN_OPTIONS=detect_leaks=0" "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
endif()
foreach(btl shm tcp)
  set(btl_args "")
  if(btl STREQUAL "tcp")
    set(btl_args --mca btl self,tcp)
  endif()
  # Under COPROC_VALGRIND, each rank of this C unit runs under memcheck with
  # Open MPI's suppressions (the coproc.mpi specs below do not: Open MPI's
  # start-up under valgrind takes long and its components are noisy).
  set(vg "")
  if(COPROC_VALGRIND)
    find_file(CP_OMPI_VALGRIND_SUPP openmpi-valgrind.supp PATHS /usr/share/openmpi /usr/local/share/openmpi)
    set(vg ${VALGRIND_EXE} --error-exitcode=99 --leak-check=no -q
      --suppressions=${PROJECT_SOURCE_DIR}/tests/mpi/valgrind.supp)
    if(CP_OMPI_VALGRIND_SUPP)
      list(APPEND vg --suppressions=${CP_OMPI_VALGRIND_SUPP})
    endif()
  endif()
  add_test(NAME mpi/transport_${btl}
    COMMAND ${CP_MPIRUN} ${btl_args} -n 2 ${vg} $<TARGET_FILE:test_transport_mpi>)
  set_tests_properties(mpi/transport_${btl} PROPERTIES TIMEOUT 120 ENVIRONMENT "${CP_MPI_ENV}")
endforeach()

# The coproc.mpi specs: rank 0 runs busted (tests/mpi/*_spec.lua), the other
# two ranks serve. faults_spec starts jobs of its own (each ends in a fault)
# from a plain busted.
file(GLOB CP_MPI_SPECS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/mpi/*_spec.lua)
foreach(spec ${CP_MPI_SPECS})
  get_filename_component(name ${spec} NAME_WE)
  foreach(btl shm tcp)
    set(btl_args "")
    set(btl_env "")
    if(btl STREQUAL "tcp")
      set(btl_args --mca btl self,tcp)
      set(btl_env "CP_MPI_BTL=self,tcp")
    endif()
    if(name STREQUAL "faults_spec")
      add_test(NAME mpi/${name}_${btl}
        COMMAND ${PROJECT_SOURCE_DIR}/tests/run_lua.sh ${CP_SPEC_LUA} ${BUSTED_EXE} --ignore-lua -o utfTerminal ${spec}
        WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    else()
      add_test(NAME mpi/${name}_${btl}
        COMMAND ${CP_MPIRUN} ${btl_args} -n 3 $<TARGET_FILE:coproc-lua> -m coproc.mpi
          ${BUSTED_EXE} --ignore-lua -o utfTerminal ${spec}
        WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
    endif()
    set_tests_properties(mpi/${name}_${btl} PROPERTIES TIMEOUT 120
      ENVIRONMENT "${CP_TEST_ENV};${CP_MPI_ENV};CP_MPIRUN=${MPIEXEC_EXECUTABLE};${btl_env}")
  endforeach()
endforeach()

# The example of docs/mpi.md, as written (it cannot run outside a job, so
# the doc test skips it as a fragment).
add_test(NAME mpi/example_tour
  COMMAND ${CP_MPIRUN} -n 3 $<TARGET_FILE:coproc-lua> -m coproc.mpi ${PROJECT_SOURCE_DIR}/examples/mpi/tour.lua
  WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
set_tests_properties(mpi/example_tour PROPERTIES TIMEOUT 60 ENVIRONMENT "${CP_TEST_ENV};${CP_MPI_ENV}"
  PASS_REGULAR_EXPRESSION "10 20 30.*abab.*rank [12] [(]pid [0-9]+ on .*105")
