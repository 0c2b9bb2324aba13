# ZeRO-1 checkpoints through the daedalus binary under mpirun (included by tests/CMakeLists.txt):
# shards saved by 4 ranks load on 1 process at stage 0 and the other way round, tensor for tensor;
# a 4-rank ZeRO-1 run stopped half-way continues on 2 ranks and on 1 process like the
# uninterrupted run. The cases are in tests/cli/zero_e2e.sh; each takes a few seconds on 2 cores.
set(ZERO_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/zero_e2e.sh)
foreach(case reshard_4_to_1 reshard_1_to_4 resume)
  add_test(NAME zero.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${ZERO_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-zero-${case} ${MPIEXEC_EXECUTABLE})
  set_tests_properties(zero.${case} PROPERTIES TIMEOUT 120 LABELS mpi
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1")
endforeach()
