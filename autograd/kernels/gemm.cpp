// GEMM: the dispatcher with its operand checks, and the CPU kernel on oneDNN's matmul primitive.
//
// Creating a oneDNN primitive JIT-compiles its kernels (tens of microseconds to milliseconds), so
// each one is built once per problem (dims, strides, dtypes, alpha, beta) and kept in a
// process-wide cache. One CPU engine serves the process; each thread submits on its own stream
// with its own scratch memory (oneDNN's library-managed scratchpad is shared by all primitives
// and unsafe once a primitive runs on a thread other than the one that created it).
// oneDNN threads with OpenMP (OMP_NUM_THREADS), like the rest of the CPU kernels.
// Once a thread has seen a problem, a call makes no heap allocation of its own (oneDNN's execute
// still makes a few): layouts and cache keys are fixed-size, and each thread keeps its oneDNN
// memory objects per primitive and points them at the call's buffers. A CPU training step makes
// over a thousand GEMM calls.
#include "autograd/kernels/gemm.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <bit>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <unordered_map>

#include "autograd/kernels/copy.h"
#include "autograd/kernels/dispatch.h"
#include "autograd/kernels/elementwise.h"

namespace daedalus {

namespace cpu {

namespace {

using dnnl_dims = dnnl::memory::dims;
using dnnl_type = dnnl::memory::data_type;

// An operand as oneDNN sees it: dims and strides (in elements) of its first `rank` entries, all
// operands of one rank; the entries beyond rank stay zero.
struct Layout {
  int rank = 0;
  int64_t dims[DNNL_MAX_NDIMS] = {};
  int64_t strides[DNNL_MAX_NDIMS] = {};

  dnnl_dims dims_vector() const { return dnnl_dims(dims, dims + rank); }
  dnnl_dims strides_vector() const { return dnnl_dims(strides, strides + rank); }
  bool operator==(const Layout&) const = default;
};

// t's layout at `rank` dims: missing leading batch dims are size-1 (oneDNN broadcasts them), and
// so are an input's stride-0 (expanded) batch dims. Size-1 dims get the stride a dense layout
// would give them, so equivalent views share one cache entry and oneDNN sees a plain layout.
Layout layout_of(const Tensor& t, int rank, bool is_input) {
  Layout l;
  l.rank = rank;
  std::fill(l.dims, l.dims + rank, int64_t{1});
  const int pad = rank - t.dim();
  for (int d = 0; d < t.dim(); ++d) {
    const bool broadcast = is_input && d < t.dim() - 2 && t.stride(d) == 0;
    l.dims[size_t(pad + d)] = broadcast ? 1 : t.size(d);
    l.strides[size_t(pad + d)] = t.stride(d);
  }
  int64_t extent = 1;  // span of the dims inside the current one
  for (size_t d = size_t(rank); d-- > 0;) {
    if (l.dims[d] == 1) l.strides[d] = extent;
    extent = std::max(extent, l.strides[d] * l.dims[d]);
  }
  return l;
}

// oneDNN's optimized kernels read a matrix [R, C] stored row-major with a leading dimension
// (strides (ld, 1), ld >= C) or column-major (strides (1, ld), ld >= R): plain, sliced and
// transposed views. Anything else (a step along the last dim, an expanded dim) is copied first.
// Batch strides pass through as they are: oneDNN's jit gemm takes any of them (a batch inside the
// rows, permuted batch dims), so only the last two dims decide.
bool is_blas_matrix(const Layout& l) {
  const size_t r = size_t(l.rank) - 2, c = r + 1;
  return (l.strides[c] == 1 && l.strides[r] >= l.dims[c]) || (l.strides[r] == 1 && l.strides[c] >= l.dims[r]);
}

// The output must be row-major (oneDNN has only its reference kernel for a column-major one).
bool is_row_major_matrix(const Layout& l) {
  const size_t r = size_t(l.rank) - 2, c = r + 1;
  return l.strides[c] == 1 && l.strides[r] >= l.dims[c];
}

dnnl_type dnnl_type_of(DType t) { return t == DType::bf16 ? dnnl_type::bf16 : dnnl_type::f32; }

// Everything a primitive is specialized on; the primitive cache's key. alpha and beta compare by
// their bits (distinct floats, distinct primitives).
struct Problem {
  Layout a, b, c;
  DType in, out;
  float alpha, beta;

