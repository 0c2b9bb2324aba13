// Seeded bit flips across a whole checkpoint file, metadata included, shared by the unit test (a
// file saved by one process) and the multi-rank test (files saved by 2-4 ranks through MPI-IO).
// Every trial flips 1 or 2 bits of a copy, then asks `inspect` for a verdict and loads the copy
// into a full model (every expert, optimizer, amax histories). A trial passes when each of the two
// either detects damage (verdict not OK; CheckpointReadError) or gives exactly the pristine file's
// values (every dataset's digest and every /trainer value; every loaded tensor, moment, history
// and counter). A crash inside HDF5 would end the test process: there is none to count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace daedalus::testing {

struct FlipTally {
  int trials = 0;
  int inspect_detected = 0;  // verdict not OK
  int inspect_same = 0;      // verdict OK, every digest and /trainer value as in the pristine file
  int load_detected = 0;     // CheckpointReadError
  int load_same = 0;         // loaded exactly the pristine state
  std::vector<std::string> failures;  // silent changes, wrong error kinds: must stay empty
};

// `pristine`: a complete checkpoint of `config`'s model; `work`: a scratch path. Half the trials
// flip bits outside the datasets' chunks (HDF5 metadata, attributes, free space), half anywhere.
FlipTally flip_trials(const std::string& pristine, const std::string& work, const train::RunConfig& config,
                      uint64_t seed, int trials);

// Trials per test: `in_suite` (seconds), or DAEDALUS_FLIP_TRIALS when set (the by-hand run).
int flip_trial_count(int in_suite);

// Copies `from` to `to` and flips `bits` bits of the copy at positions drawn from `seed`.
void copy_with_flips(const std::string& from, const std::string& to, uint64_t seed, int bits, bool metadata_only);

}  // namespace daedalus::testing
