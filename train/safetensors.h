// safetensors: HuggingFace's tensor file format, for `export-hf` and the transformers parity harness.
//
// Layout (https://github.com/huggingface/safetensors, "Format"):
//   bytes [0, 8)        N, the header length, u64 little-endian
//   bytes [8, 8 + N)    JSON header, padded with spaces so that N is a multiple of 8:
//                       {"__metadata__": {"k": "v", ...},               (optional, strings only)
//                        "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   bytes [8 + N, EOF)  the data buffer; offsets are relative to its start, each tensor row-major
//                       little-endian, and the tensors tile the buffer exactly (no holes, no overlap).
// Supported dtypes: F32, BF16, I64, I32, U8 (Daedalus fp32, bf16, int64, int32, uint8).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "autograd/tensor.h"

namespace daedalus {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes `tensors` (any device, any strides; laid out in the given order) and string metadata to
// path.tmp, fsyncs it and renames it to path: the final name never holds a partial file.
// InputError naming the file (and tensor) on a duplicate or empty name, an unsupported dtype or an
// I/O failure.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Every tensor of the file, as contiguous CPU tensors, in the order of their data offsets.
// The file is validated whole first: length prefix, header length against the file size, JSON
// syntax and schema, dtype, shape against byte size, offsets in range and tiling the buffer.
// Any violation is an InputError naming the file and, where one is involved, the tensor.
NamedTensors read_safetensors(const std::string& path);

// The header's "__metadata__" (empty when absent); validates the header as read_safetensors does.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

}  // namespace daedalus
