// Hardware tables from YAML (see hardware.h; the built-in ones are configs/hardware/*.yaml).
#include "train/hardware.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "autograd/check.h"

namespace daedalus::train {

namespace fs = std::filesystem;

namespace {

// Directories that may hold the built-in tables, in the order they are tried.
std::vector<fs::path> table_dirs() {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("DAEDALUS_HARDWARE_DIR")) dirs.emplace_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    dirs.push_back(exe.parent_path() / ".." / "configs" / "hardware");
    dirs.push_back(exe.parent_path() / ".." / ".." / "configs" / "hardware");
  }
  dirs.emplace_back(fs::path("configs") / "hardware");
  return dirs;
}

double number(const YAML::Node& root, const std::string& file, const std::string& key, bool positive = true) {
  const YAML::Node n = root[key];
  if (!n) throw InputError(fmt::format("{}: {}: missing", file, key));
  double v = 0;
  try {
    v = n.as<double>();
  } catch (const YAML::Exception&) {
    throw InputError(fmt::format("{}: {}: expected a number, got \"{}\"", file, key, n.Scalar()));
  }
  DAEDALUS_CHECK(std::isfinite(v) && (positive ? v > 0 : v >= 0), "{}: {}: must be a {} number, got {}", file, key,
                 positive ? "positive" : "non-negative", v);
  return v;
}

Hardware parse(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw InputError(fmt::format("{}: cannot read the hardware table", file));
  std::stringstream text;
  text << in.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(text.str());
  } catch (const YAML::Exception& e) {
    throw InputError(fmt::format("{}: not valid YAML: {}", file, e.what()));
  }
  DAEDALUS_CHECK(root.IsMap(), "{}: a hardware table is a YAML map", file);
  static const std::set<std::string> known{
      "name",           "memory_gib",    "memory_bandwidth_gbs", "peak_tflops",        "intra_node_gbs",
      "inter_node_gbs", "gpus_per_node", "power_watts",          "price_per_gpu_hour", "sources"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    DAEDALUS_CHECK(known.count(key) != 0, "{}: {}: unknown key", file, key);
  }
  Hardware h;
  h.file = file;
  h.name = root["name"] ? root["name"].as<std::string>() : fs::path(file).stem().string();
  h.memory_bytes = number(root, file, "memory_gib") * double(int64_t(1) << 30);
  h.memory_bandwidth = number(root, file, "memory_bandwidth_gbs") * 1e9;
  const YAML::Node peak = root["peak_tflops"];
  DAEDALUS_CHECK(peak && peak.IsMap(), "{}: peak_tflops: expected a map {{fp8: .., bf16: .., fp32: ..}}", file);
  h.peak_fp8 = number(peak, file + ": peak_tflops", "fp8") * 1e12;
  h.peak_bf16 = number(peak, file + ": peak_tflops", "bf16") * 1e12;
  h.peak_fp32 = number(peak, file + ": peak_tflops", "fp32") * 1e12;
  h.intra_node_bandwidth = number(root, file, "intra_node_gbs") * 1e9;
  h.inter_node_bandwidth = number(root, file, "inter_node_gbs") * 1e9;
  h.gpus_per_node = int(number(root, file, "gpus_per_node"));
  h.power_watts = number(root, file, "power_watts");
  h.price_per_hour = number(root, file, "price_per_gpu_hour", /*positive=*/false);
  if (const YAML::Node s = root["sources"]) {
    DAEDALUS_CHECK(s.IsSequence(), "{}: sources: expected a list", file);
    for (const auto& e : s) h.sources.push_back(e.as<std::string>());
  }
  return h;
}

}  // namespace

std::vector<std::string> builtin_hardware() {
  for (const fs::path& dir : table_dirs()) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    if (!names.empty()) return names;
  }
  return {};
}

Hardware load_hardware(const std::string& name_or_file) {
  std::error_code ec;
  if (name_or_file.find('/') != std::string::npos || name_or_file.ends_with(".yaml")) return parse(name_or_file);
  for (const fs::path& dir : table_dirs()) {
    const fs::path file = dir / (name_or_file + ".yaml");
    if (fs::is_regular_file(file, ec)) return parse(fs::weakly_canonical(file, ec).string());
  }
  std::string known;
  for (const std::string& n : builtin_hardware()) known += (known.empty() ? "" : ", ") + n;
  throw InputError(fmt::format("--hardware: no built-in table \"{}\" (known: {}; or pass a YAML file)", name_or_file,
                               known.empty() ? "none found: set DAEDALUS_HARDWARE_DIR to configs/hardware" : known));
}

}  // namespace daedalus::train
