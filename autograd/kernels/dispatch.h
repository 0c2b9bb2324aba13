// The dispatch pattern every op follows: check operands, then one switch on the device.
//
//   Tensor softmax(const Tensor& x) {
//     ... shape and dtype checks ...
//     switch (x.device().type) {
//       case DeviceType::cpu: cpu::softmax(x, y); break;
//       case DeviceType::cuda: DAEDALUS_CUDA_KERNEL("softmax", softmax(x, y)); break;
//     }
//   }
//
// CUDA twins are declared in autograd/cuda/kernels.h and live in autograd/cuda/*.cu. In a build
// without CUDA the macro throws "built without CUDA" instead of referring to them. An op whose
// CUDA twin is not written yet calls throw_not_on_device() in its cuda case.
#pragma once

#include <initializer_list>
#include <string_view>

#include "autograd/tensor.h"

#if DAEDALUS_WITH_CUDA
#include "autograd/cuda/kernels.h"
#define DAEDALUS_CUDA_KERNEL(op, call) ::daedalus::cuda::call
#else
#define DAEDALUS_CUDA_KERNEL(op, call) ::daedalus::kernels::throw_built_without_cuda(op)
#endif

namespace daedalus::kernels {

[[noreturn]] void throw_built_without_cuda(std::string_view op);
[[noreturn]] void throw_not_on_device(std::string_view op, Device device);

// All operands defined and on one device; returns it. Message: "add: operands on cpu and cuda:0".
Device common_device(std::string_view op, std::initializer_list<const Tensor*> operands);

// Shape checks with messages that name the op and both shapes.
void check_same_shape(std::string_view op, const Tensor& a, const Tensor& b);
void check_dim(std::string_view op, const Tensor& t, std::string_view name,
               int dim);  // "rmsnorm: x must be 2-d, got [3]"
void check_dtype(std::string_view op, const Tensor& t, std::string_view name, DType dtype);
void check_float(std::string_view op, const Tensor& t, std::string_view name);  // fp32 or bf16

}  // namespace daedalus::kernels
