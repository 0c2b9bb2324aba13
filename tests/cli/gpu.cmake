# End-to-end tests of `daedalus train --set train.device=cuda` (tests/cli/gpu_e2e.sh). Skipped
# (exit 77) without a CUDA backend or a visible device; scripts/gpu-check runs them on a GPU machine.
set(DAEDALUS_GPU_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/gpu_e2e.sh)
foreach(case trains matches_cpu deterministic resume_on_cpu)
  add_test(NAME cli.gpu.${case}
           COMMAND ${DAEDALUS_GPU_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/cli-gpu-${case})
  set_tests_properties(cli.gpu.${case} PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 LABELS gpu
                                                  ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
