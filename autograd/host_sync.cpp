// The host-sync counter and its per-site breakdown (see host_sync.h).
#include "autograd/host_sync.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string_view>

#include "autograd/check.h"

namespace daedalus {

namespace {

std::atomic<int64_t> g_count{0};

bool log_from_environment() {
  const char* v = std::getenv("DAEDALUS_HOST_SYNC_LOG");
  return v != nullptr && std::string_view(v) == "1";
}
std::atomic<bool> g_log{log_from_environment()};

// The breakdown: where -> count. Only touched while logging.
std::mutex& sites_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, int64_t>& sites_locked() {
  static auto* sites = new std::map<std::string, int64_t>();  // leaked: syncs may be counted at exit
  return *sites;
}

thread_local std::vector<std::string> t_context;  // nvtx range names, outermost first

}  // namespace

void count_host_sync(std::string_view site) noexcept {
  g_count.fetch_add(1, std::memory_order_relaxed);
  if (!g_log.load(std::memory_order_relaxed)) return;
  try {
    std::string where;
    for (const std::string& name : t_context) {
      if (!where.empty()) where += '/';
      where += name;
    }
    if (!where.empty()) where += ": ";
    where += site;
    std::lock_guard lock(sites_mutex());
    ++sites_locked()[where];
  } catch (...) {
    // Out of memory while labelling a debug breakdown: the count above still holds.
  }
}

int64_t host_sync_count() { return g_count.load(std::memory_order_relaxed); }

void reset_host_syncs() {
  g_count.store(0, std::memory_order_relaxed);
  std::lock_guard lock(sites_mutex());
  sites_locked().clear();
}

bool host_sync_log_enabled() { return g_log.load(std::memory_order_relaxed); }
void set_host_sync_log(bool on) { g_log.store(on, std::memory_order_relaxed); }

void push_host_sync_context(const char* name) { t_context.emplace_back(name); }
void pop_host_sync_context() {
  if (!t_context.empty()) t_context.pop_back();
}

std::vector<HostSyncSite> host_sync_sites() {
  std::vector<HostSyncSite> out;
  {
    std::lock_guard lock(sites_mutex());
    for (const auto& [where, count] : sites_locked()) out.push_back({where, count});
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const HostSyncSite& a, const HostSyncSite& b) { return a.count > b.count; });
  return out;
}

std::string format_host_sync_sites(const std::vector<HostSyncSite>& sites, int64_t steps) {
  DAEDALUS_CHECK(steps > 0, "format_host_sync_sites: {} steps", steps);
  int64_t total = 0;
  for (const HostSyncSite& s : sites) total += s.count;
  std::string out =
      fmt::format("host syncs: {} in {} step(s), {:.1f} per step\n", total, steps, double(total) / double(steps));
  out += "   count  per step  where\n";
  for (const HostSyncSite& s : sites)
    out += fmt::format("{:>8} {:>9.1f}  {}\n", s.count, double(s.count) / double(steps), s.where);
  return out;
}

}  // namespace daedalus
