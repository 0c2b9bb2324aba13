// Where each lane's registers of mma.sync.aligned.m16n8k32.row.col.f32.{e4m3,e5m2}.{e4m3,e5m2}.f32
// live in the matrices, for the grouped FP8 kernel (fp8/cuda/grouped_gemm_kernel.cu) to address
// shared memory with, and for a CPU test (tests/test_fp8_grouped_kernel.cpp) to check against an
// element-by-element transcription of the PTX ISA. Plain C++ (host and device), no CUDA headers.
//
// Source: PTX ISA, section 9.7.14.5 "Matrix Fragments for mma.m16n8k32" (the layout shared by
// .s8/.u8 and .e4m3/.e5m2). With groupID = lane >> 2 and threadID_in_group = lane % 4, elements low
// byte first:
//   A (16 x 32), 4 .b32 registers a0..a15:  row = groupID for 0 <= i < 4 or 8 <= i < 12, else + 8;
//                                           col = 4·threadID_in_group + (i & 3), + 16 for i >= 8
//   B (32 x 8),  2 .b32 registers b0..b7:   row (k) = 4·threadID_in_group + (i & 3), + 16 for i >= 4;
//                                           col (n) = groupID
//   C/D (16 x 8 fp32), 4 registers c0..c3:  row = groupID for c0, c1, else + 8;
//                                           col = 2·threadID_in_group + (i & 1)
// So every A or B register is 4 consecutive K elements of one row of A or one column of B: one
// aligned 32-bit load from a K-major tile.
#pragma once

#if defined(__CUDACC__)
#define DAEDALUS_HOST_DEVICE __host__ __device__
#else
#define DAEDALUS_HOST_DEVICE
#endif

namespace daedalus::fp8::mma_m16n8k32 {

struct RowK {
  int row;  // A: row in [0, 16); B: column n in [0, 8)
  int k;    // first of the register's 4 consecutive K elements, in [0, 32)
};
struct RowCol {
  int row, col;  // in the 16 x 8 accumulator
};

// Register `reg` (0..3) of lane `lane`'s A fragment: bytes 0..3 are A[row][k .. k + 3].
DAEDALUS_HOST_DEVICE constexpr RowK a_register(int lane, int reg) {
  return {(lane >> 2) + 8 * (reg % 2), 4 * (lane % 4) + 16 * (reg / 2)};
}

// Register `reg` (0..1) of lane `lane`'s B fragment: bytes 0..3 are B[k .. k + 3][n] (row = n).
DAEDALUS_HOST_DEVICE constexpr RowK b_register(int lane, int reg) { return {lane >> 2, 4 * (lane % 4) + 16 * reg}; }

// Accumulator register `reg` (0..3) of lane `lane`: D[row][col]. c1 is c0's right neighbour and c3
// c2's, so each pair is one 8-byte store.
DAEDALUS_HOST_DEVICE constexpr RowCol c_register(int lane, int reg) {
  return {(lane >> 2) + 8 * (reg / 2), 2 * (lane % 4) + reg % 2};
}

}  // namespace daedalus::fp8::mma_m16n8k32
