// cuDNN fused flash attention (autograd/cuda/attention_cudnn.h): the cuDNN frontend's SDPA forward
// and backward graphs, built once per problem and cached. Host code only (the kernels are cuDNN's);
// compiled only when CMake found cuDNN 9 and its frontend, with NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING
// and DAEDALUS_CUDNN_LIBRARY (the absolute path of the libcudnn.so.9 it found).
#include "autograd/cuda/attention_cudnn.h"

#include <cuda_runtime.h>
#include <dlfcn.h>

#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include <cudnn_frontend.h>

#include "autograd/check.h"
#include "autograd/cuda/stream.h"

// The frontend's dynamic-loading mode resolves cuDNN's entry points with dlsym on this handle,
// which the program defines and sets (before the frontend's first call).
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend

namespace daedalus::cuda {

namespace fe = cudnn_frontend;

namespace {

struct Library {
  std::string error;  // "" when loaded
  int version = 0;
};

// Loads cuDNN once: the library CMake found, else the loader's libcudnn.so.9 (another machine).
const Library& library() {
  static const Library lib = [] {
    Library l;
    std::string tried;
    for (const char* name : {DAEDALUS_CUDNN_LIBRARY, "libcudnn.so.9"}) {
      if (void* handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)) {
        fe::cudnn_dlhandle = handle;
        break;
      }
      const char* why = dlerror();
      tried += fmt::format("{}{}", tried.empty() ? "" : "; ", why ? why : name);
    }
    if (fe::cudnn_dlhandle == nullptr) {
      l.error = "cannot load cuDNN: " + tried;
      return l;
    }
    // The frontend dlopens the CUDA runtime for its own calls and, left alone, takes
    // libcudart.so.12 first where both majors are installed: name the one this program links
    // (a user's own CUDNN_FRONTEND_CUDART_LIB_NAME wins).
    const std::string cudart = fmt::format("libcudart.so.{}", CUDART_VERSION / 1000);
    setenv("CUDNN_FRONTEND_CUDART_LIB_NAME", cudart.c_str(), /*overwrite=*/0);
    try {
      l.version = int(fe::detail::get_backend_version());
    } catch (const std::exception& e) {
      l.error = fmt::format("cuDNN loaded but cudnnGetVersion failed: {}", e.what());
      return l;
    }
    if (l.version < 90000) l.error = fmt::format("cuDNN {} is loaded; the attention path needs cuDNN 9", l.version);
    return l;
  }();
  return lib;
}

void require_library() {
  const Library& l = library();
  if (!l.error.empty()) throw Error("cuDNN attention: " + l.error);
}

// One cuDNN handle per device, created on first use and kept for the process (as the streams).
cudnnHandle_t handle_for(int device) {
  static std::mutex mutex;
  static std::map<int, cudnnHandle_t> handles;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t h = nullptr;
    const cudnnStatus_t status = fe::detail::create_handle(&h);
    if (status != CUDNN_STATUS_SUCCESS)
      throw Error(fmt::format("cuDNN attention: cudnnCreate on cuda:{} failed: {}", device,
                              fe::detail::get_error_string(status)));
    it = handles.emplace(device, h).first;
  }
  return it->second;
}

// Tensor uids of the graphs' variant packs.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

// A [B, H, T, D] bf16 operand as cuDNN reads it: its own strides when the head dim is unit stride
// and the base and every stride are 16-byte aligned (cuDNN's vectorized loads), else a copy.
Tensor cudnn_layout(const Tensor& t) {
  const bool aligned = t.stride(3) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
                       t.stride(0) % 8 == 0 && t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
  if (aligned) return t;
  Tensor packed = Tensor::empty(t.shape(), t.dtype(), t.device());  // fresh: allocator-aligned, even
  packed.copy_(t);                                                  // when t is a contiguous offset view
  return packed;
}

