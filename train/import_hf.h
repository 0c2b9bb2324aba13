// HuggingFace import: a DeepseekV3 model directory (config.json, model.safetensors or the sharded
// index; BF16, FP16, FP32 or DeepSeek's FP8 block format) into a Daedalus model, for
// `daedalus import-hf DIR --out FILE.h5` and `checkpoint.init_from: DIR` (docs/checkpoints.md,
// "Fine-tuning a HuggingFace model").
//
// Names: Daedalus's parameters carry HF's names, so a tensor is read under its own name, except
//   routed experts: Daedalus stacks model.layers.L.mlp.experts.{gate,up,down}_proj.weight [E, ...];
//     the directory holds either per-expert tensors model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight
//     or transformers 5's stacked experts.gate_up_proj [E, 2I, H] (gate rows, then up rows) and
//     experts.down_proj [E, H, I] (no transposition: each expert's slice is an nn.Linear weight).
//   MTP: model.layers.{num_hidden_layers + k}.{enorm,hnorm,eh_proj,shared_head.norm,<decoder layer>}
//     as DeepSeek names them; the MTP's embed_tokens and shared_head.head, where present, must equal
//     the main model's (Daedalus's MTP shares them): a copy that differs is reported, not imported.
// Tensors are read one at a time through the memory map (each rank only its own slice of the
// stacked experts), so the memory of an import is the model plus one tensor. Every name and shape
// is checked before anything is read: missing, unexpected or differently shaped tensors are an
// InputError naming the file and tensor (strict), or a report (checkpoint.strict: false).
#pragma once

#include <string>
#include <vector>

#include "model/causal_lm.h"
#include "parallel/communicator.h"
#include "train/config.h"
#include "train/hf_config.h"

namespace daedalus::train {

struct HfImportReport {
  int64_t tensors = 0;  // model parameters filled
  int64_t files = 0;    // safetensors files opened
  uint64_t bytes = 0;   // stored bytes read
  double seconds = 0;      // wall clock
  double cpu_seconds = 0;  // this process's CPU time (all threads) over the same span
  std::vector<std::string> notes;       // MTP copies that differ, MTP layers not in the model, ...
  std::vector<std::string> missing;     // in the model, not in the directory (strict false)
  std::vector<std::string> unexpected;  // in the directory, not in the model (strict false)
  std::vector<std::string> mismatched;  // "name: DIR/file [a, b], model [c, d]" (strict false)
  double mb_per_s() const { return seconds > 0 ? double(bytes) / 1e6 / seconds : 0; }
  double mb_per_cpu_s() const { return cpu_seconds > 0 ? double(bytes) / 1e6 / cpu_seconds : 0; }
};

// DIR/config.json read for an import: read_hf_config, with the MTP depth cut to the MTP layers the
// weights hold (transformers writes num_mtp_layers 1 but saves no MTP weights), noted in `ignored`.
HfModelConfig read_hf_model(const std::string& dir);

// Fills the parameters `model` holds on this process (its expert slice) from `dir`. round_bf16:
// round every value to bf16 after the (exact) conversion to fp32.
HfImportReport load_hf_weights(const std::string& dir, const HfModelConfig& hf, model::CausalLM& model, bool strict,
                               bool round_bf16 = false);

// checkpoint.init_from: DIR: the run's model section becomes DIR/config.json's. A key the config
// sets to a non-default value that disagrees with DIR is an InputError naming both values.
void adopt_hf_model(RunConfig& config, const std::string& dir);

// `daedalus import-hf`: reads DIR, writes the checkpoint `out` (step 0, no optimizer state, the
// resolved config with DIR's model section and synthetic data, which eval and fine-tuning override;
// an FP8 directory's config says precision.recipe fp8_block with power_of_two_scales = ue8m0, so
// `export-hf --format fp8` writes the same scale format back).
// Nothing is written to `out` when anything fails. dtype fp32 keeps the values as stored (FP8
// dequantized); bf16 rounds them to bf16.
struct HfImportSummary {
  HfImportReport report;
  HfModelConfig config;
  int64_t parameters = 0;
  int64_t out_bytes = 0;
};
HfImportSummary import_hf(const std::string& dir, const std::string& out, DType dtype,
                          const std::shared_ptr<parallel::Communicator>& world);

}  // namespace daedalus::train
