# End-to-end tests of scripts/ablate (issue: precision ablation): a sweep's recipes start from the
# same weights and batches, fp8_stats.jsonl and the figures are written, bad input is refused and
# a failed run is reported without stopping the sweep; every checked-in report with runs/ is what they give.
set(DAEDALUS_ABLATE_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/ablate_e2e.sh)
foreach(case same_start refuses_existing failed_run stats_resume seeds checked_in_report)
  add_test(NAME cli.ablate.${case}
           COMMAND ${DAEDALUS_ABLATE_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/cli-ablate-${case})
  set_tests_properties(cli.ablate.${case} PROPERTIES TIMEOUT 300 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
add_test(NAME cli.ablate.unknown_recipe
         COMMAND ${DAEDALUS_EXPECT} 1 "unknown recipe 'fp9'.*valid recipes: fp32, bf16, .*mxfp8"
                 -- ${PROJECT_SOURCE_DIR}/scripts/ablate ${PROJECT_SOURCE_DIR}/configs/tiny.yaml --recipes bf16,fp9
                    --out ${CMAKE_CURRENT_BINARY_DIR}/cli-ablate-unknown)
