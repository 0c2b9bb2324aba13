# End-to-end tests of the text commands (included by tests/CMakeLists.txt): tokenize round trips
# and bad input; the cases are in tests/cli/text_e2e.sh, each well under a second.
set(TEXT_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/text_e2e.sh)
foreach(case tokenize)
  add_test(NAME text.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${TEXT_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-text-${case})
  set_tests_properties(text.${case} PROPERTIES TIMEOUT 60 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
