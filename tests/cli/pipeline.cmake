# Pipeline stages end to end (included by tests/CMakeLists.txt): `daedalus train` under mpirun with
# parallel.pipeline_parallel 2 on tests/cli/configs/multirank.yaml (2 decoder layers, MTP on), 4
# micro-batches per step, checkpoints every 3 steps, against the same config on one rank:
#   pp2            exits 0, says its stages, logs the measured bubble of each stage beside (P-1)/(m+P-1)
#   pp2_to_np1     the PP 2 checkpoint of step 3 resumed on one rank
#   np1_to_pp2     the one-rank checkpoint of step 3 resumed on PP 2
# and both resumed runs must log steps 4-6 as the uninterrupted one-rank run does (same samples,
# same weights: the loss to fp32 summation order, 1e-6). Faults: the last stage killed (SIGKILL) or
# stopped (SIGSTOP) mid-run ends the job within parallel.timeout_s + 15 s, exit non-zero, and the
# newest checkpoint still verifies (kill_rank.sh).

# Uses multirank.cmake's MR_* settings (mpirun, environment, checker), included before this file.
set(PP_DIR ${CMAKE_CURRENT_BINARY_DIR}/cli-pipeline)
set(PP_ARGS --config ${CMAKE_CURRENT_SOURCE_DIR}/cli/configs/multirank.yaml --set train.grad_accum_steps=4
            --set train.steps=6 --set checkpoint.every=3 --set checkpoint.keep_last=0)
set(PP_TRAIN $<TARGET_FILE:daedalus> train ${PP_ARGS})

function(pipeline_test name code regex)
  add_test(NAME pipeline.${name} COMMAND ${DAEDALUS_EXPECT} ${code} ${regex} -- ${ARGN})
  set_tests_properties(pipeline.${name} PROPERTIES TIMEOUT 60 LABELS mpi ENVIRONMENT "${MR_ENV}"
                                                   FIXTURES_REQUIRED pipeline_clean)
endfunction()

add_test(NAME pipeline.clean COMMAND ${CMAKE_COMMAND} -E rm -rf ${PP_DIR})
set_tests_properties(pipeline.clean PROPERTIES FIXTURES_SETUP pipeline_clean)

pipeline_test(np1 0 "done: 6 steps" ${MR_MPIRUN} -np 1 ${PP_TRAIN} --set run.dir=${PP_DIR}/np1)
pipeline_test(pp2 0 "pipeline 2 stages \\(layers 1, 1. 1F1B, 4 micro-batches\\)"
              ${MR_MPIRUN} -np 2 ${PP_TRAIN} --set run.dir=${PP_DIR}/pp2 --set parallel.pipeline_parallel=2)
set_tests_properties(pipeline.np1 PROPERTIES FIXTURES_SETUP pipeline_np1)
set_tests_properties(pipeline.pp2 PROPERTIES FIXTURES_SETUP pipeline_pp2)
pipeline_test(pp2_to_np1 0 "saved by world 2, expert parallel 1, pipeline 2"
              ${MR_MPIRUN} -np 1 ${PP_TRAIN} --set run.dir=${PP_DIR}/pp2_to_np1
              --set checkpoint.resume=${PP_DIR}/pp2/checkpoints/step_00000003.h5)
pipeline_test(np1_to_pp2 0 "saved by world 1, expert parallel 1, pipeline 1"
              ${MR_MPIRUN} -np 2 ${PP_TRAIN} --set run.dir=${PP_DIR}/np1_to_pp2 --set parallel.pipeline_parallel=2
              --set checkpoint.resume=${PP_DIR}/np1/checkpoints/step_00000003.h5)
set_tests_properties(pipeline.pp2_to_np1 PROPERTIES FIXTURES_REQUIRED "pipeline_pp2;pipeline_np1"
                                                    FIXTURES_SETUP pipeline_pp2_to_np1)
set_tests_properties(pipeline.np1_to_pp2 PROPERTIES FIXTURES_REQUIRED "pipeline_np1" FIXTURES_SETUP pipeline_np1_to_pp2)

# One layout whatever the stages: the PP 2 checkpoint verifies and lists exactly the one-rank
# checkpoint's datasets with their shapes (daedalus inspect, digests cut off).
pipeline_test(checkpoint_verifies 0 "verdict +OK"
              $<TARGET_FILE:daedalus> inspect ${PP_DIR}/pp2/checkpoints/step_00000006.h5)
