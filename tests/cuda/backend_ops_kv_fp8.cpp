// Backend parity of the FP8 latent KV cache through the Ops interface the engine calls
// (--kv-cache-dtype fp8): CudaOps::kv_write (mla_kv_write_cuda, the one writer of bf16 and FP8
// rows) writes the same bytes as CpuOps::kv_write (ops/cpu/kv_fp8.cpp) into an FP8 pool and as
// the core codec's bf16_from_float into a bf16 pool, and CudaOps::mla_decode over that pool (the
// bf16/FP8 kernel, plans cached per pool dtype) matches CpuOps::mla_decode over it: 1e-2 relative
// L2 on the output and 1e-3 on the LSE, the bf16 kernel's bounds over the rows the cache holds
// (tests/cuda/test_mla_decode_bf16.cpp). Skips without a GPU.
#ifdef HELIX_HAVE_CUDA
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include <gtest/gtest.h>

#include "../paged_kv_fixture.h"
#include "backend_ops_util.h"
#include "core/tensor.h"
#include "ops/backend.h"
#include "ops/cuda/mla_decode_bf16.h"
#include "ops/ops.h"

namespace helix {
namespace {

using namespace helix::testing;

struct Fp8Case {
  int heads, L, R, block;
  DType act;
  std::vector<int> lens;
};

TEST(BackendOpsKvFp8, KvWriteBytesAndDecodeMatchTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Fp8Case& c : {Fp8Case{16, 512, 64, 64, DType::BF16, {300, 0, 1, 129}},
                           Fp8Case{128, 512, 64, 16, DType::F32, {77, 200}},
                           Fp8Case{4, 64, 16, 7, DType::BF16, {1, 15, 22, 0, 40}}}) {
    const int W = c.L + c.R, B = static_cast<int>(c.lens.size());
    const std::string name = std::to_string(c.heads) + " heads L" + std::to_string(c.L) + " R" +
                             std::to_string(c.R) + " block " + std::to_string(c.block) + " " +
                             dtype_name(c.act == DType::BF16 ? CudaDType::kBF16 : CudaDType::kF32);
    SCOPED_TRACE(name);
    const size_t rb = kv_fp8_row_bytes(c.L, c.R);
    ASSERT_EQ(rb, mla_kv_row_bytes(MlaKvDtype::kFp8E4m3, c.L, c.R));
    std::mt19937 rng(c.heads + c.L);
    const test::PagedKv kv = test::paged_kv(c.lens, c.block, 2, rng);
    const int max_blocks = kv.max_blocks, num_blocks = kv.num_blocks;
    const std::vector<int>& table = kv.table;
    const std::vector<int64_t>& slots = kv.slots;  // the last is padding (-1): skipped
    const int T = static_cast<int>(slots.size());
    // Latent rows as the model makes them (rms-normed c, roped k_pe): N(0, 1); in bf16 mode the
    // CPU sees the bf16 values the GPU reads.
    Tensor lat({T, W}), q({B, c.heads, W});
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float& x : lat.data) x = nd(rng);
    for (float& x : q.data) x = 0.3f * nd(rng);
    if (c.act == DType::BF16) lat.data = rounded(lat.data, CudaDType::kBF16);
    q.data = rounded(q.data, CudaDType::kBF16);  // the kernel's query is bf16 in both modes

    auto cpu = make_cpu_ops();
    auto gpu = make_cuda_ops(0, c.act);
    const std::vector<int64_t> pshape = {num_blocks, c.block, static_cast<int64_t>(rb)};
    DTensor pool_c = cpu->alloc(pshape, DType::F8E4M3), pool_g = gpu->alloc(pshape, DType::F8E4M3);
    DTensor lat_c = DTensor::from_host(Tensor(lat)), lat_g = gpu->upload(Tensor(lat), c.act);
    DTensor slots_g = gpu->upload_raw(slots.data(), {T}, DType::I64);
    cpu->kv_write(pool_c.view(), lat_c.view(), W, T, c.L, c.R, TensorView{}, slots.data());
    gpu->kv_write(pool_g.view(), lat_g.view(), W, T, c.L, c.R, slots_g.view(), slots.data());
    std::vector<uint8_t> bytes_g(pool_g.view().bytes());
    gpu->to_host_raw(pool_g.view(), bytes_g.data());
    // Same rounding, same scale formula: the pools are equal byte for byte.
    size_t diff = 0;
    for (size_t i = 0; i < bytes_g.size(); ++i)
      diff += bytes_g[i] != static_cast<const uint8_t*>(pool_c.view().data)[i];
    EXPECT_EQ(diff, 0u) << "bytes differing between the CUDA and CPU FP8 pools";
    report("kv_write", name + " fp8 pool: bytes differing", static_cast<double>(diff), 0.0);