// One attention problem as the graphs see it: q, k, v [B, H, T, D] with their strides (dim 3 unit).
struct Problem {
  std::array<int64_t, 5> dims;  // B, H, T, Dqk, Dv
  std::array<int64_t, 4> q_strides, k_strides, v_strides;
  double scale;
  bool causal;
  auto operator<=>(const Problem&) const = default;
};

std::array<int64_t, 4> strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

Problem problem_of(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal) {
  return Problem{{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)},
                 strides_of(q),
                 strides_of(k),
                 strides_of(v),
                 double(float(scale)),  // what the graph bakes in
                 causal};
}

std::vector<int64_t> packed_strides(int64_t H, int64_t T, int64_t D) { return {H * T * D, T * D, D, 1}; }

// The cache key of a graph: the pass, the device and the problem.
struct Key {
  bool backward;
  int device;
  Problem problem;
  auto operator<=>(const Key&) const = default;
};

std::string describe(bool backward, const Problem& p) {
  return fmt::format("{} B={} H={} T={} Dqk={} Dv={} {}", backward ? "backward" : "forward", p.dims[0], p.dims[1],
                     p.dims[2], p.dims[3], p.dims[4], p.causal ? "causal" : "full");
}

struct Plan {
  std::shared_ptr<fe::graph::Graph> graph;  // null: cuDNN turned this problem down (error says why)
  int64_t workspace = 0;
  std::string error;
};

std::shared_ptr<fe::graph::Graph> new_graph() {
  auto graph = std::make_shared<fe::graph::Graph>();
  // BF16 operands and outputs; softmax, statistics and accumulation in fp32.
  graph->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return graph;
}

std::shared_ptr<fe::graph::Tensor_attributes> input(fe::graph::Graph& graph, const char* name, Uid uid,
                                                    std::vector<int64_t> dims, std::vector<int64_t> strides) {
  return graph.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim(std::move(dims))
                          .set_stride(std::move(strides)));
}

// Q, K, V of problem p as graph inputs.
std::array<std::shared_ptr<fe::graph::Tensor_attributes>, 3> qkv(fe::graph::Graph& g, const Problem& p) {
  const auto [B, H, T, Dqk, Dv] = p.dims;
  const auto as_vector = [](const std::array<int64_t, 4>& a) { return std::vector<int64_t>(a.begin(), a.end()); };
  return {input(g, "Q", kQ, {B, H, T, Dqk}, as_vector(p.q_strides)),
          input(g, "K", kK, {B, H, T, Dqk}, as_vector(p.k_strides)),
          input(g, "V", kV, {B, H, T, Dv}, as_vector(p.v_strides))};
}

// The forward graph: O [B, H, T, Dv] bf16 (packed) and Stats [B, H, T, 1] fp32 (= lse).
void add_forward(fe::graph::Graph& g, const Problem& p) {
  [[maybe_unused]] const auto [B, H, T, Dqk, Dv] = p.dims;
  auto [Q, K, V] = qkv(g, p);
  auto options = fe::graph::SDPA_attributes()
                     .set_name("daedalus_attention")
                     .set_generate_stats(true)
                     .set_attn_scale(float(p.scale));
  if (p.causal) options.set_causal_mask(true);  // top-left diagonal: key j hidden from query i when j > i
  auto [O, stats] = g.sdpa(Q, K, V, options);
  O->set_output(true).set_uid(kO).set_dim({B, H, T, Dv}).set_stride(packed_strides(H, T, Dv));
  stats->set_output(true)
      .set_uid(kStats)
      .set_data_type(fe::DataType_t::FLOAT)
      .set_dim({B, H, T, 1})
      .set_stride({H * T, T, 1, 1});
}

