// Hardware tables for `daedalus plan` and the trainer's MFU: a GPU's (or CPU's) memory, peak
// dense rates per operand format, link bandwidths, power and price, read from YAML
// (configs/hardware/<name>.yaml: h100, h800, h200, b200, cpu — each citing its sources — or any
// file with the same keys).
#pragma once

#include <string>
#include <vector>

namespace daedalus::train {

struct Hardware {
  std::string name;
  double memory_bytes = 0;          // usable device memory
  double memory_bandwidth = 0;      // bytes/s
  double peak_fp8 = 0;              // dense flops/s with FP8 operands
  double peak_bf16 = 0;             // dense flops/s with BF16 operands
  double peak_fp32 = 0;             // dense flops/s for FP32 GEMMs (TF32 on Tensor Cores)
  double intra_node_bandwidth = 0;  // bytes/s per GPU, one direction (NVLink)
  double inter_node_bandwidth = 0;  // bytes/s per GPU, one direction (InfiniBand)
  int gpus_per_node = 8;
  double power_watts = 0;
  double price_per_hour = 0;  // USD per GPU-hour
  std::vector<std::string> sources;
  std::string file;  // where it was read from
};

// The built-in names (files in configs/hardware/), sorted.
std::vector<std::string> builtin_hardware();

// `name_or_file`: a built-in name (h100, h800, h200, b200, cpu) or a path to a YAML file with the
// keys of configs/hardware/h100.yaml. The built-in tables are found next to the binary
// (<binary>/../configs/hardware, <binary>/../../configs/hardware), in DAEDALUS_HARDWARE_DIR, or
// under ./configs/hardware. InputError naming the file and key for a missing or malformed table.
Hardware load_hardware(const std::string& name_or_file);

}  // namespace daedalus::train
