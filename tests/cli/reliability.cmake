# End-to-end tests of the trainer under misuse and stalls (included by tests/CMakeLists.txt): a
# second trainer on a run directory in use (exit 1 naming the holder; a killed holder's lock does
# not block), a rank frozen (SIGSTOP) in MPI_Init or before the resume agreement (the job ends
# within parallel.timeout_s), metrics.jsonl on a full device (exit 2 naming it), and a metrics line
# cut short by a crash (dropped on resume). Cases in tests/cli/reliability_e2e.sh.
set(RELIABILITY_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/reliability_e2e.sh)
foreach(case run_dir_lock stop_in_mpi_init_2_ranks stop_in_resume_2_ranks metrics_write_error metrics_truncated_line)
  add_test(NAME reliability.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${RELIABILITY_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-reliability-${case} ${MPIEXEC_EXECUTABLE})
  set_tests_properties(reliability.${case} PROPERTIES TIMEOUT 120
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1")
  if(case MATCHES "_2_ranks")
    set_tests_properties(reliability.${case} PROPERTIES LABELS mpi)
  endif()
endforeach()