  bool operator==(const Problem& o) const {
    return a == o.a && b == o.b && c == o.c && in == o.in && out == o.out &&
           std::bit_cast<uint32_t>(alpha) == std::bit_cast<uint32_t>(o.alpha) &&
           std::bit_cast<uint32_t>(beta) == std::bit_cast<uint32_t>(o.beta);
  }

  // For error messages: "bf16>fp32 a1 b0|4:64,64:1,|..."
  std::string str() const {
    std::string k = fmt::format("{}>{} a{} b{}", dtype_name(in), dtype_name(out), alpha, beta);
    for (const Layout* l : {&a, &b, &c}) {
      k += '|';
      for (int d = 0; d < l->rank; ++d) k += fmt::format("{}:{},", l->dims[d], l->strides[d]);
    }
    return k;
  }
};

struct ProblemHash {
  size_t operator()(const Problem& p) const {
    size_t h = std::hash<int>()(int(p.in)) ^ (std::hash<int>()(int(p.out)) << 8);
    const auto mix = [&h](uint64_t v) { h ^= std::hash<uint64_t>()(v) + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2); };
    mix(std::bit_cast<uint32_t>(p.alpha));
    mix(std::bit_cast<uint32_t>(p.beta));
    for (const Layout* l : {&p.a, &p.b, &p.c})
      for (int d = 0; d < l->rank; ++d) {
        mix(uint64_t(l->dims[d]));
        mix(uint64_t(l->strides[d]));
      }
    return h;
  }
};

struct Primitive {
  dnnl::matmul matmul;
  dnnl::memory::desc a, b, c, scratchpad;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Streams are cheap; one per thread keeps concurrent callers independent.
dnnl::stream& thread_stream() {
  thread_local dnnl::stream stream(cpu_engine());
  return stream;
}

// The calling thread's scratchpad, grown to the largest any primitive asked for and kept.
class ScratchBuffer {
 public:
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { release(); }

  void* reserve(size_t bytes) {
    if (bytes > bytes_) {
      release();
      data_ = ::operator new(bytes, kAlignment);
      bytes_ = bytes;
    }
    return data_;
  }

 private:
  static constexpr std::align_val_t kAlignment{4096};  // oneDNN aligns its sub-buffers from a page-aligned base
  void release() {
    if (data_ != nullptr) ::operator delete(data_, kAlignment);
    data_ = nullptr;
    bytes_ = 0;
  }
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

void* thread_scratchpad(size_t bytes) {
  thread_local ScratchBuffer buffer;
  return buffer.reserve(bytes);
}

Primitive create_primitive(const Problem& p) {
  Primitive prim;
  prim.a = dnnl::memory::desc(p.a.dims_vector(), dnnl_type_of(p.in), p.a.strides_vector());
  prim.b = dnnl::memory::desc(p.b.dims_vector(), dnnl_type_of(p.in), p.b.strides_vector());
  prim.c = dnnl::memory::desc(p.c.dims_vector(), dnnl_type_of(p.out), p.c.strides_vector());
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);               // each call passes its thread's scratchpad
  if (p.alpha != 1.0f) attr.set_output_scales(/*mask=*/0, {p.alpha});  // one scale for the whole output
  if (p.beta != 0.0f) {                                                // without the sum post-op oneDNN never reads c
    dnnl::post_ops ops;
    ops.append_sum(p.beta);
    attr.set_post_ops(ops);
  }
  try {
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(prim.a, prim.b, prim.c), attr, cpu_engine());
    prim.scratchpad = pd.scratchpad_desc();
    prim.matmul = dnnl::matmul(pd);
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("gemm: oneDNN has no matmul for {} ({})", p.str(), e.what()));
  }
  return prim;
}

// The primitive for `p`, built on first use. Building happens outside the lock; when two threads
// race on one problem, the first entry stored wins and both use it. Entries live for the process.
std::shared_ptr<const Primitive> cached_primitive(const Problem& p) {
  static std::mutex mutex;
  static std::unordered_map<Problem, std::shared_ptr<const Primitive>, ProblemHash> cache;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(p); it != cache.end()) return it->second;
  }
  auto prim = std::make_shared<const Primitive>(create_primitive(p));
  const std::lock_guard<std::mutex> lock(mutex);
  return cache.try_emplace(p, std::move(prim)).first->second;
}

