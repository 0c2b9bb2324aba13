// checkpoint.init_from: DIR under expert parallelism: every rank of the EP group reads only its own
// slice of each expert tensor from an HF directory (per-expert and transformers 5's stacked names),
// and ends up with exactly the values a one-process import gives. Run under mpirun -np 2, 3, 4
// (the EP group is the whole world; 12 experts split over each).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include "model/causal_lm.h"
#include "parallel/communicator.h"
#include "tests/model_testing.h"
#include "tests/mpi/mpi_testing.h"
#include "train/export_hf.h"
#include "train/hf_config.h"
#include "train/import_hf.h"
#include "train/safetensors.h"

namespace daedalus {
namespace {

model::LmOptions options(uint64_t seed, parallel::Communicator* ep) {
  model::LmOptions o;
  o.config = testing::small_yarn_config();
  o.config.n_routed_experts = 12;  // 3 per group: divides over 2, 3 and 4 ranks
  o.recipes = testing::recipes_of("fp32");
  o.seed = seed;
  o.block.ep = model::ExpertParallel{ep};
  return o;
}

std::string bytes_of(const Tensor& t) {
  const Tensor c = t.to(DType::f32).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.nbytes());
}

TEST(MpiImportHf, EachRankReadsOnlyItsExpertSlice) {
  const auto world = parallel::mpi_world();
  const int rank = world->rank(), size = world->size();
  const parallel::ProcessGroups groups = parallel::make_process_groups(world, size);
  // The whole model on every rank (same seed: same values); rank 0 writes it as an HF directory.
  model::CausalLM full(options(3, nullptr));
  char dir[256] = {};
  if (rank == 0) std::snprintf(dir, sizeof(dir), "/tmp/daedalus_mpi_import_%d", int(::getpid()));
  MPI_Bcast(dir, sizeof(dir), MPI_CHAR, 0, MPI_COMM_WORLD);
  for (const bool stacked : {false, true}) {
    SCOPED_TRACE(stacked ? "stacked experts" : "per-expert names");
    const std::string d = std::string(dir) + (stacked ? "/stacked" : "/per_expert");
    if (rank == 0) {
      train::export_hf(full.parameters(), full.options().config, d, {DType::f32});
      if (stacked) {  // per-expert -> experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]
        NamedTensors in = read_safetensors(d + "/model.safetensors"), out;
        std::map<std::string, std::vector<std::pair<Tensor, Tensor>>> gate_up;
        std::map<std::string, std::vector<Tensor>> down;
        for (auto& [name, t] : in) {
          const size_t at = name.find(".experts.");
          if (at == std::string::npos) {
            out.emplace_back(name, t);
            continue;
          }
          const std::string head = name.substr(0, at + 9), rest = name.substr(at + 9);
          const int64_t e = std::stoll(rest.substr(0, rest.find('.')));
          const std::string kind = rest.substr(rest.find('.') + 1);
          auto& gu = gate_up[head];
          auto& dn = down[head];
          if (gu.size() <= size_t(e)) gu.resize(size_t(e) + 1), dn.resize(size_t(e) + 1);
          if (kind == "gate_proj.weight") gu[size_t(e)].first = t;
          if (kind == "up_proj.weight") gu[size_t(e)].second = t;
          if (kind == "down_proj.weight") dn[size_t(e)] = t;
        }
        for (auto& [head, parts] : gate_up) {
          const int64_t e_count = int64_t(parts.size()), inter = parts[0].first.size(0), h = parts[0].first.size(1);
          Tensor gu = Tensor::empty({e_count, 2 * inter, h}), dn = Tensor::empty({e_count, h, inter});
          for (int64_t e = 0; e < e_count; ++e) {
            gu.select(0, e).slice(0, 0, inter).copy_(parts[size_t(e)].first);
            gu.select(0, e).slice(0, inter, 2 * inter).copy_(parts[size_t(e)].second);
            dn.select(0, e).copy_(down[head][size_t(e)]);
          }
          out.emplace_back(head + "gate_up_proj", gu);
          out.emplace_back(head + "down_proj", dn);
        }
        write_safetensors(d + "/model.safetensors", out);
      }
    }
    world->barrier();
    model::CausalLM mine(options(11, groups.ep.get()));  // another seed: every value must come from DIR
    const train::HfImportReport r =
        train::load_hf_weights(d, train::read_hf_config(d), mine, /*strict=*/true);
    uint64_t expect_bytes = 0;
    for (const model::Parameter& p : mine.parameters().all()) {
      const Tensor want = full.parameters().get(p.name).var.value();
      const Tensor have = p.var.value();
      if (p.expert) {
        ASSERT_EQ(have.size(0), p.num_experts / size) << p.name;
        EXPECT_EQ(bytes_of(have), bytes_of(want.slice(0, p.expert_offset, p.expert_offset + have.size(0))))
            << p.name << " rank " << rank;
        // Stacked gate_up is read once for the gate and once for the up rows (both halves each time).
        expect_bytes += uint64_t(have.nbytes()) * (stacked && p.name.find("down_proj") == std::string::npos ? 2 : 1);
      } else {
        EXPECT_EQ(bytes_of(have), bytes_of(want)) << p.name;
        expect_bytes += uint64_t(have.nbytes());
      }
    }
    // The MTP layer's copies of the embedding and head are read too (and found equal).
    expect_bytes += 2 * uint64_t(full.parameters().get("model.embed_tokens.weight").var.value().nbytes());
    EXPECT_TRUE(r.notes.empty()) << r.notes.front();
    EXPECT_EQ(r.bytes, expect_bytes) << "rank " << rank << " read more than its slice";
  }
  world->barrier();
  if (rank == 0) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace daedalus
