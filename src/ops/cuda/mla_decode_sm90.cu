// Host side of the Hopper MLA decode kernel for H >= 64 (mla_decode_sm90.h): the KV pool's TMA
// descriptor (encoded on the host, no device call, and cached per pool) and the two launches.
#include <cudaTypedefs.h>

#include "ops/cuda/launch_ex.h"
#include "ops/cuda/mla_decode_sm90.cuh"
#include "ops/cuda/mla_decode_sm90.h"
#include "ops/cuda/mla_decode_sm90_combine.cuh"

namespace helix::cuda::mla_sm90 {
namespace {

// cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda link).
PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(p);
  }();
  return fn;
}

size_t smem_for(int max_batch, bool fp8) {
  return kFixedBytes + (fp8 ? kScaleBytes : 0) + sizeof(int) * (static_cast<size_t>(max_batch) + 1);
}

}  // namespace

bool eligible(int heads, int kv_lora_rank, int rope_dim, bool fp8, int max_batch) {
  return heads >= 64 && kv_lora_rank == kL && rope_dim == kR &&
         max_batch <= (fp8 ? kMaxBatchFp8 : kMaxBatch);
}

bool block_ok(int block_size) {
  return block_size == 16 || block_size == 32 || (block_size > 0 && block_size % 64 == 0);
}

cudaError_t prepare(int heads, bool fp8, int max_batch, size_t* smem, int* ctas_per_group) {
  if (!encoder()) return cudaErrorNotSupported;
  *smem = smem_for(max_batch, fp8);
  const auto kernel = fp8 ? mla_sm90_kernel<true> : mla_sm90_kernel<false>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(*smem));
  int dev = 0, sms = 0, per_sm = 0;
  if (err == cudaSuccess) err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess)
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, *smem);
  if (err != cudaSuccess) return err;
  if (per_sm <= 0) return cudaErrorInvalidConfiguration;
  const int groups = (heads + kHeads - 1) / kHeads;
  *ctas_per_group = sms * per_sm / groups > 0 ? sms * per_sm / groups : 1;
  return cudaSuccess;
}

static cudaError_t encode_kv_map_uncached(CUtensorMap* map, const uint8_t* kv_pool, bool fp8,
                                          int box_rows) {
  const auto encode = encoder();
  if (!encode) return cudaErrorNotSupported;
  // A box is 128 bytes of a row (one swizzle row) x box_rows tokens of one block. The row count is
  // not known here; TMA only reads the boxes the block table names, so it is set to the coordinate
  // range.
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(fp8 ? kFp8RowBytes : kW),
                              cuuint64_t{1} << 31};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(fp8 ? kFp8RowBytes : kW * 2)};
  const cuuint32_t box[2] = {fp8 ? 128u : 64u, static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  if (encode(map, fp8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
             const_cast<uint8_t*>(kv_pool), dims, strides, box, elem_strides,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
             CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

// A decode step launches with the same pool every layer: encoding costs host time each launch,
// so the last few maps are kept per host thread (a map depends only on these three values; a
// pool freed and reallocated at the same address gets the same map).
cudaError_t encode_kv_map(CUtensorMap* map, const uint8_t* kv_pool, bool fp8, int box_rows) {
  struct Entry {
    const uint8_t* pool = nullptr;
    bool fp8 = false;
    int box_rows = 0;
    cudaError_t err = cudaSuccess;
    CUtensorMap map{};
  };
  constexpr int kEntries = 4;
  thread_local Entry cache[kEntries];
  thread_local int next = 0;
  for (const Entry& e : cache)
    if (e.pool == kv_pool && e.pool != nullptr && e.fp8 == fp8 && e.box_rows == box_rows) {
      if (e.err == cudaSuccess) *map = e.map;
      return e.err;
    }
  Entry& e = cache[next];
  next = (next + 1) % kEntries;
  e.err = encode_kv_map_uncached(&e.map, kv_pool, fp8, box_rows);
  // Only outcomes that depend on the key alone are kept (not a transient failure).
  const bool keep = e.err == cudaSuccess || e.err == cudaErrorNotSupported;
  e.pool = keep ? kv_pool : nullptr;
  e.fp8 = fp8;
  e.box_rows = box_rows;
  if (e.err == cudaSuccess) *map = e.map;
  return e.err;
}

cudaError_t launch(const Args& a, bool fp8, dim3 grid, size_t smem, cudaStream_t stream) {
  if (!block_ok(a.block_size)) return cudaErrorNotSupported;
  CUtensorMap map;
  const cudaError_t merr =
      encode_kv_map(&map, a.kv_pool, fp8, a.block_size < kTile ? a.block_size : kTile);
  if (merr != cudaSuccess) return merr;
  // Both launches with programmatic dependent launch (graph-capturable): each kernel's launch
  // overlaps the tail of the one before, and waits for it (griddepcontrol.wait) before it reads
  // global memory.
  LaunchEx ex(grid, dim3(kThreads), smem, stream);
  ex.pdl();
  cudaError_t err = fp8 ? ex(mla_sm90_kernel<true>, map, a) : ex(mla_sm90_kernel<false>, map, a);
  if (err != cudaSuccess) return err;
  ex.grid(dim3(a.batch, a.num_heads)).smem(8 * static_cast<size_t>(a.ctas_per_group));
  if (a.batch <= kCombineSmallBatch) return ex.block(dim3(512))(mla_sm90_combine_kernel<512, 0>, a);
  ex.block(dim3(128));
  // The one-trip combine where its (batch, heads) grid fits one wave on the split grid's SMs.
  if (static_cast<int64_t>(a.batch) * a.num_heads <=
      static_cast<int64_t>(kOneTripCtasPerSm) * grid.x * grid.y)
    return ex(mla_sm90_combine_kernel<128, kOneTripUnroll>, a);
  return ex(mla_sm90_combine_kernel<128, 0>, a);
}

}  // namespace helix::cuda::mla_sm90