// The backward graph: dQ, dK, dV packed [B, H, T, D] bf16 from Q, K, V, O, dO (packed bf16) and Stats.
void add_backward(fe::graph::Graph& g, const Problem& p) {
  const auto [B, H, T, Dqk, Dv] = p.dims;
  auto [Q, K, V] = qkv(g, p);
  auto O = input(g, "O", kO, {B, H, T, Dv}, packed_strides(H, T, Dv));
  auto dO = input(g, "dO", kDO, {B, H, T, Dv}, packed_strides(H, T, Dv));
  auto stats = input(g, "Stats", kStats, {B, H, T, 1}, {H * T, T, 1, 1});
  stats->set_data_type(fe::DataType_t::FLOAT);
  auto options = fe::graph::SDPA_backward_attributes()
                     .set_name("daedalus_attention_backward")
                     .set_attn_scale(float(p.scale))
                     .set_deterministic_algorithm(true);  // no atomics in dQ: bit-reproducible steps
  if (p.causal) options.set_causal_mask(true);
  auto [dQ, dK, dV] = g.sdpa_backward(Q, K, V, O, dO, stats, options);
  dQ->set_output(true).set_uid(kDQ).set_dim({B, H, T, Dqk}).set_stride(packed_strides(H, T, Dqk));
  dK->set_output(true).set_uid(kDK).set_dim({B, H, T, Dqk}).set_stride(packed_strides(H, T, Dqk));
  dV->set_output(true).set_uid(kDV).set_dim({B, H, T, Dv}).set_stride(packed_strides(H, T, Dv));
}

// Validates, lowers and plans the graph (heuristics mode A, then the fallback list); the message
// of the first step that fails, or "".
std::string build(fe::graph::Graph& g, cudnnHandle_t handle, int64_t& workspace) {
  try {
    if (auto e = g.validate(); e.is_bad()) return "validate: " + e.get_message();
    if (auto e = g.build_operation_graph(handle); e.is_bad()) return "build_operation_graph: " + e.get_message();
    if (auto e = g.create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}); e.is_bad())
      return "create_execution_plans: " + e.get_message();
    if (auto e = g.check_support(handle); e.is_bad()) return "check_support: " + e.get_message();
    if (auto e = g.build_plans(handle, fe::BuildPlanPolicy_t::HEURISTICS_CHOICE); e.is_bad())
      return "build_plans: " + e.get_message();
    if (auto e = g.get_workspace_size(workspace); e.is_bad()) return "get_workspace_size: " + e.get_message();
  } catch (const std::exception& e) {  // the dynamic-loading shim throws for entry points this cuDNN lacks
    return std::string("exception: ") + e.what();
  }
  return "";
}

// The cached plan of `key`, built on first use.
const Plan& plan_for(const Key& key, cudnnHandle_t handle) {
  static std::mutex mutex;
  static std::map<Key, Plan> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  Plan plan;
  auto graph = new_graph();
  if (key.backward) {
    add_backward(*graph, key.problem);
  } else {
    add_forward(*graph, key.problem);
  }
  plan.error = build(*graph, handle, plan.workspace);
  if (plan.error.empty()) {
    plan.graph = std::move(graph);
  } else {
    std::fprintf(stderr, "daedalus: cuDNN attention cannot take %s (cuDNN %d): %s; the attention kernel runs instead\n",
                 describe(key.backward, key.problem).c_str(), library().version, plan.error.c_str());
  }
  return plans.emplace(key, std::move(plan)).first->second;
}