// The calling thread's memory objects for one primitive's operands, made on its first call there
// and pointed at each call's buffers (a oneDNN memory object costs several heap allocations).
// Primitives live for the process, so their addresses are stable keys.
struct Operands {
  dnnl::memory a, b, c, scratchpad;
};

Operands& thread_operands(const Primitive& prim) {
  thread_local std::unordered_map<const Primitive*, Operands> operands;
  auto [it, inserted] = operands.try_emplace(&prim);
  if (inserted) {
    dnnl::engine& engine = cpu_engine();
    it->second = Operands{
        dnnl::memory(prim.a, engine, DNNL_MEMORY_NONE), dnnl::memory(prim.b, engine, DNNL_MEMORY_NONE),
        dnnl::memory(prim.c, engine, DNNL_MEMORY_NONE), dnnl::memory(prim.scratchpad, engine, DNNL_MEMORY_NONE)};
  }
  return it->second;
}

// Whether oneDNN has a BF16 matmul on this CPU, probed once by building a one-element product.
bool probe_bf16_matmul() {
  static const bool has = [] {
    const dnnl::memory::desc one({1, 1}, dnnl_type::bf16, dnnl_dims{1, 1});
    const dnnl::memory::desc out({1, 1}, dnnl_type::f32, dnnl_dims{1, 1});
    try {
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(one, one, out), cpu_engine());
      return true;
    } catch (const dnnl::error&) {
      return false;
    }
  }();
  return has;
}

}  // namespace

// a [..., M, K] · b [..., K, N] -> c [..., M, N], K >= 1, c non-empty; operands checked by the
// dispatcher. On a CPU without a BF16 matmul, BF16 operands are widened to FP32 (exactly) and
// multiplied there: every product of two BF16 values is exact in FP32 and the sums accumulate in
// FP32 either way, so only the order of the additions can differ from a BF16 kernel. Inputs oneDNN cannot read in place are copied to contiguous; an output it cannot
// write (not row-major, or bf16 from fp32 inputs, which oneDNN lacks) goes through a contiguous
// temporary of the accumulation dtype that is copied (rounded once) into c at the end.
void gemm(const Tensor& a_in, const Tensor& b_in, const Tensor& c, float alpha, float beta) {
  const int rank = c.dim();
  DAEDALUS_CHECK(rank <= DNNL_MAX_NDIMS, "gemm: a {} and b {}: at most {} dims (oneDNN), c is {}",
                 shape_str(a_in.shape()), shape_str(b_in.shape()), DNNL_MAX_NDIMS, shape_str(c.shape()));
  const bool widen = a_in.dtype() == DType::bf16 && !probe_bf16_matmul();
  Tensor a = widen ? kernels::cast(a_in, DType::f32) : a_in, b = widen ? kernels::cast(b_in, DType::f32) : b_in;
  const DType out_dtype = a.dtype() == DType::f32 ? DType::f32 : c.dtype();

  Tensor out = c;
  Problem p{
      layout_of(a, rank, true), layout_of(b, rank, true), layout_of(c, rank, false), a.dtype(), out_dtype, alpha, beta};
  if (!is_blas_matrix(p.a)) {
    a = a.contiguous();
    p.a = layout_of(a, rank, true);
  }
  if (!is_blas_matrix(p.b)) {
    b = b.contiguous();
    p.b = layout_of(b, rank, true);
  }
  if (c.dtype() != out_dtype || !is_row_major_matrix(p.c)) {
    out = beta != 0.0f ? kernels::cast(c, out_dtype) : Tensor::empty(c.shape(), out_dtype);
    p.c = layout_of(out, rank, false);
  }

  const std::shared_ptr<const Primitive> prim = cached_primitive(p);

  dnnl::stream& stream = thread_stream();
  const Operands& m = thread_operands(*prim);
  m.a.set_data_handle(a.data_ptr());
  m.b.set_data_handle(b.data_ptr());
  m.c.set_data_handle(out.data_ptr());
  m.scratchpad.set_data_handle(thread_scratchpad(prim->scratchpad.get_size()));
  // The C API takes the arguments as an array; primitive::execute would build a hash map of them.
  const dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, m.a.get()},
                                  {DNNL_ARG_WEIGHTS, m.b.get()},
                                  {DNNL_ARG_DST, m.c.get()},
                                  {DNNL_ARG_SCRATCHPAD, m.scratchpad.get()}};
  dnnl::error::wrap_c_api(dnnl_primitive_execute(prim->matmul.get(), stream.get(), int(std::size(args)), args),
                          "gemm: could not execute the oneDNN matmul");
  stream.wait();
  if (!out.shares_storage(c)) kernels::copy(c, out);
}

}  // namespace cpu

