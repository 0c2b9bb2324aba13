// HF model directory weights: the shard index checked up front, tensors read through the memory maps.
#include "train/hf_weights.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#if !DAEDALUS_MINIMAL
#include <nlohmann/json.hpp>
#endif

#include "autograd/check.h"
#include "train/hf_fp8.h"

namespace daedalus::train {

struct HfWeights::Location {
  std::string name;
  const SafetensorsFile* file = nullptr;
  const SafetensorsEntry* entry = nullptr;
  const SafetensorsFile* scale_file = nullptr;  // FP8: <name>_scale_inv
  const SafetensorsEntry* scale = nullptr;
};

#if DAEDALUS_MINIMAL

HfWeights::HfWeights(const std::string& dir, const HfFp8Format&) {
  DAEDALUS_FAIL("{}: HF import needs nlohmann-json; this build is DAEDALUS_MINIMAL", dir);
}
HfWeights::~HfWeights() = default;
bool HfWeights::contains(const std::string&) const { return false; }
std::vector<std::string> HfWeights::names() const { return {}; }
const HfWeights::Location& HfWeights::locate(const std::string& name) const { DAEDALUS_FAIL("{}: no weights", name); }
Shape HfWeights::shape(const std::string& name) const { return locate(name).entry->shape; }
std::string HfWeights::file_of(const std::string& name) const { return locate(name).file->path(); }
std::string HfWeights::dtype_of(const std::string& name) const { return locate(name).entry->dtype; }
Tensor HfWeights::read_f32(const std::string& name, int64_t, int64_t, int64_t) const { DAEDALUS_FAIL("{}", name); }
int64_t HfWeights::files() const { return 0; }

#else

namespace {

constexpr std::string_view kScaleSuffix = "_scale_inv";

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool is_power_of_two(float x) {
  int e = 0;
  return x > 0 && std::isfinite(x) && std::frexp(x, &e) == 0.5f;
}

}  // namespace

HfWeights::HfWeights(const std::string& dir, const HfFp8Format& fp8) : dir_(dir), fp8_(fp8) {
  namespace fs = std::filesystem;
  const std::string index_path = dir + "/model.safetensors.index.json", single = dir + "/model.safetensors";
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name (index mode)
  std::vector<std::string> shard_names;
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    std::ifstream f(index_path);
    std::stringstream text;
    text << f.rdbuf();
    DAEDALUS_CHECK(f.good() || f.eof(), "{}: cannot read", index_path);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text.str());
    } catch (const nlohmann::json::exception& e) {
      DAEDALUS_FAIL("{}: not valid JSON: {}", index_path, e.what());
    }
    DAEDALUS_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                   "{}: expected an object with a \"weight_map\" of tensor name -> shard file", index_path);
    for (const auto& [name, file] : j["weight_map"].items()) {
      DAEDALUS_CHECK(file.is_string(), "{}: weight_map[\"{}\"] is {}, expected a file name", index_path, name,
                     file.dump());
      const std::string shard = file.get<std::string>();
      DAEDALUS_CHECK(!shard.empty() && shard.find('/') == std::string::npos,
                     "{}: weight_map[\"{}\"] = \"{}\": expected a file name in the same directory", index_path, name,
                     shard);
      weight_map[name] = shard;
      if (std::find(shard_names.begin(), shard_names.end(), shard) == shard_names.end()) shard_names.push_back(shard);
    }
    std::sort(shard_names.begin(), shard_names.end());
    for (const std::string& shard : shard_names) {
      const std::string path = dir + "/" + shard;
      if (!fs::is_regular_file(path, ec)) {
        const auto named =
            std::find_if(weight_map.begin(), weight_map.end(), [&](const auto& kv) { return kv.second == shard; });
        DAEDALUS_FAIL("{}: missing: {} names it for tensor '{}' (and others)", path, index_path, named->first);
      }
    }
  } else if (fs::exists(single, ec)) {
    shard_names.push_back("model.safetensors");
  } else {
    DAEDALUS_FAIL("{}: no model.safetensors and no model.safetensors.index.json (an HF model directory holds one)",
                  dir);
  }

  std::map<std::string, std::pair<const SafetensorsFile*, const SafetensorsEntry*> > found;
  for (const std::string& shard : shard_names) {
    files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + shard));
    const SafetensorsFile* file = files_.back().get();
    for (const SafetensorsEntry& e : file->entries()) {
      if (!weight_map.empty()) {
        const auto it = weight_map.find(e.name);
        if (it == weight_map.end() || it->second != shard) continue;  // the index is the authority
      }
      found[e.name] = {file, &e};
    }
  }
  for (const auto& [name, shard] : weight_map)
    DAEDALUS_CHECK(found.count(name), "{}/{}: has no tensor '{}', which {} places there", dir, shard, name, index_path);

  for (const auto& [name, where] : found) {
    if (fp8_.enabled && name.size() > kScaleSuffix.size() && name.ends_with(kScaleSuffix)) continue;
    auto loc = std::make_unique<Location>();
    loc->name = name;
    loc->file = where.first;
    loc->entry = where.second;
    if (where.second->dtype == "F8_E4M3" || where.second->dtype == "F8_E5M2") {
      DAEDALUS_CHECK(fp8_.enabled && where.second->dtype == "F8_E4M3",
                     "{}: tensor '{}' is {}, but {}/config.json has no quantization_config "
                     "{{quant_method: fp8, fmt: e4m3}}",
                     where.first->path(), name, where.second->dtype, dir);
      const auto scale = found.find(name + std::string(kScaleSuffix));
      DAEDALUS_CHECK(scale != found.end(), "{}: tensor '{}' is F8_E4M3 but '{}{}' is missing", where.first->path(),
                     name, name, kScaleSuffix);
      DAEDALUS_CHECK(scale->second.second->dtype == "F32" || scale->second.second->dtype == "F8_E8M0" ||
                         scale->second.second->dtype == "BF16",
                     "{}: tensor '{}{}' is {}, expected F32 or F8_E8M0 block scales", scale->second.first->path(), name,
                     kScaleSuffix, scale->second.second->dtype);
      loc->scale_file = scale->second.first;
      loc->scale = scale->second.second;
    }
    locations_.push_back(std::move(loc));
  }
  if (fp8_.enabled)
    for (const auto& [name, where] : found)
      if (name.ends_with(kScaleSuffix)) {
        const std::string weight = name.substr(0, name.size() - kScaleSuffix.size());
        const auto w = found.find(weight);
        DAEDALUS_CHECK(w != found.end() && w->second.second->dtype == "F8_E4M3", "{}: '{}' scales '{}', which is {}",
                       where.first->path(), name, weight,
                       w == found.end() ? std::string("missing") : "not F8_E4M3 but " + w->second.second->dtype);
      }
}