// Runs a built plan on the compute stream of `device` with a workspace from the caching allocator.
void execute(const Plan& plan, cudnnHandle_t handle, int device, std::unordered_map<int64_t, void*>& pack,
             const Key& key) {
  const cudaStream_t stream = compute_stream(device);
  const cudnnStatus_t status = fe::detail::set_stream(handle, stream);
  if (status != CUDNN_STATUS_SUCCESS)
    throw Error(fmt::format("cuDNN attention: cudnnSetStream failed: {}", fe::detail::get_error_string(status)));
  const Tensor workspace =
      plan.workspace > 0 ? Tensor::empty({plan.workspace}, DType::u8, Device::cuda(device)) : Tensor();
  auto e = plan.graph->execute(handle, pack, workspace.defined() ? workspace.data_ptr() : nullptr);
  if (e.is_bad())
    throw Error(
        fmt::format("cuDNN attention: {}: execute failed: {}", describe(key.backward, key.problem), e.get_message()));
  DAEDALUS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

std::string cudnn_load_error() { return library().error; }

std::string cudnn_attention_validate(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                                     int sm_version) {
  require_library();
  const Problem p = problem_of(cudnn_layout(q), cudnn_layout(k), cudnn_layout(v), scale, causal);
  for (const bool backward : {false, true}) {
    auto graph = new_graph();
    graph->set_sm_version(sm_version);  // the frontend's support checks read it instead of a device
    if (backward) {
      add_backward(*graph, p);
    } else {
      add_forward(*graph, p);
    }
    try {
      if (auto e = graph->validate(); e.is_bad()) return describe(backward, p) + ": " + e.get_message();
    } catch (const std::exception& e) {
      return describe(backward, p) + ": exception: " + e.what();
    }
  }
  return "";
}

int cudnn_version() { return library().error.empty() ? library().version : 0; }

bool cudnn_attention_forward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& out,
                             const Tensor& lse, double scale, bool causal) {
  require_library();
  const int device = q_in.device().index;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  if (q_in.numel() == 0 || v_in.numel() == 0) return true;  // nothing to write (T = 0 or B·H = 0)
  const Tensor q = cudnn_layout(q_in), k = cudnn_layout(k_in), v = cudnn_layout(v_in);
  const cudnnHandle_t handle = handle_for(device);
  const Key key{false, device, problem_of(q, k, v, scale, causal)};
  const Plan& plan = plan_for(key, handle);
  if (!plan.graph) return false;
  DAEDALUS_CHECK(lse.is_contiguous() && out.is_contiguous(), "cuDNN attention: out and lse must be contiguous");
  const Tensor o = Tensor::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, DType::bf16, q.device());
  std::unordered_map<int64_t, void*> pack = {
      {kQ, q.data_ptr()}, {kK, k.data_ptr()}, {kV, v.data_ptr()}, {kO, o.data_ptr()}, {kStats, lse.data_ptr()}};
  execute(plan, handle, device, pack, key);
  Tensor dst = out;  // a handle on out's storage
  dst.copy_(o);      // the contract's fp32 out: bf16 O widened exactly
  return true;
}

bool cudnn_attention_backward(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& out,
                              const Tensor& lse, const Tensor& dout, const Tensor& dq, const Tensor& dk,
                              const Tensor& dv, double scale, bool causal) {
  require_library();
  const int device = q_in.device().index;
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device));
  if (q_in.numel() == 0 || v_in.numel() == 0) return true;
  const Tensor q = cudnn_layout(q_in), k = cudnn_layout(k_in), v = cudnn_layout(v_in);
  const cudnnHandle_t handle = handle_for(device);
  const Key key{true, device, problem_of(q, k, v, scale, causal)};
  const Plan& plan = plan_for(key, handle);
  if (!plan.graph) return false;
  DAEDALUS_CHECK(lse.is_contiguous() && dq.is_contiguous() && dk.is_contiguous() && dv.is_contiguous(),
                 "cuDNN attention backward: lse, dq, dk and dv must be contiguous");
  DAEDALUS_CHECK(dq.dtype() == DType::bf16 && dk.dtype() == DType::bf16 && dv.dtype() == DType::bf16,
                 "cuDNN attention backward: dq, dk and dv must be bf16");
  // O as the forward wrote it (out is its exact fp32 widening) and dO rounded to bf16, as the
  // kernel's bf16 backward rounds dO before its products.
  const Tensor o = out.to(DType::bf16).contiguous(), d_o = dout.to(DType::bf16).contiguous();
  std::unordered_map<int64_t, void*> pack = {{kQ, q.data_ptr()},   {kK, k.data_ptr()},    {kV, v.data_ptr()},
                                             {kO, o.data_ptr()},   {kDO, d_o.data_ptr()}, {kStats, lse.data_ptr()},
                                             {kDQ, dq.data_ptr()}, {kDK, dk.data_ptr()},  {kDV, dv.data_ptr()}};
  execute(plan, handle, device, pack, key);
  return true;
}

}  // namespace daedalus::cuda
