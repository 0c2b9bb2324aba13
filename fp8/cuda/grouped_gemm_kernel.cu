// The one-launch grouped FP8 GEMM (contract: fp8/cuda/grouped_gemm_kernel.h). NEVER RUN on a GPU yet:
// written to be checked by reading; the notes below say what each index comes from.
//
// Work split. One thread block computes one 128 x 128 tile of y: blockIdx.x picks the 128 columns
// (n0 = 128·blockIdx.x), blockIdx.y the row tile, counted over all groups in order — group g owns
// tiles [tile_start[g], tile_start[g+1]), tile_start being the prefix sum of ceil(M_g / 128) built on
// the host; the block finds its group by binary search. Rows past M_g are zero-filled on load and
// never stored. With N % 128 == 0 a tile's 128 columns are exactly one row of b's 128x128 scale
// blocks, so one b scale per K block serves the whole tile.
//
// K loop. K blocks of 128 (one scale block), double-buffered in shared memory with cp.async
// (16-byte copies, zero-fill for rows past M_g): while block kb is multiplied, kb + 1 is loading.
// Per K block every warp accumulates its 64 x 32 sub-tile of the partial product in fresh fp32
// registers (4 x 4 mma.m16n8k32, 4 steps of 32 along K), then promotes: acc += partial * (sa * sb).
//
// Shared memory: per stage an A tile [128 rows][128 K] and a B tile [128 n][128 K], FP8, each row
// padded to 144 bytes: a fragment load reads a 4-byte word at row (lane / 4), byte 4·(lane % 4),
// i.e. 32-bit bank (36·(lane / 4) + lane % 4) mod 32 = (4·(lane / 4) + lane % 4) mod 32 — 32
// distinct banks, no conflicts (unpadded, 128-byte rows would put 8 lanes on one bank). 144 is a
// multiple of 16, so every cp.async destination stays 16-byte aligned. 2 stages x 2 tiles x
// 128 x 144 = 73,728 bytes (dynamic shared memory, opted in above the 48 KiB default).
//
// Warps: 8 (256 threads) as 2 (M) x 4 (N); warp w covers rows 64·(w % 2) .. +64 and columns
// 32·(w / 2) .. +32 of the tile: 4 m16 tiles x 4 n8 tiles of mma.m16n8k32 per 32 of K.
//
// Fragment layouts of mma.sync.aligned.m16n8k32.row.col.f32.{e4m3,e5m2}.{e4m3,e5m2}.f32: the PTX ISA,
// section 9.7.14.5 "Matrix Fragments for mma.m16n8k32" (the layout shared by .s8/.u8 and
// .e4m3/.e5m2), transcribed in fp8/cuda/mma_fp8_layout.h, which this kernel addresses shared memory
// with and which Fp8GroupedKernelRules.MmaFragmentLayoutMultipliesLikeThePtxIsa checks on the CPU
// against an element-by-element transcription (CUTLASS's MMA_Traits<SM89_16x8x32_F32E4M3E4M3F32_TN>
// encodes the same: ALayout ((4,8),(4,2,2)):((64,1),(16,8,256)) over a column-major 16 x 32 tile).
// Every A register is 4 consecutive K bytes of one row of the A tile and every B register 4 of one
// row of the B tile ([n][K], i.e. B "col"), so each is one aligned 32-bit shared-memory load (the
// lowest byte is the lowest k, little-endian). Both operands are K-major: exactly .row.col.
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "autograd/check.h"
#include "autograd/cuda/stream.h"
#include "fp8/cuda/grouped_gemm_kernel.h"
#include "fp8/cuda/mma_fp8_layout.h"

