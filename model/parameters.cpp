// Parameter registry and deterministic, layout-independent initialization.
#include "model/parameters.h"

#include <fnmatch.h>

#include "autograd/generator.h"
#include "parallel/config_check.h"

namespace daedalus::model {

namespace {

// splitmix64's finalizer: decorrelates seeds that differ in a few bits.
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t stream_key(uint64_t seed, const std::string& name, int64_t expert) {
  return mix(mix(seed) ^ parallel::fnv1a_64(name) ^ mix(uint64_t(expert + 1)));
}

}  // namespace

Shape Parameter::global_shape() const {
  Shape s = var.shape();
  if (expert) s[0] = num_experts;
  return s;
}

Tensor initial_value(uint64_t seed, const std::string& name, const Shape& shape, Init init, double std,
                     int64_t expert_offset) {
  if (init == Init::ones) return Tensor::ones(shape);
  if (init == Init::zeros) return Tensor::zeros(shape);
  Tensor t = Tensor::empty(shape);
  if (expert_offset < 0) {
    Generator gen(stream_key(seed, name, -1));
    gen.fill_normal(t.data<float>(), t.numel(), 0.0, std);
    return t;
  }
  const int64_t per_expert = shape.empty() || shape[0] == 0 ? 0 : t.numel() / shape[0];
  for (int64_t e = 0; e < shape[0]; ++e) {
    Generator gen(stream_key(seed, name, expert_offset + e));
    gen.fill_normal(t.data<float>() + e * per_expert, per_expert, 0.0, std);
  }
  return t;
}

Var ParameterStore::add_impl(Parameter p, const Shape& shape, Init init) {
  DAEDALUS_CHECK(find(p.name) == nullptr, "model: parameter {} registered twice", p.name);
  const Tensor value =
      initial_value(seed_, p.name, shape, init, init_std_, p.expert ? p.expert_offset : -1).to(device_);
  p.var = Var(value, p.trainable);
  params_.push_back(std::move(p));
  return params_.back().var;
}

Var ParameterStore::add(const std::string& name, const Shape& shape, Init init, bool weight_decay) {
  Parameter p;
  p.name = name;
  p.weight_decay = weight_decay;
  return add_impl(std::move(p), shape, init);
}

Var ParameterStore::add_experts(const std::string& name, int64_t local, int64_t offset, int64_t num_experts,
                                const Shape& rest) {
  Parameter p;
  p.name = name;
  p.expert = true;
  p.expert_offset = offset;
  p.num_experts = num_experts;
  Shape shape{local};
  shape.insert(shape.end(), rest.begin(), rest.end());
  return add_impl(std::move(p), shape, Init::normal);
}

Var ParameterStore::add_buffer(const std::string& name, const Shape& shape, Init init) {
  Parameter p;
  p.name = name;
  p.trainable = false;
  p.weight_decay = false;
  return add_impl(std::move(p), shape, init);
}

const Parameter* ParameterStore::find(std::string_view name) const {
  for (const Parameter& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

const Parameter& ParameterStore::get(std::string_view name) const {
  const Parameter* p = find(name);
  DAEDALUS_CHECK(p != nullptr, "model: no parameter named {}", name);
  return *p;
}

std::vector<const Parameter*> ParameterStore::match(const std::string& glob) const {
  std::vector<const Parameter*> out;
  for (const Parameter& p : params_)
    if (fnmatch(glob.c_str(), p.name.c_str(), 0) == 0) out.push_back(&p);
  return out;
}

int64_t ParameterStore::numel() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.var.value().numel();
  return n;
}

}  // namespace daedalus::model
