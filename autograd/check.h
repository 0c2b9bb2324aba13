// Errors and the one family of check macros used across Daedalus.
//
// Library code throws; train/ catches at the top, prints rank and message, and exits
// (1 for bad input, 2 for runtime failures). Every macro reports the failing statement
// and file:line. The library-specific macros expand to calls into that library, so a
// file uses DAEDALUS_CUDA_CHECK only where it already includes the CUDA runtime header;
// the family itself lives in this one header.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace daedalus {

// A failure in the program or its environment (CUDA error, communication failure, ...).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad input from a user or a caller: wrong shape, unsupported dtype, bad config key, bad file.
class InputError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] void throw_check_failure(const char* library, const char* statement, const std::string& detail,
                                      const char* file, int line);
[[noreturn]] void throw_input_error(const std::string& message, const char* file, int line);
}  // namespace detail

}  // namespace daedalus

// DAEDALUS_CHECK(cond, "op: shapes {} and {}", a, b) -> InputError("op: shapes ... (file:line)").
#define DAEDALUS_CHECK(cond, ...)                                                                     \
  do {                                                                                                \
    if (!(cond)) ::daedalus::detail::throw_input_error(fmt::format(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

#define DAEDALUS_FAIL(...) ::daedalus::detail::throw_input_error(fmt::format(__VA_ARGS__), __FILE__, __LINE__)

// An internal invariant: failing it is a bug in Daedalus, reported with the statement.
#define DAEDALUS_ASSERT(cond)                                                                                        \
  do {                                                                                                               \
    if (!(cond)) ::daedalus::detail::throw_check_failure("internal", #cond, "assertion failed", __FILE__, __LINE__); \
  } while (0)

#define DAEDALUS_CUDA_CHECK(stmt)                                                                            \
  do {                                                                                                       \
    cudaError_t daedalus_status_ = (stmt);                                                                   \
    if (daedalus_status_ != cudaSuccess)                                                                     \
      ::daedalus::detail::throw_check_failure("CUDA", #stmt, cudaGetErrorString(daedalus_status_), __FILE__, \
                                              __LINE__);                                                     \
  } while (0)

// After a kernel launch: catches bad launch configurations right where they happen.
#define DAEDALUS_CUDA_CHECK_LAUNCH() DAEDALUS_CUDA_CHECK(cudaGetLastError())

#define DAEDALUS_CUBLAS_CHECK(stmt)                                                                               \
  do {                                                                                                            \
    cublasStatus_t daedalus_status_ = (stmt);                                                                     \
    if (daedalus_status_ != CUBLAS_STATUS_SUCCESS)                                                                \
      ::daedalus::detail::throw_check_failure("cuBLAS", #stmt, cublasLtGetStatusString(daedalus_status_), __FILE__, \
                                              __LINE__);                                                          \
  } while (0)

#define DAEDALUS_NCCL_CHECK(stmt)                                                                            \
  do {                                                                                                       \
    ncclResult_t daedalus_status_ = (stmt);                                                                  \
    if (daedalus_status_ != ncclSuccess)                                                                     \
      ::daedalus::detail::throw_check_failure("NCCL", #stmt, ncclGetErrorString(daedalus_status_), __FILE__, \
                                              __LINE__);                                                     \
  } while (0)

#define DAEDALUS_MPI_CHECK(stmt)                                                                                 \
  do {                                                                                                           \
    int daedalus_status_ = (stmt);                                                                               \
    if (daedalus_status_ != MPI_SUCCESS) {                                                                       \
      char daedalus_msg_[MPI_MAX_ERROR_STRING];                                                                  \
      int daedalus_len_ = 0;                                                                                     \
      MPI_Error_string(daedalus_status_, daedalus_msg_, &daedalus_len_);                                         \
      ::daedalus::detail::throw_check_failure("MPI", #stmt, std::string(daedalus_msg_, daedalus_len_), __FILE__, \
                                              __LINE__);                                                         \
    }                                                                                                            \
  } while (0)

// HDF5 calls return a negative herr_t / hid_t on failure; the HDF5 error stack has the detail.
#define DAEDALUS_HDF5_CHECK(stmt)                                                                               \
  ([&]() {                                                                                                      \
    auto daedalus_status_ = (stmt);                                                                             \
    if (daedalus_status_ < 0)                                                                                   \
      ::daedalus::detail::throw_check_failure("HDF5", #stmt, "returned a negative status", __FILE__, __LINE__); \
    return daedalus_status_;                                                                                    \
  }())