HfWeights::~HfWeights() = default;

const HfWeights::Location& HfWeights::locate(const std::string& name) const {
  const auto it =
      std::lower_bound(locations_.begin(), locations_.end(), name,
                       [](const std::unique_ptr<Location>& l, const std::string& n) { return l->name < n; });
  DAEDALUS_CHECK(it != locations_.end() && (*it)->name == name, "{}: no tensor '{}'", dir_, name);
  return **it;
}

bool HfWeights::contains(const std::string& name) const {
  const auto it =
      std::lower_bound(locations_.begin(), locations_.end(), name,
                       [](const std::unique_ptr<Location>& l, const std::string& n) { return l->name < n; });
  return it != locations_.end() && (*it)->name == name;
}

std::vector<std::string> HfWeights::names() const {
  std::vector<std::string> out;
  for (const auto& l : locations_) out.push_back(l->name);
  return out;
}

Shape HfWeights::shape(const std::string& name) const { return locate(name).entry->shape; }
std::string HfWeights::file_of(const std::string& name) const { return locate(name).file->path(); }
std::string HfWeights::dtype_of(const std::string& name) const { return locate(name).entry->dtype; }
int64_t HfWeights::files() const { return int64_t(files_.size()); }

Tensor HfWeights::read_f32(const std::string& name, int64_t row0, int64_t rows, int64_t split_rows) const {
  const Location& l = locate(name);
  const int64_t dim0 = l.entry->shape.empty() ? 1 : l.entry->shape[0];
  if (rows < 0) rows = dim0 - row0;
  const auto bytes_of = [&](const SafetensorsEntry& e) {
    return dim0 == 0 ? 0 : (e.end - e.begin) / uint64_t(dim0) * uint64_t(rows);
  };
  if (l.scale == nullptr) {
    bytes_read_ += bytes_of(*l.entry);
    return l.file->read(*l.entry, row0, rows).to(DType::f32);
  }
  const Shape& ws = l.entry->shape;
  DAEDALUS_CHECK(ws.size() >= 2, "{}: tensor '{}' {}: an FP8 weight needs 2 or more dims", l.file->path(), name,
                 shape_str(ws));
  DAEDALUS_CHECK(ws.size() >= 3 || (row0 == 0 && rows == dim0), "{}: tensor '{}': a 2-d FP8 weight is read whole",
                 l.file->path(), name);
  const Tensor codes = l.file->read(*l.entry, row0, rows);
  const Tensor scale = ws.size() >= 3 ? l.scale_file->read(*l.scale, row0, rows) : l.scale_file->read(*l.scale);
  bytes_read_ += bytes_of(*l.entry) + (ws.size() >= 3 ? bytes_of(*l.scale) : l.scale->end - l.scale->begin);
  const int64_t r = ws[ws.size() - 2], c = ws.back(), br = fp8_.block_rows, bc = fp8_.block_cols;
  // A stacked gate_up whose halves were quantized apart has 2 ceil(I/br) block rows (HF merges the
  // per-expert scales); one quantized whole has ceil(2I/br). They differ only when br does not divide I.
  const int64_t stored_rows = l.scale->shape.size() >= 2 ? l.scale->shape[l.scale->shape.size() - 2] : 0;
  if (split_rows > 0 && stored_rows == ceil_div(r, br)) split_rows = 0;
  const int64_t block_rows = split_rows > 0 ? 2 * ceil_div(split_rows, br) : ceil_div(r, br);
  Shape want(ws.begin(), ws.end() - 2);
  want.push_back(block_rows);
  want.push_back(ceil_div(c, bc));
  DAEDALUS_CHECK(l.scale->shape == want, "{}: tensor '{}{}' has shape {}, but {} {} in {}x{} blocks needs {}",
                 l.scale_file->path(), name, kScaleSuffix, shape_str(l.scale->shape), name, shape_str(ws), br, bc,
                 shape_str(want));
  if (fp8_.ue8m0 && l.scale->dtype != "F8_E8M0") {
    const std::vector<float> v = scale.to(DType::f32).to_vector<float>();
    for (size_t i = 0; i < v.size(); ++i)
      DAEDALUS_CHECK(is_power_of_two(v[i]),
                     "{}: tensor '{}{}': scale {} at flat index {} is not a power of two (config.json says scale_fmt "
                     "ue8m0)",
                     l.scale_file->path(), name, kScaleSuffix, v[i], i);
  }
  return dequantize_fp8_blocks(codes, scale, br, bc, split_rows);
}

#endif  // DAEDALUS_MINIMAL

}  // namespace daedalus::train