set(PP_LIST "$<TARGET_FILE:daedalus> inspect @CKPT@ | grep '^  /' | sed -E 's/ +[0-9a-f]{16}$//'")
string(REPLACE @CKPT@ ${PP_DIR}/pp2/checkpoints/step_00000006.h5 PP_LIST_PP2 "${PP_LIST}")
string(REPLACE @CKPT@ ${PP_DIR}/np1/checkpoints/step_00000006.h5 PP_LIST_NP1 "${PP_LIST}")
add_test(NAME pipeline.checkpoint_layout COMMAND bash -c "diff <(${PP_LIST_PP2}) <(${PP_LIST_NP1}) && echo same datasets")
set_tests_properties(pipeline.checkpoint_verifies pipeline.checkpoint_layout PROPERTIES
                     FIXTURES_REQUIRED "pipeline_pp2;pipeline_np1" PASS_REGULAR_EXPRESSION "verdict +OK|same datasets")
add_test(NAME pipeline.bubble_logged
         COMMAND ${DAEDALUS_EXPECT} 0 "\"pipeline_bubble\":\\[0\\.[0-9]+,0\\.[0-9]+\\],\"pipeline_bubble_theory\":0\\.2,\"stage_mem_bytes\":\\[[1-9][0-9]*,[1-9][0-9]*\\]"
                 -- ${CMAKE_COMMAND} -E cat ${PP_DIR}/pp2/metrics.jsonl)
set_tests_properties(pipeline.bubble_logged PROPERTIES FIXTURES_REQUIRED pipeline_pp2)

if(MR_PYTHON)
  foreach(resumed pp2_to_np1 np1_to_pp2)
    foreach(step 4 6)
      add_test(NAME pipeline.${resumed}.step${step}_matches
               COMMAND ${MR_CHECK} step ${PP_DIR}/${resumed}/metrics.jsonl ${PP_DIR}/np1/metrics.jsonl ${step} 1e-6)
      set_tests_properties(pipeline.${resumed}.step${step}_matches PROPERTIES
                           FIXTURES_REQUIRED "pipeline_np1;pipeline_${resumed}")
    endforeach()
  endforeach()
  add_test(NAME pipeline.pp2.step6_matches
           COMMAND ${MR_CHECK} step ${PP_DIR}/pp2/metrics.jsonl ${PP_DIR}/np1/metrics.jsonl 6 1e-6)
  set_tests_properties(pipeline.pp2.step6_matches PROPERTIES FIXTURES_REQUIRED "pipeline_np1;pipeline_pp2")
endif()

# Recomputation on the stages (each micro-batch's tape reruns its spans in backward): the same
# 6 steps as one rank without it (measured 5e-8 on the loss for selective and full).
pipeline_test(pp2_recompute_full 0 "done: 6 steps"
              ${MR_MPIRUN} -np 2 ${PP_TRAIN} --set run.dir=${PP_DIR}/pp2_recompute --set parallel.pipeline_parallel=2
              --set train.recompute=full --set checkpoint.every=0)
set_tests_properties(pipeline.pp2_recompute_full PROPERTIES FIXTURES_SETUP pipeline_pp2_recompute)
if(MR_PYTHON)
  add_test(NAME pipeline.pp2_recompute_full.step6_matches
           COMMAND ${MR_CHECK} step ${PP_DIR}/pp2_recompute/metrics.jsonl ${PP_DIR}/np1/metrics.jsonl 6 1e-6)
  set_tests_properties(pipeline.pp2_recompute_full.step6_matches PROPERTIES
                       FIXTURES_REQUIRED "pipeline_np1;pipeline_pp2_recompute")
endif()

# With ZeRO-1 (4 ranks: PP 2 x 2 data-parallel ranks, micro-batches of 2 so the global batch is
# the one-rank run's 4): each stage's ranks write their shards of the moments into the same
# datasets; the checkpoint of step 3 continues on one rank. Steps 4 and 6 match the one-rank run
# up to the data-parallel reordering of its first 3 steps (measured 3e-7 on the gradient norm;
# 1e-5, as AdamW may turn a rounding-level gradient difference into a larger step).
pipeline_test(pp2_zero1 0 "pipeline 2 stages"
              ${MR_MPIRUN} -np 4 ${PP_TRAIN} --set run.dir=${PP_DIR}/pp2_zero1 --set parallel.pipeline_parallel=2
              --set parallel.zero_stage=1 --set train.micro_batch_size=2)
