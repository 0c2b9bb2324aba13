// Internal to data/: what both prepare-data paths (bytes: prepare.cpp; tokenizer:
// prepare_tokens.cpp) share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#if !DAEDALUS_MINIMAL
#include <nlohmann/json.hpp>
#endif

#include "data/prepare.h"
#include "data/shard_writer.h"

namespace daedalus::data::detail {

// InputError for val_fraction outside [0, 0.5], a non-positive shard size, no inputs.
void check_prepare_options(const std::vector<std::string>& inputs, double val_fraction, int64_t max_shard_tokens);
// The last floor(total · val_fraction) tokens, at least 1 when a split was asked for.
int64_t val_tokens(int64_t total, double val_fraction);
// InputError naming out_dir when it cannot be created.
void make_output_dir(const std::string& out_dir);
// Commits both shard sets, removes stale shards of earlier runs, lists the paths in summary.shards.
void finish_shards(ShardSet& train, ShardSet& valid, const std::string& out_dir, PrepareSummary& summary);
// out_dir/summary.json := json_text.
void write_summary(const std::string& out_dir, const std::string& json_text);

#if !DAEDALUS_MINIMAL  // the GPU-test build has no nlohmann-json
// The summary.json keys both paths write: inputs, files, bytes, tokens, the split, the shards.
nlohmann::json summary_json(const std::vector<std::string>& files, const PrepareSummary& summary, double val_fraction,
                            const ShardSet& train, const ShardSet& valid);
#endif

}  // namespace daedalus::data::detail
