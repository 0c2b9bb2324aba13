// safetensors: HuggingFace's tensor file format, for `export-hf` and the transformers parity harness.
//
// Layout (https://github.com/huggingface/safetensors, "Format"):
//   bytes [0, 8)        N, the header length, u64 little-endian
//   bytes [8, 8 + N)    JSON header, padded with spaces so that N is a multiple of 8:
//                       {"__metadata__": {"k": "v", ...},               (optional, strings only)
//                        "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   bytes [8 + N, EOF)  the data buffer; offsets are relative to its start, each tensor row-major
//                       little-endian, and the tensors tile the buffer exactly (no holes, no overlap).
// Dtypes: F32, BF16, F8_E4M3, F8_E5M2, I64, I32, U8 (Daedalus fp32, bf16, fp8e4m3, fp8e5m2, int64,
// int32, uint8) are written and read as they are; F16 and F8_E8M0 (HF's FP16 weights, DeepSeek's UE8M0
// block scales) are read only, widened to fp32 (exactly: every value of both is a float).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
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

// One tensor's header entry; offsets are relative to the start of the data buffer.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // the file's code: "F32", "BF16", "F16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "I64", "I32"
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// A safetensors file opened read-only through a memory map. The header is validated whole on
// opening (as read_safetensors does: InputError naming the file and tensor); tensor bytes are only
// paged in when read, and dropped from this process again after the copy (madvise), so reading a
// file tensor by tensor holds one tensor at a time.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // in data-offset order
  const SafetensorsEntry* find(std::string_view name) const;                // null when absent

  // Rows [row0, row0 + rows) of dim 0 (rows < 0: to the end) as a contiguous CPU tensor: the stored
  // dtype, or fp32 for F16 and F8_E8M0. A 0-d tensor is one row.
  Tensor read(const SafetensorsEntry& e, int64_t row0 = 0, int64_t rows = -1) const;

 private:
  std::string path_;
  const unsigned char* map_ = nullptr;
  uint64_t size_ = 0, data_start_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafetensorsEntry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

// Every tensor of the file, as contiguous CPU tensors, in the order of their data offsets.
// The file is validated whole first: length prefix, header length against the file size, JSON
// syntax and schema, dtype, shape against byte size, offsets in range and tiling the buffer.
// Any violation is an InputError naming the file and, where one is involved, the tensor.
NamedTensors read_safetensors(const std::string& path);

// The header's "__metadata__" (empty when absent); validates the header as read_safetensors does.
std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

}  // namespace daedalus
