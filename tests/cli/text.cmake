# End-to-end tests of the text commands (included by tests/CMakeLists.txt): tokenize round trips,
# prepare-data through a tokenizer, two steps of chat fine-tuning, and bad input; the cases are in
# tests/cli/text_e2e.sh (chat takes ~20 s on 2 loaded cores, the others about a second).
set(TEXT_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/text_e2e.sh)
foreach(case tokenize prepare chat)
  add_test(NAME text.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${TEXT_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-text-${case})
  set_tests_properties(text.${case} PROPERTIES TIMEOUT 180 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
# The loss-token mean across micro-batches, ranks and pipeline stages (runs mpirun -np 2).
add_test(NAME text.chat_mean
         COMMAND ${DAEDALUS_EXPECT} 0 "PASS: chat_mean"
                 -- ${TEXT_E2E} chat_mean $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                    ${CMAKE_CURRENT_BINARY_DIR}/cli-text-chat_mean)
set_tests_properties(text.chat_mean PROPERTIES TIMEOUT 300 LABELS mpi
  ENVIRONMENT "OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
