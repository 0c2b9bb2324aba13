# End-to-end tests of `daedalus import-hf` and `checkpoint.init_from: DIR` (included by
# tests/CMakeLists.txt): export -> import -> export round trips byte for byte (fp32, and DeepSeek's
# FP8 blocks with fp32 scales, a YaRN model with MTP), fine-tuning from an HF directory (one rank
# and 2 pipeline stages), and bad
# directories (truncated file, missing shard, index naming a missing tensor, wrong shape,
# unsupported quant_method and rope type): exit 1 naming the file and tensor or key, nothing
# written to --out. The cases are in tests/cli/import_hf_e2e.sh; each takes a few seconds.
set(IMPORT_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/import_hf_e2e.sh)
foreach(case round_trip init_from bad_input)
  add_test(NAME import_hf.${case}
           COMMAND ${DAEDALUS_EXPECT} 0 "PASS: ${case}"
                   -- ${IMPORT_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                      ${CMAKE_CURRENT_BINARY_DIR}/cli-import-${case})
  set_tests_properties(import_hf.${case} PROPERTIES TIMEOUT 120
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1")
endforeach()
