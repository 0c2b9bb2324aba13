# End-to-end tests of the FP4 recipes (issue: FP4 recipes): a resumed nvfp4 run (stochastic rounding
# and Hadamard signs keyed by run.seed, step, micro-batch and module) is bit for bit the
# uninterrupted one; FP4 statistics reach fp8_stats.jsonl; fp4_experts trains and exports its
# routed experts in MXFP4 (Quark's layout).
set(DAEDALUS_FP4_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/fp4_e2e.sh)
foreach(case resume_bitexact stats export_mxfp4)
  add_test(NAME cli.fp4.${case}
           COMMAND ${DAEDALUS_FP4_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/cli-fp4-${case})
  set_tests_properties(cli.fp4.${case} PROPERTIES TIMEOUT 300 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