namespace kernels {

bool cpu_has_bf16_matmul() { return cpu::probe_bf16_matmul(); }

namespace {

// [batch..., M, N] of a [..., M, K] · b [..., K, N], or an InputError naming the op and both shapes.
Shape product_shape(std::string_view op, const Tensor& a, const Tensor& b) {
  const std::string sa = shape_str(a.shape()), sb = shape_str(b.shape());
  DAEDALUS_CHECK(a.dim() >= 2 && b.dim() >= 2, "{}: a {} and b {}: operands must be at least 2-d", op, sa, sb);
  DAEDALUS_CHECK(a.size(-1) == b.size(-2), "{}: a {} and b {}: inner dimensions {} and {} differ", op, sa, sb,
                 a.size(-1), b.size(-2));
  const Shape batch_a(a.shape().begin(), a.shape().end() - 2), batch_b(b.shape().begin(), b.shape().end() - 2);
  DAEDALUS_CHECK(batch_a.empty() || batch_b.empty() || batch_a == batch_b,
                 "{}: a {} and b {}: batch dimensions {} and {} differ", op, sa, sb, shape_str(batch_a),
                 shape_str(batch_b));
  Shape out = batch_a.empty() ? batch_b : batch_a;
  out.push_back(a.size(-2));
  out.push_back(b.size(-1));
  return out;
}

bool is_gemm_dtype(DType t) { return t == DType::f32 || t == DType::bf16; }

void check_dtypes(std::string_view op, const Tensor& a, const Tensor& b, DType out) {
  for (const Tensor* t : {&a, &b}) {
    DAEDALUS_CHECK(!is_fp8(t->dtype()),
                   "{}: a {} and b {}: FP8 operands need their scales; use the scaled GEMM in fp8/", op, a.describe(),
                   b.describe());
    DAEDALUS_CHECK(is_gemm_dtype(t->dtype()), "{}: a {} and b {}: unsupported dtype {} (accepts fp32, bf16)", op,
                   a.describe(), b.describe(), dtype_name(t->dtype()));
  }
  DAEDALUS_CHECK(a.dtype() == b.dtype(), "{}: a {} and b {}: dtypes {} and {} differ (both fp32 or both bf16)", op,
                 a.describe(), b.describe(), dtype_name(a.dtype()), dtype_name(b.dtype()));
  DAEDALUS_CHECK(is_gemm_dtype(out), "{}: a {} and b {}: unsupported output dtype {} (accepts fp32, bf16)", op,
                 a.describe(), b.describe(), dtype_name(out));
}

}  // namespace

void gemm(const Tensor& a, const Tensor& b, const Tensor& c, double alpha, double beta) {
  const Device device = common_device("gemm", {&a, &b, &c});
  check_dtypes("gemm", a, b, c.dtype());
  const Shape expected = product_shape("gemm", a, b);
  DAEDALUS_CHECK(c.shape() == expected, "gemm: c {} does not match a {} · b {} (expected {})", shape_str(c.shape()),
                 shape_str(a.shape()), shape_str(b.shape()), shape_str(expected));
  if (c.numel() == 0) return;
  if (a.size(-1) == 0) {  // an empty sum: c = beta * c
    if (beta == 0.0) {
      fill(c, 0.0);
    } else {
      copy(c, affine(c, beta));
    }
    return;
  }
  switch (device.type) {
    case DeviceType::cpu: cpu::gemm(a, b, c, float(alpha), float(beta)); break;
    case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("gemm", gemm(a, b, c, float(alpha), float(beta))); break;
  }
}

Tensor matmul(const Tensor& a, const Tensor& b, DType out) {
  const Device device = common_device("matmul", {&a, &b});
  check_dtypes("matmul", a, b, out);
  Tensor c = Tensor::empty(product_shape("matmul", a, b), out, device);
  gemm(a, b, c);
  return c;
}

}  // namespace kernels

}  // namespace daedalus
