#include <cblas.h>

#include "ops/ops.h"

namespace helix {

void matmul_strided(const float* x, int ldx, const float* w, int ldw, bool trans_w, float* y,
                    int ldy, int m, int n, int k, float beta) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float& v = y[static_cast<int64_t>(i) * ldy + j];
        v = beta == 0.0f ? 0.0f : v * beta;  // beta 0 ignores y, as BLAS does
      }
    return;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_w ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, x,
              ldx, w, ldw, beta, y, ldy);
}

void matmul(const float* x, const float* w, float* y, int m, int n, int k, bool accumulate) {
  matmul_strided(x, k, w, k, true, y, n, m, n, k, accumulate ? 1.0f : 0.0f);
}

void matmul_nn(const float* x, const float* w, float* y, int m, int n, int k, bool accumulate) {
  matmul_strided(x, k, w, n, false, y, n, m, n, k, accumulate ? 1.0f : 0.0f);
}

}  // namespace helix