namespace daedalus::fp8 {

namespace {

// ---- tunables and what follows from them -------------------------------------------------------

constexpr int kBlockM = 128;  // rows of y per block
constexpr int kBlockN = 128;  // columns of y per block (= one row of b's 128x128 scale blocks)
constexpr int kBlockK = 128;  // K per pipeline stage (= one scale block: promotion once per stage)
constexpr int kWarpsM = 2;
constexpr int kWarpsN = 4;
constexpr int kStages = 2;
constexpr int kRowPad = 16;  // bytes added to each shared-memory row (bank conflicts, see the top)

constexpr int kThreads = 32 * kWarpsM * kWarpsN;
constexpr int kWarpTileM = kBlockM / kWarpsM;  // 64
constexpr int kWarpTileN = kBlockN / kWarpsN;  // 32
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 32;
constexpr int kMTiles = kWarpTileM / kMmaM;  // 4
constexpr int kNTiles = kWarpTileN / kMmaN;  // 4
constexpr int kSmemRow = kBlockK + kRowPad;  // 144 bytes
constexpr int kTileBytes = kBlockM * kSmemRow;
constexpr int kStageBytes = 2 * kTileBytes;  // A tile then B tile
constexpr int kSmemBytes = kStages * kStageBytes;
constexpr int kChunksPerRow = kBlockK / 16;                           // 16-byte cp.async chunks per row
constexpr int kChunksPerThread = kBlockM * kChunksPerRow / kThreads;  // per operand per stage

static_assert(kBlockM == 128 && kBlockK == 128 && kBlockN == 128,
              "one scale block per K stage and one b scale row per tile: the 1x128 / 128x128 scales");
static_assert(kBlockM == kBlockN, "the stage loader copies A and B tiles of the same row count");
static_assert(kWarpTileM % kMmaM == 0 && kWarpTileN % kMmaN == 0 && kBlockK % kMmaK == 0, "whole mma tiles");
static_assert(kSmemRow % 16 == 0, "cp.async 16-byte destinations must stay 16-byte aligned");
static_assert((kSmemRow / 4) % 32 == 4, "row stride of 4 banks mod 32: conflict-free fragment loads");
static_assert(kBlockM * kChunksPerRow % kThreads == 0, "every thread copies the same number of chunks");
static_assert(kStages == 2, "the K loop's wait_group counts assume double buffering");

// ---- parameters --------------------------------------------------------------------------------

struct GroupOperands {
  const uint8_t* a;      // [rows, K] FP8 codes, row-major
  const float* a_scale;  // [rows, K / 128] scale_inv, row-major
  const uint8_t* b;      // [N, K] FP8 codes, row-major
  const float* b_scale;  // [N / 128, K / 128] scale_inv, row-major
  float* y;              // the group's first row of y: [rows, N], row-major
  int rows;              // M_g > 0
};

// Passed by value as the kernel's parameter (__grid_constant__: read in place, never copied).
struct GroupedParams {
  int groups;  // non-empty groups, in row order
  int n, k, k_blocks;
  int tile_start[kGroupedKernelMaxGroups + 1];  // first row tile of each group; [groups] = all tiles
  GroupOperands group[kGroupedKernelMaxGroups];
};
static_assert(sizeof(GroupedParams) < 32764, "kernel parameters are limited to 32,764 bytes (CUDA 12.1+)");

// ---- device helpers ------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; src_bytes = 0 writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

__device__ __forceinline__ uint32_t load_u32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

// d += a · b for one 16 x 8 x 32 tile (layouts at the top of the file).
template <bool kAE5m2, bool kBE5m2>
__device__ __forceinline__ void mma_16x8x32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(!(kAE5m2 && kBE5m2), "e5m2 x e5m2 is not a pair the recipes use (nor cuBLASLt)");
  if constexpr (!kAE5m2 && !kBE5m2) {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else if constexpr (kAE5m2) {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e5m2.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e5m2.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Queues the copies of K block kb into `stage` (A rows past `rows` zero-filled) and commits them
// as one group. a_tile / b_tile: the tile's first row of a and b (row stride k bytes).
__device__ __forceinline__ void load_stage(uint8_t* stage, const uint8_t* a_tile, const uint8_t* b_tile, int rows,
                                           int k, int kb) {
  uint8_t* a_smem = stage;
  uint8_t* b_smem = stage + kTileBytes;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int chunk = threadIdx.x + i * kThreads;  // 8 consecutive threads read one 128-byte row segment
    const int r = chunk / kChunksPerRow;
    const int col = (chunk % kChunksPerRow) * 16;
    const int64_t k_offset = int64_t(kb) * kBlockK + col;
    const bool a_valid = r < rows;  // row 0 always is: rows >= 1, so its address stands in for the others
    cp_async_16(shared_address(a_smem + r * kSmemRow + col), a_tile + (a_valid ? int64_t(r) * k : 0) + k_offset,
                a_valid);
    cp_async_16(shared_address(b_smem + r * kSmemRow + col), b_tile + int64_t(r) * k + k_offset, true);
  }
  cp_async_commit();
}

template <bool kAE5m2, bool kBE5m2>
__global__ void __launch_bounds__(kThreads, 1)
    sm90_fp8_grouped_gemm_1x128_128x128(const __grid_constant__ GroupedParams p) {
  extern __shared__ __align__(16) uint8_t smem[];

  // The block's group: the last g with tile_start[g] <= tile (tile_start strictly increases: every
  // group listed has rows).
  const int tile = blockIdx.y;
  int lo = 0, hi = p.groups - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (p.tile_start[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  const GroupOperands op = p.group[lo];
  const int m0 = (tile - p.tile_start[lo]) * kBlockM;  // first row of the tile within the group
  const int rows = min(kBlockM, op.rows - m0);         // rows of the tile inside the group, >= 1
  const int n0 = blockIdx.x * kBlockN;
  const int k = p.k, k_blocks = p.k_blocks;
  const uint8_t* a_tile = op.a + int64_t(m0) * k;
  const uint8_t* b_tile = op.b + int64_t(n0) * k;
  const float* a_scale = op.a_scale + int64_t(m0) * k_blocks;        // row r, K block kb: a_scale[r * k_blocks + kb]
  const float* b_scale = op.b_scale + int64_t(n0 / 128) * k_blocks;  // K block kb: b_scale[kb]

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warp_row = (warp % kWarpsM) * kWarpTileM;
  const int warp_col = (warp / kWarpsM) * kWarpTileN;

  float acc[kMTiles][kNTiles][4];
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;

  load_stage(smem, a_tile, b_tile, rows, k, 0);
  for (int kb = 0; kb < k_blocks; ++kb) {
    uint8_t* stage = smem + (kb % kStages) * kStageBytes;
    // The other stage was last read in iteration kb - 1, which ended with __syncthreads().
    if (kb + 1 < k_blocks) {
      load_stage(smem + ((kb + 1) % kStages) * kStageBytes, a_tile, b_tile, rows, k, kb + 1);
      cp_async_wait<1>();  // block kb's copies are done (kb + 1's may still be in flight)
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // ... and every thread's copies are visible to all

    const uint8_t* a_smem = stage;
    const uint8_t* b_smem = stage + kTileBytes;
    float partial[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) partial[mt][nt][i] = 0.0f;

#pragma unroll 1  // unrolled, the fragments of all 4 steps stay live: 255 registers and spills
    for (int kk = 0; kk < kBlockK; kk += kMmaK) {
      uint32_t af[kMTiles][4], bf[kNTiles][2];
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int reg = 0; reg < 4; ++reg) {
          const mma_m16n8k32::RowK at = mma_m16n8k32::a_register(lane, reg);
          af[mt][reg] = load_u32(a_smem + (warp_row + mt * kMmaM + at.row) * kSmemRow + kk + at.k);
        }
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int reg = 0; reg < 2; ++reg) {
          const mma_m16n8k32::RowK at = mma_m16n8k32::b_register(lane, reg);
          bf[nt][reg] = load_u32(b_smem + (warp_col + nt * kMmaN + at.row) * kSmemRow + kk + at.k);
        }
#pragma unroll
      for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt) mma_16x8x32<kAE5m2, kBE5m2>(partial[mt][nt], af[mt], bf[nt]);
    }

    // Promotion, the CPU's expression: acc += partial * (sa * sb), each operation rounded (no FMA).
    const float sb = b_scale[kb];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // c0, c1 share a row, and c2, c3
        const int r = warp_row + mt * kMmaM + mma_m16n8k32::c_register(lane, 2 * half).row;
        const float sa = r < rows ? a_scale[int64_t(r) * k_blocks + kb] : 0.0f;
        const float s = __fmul_rn(sa, sb);
#pragma unroll
        for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
          for (int j = 0; j < 2; ++j)
            acc[mt][nt][2 * half + j] =
                __fadd_rn(acc[mt][nt][2 * half + j], __fmul_rn(partial[mt][nt][2 * half + j], s));
      }
    __syncthreads();  // this stage is overwritten by the copies queued in iteration kb + 1
  }

  // Store: c0, c1 (one row, adjacent columns, the first even) and c2, c3: one 8-byte store each
  // (N even, y's rows start at multiples of N floats: 8-byte aligned).
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const mma_m16n8k32::RowCol at = mma_m16n8k32::c_register(lane, 2 * half);  // c[2 half + 1]: at.col + 1
      const int r = warp_row + mt * kMmaM + at.row;
      if (r >= rows) continue;
      float* out = op.y + int64_t(m0 + r) * p.n + n0 + warp_col + at.col;
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
        *reinterpret_cast<float2*>(out + nt * kMmaN) = make_float2(acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
    }
}

template <bool kAE5m2, bool kBE5m2>
void launch(const GroupedParams& params, dim3 grid, cudaStream_t stream) {
  const auto kernel = sm90_fp8_grouped_gemm_1x128_128x128<kAE5m2, kBE5m2>;
  DAEDALUS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(params);
  DAEDALUS_CUDA_CHECK_LAUNCH();
}

constexpr int64_t kIntMax = 2147483647;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool aligned_16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// The checks of one non-empty group's operands ("" when fine).
std::string group_unsupported(const QuantizedTensor& a, const QuantizedTensor& b, size_t g, int64_t rows, int64_t n,
                              int64_t k, Device device) {
  if (!a.data.defined() || !a.scale_inv.defined() || !b.data.defined() || !b.scale_inv.defined())
    return fmt::format("group {} has rows but an undefined operand", g);
  if (a.granularity != Granularity::tile_1x128 || b.granularity != Granularity::block_128x128)
    return fmt::format("group {}: scales {} x {}; the kernel takes tile_1x128 x block_128x128 only", g,
                       granularity_name(a.granularity), granularity_name(b.granularity));
  if (a.format == Format::e5m2 && b.format == Format::e5m2)
    return fmt::format("group {}: e5m2 x e5m2 (one operand must be e4m3)", g);
  if (a.data.dim() != 2 || b.data.dim() != 2 || a.rows() != rows || a.cols() != k || b.rows() != n || b.cols() != k)
    return fmt::format("group {}: a {} and b {} must be [{}, {}] and [{}, {}]", g, a.data.describe(), b.data.describe(),
                       rows, k, n, k);
  if (a.data.dtype() != dtype_of(a.format) || b.data.dtype() != dtype_of(b.format))
    return fmt::format("group {}: data dtypes {} and {} disagree with formats {} and {}", g, dtype_name(a.data.dtype()),
                       dtype_name(b.data.dtype()), format_name(a.format), format_name(b.format));
  for (const Tensor* t : {&a.data, &a.scale_inv, &b.data, &b.scale_inv})
    if (t->device() != device)
      return fmt::format("group {}: operands on {} and {}", g, t->device().str(), device.str());
  if (!a.data.is_contiguous() || !b.data.is_contiguous() || !aligned_16(a.data) || !aligned_16(b.data))
    return fmt::format("group {}: FP8 data must be contiguous and 16-byte aligned (cp.async)", g);
  const Shape sa{rows, k / 128}, sb{n / 128, k / 128};
  if (a.scale_inv.dtype() != DType::f32 || b.scale_inv.dtype() != DType::f32 || a.scale_inv.shape() != sa ||
      b.scale_inv.shape() != sb)
    return fmt::format("group {}: scale_inv must be fp32 {} and {}, got {} and {}", g, shape_str(sa), shape_str(sb),
                       a.scale_inv.describe(), b.scale_inv.describe());
  return "";
}

}  // namespace

std::string grouped_gemm_1x128_128x128_unsupported(const std::vector<QuantizedTensor>& a,
                                                   const std::vector<QuantizedTensor>& b,
                                                   const std::vector<int64_t>& offsets) {
  const size_t groups = b.size();
  if (groups == 0 || a.size() != groups || offsets.size() != groups + 1 || offsets.front() != 0)
    return fmt::format("{} a, {} b and {} offsets: expected G >= 1, G, G + 1 offsets from 0", a.size(), groups,
                       offsets.size());
  if (!b[0].data.defined() || b[0].data.dim() != 2) return "b[0] must be a defined 2-d operand (it gives N)";
  const int64_t n = b[0].rows();
  if (n <= 0 || n % kBlockN != 0 || n > kIntMax)
    return fmt::format("N = {} must be a positive multiple of {} (and fit an int)", n, kBlockN);
  int64_t k = -1, tiles = 0;
  int non_empty = 0;
  for (size_t g = 0; g < groups; ++g) {
    if (offsets[g + 1] < offsets[g]) return fmt::format("offsets decrease at group {}", g);
    if (offsets[g + 1] == offsets[g]) continue;
    if (!a[g].data.defined() || a[g].data.dim() != 2) return fmt::format("group {} has rows but no 2-d a", g);
    if (k < 0) k = a[g].cols();
    ++non_empty;
    tiles += ceil_div(offsets[g + 1] - offsets[g], kBlockM);
  }
  if (non_empty == 0) return "";  // no rows: the launcher returns y [0, N] without a launch
  if (k <= 0 || k % kBlockK != 0 || k > kIntMax)
    return fmt::format("K = {} must be a positive multiple of {} (and fit an int)", k, kBlockK);
  if (non_empty > kGroupedKernelMaxGroups)
    return fmt::format("{} non-empty groups; one launch takes at most {}", non_empty, kGroupedKernelMaxGroups);
  if (tiles > 65535) return fmt::format("{} row tiles of {} rows exceed the grid's 65535", tiles, kBlockM);
  const Device device = b[0].data.device();
  size_t first = groups;  // the first non-empty group
  for (size_t g = 0; g < groups; ++g) {
    if (offsets[g + 1] == offsets[g]) continue;
    const std::string why = group_unsupported(a[g], b[g], g, offsets[g + 1] - offsets[g], n, k, device);
    if (!why.empty()) return why;
    if (first == groups) first = g;
    if (a[g].format != a[first].format || b[g].format != b[first].format)
      return fmt::format("group {} is {} x {}, unlike the first non-empty group (one format pair per launch)", g,
                         format_name(a[g].format), format_name(b[g].format));
  }
  return "";
}

Tensor grouped_gemm_1x128_128x128(const std::vector<QuantizedTensor>& a, const std::vector<QuantizedTensor>& b,
                                  const std::vector<int64_t>& offsets) {
  const std::string why = grouped_gemm_1x128_128x128_unsupported(a, b, offsets);
  DAEDALUS_CHECK(why.empty(), "grouped_gemm_1x128_128x128: {}", why);
  const Device device = b[0].data.device();
  DAEDALUS_CHECK(device.is_cuda(), "grouped_gemm_1x128_128x128: operands must be on a CUDA device, got {}",
                 b[0].data.describe());
  DAEDALUS_CUDA_CHECK(cudaSetDevice(device.index));
  const int64_t rows = offsets.back(), n = b[0].rows();
  auto params = std::make_unique<GroupedParams>();  // ~13 KiB: off the stack
  params->groups = 0;
  params->n = int(n);
  std::vector<Tensor> keep;  // contiguous scale copies, held until the launch is queued
  Tensor y = Tensor::empty({rows, n}, DType::f32, device);
  int tiles = 0;
  bool a_e5m2 = false, b_e5m2 = false;
  for (size_t g = 0; g + 1 < offsets.size(); ++g) {
    const int64_t m = offsets[g + 1] - offsets[g];
    if (m == 0) continue;
    const Tensor sa = a[g].scale_inv.contiguous(), sb = b[g].scale_inv.contiguous();
    keep.push_back(sa);
    keep.push_back(sb);
    const int i = params->groups++;
    params->k = int(a[g].cols());
    params->tile_start[i] = tiles;
    params->group[i] = GroupOperands{static_cast<const uint8_t*>(a[g].data.data_ptr()),  sa.data<float>(),
                                     static_cast<const uint8_t*>(b[g].data.data_ptr()),  sb.data<float>(),
                                     static_cast<float*>(y.data_ptr()) + offsets[g] * n, int(m)};
    tiles += int(ceil_div(m, kBlockM));
    if (i == 0) {  // one format pair for all groups (checked above)
      a_e5m2 = a[g].format == Format::e5m2;
      b_e5m2 = b[g].format == Format::e5m2;
    }
  }
  if (params->groups == 0) return y;  // no rows at all: [0, N]
  params->k_blocks = params->k / kBlockK;
  params->tile_start[params->groups] = tiles;
  const dim3 grid(unsigned(n / kBlockN), unsigned(tiles));
  const cudaStream_t stream = cuda::compute_stream(device.index);
  if (a_e5m2)
    launch<true, false>(*params, grid, stream);
  else if (b_e5m2)
    launch<false, true>(*params, grid, stream);
  else
    launch<false, false>(*params, grid, stream);
  return y;
}

}  // namespace daedalus::fp8