    // Decode: first over a bf16 pool of the same rows on the same CudaOps (a plan for the bf16
    // kernel at this head count), then over the FP8 pool, which needs a plan of its own.
    DTensor table_g = gpu->upload_raw(table.data(), {B, max_blocks}, DType::I32);
    DTensor lens_g = gpu->upload_raw(c.lens.data(), {B}, DType::I32);
    DTensor q_c = DTensor::from_host(Tensor(q)), q_g = gpu->upload(Tensor(q), DType::BF16);
    auto decode = [&](Ops& o, const DTensor& pool, const DTensor& qq, const DTensor& tbl,
                      const DTensor& lens, std::vector<float>* out, std::vector<float>* lse) {
      DTensor od = o.alloc({B, c.heads, c.L}, DType::F32), ld = o.alloc({B, c.heads}, DType::F32);
      MlaDecodeArgs a = test::mla_decode_args(kv, c.lens, c.heads, c.L, c.R, c.block, 0.1f);
      a.q = qq.view();
      a.pool = pool.view();
      a.block_table = tbl.view();
      a.seq_lens = lens.view();
      a.out = od.view();
      a.lse = ld.view();
      o.mla_decode(a);
      out->resize(static_cast<size_t>(B) * c.heads * c.L);
      lse->resize(static_cast<size_t>(B) * c.heads);
      o.to_host(od.view(), out->data());
      o.to_host(ld.view(), lse->data());
    };
    {
      // The same writer's bf16 rows (from the act-dtype rows: fp32 ones are rounded by the
      // writer) are bit for bit the CPU codec's bf16 of each latent value.
      DTensor pool_b = gpu->alloc({num_blocks, c.block, W}, DType::BF16);
      gpu->kv_write(pool_b.view(), lat_g.view(), W, T, c.L, c.R, slots_g.view(), slots.data());
      std::vector<uint16_t> bits(pool_b.view().bytes() / 2);
      gpu->to_host_raw(pool_b.view(), bits.data());
      size_t bdiff = 0;
      for (int t = 0; t < T; ++t)
        for (int i = 0; slots[t] >= 0 && i < W; ++i)
          bdiff += bits[slots[t] * W + i] != bf16_from_float(lat.data[size_t(t) * W + i]);
      EXPECT_EQ(bdiff, 0u) << "elements differing between the CUDA bf16 pool and the CPU codec";
      report("kv_write", name + " bf16 pool: elements differing", static_cast<double>(bdiff), 0.0);
      std::vector<float> ob, lb;
      decode(*gpu, pool_b, q_g, table_g, lens_g, &ob, &lb);
    }
    std::vector<float> out_c, lse_c, out_g, lse_g;
    decode(*cpu, pool_c, q_c, DTensor(), DTensor(), &out_c, &lse_c);
    decode(*gpu, pool_g, q_g, table_g, lens_g, &out_g, &lse_g);
    std::vector<float> lf_c, lf_g;
    for (size_t i = 0; i < lse_c.size(); ++i) {
      if (std::isinf(lse_c[i])) {  // empty request: -inf, out 0
        EXPECT_TRUE(std::isinf(lse_g[i]) && lse_g[i] < 0) << i;
        for (int k = 0; k < c.L; ++k) ASSERT_EQ(out_g[i * c.L + k], 0.0f) << i;
        continue;
      }
      lf_c.push_back(lse_c[i]);
      lf_g.push_back(lse_g[i]);
    }
    const double eo = rel_l2(out_g, out_c), el = rel_l2(lf_g, lf_c);
    report("mla_decode", name + " fp8 pool: out", eo, 1e-2);
    report("mla_decode", name + " fp8 pool: lse", el, 1e-3);
    EXPECT_LE(eo, 1e-2);
    EXPECT_LE(el, 1e-3);
  }
}

}  // namespace
}  // namespace helix
#endif  // HELIX_HAVE_CUDA
