// Shared operand checks for every op's dispatcher.
#include "autograd/kernels/dispatch.h"

namespace daedalus::kernels {

void throw_built_without_cuda(std::string_view op) {
  throw InputError(fmt::format("{}: tensor is on cuda but Daedalus was built without CUDA", op));
}

void throw_not_on_device(std::string_view op, Device device) {
  throw InputError(fmt::format("{}: no kernel for device {} yet", op, device.str()));
}

Device common_device(std::string_view op, std::initializer_list<const Tensor*> operands) {
  const Tensor* first = nullptr;
  for (const Tensor* t : operands) {
    DAEDALUS_CHECK(t->defined(), "{}: undefined tensor operand", op);
    if (first == nullptr) {
      first = t;
    } else {
      DAEDALUS_CHECK(t->device() == first->device(), "{}: operands on {} and {} ({} and {})", op, first->device().str(),
                     t->device().str(), first->describe(), t->describe());
    }
  }
  return first ? first->device() : Device::cpu();
}

void check_same_shape(std::string_view op, const Tensor& a, const Tensor& b) {
  DAEDALUS_CHECK(a.shape() == b.shape(), "{}: shapes {} and {} differ", op, shape_str(a.shape()), shape_str(b.shape()));
}

void check_dim(std::string_view op, const Tensor& t, std::string_view name, int dim) {
  DAEDALUS_CHECK(t.dim() == dim, "{}: {} must be {}-d, got {}", op, name, dim, shape_str(t.shape()));
}

void check_dtype(std::string_view op, const Tensor& t, std::string_view name, DType dtype) {
  DAEDALUS_CHECK(t.dtype() == dtype, "{}: {} must be {}, got {}", op, name, dtype_name(dtype), dtype_name(t.dtype()));
}

void check_float(std::string_view op, const Tensor& t, std::string_view name) {
  DAEDALUS_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::bf16, "{}: {} must be fp32 or bf16, got {}", op, name,
                 t.describe());
}

}  // namespace daedalus::kernels