set_tests_properties(pipeline.pp2_zero1 PROPERTIES FIXTURES_SETUP pipeline_pp2_zero1)
pipeline_test(pp2_zero1_to_np1 0 "saved by world 4, expert parallel 1, pipeline 2"
              ${MR_MPIRUN} -np 1 ${PP_TRAIN} --set run.dir=${PP_DIR}/pp2_zero1_to_np1
              --set checkpoint.resume=${PP_DIR}/pp2_zero1/checkpoints/step_00000003.h5)
set_tests_properties(pipeline.pp2_zero1_to_np1 PROPERTIES FIXTURES_REQUIRED pipeline_pp2_zero1
                                                          FIXTURES_SETUP pipeline_pp2_zero1_to_np1)
if(MR_PYTHON)
  foreach(step 4 6)
    add_test(NAME pipeline.pp2_zero1_to_np1.step${step}_matches
             COMMAND ${MR_CHECK} step ${PP_DIR}/pp2_zero1_to_np1/metrics.jsonl ${PP_DIR}/np1/metrics.jsonl ${step} 1e-5)
    set_tests_properties(pipeline.pp2_zero1_to_np1.step${step}_matches PROPERTIES
                         FIXTURES_REQUIRED "pipeline_np1;pipeline_pp2_zero1_to_np1")
  endforeach()
endif()

# A NaN made on the last stage only (test hook on rank 1: its loss seed at step 2) flows back to
# stage 0 through the sent gradients; the global norm is non-finite on both, so both skip step 2
# and train on (a stage that stepped alone would leave the two out of step; one that waited, hang).
pipeline_test(nan_on_last_stage_skips 0 "done: 4 steps \\(1 skipped\\)"
              ${MR_MPIRUN} -np 1 ${PP_TRAIN} --set run.dir=${PP_DIR}/nan --set parallel.pipeline_parallel=2
              --set train.steps=4 --set train.on_nonfinite=skip --set train.max_skipped_steps=1
              : -np 1 -x DAEDALUS_TEST_NAN_AT_STEP=2 ${PP_TRAIN} --set run.dir=${PP_DIR}/nan
              --set parallel.pipeline_parallel=2 --set train.steps=4 --set train.on_nonfinite=skip
              --set train.max_skipped_steps=1)

# A stage killed or stopped mid-run (checkpoints every 2 steps): the job ends, the last checkpoint verifies.
foreach(signal KILL STOP)
  add_test(NAME pipeline.sig${signal}_last_stage
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/kill_rank.sh ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:daedalus>
                   ${MR_CONFIG} ${PP_DIR}/sig${signal} 30 ${signal} --set parallel.pipeline_parallel=2
                   --set train.grad_accum_steps=2 --set checkpoint.every=2)
  set_tests_properties(pipeline.sig${signal}_last_stage PROPERTIES TIMEOUT 180 LABELS mpi ENVIRONMENT "${MR_ENV}"
                                                                  FIXTURES_REQUIRED pipeline_clean)
endforeach()

# `daedalus plan` per stage: DeepSeek-V3's layout (2048 H800s as 16 stages x EP 64 x ZeRO-1, 120
# micro-batches of 4096 tokens, whole layers recomputed) fits the heaviest stage in 80 GB; a world
# the stages and EP do not divide is bad input naming the key.
add_test(NAME pipeline.plan_deepseek_v3_pp16
         COMMAND ${DAEDALUS_EXPECT} 0 "peak +[0-9.]+ GiB  of 74.50 GiB: fits"
                 -- $<TARGET_FILE:daedalus> plan ${PROJECT_SOURCE_DIR}/configs/deepseek-v3.yaml --world 2048
                    --hardware h800 --set parallel.zero_stage=1 --set parallel.pipeline_parallel=16
                    --set train.grad_accum_steps=120 --set train.recompute=full)
add_test(NAME pipeline.plan_bad_world
         COMMAND ${DAEDALUS_EXPECT} 1 "parallel.pipeline_parallel: 16 stages"
                 -- $<TARGET_FILE:daedalus> plan ${PROJECT_SOURCE_DIR}/configs/deepseek-v3.yaml --world 512
                    --hardware h800 --set parallel.pipeline_parallel=16)
