# End-to-end tests of checkpoints through the daedalus binary (included by tests/CMakeLists.txt):
# save / inspect, damaged files (truncated, flipped byte, missing, not HDF5), resume: auto skipping
# a corrupt checkpoint, SIGTERM mid-run, export-hf and eval, a checkpoint of another model shape
# (resume, eval, init_from strict and not), and resharding between mpirun -np 2 (expert_parallel 2)
# and one process in both directions, plus a signal on one rank of two; a changed character of the
# stored config (inspect, export-hf, resume: auto); a full disk during a save (a small tmpfs, 1 and 2
# ranks; skipped where no tmpfs can be mounted) and a file-size limit. The cases are in
# tests/cli/checkpoint_e2e.sh; each takes a few seconds on 2 cores.
set(CKPT_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/checkpoint_e2e.sh)
set(CKPT_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1")

foreach(case save_inspect damaged resume_auto sigterm export_eval other_shape reshard_2_to_1 reshard_1_to_2
             signal_2_ranks metadata_flip disk_full disk_full_2_ranks file_size_limit)
  add_test(NAME checkpoint.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${CKPT_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-checkpoint-${case} ${MPIEXEC_EXECUTABLE})
  set_tests_properties(checkpoint.${case} PROPERTIES TIMEOUT 120 ENVIRONMENT "${CKPT_ENV}"
                       SKIP_REGULAR_EXPRESSION "SKIP: ")
  if(case MATCHES "_2")
    set_tests_properties(checkpoint.${case} PROPERTIES LABELS mpi)
  endif()
endforeach()
