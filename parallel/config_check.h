// Agreement across ranks: every rank must train with the same resolved config (a start-of-run
// guard), and every rank learns whether a step that may fail on some ranks (a checkpoint write,
// a resume attempt) succeeded everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "parallel/communicator.h"

namespace daedalus::parallel {

// FNV-1a, 64-bit, over the bytes of `text`.
uint64_t fnv1a_64(std::string_view text);

// Collective over `comm`: all ranks gather each other's hash of resolved_config_text. On a
// mismatch every rank throws the same InputError, naming the first rank whose hash differs from
// rank 0's and both hashes.
void check_same_config(Communicator& comm, const std::string& resolved_config_text);

// Collective over `comm`: whether every rank passed ok = true. When not, *message becomes on every
// rank the message of the lowest failing rank, prefixed "(rank r) " when r is not 0. A world of
// one returns ok and leaves *message alone.
bool agree(Communicator& comm, bool ok, std::string* message);

}  // namespace daedalus::parallel
