// Process groups for pipeline, data and expert parallelism (layout in communicator.h):
// world = pp_size x replicas x ep_size, stage outermost.
#include "autograd/check.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size, int pp_size) {
  DAEDALUS_CHECK(world != nullptr, "make_process_groups: no world communicator");
  const int size = world->size();
  DAEDALUS_CHECK(ep_size >= 1 && size % ep_size == 0,
                 "make_process_groups: world size {} is not divisible by expert-parallel size {}", size, ep_size);
  DAEDALUS_CHECK(pp_size >= 1 && size % (ep_size * pp_size) == 0,
                 "make_process_groups: world size {} is not divisible by pipeline-parallel size {} x "
                 "expert-parallel size {}",
                 size, pp_size, ep_size);
  const int r = world->rank();
  const int per_stage = size / pp_size;
  const int position = r % per_stage;  // this rank's place inside its stage
  ProcessGroups groups;
  groups.world = world;
  groups.ep_size = ep_size;
  groups.ep_rank = position % ep_size;
  groups.pp_size = pp_size;
  groups.pp_stage = r / per_stage;
  // Every split is collective over the world: every rank makes them in this order. Key r keeps
  // world order inside each group, so rank-in-stage == position, rank-in-EP-group == ep_rank,
  // rank-in-replicas == position / ep_size and rank-in-pipeline == stage.
  groups.stage = pp_size == 1 ? world : world->split(/*color=*/groups.pp_stage, /*key=*/r);
  groups.ep = world->split(/*color=*/r / ep_size, /*key=*/r);
  groups.replicas = world->split(/*color=*/groups.pp_stage * ep_size + groups.ep_rank, /*key=*/r);
  if (pp_size > 1) {
    groups.pipeline = world->split(/*color=*/position, /*key=*/r);
    // The first and last stage of each pipeline share one group (color = position); the ranks of
    // the stages between get groups of their own (color per rank past the shared colors).
    const bool ends = groups.first_stage() || groups.last_stage();
    groups.embedding = world->split(/*color=*/ends ? position : per_stage + r, /*key=*/r);
    DAEDALUS_ASSERT(groups.pipeline->size() == pp_size && groups.pipeline->rank() == groups.pp_stage);
  }
  DAEDALUS_ASSERT(groups.stage->size() == per_stage && groups.stage->rank() == position);
  DAEDALUS_ASSERT(groups.ep->size() == ep_size && groups.ep->rank() == groups.ep_rank);
  DAEDALUS_ASSERT(groups.replicas->size() == per_stage / ep_size && groups.replicas->rank() == position / ep_size);
  return groups;
}

}  // namespace daedalus::parallel
