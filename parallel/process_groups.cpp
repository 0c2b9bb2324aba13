// Process groups for expert parallelism (layout in communicator.h): world = ep_size x replicas,
// rank r in EP group r / ep_size at ep_rank r % ep_size, and in replica group r % ep_size.
#include "autograd/check.h"
#include "parallel/communicator.h"

namespace daedalus::parallel {

ProcessGroups make_process_groups(std::shared_ptr<Communicator> world, int ep_size) {
  DAEDALUS_CHECK(world != nullptr, "make_process_groups: no world communicator");
  const int size = world->size();
  DAEDALUS_CHECK(ep_size >= 1 && size % ep_size == 0,
                 "make_process_groups: world size {} is not divisible by expert-parallel size {}", size, ep_size);
  const int r = world->rank();
  ProcessGroups groups;
  groups.world = world;
  groups.ep_size = ep_size;
  groups.ep_rank = r % ep_size;
  // Both splits are collective over the world: every rank makes them in this order. Key r keeps
  // world order inside each group, so rank-in-EP-group == ep_rank and rank-in-replicas == r / ep.
  groups.ep = world->split(/*color=*/r / ep_size, /*key=*/r);
  groups.replicas = world->split(/*color=*/r % ep_size, /*key=*/r);
  DAEDALUS_ASSERT(groups.ep->size() == ep_size && groups.ep->rank() == groups.ep_rank);
  DAEDALUS_ASSERT(groups.replicas->size() == size / ep_size && groups.replicas->rank() == r / ep_size);
  return groups;
}

}  // namespace daedalus::parallel
