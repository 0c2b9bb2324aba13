# End-to-end tests of `daedalus train` (issue: trainer): run directory, --set, determinism,
# gradient accumulation, NaN handling, loss toward the entropy floor, and bad input (exit 1 with
# the file or key named).
set(DAEDALUS_TRAIN_E2E ${CMAKE_CURRENT_SOURCE_DIR}/cli/train_e2e.sh)
foreach(case writes_run_dir deterministic grad_accumulation nan_skip loss_floor)
  add_test(NAME cli.train.${case}
           COMMAND ${DAEDALUS_TRAIN_E2E} ${case} $<TARGET_FILE:daedalus> ${PROJECT_SOURCE_DIR}
                   ${CMAKE_CURRENT_BINARY_DIR}/cli-train-${case})
  set_tests_properties(cli.train.${case} PROPERTIES TIMEOUT 600 ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()

set(DAEDALUS_TINY ${PROJECT_SOURCE_DIR}/configs/tiny.yaml)
set(DAEDALUS_BAD ${CMAKE_CURRENT_SOURCE_DIR}/cli/bad)
set(DAEDALUS_SYN --set data.format=synthetic --set data.synthetic.tokens=4096 --set train.steps=2
                 --set schedule.warmup_steps=1 --set run.dir=${CMAKE_CURRENT_BINARY_DIR}/cli-train-bad)
add_test(NAME cli.train.nan_abort
         COMMAND ${CMAKE_COMMAND} -E env DAEDALUS_TEST_NAN_AT_STEP=1
                 ${DAEDALUS_EXPECT} 2 "non-finite gradient norm .*on_nonfinite is abort"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} ${DAEDALUS_SYN} --set train.on_nonfinite=abort)
add_test(NAME cli.train.malformed_yaml
         COMMAND ${DAEDALUS_EXPECT} 1 "malformed.yaml:[0-9]+"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_BAD}/malformed.yaml)
add_test(NAME cli.train.unknown_key
         COMMAND ${DAEDALUS_EXPECT} 1 "unknown key model.n_routed_expert .*did you mean model.n_routed_experts"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set model.n_routed_expert=4)
add_test(NAME cli.train.wrong_type
         COMMAND ${DAEDALUS_EXPECT} 1 "model.n_routed_experts: expected integer"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set model.n_routed_experts=eight)
add_test(NAME cli.train.invalid_value
         COMMAND ${DAEDALUS_EXPECT} 1 "optimizer.lr"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set optimizer.lr=-1)
add_test(NAME cli.train.incompatible_dims
         COMMAND ${DAEDALUS_EXPECT} 1 "model.n_group"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set model.n_group=3)
add_test(NAME cli.train.seq_len_beyond_positions
         COMMAND ${DAEDALUS_EXPECT} 1 "train.seq_len.*max_position_embeddings"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set train.seq_len=1024)
add_test(NAME cli.train.missing_data_file
         COMMAND ${DAEDALUS_EXPECT} 1 "/no/such/shard_\\\\*.bin|no/such"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} --set "data.train=[/no/such/shard_*.bin]"
                    --set run.dir=${CMAKE_CURRENT_BINARY_DIR}/cli-train-missing)
add_test(NAME cli.train.nccl_with_host_tensors
         COMMAND ${DAEDALUS_EXPECT} 1 "parallel.backend: nccl moves CUDA tensors"
                 -- $<TARGET_FILE:daedalus> train --config ${DAEDALUS_TINY} ${DAEDALUS_SYN} --set parallel.backend=nccl)
add_test(NAME cli.train.missing_config
         COMMAND ${DAEDALUS_EXPECT} 1 "no/such.yaml"
                 -- $<TARGET_FILE:daedalus> train --config /no/such.yaml)

# scripts/plot_metrics turns a run's metrics.jsonl into a PNG (Debian's python3-matplotlib).
add_test(NAME cli.plot_metrics
         COMMAND ${DAEDALUS_EXPECT} 0 "wrote .*loss.png"
                 -- ${PROJECT_SOURCE_DIR}/scripts/plot_metrics ${CMAKE_CURRENT_SOURCE_DIR}/cli/data/metrics.jsonl
                    --out ${CMAKE_CURRENT_BINARY_DIR}/cli-plot/loss.png)
add_test(NAME cli.plot_metrics_missing
         COMMAND ${DAEDALUS_EXPECT} 1 "no/such/run"
                 -- ${PROJECT_SOURCE_DIR}/scripts/plot_metrics /no/such/run --out ${CMAKE_CURRENT_BINARY_DIR}/cli-plot/x.png)
