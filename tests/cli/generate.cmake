# End-to-end tests of `daedalus generate` (included by tests/CMakeLists.txt): streamed text and the
# cache accounting, greedy latent == expanded == a rerun, seeded sampling, the context limit, and
# bad input (prompt too long, byte outside the vocabulary, missing checkpoint, another model shape,
# bad options) exiting 1. The cases are in tests/cli/generate_e2e.sh; each takes a few seconds.
set(GEN_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/generate_e2e.sh)
foreach(case stream context bad_input)
  add_test(NAME generate.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${GEN_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-generate-${case})
  set_tests_properties(generate.${case} PROPERTIES TIMEOUT 120 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
