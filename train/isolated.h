// Runs a risky step in a forked child process, so that a crash or a hang inside it cannot take
// this process down: HDF5 reading a checkpoint whose metadata is damaged can dereference garbage
// (SIGSEGV in H5HG_read, H5Literate) before any checksum is consulted. The child does the reads,
// reports through a pipe and ends with _exit; the parent learns "ok", the child's error, or how
// it died. Safe under MPI as long as the child makes no MPI call (it does not).
#pragma once

#include <functional>
#include <string>

namespace daedalus::train {

struct IsolatedOutcome {
  enum class Kind : uint8_t {
    ok,           // fn returned
    input_error,  // fn threw InputError (text: its message)
    error,        // fn threw another exception (text: its message)
    crashed,      // the child died of a signal or exited oddly (text: which)
    timed_out,    // not done within the time limit; the child was killed
  };
  Kind kind = Kind::ok;
  std::string text;
};

// Calls fn() in a child and waits at most timeout_s seconds for it.
IsolatedOutcome run_isolated(const std::function<void()>& fn, double timeout_s);

}  // namespace daedalus::train
