// DType names and sizes.
#include "autograd/dtype.h"

#include <array>

#include "autograd/check.h"

namespace daedalus {

namespace {
struct DTypeInfo {
  DType type;
  std::string_view name;
  size_t size;
};
constexpr std::array<DTypeInfo, 8> kInfo{{
    {DType::f32, "fp32", 4},
    {DType::bf16, "bf16", 2},
    {DType::f8e4m3, "fp8e4m3", 1},
    {DType::f8e5m2, "fp8e5m2", 1},
    {DType::i32, "int32", 4},
    {DType::i64, "int64", 8},
    {DType::f4e2m1, "fp4e2m1", 1},
    {DType::u8, "uint8", 1},
}};
const DTypeInfo& info(DType t) { return kInfo[static_cast<size_t>(t)]; }
}  // namespace

size_t dtype_size(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }

DType parse_dtype(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.name == name) return i.type;
  DAEDALUS_FAIL("unknown dtype \"{}\" (expected fp32, bf16, fp8e4m3, fp8e5m2, int32, int64, fp4e2m1 or uint8)", name);
}

bool is_floating(DType t) { return t != DType::i32 && t != DType::i64 && t != DType::u8; }
bool is_fp8(DType t) { return t == DType::f8e4m3 || t == DType::f8e5m2; }

void throw_unsupported_dtype(std::string_view op, DType t, std::string_view accepted) {
  DAEDALUS_FAIL("{}: unsupported dtype {} (accepts {})", op, dtype_name(t), accepted);
}

}  // namespace daedalus
