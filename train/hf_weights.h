// The weights of a HuggingFace model directory: model.safetensors, or model.safetensors.index.json
// and the shards it names, every file memory-mapped (train/safetensors.h) and read tensor by tensor.
//
// DeepSeek's FP8 release format (train/hf_fp8.h): a weight stored as E4M3 codes `<name>` with
// `<name>_scale_inv` [..., ceil(R/br), ceil(C/bc)] (F32, or F8_E8M0 bytes; with scale_fmt ue8m0
// every F32 scale must be a power of two) is read as one fp32 tensor, dequantized.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "train/hf_config.h"
#include "train/safetensors.h"

namespace daedalus::train {

class HfWeights {
 public:
  // Validates the layout before any tensor is read: the index's JSON, every shard it names exists
  // and is a valid safetensors file, every tensor the index names is in its shard. InputError
  // naming the file (and tensor) otherwise.
  HfWeights(const std::string& dir, const HfFp8Format& fp8);
  ~HfWeights();

  // The logical tensors: FP8 scale tensors are folded into their weights.
  bool contains(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  Shape shape(const std::string& name) const;
  std::string file_of(const std::string& name) const;   // the shard that holds it
  std::string dtype_of(const std::string& name) const;  // the stored code: "BF16", "F8_E4M3", ...

  // Rows [row0, row0 + rows) of dim 0 (rows < 0: all) as fp32, dequantized when the tensor is FP8.
  // `split_rows`: for a stacked FP8 tensor whose dim-1 halves were quantized separately (HF's
  // experts.gate_up_proj), the number of dim-1 rows per half (0: one block grid).
  Tensor read_f32(const std::string& name, int64_t row0 = 0, int64_t rows = -1, int64_t split_rows = 0) const;

  int64_t files() const;
  uint64_t bytes_read() const { return bytes_read_; }  // stored bytes behind the tensors read so far

 private:
  struct Location;
  const Location& locate(const std::string& name) const;
  std::string dir_;
  HfFp8Format fp8_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::unique_ptr<Location>> locations_;  // sorted by name
  mutable uint64_t bytes_read_ = 0;
};

}  // namespace daedalus::train
