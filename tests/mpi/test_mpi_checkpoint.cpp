// Checkpoints saved by several ranks through MPI-IO (2, 3 or 4 ranks, expert parallel where the
// world divides the experts): seeded bit flips across the whole file, metadata included, are
// detected or change nothing (tests/checkpoint_damage.h); rank 0 runs the trials while the others
// wait.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "tests/checkpoint_damage.h"
#include "tests/mpi/mpi_testing.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace daedalus::train {
namespace {

namespace fs = std::filesystem;

const char* kYaml = R"(
run: {name: mpi-ckpt-damage, seed: 9}
model: {vocab_size: 64, hidden_size: 32, intermediate_size: 48, moe_intermediate_size: 16, num_hidden_layers: 2,
        first_k_dense_replace: 1, num_attention_heads: 2, q_lora_rank: 16, kv_lora_rank: 16, qk_nope_head_dim: 8,
        qk_rope_head_dim: 8, v_head_dim: 8, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2,
        n_group: 1, topk_group: 1, max_position_embeddings: 64, num_nextn_predict_layers: 0}
precision: {recipe: fp8_tensor_delayed, amax_history_len: 4}
schedule: {warmup_steps: 1}
train: {steps: 1, micro_batch_size: 2, seq_len: 16, log_every: 1, eval_every: 0}
data: {format: synthetic, synthetic: {vocab: 64, tokens: 4000}}
checkpoint: {every: 1, keep_last: 0}
logging: {progress: never, jsonl: false}
)";

TEST(MpiCheckpoint, BitFlipsAcrossAFileSavedByEveryRankAreDetectedOrChangeNothing) {
  const int world = testing::world_size();
  const int ep = world % 2 == 0 ? 2 : 1;
  const std::string dir = fs::path(::testing::TempDir()) / fmt::format("daedalus-mpi-damage-{}", world);
  if (testing::world_rank() == 0) fs::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  const std::vector<std::string> sets = {"run.dir=" + dir, fmt::format("parallel.expert_parallel={}", ep)};
  {
    Trainer t(parse_config(kYaml, sets, "mpi-damage.yaml"),
              parallel::make_process_groups(parallel::mpi_world(), ep));
    t.run();
  }
  if (testing::world_rank() == 0) {
    const testing::FlipTally t = testing::flip_trials(checkpoint_path(dir, 1), dir + "/work.h5",
                                                      parse_config(kYaml, sets, "mpi-damage.yaml"),
                                                      /*seed=*/uint64_t(world), testing::flip_trial_count(16));
    for (const std::string& f : t.failures) ADD_FAILURE() << f;
    EXPECT_EQ(t.inspect_detected + t.inspect_same, t.trials);
    EXPECT_EQ(t.load_detected + t.load_same, t.trials);
    EXPECT_GE(t.inspect_detected, t.trials / 2);
    std::printf("world %d (expert parallel %d): %d trials: inspect %d detected, %d unchanged; load %d detected, %d "
                "identical\n",
                world, ep, t.trials, t.inspect_detected, t.inspect_same, t.load_detected, t.load_same);
  }
  // Wait without spinning (Open MPI's barrier busy-polls, taking a core from rank 0's trials).
  MPI_Request r;
  MPI_Ibarrier(MPI_COMM_WORLD, &r);
  for (int done = 0; !done;) {
    MPI_Test(&r, &done, MPI_STATUS_IGNORE);
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace
}  // namespace daedalus::train
