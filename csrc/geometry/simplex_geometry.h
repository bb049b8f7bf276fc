// Per-matrix geometry shared by the CPU and CUDA kernels: one call handles one
// (n x n) squared-distance matrix. Arithmetic is float64 whatever the input dtype.
//
// Scratch matrices are accessors m(i, j): DenseMat on the CPU; StridedMat on the GPU, whose
// stride is the batch size so that neighbouring threads touch neighbouring words.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define SK_HD __host__ __device__ inline
#else
#define SK_HD inline
#endif

namespace simplexkern {
namespace geometry {
namespace detail {

struct DenseMat {
  double* __restrict__ p;
  int64_t ld;
  SK_HD double& operator()(int64_t i, int64_t j) const { return p[i * ld + j]; }
};

struct StridedMat {
  double* __restrict__ p;
  int64_t ld;
  int64_t stride;
  SK_HD double& operator()(int64_t i, int64_t j) const { return p[(i * ld + j) * stride]; }
};

template <typename T>
SK_HD double sym(const T* d, int64_t n, int64_t i, int64_t j) {
  return 0.5 * (static_cast<double>(d[i * n + j]) + static_cast<double>(d[j * n + i]));
}

// What is wrong with one squared-distance matrix, the most serious defect first:
// 4 NaN or inf, 3 a negative entry, 2 asymmetric, 1 a non-zero diagonal, 0 nothing.
// (The kernels add kNotEuclideanDefect when the Gram matrix has a clearly negative pivot.)
// Tolerances are rtol times the largest |entry| of the matrix.
constexpr int kNotEuclideanDefect = 5;

template <typename T>
SK_HD int sqdist_defect(const T* d, int64_t n, double rtol) {
  // Largest and smallest entries in four independent chains (max/min latency, not
  // throughput, bounds this loop). A NaN fails every comparison, so NaNs are caught by
  // the sum of all asymmetries and diagonal entries instead.
  double hi[4] = {0.0, 0.0, 0.0, 0.0}, lo[4] = {0.0, 0.0, 0.0, 0.0};
  const int64_t nn = n * n;
  int64_t i = 0;
  for (; i + 4 <= nn; i += 4) {
    for (int q = 0; q < 4; ++q) {
      const double v = static_cast<double>(d[i + q]);
      hi[q] = v > hi[q] ? v : hi[q];
      lo[q] = v < lo[q] ? v : lo[q];
    }
  }
  for (; i < nn; ++i) {
    const double v = static_cast<double>(d[i]);
    hi[0] = v > hi[0] ? v : hi[0];
    lo[0] = v < lo[0] ? v : lo[0];
  }
  double scale = hi[0], lowest = lo[0];
  for (int q = 1; q < 4; ++q) {
    scale = hi[q] > scale ? hi[q] : scale;
    lowest = lo[q] < lowest ? lo[q] : lowest;
  }
  scale = -lowest > scale ? -lowest : scale;
  double asym = 0.0, diag = 0.0, sum = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    const double v = static_cast<double>(d[r * n + r]);
    diag = fabs(v) > diag ? fabs(v) : diag;
    sum += v;
    for (int64_t c = r + 1; c < n; ++c) {
      const double e = static_cast<double>(d[r * n + c]) - static_cast<double>(d[c * n + r]);
      asym = fabs(e) > asym ? fabs(e) : asym;
      sum += e;
    }
  }
  const double tol = rtol * scale;
  if (sum != sum || !(scale <= 1.7976931348623157e308)) return 4;
  if (lowest < -tol) return 3;
  if (asym > tol) return 2;
  return diag > tol ? 1 : 0;
}

// Gram matrix of the edges p_i - p_0, i = 1..dim (dim = n - 1), from squared distances
// symmetrised as s = (D + D^T) / 2:  G_ij = (s_0i + s_0j - s_ij) / 2.
template <typename T, typename Mat>
SK_HD void gram_from_sqdist(const T* __restrict__ d, int64_t n, Mat g) {
  const int64_t dim = n - 1;
  for (int64_t i = 0; i < dim; ++i) g(i, i) = sym(d, n, 0, i + 1);  // s_0i, kept on the diagonal
  for (int64_t i = 0; i < dim; ++i) {
    for (int64_t j = 0; j < i; ++j) {
      const double v = 0.5 * (g(i, i) + g(j, j) - sym(d, n, i + 1, j + 1));
      g(i, j) = v;
      g(j, i) = v;
    }
  }
  for (int64_t i = 0; i < dim; ++i) g(i, i) -= 0.5 * sym(d, n, i + 1, i + 1);  // G_ii = s_0i - s_ii / 2
}

// Pivots within this fraction of the largest diagonal entry of G count as zero: float64
// rounding in the elimination grows with n, and rounding of the input distances themselves
// (relative error ~ eps of their dtype) moves the pivots of a degenerate simplex by a few eps.
SK_HD double pivot_rtol(int64_t n, double input_eps) {
  return 8.0 * static_cast<double>(n) * 2.220446049250313e-16 + 4.0 * input_eps;
}

enum CholeskyStatus { kPositiveDefinite = 0, kDegenerate = 1, kNotEuclidean = 2 };

// In-place Cholesky factor (lower triangle) of a symmetric dim x dim matrix. A pivot within
// rtol * (largest diagonal entry) of zero means a degenerate simplex; a pivot clearly below
// zero (or NaN) means the distances are not those of points in a Euclidean space.
template <typename Mat>
SK_HD int cholesky(Mat a, int64_t dim, double rtol) {
  double scale = 0.0;
  for (int64_t i = 0; i < dim; ++i) scale = a(i, i) > scale ? a(i, i) : scale;
  const double tol = rtol * scale;
  for (int64_t j = 0; j < dim; ++j) {
    double djj = a(j, j);
    for (int64_t p = 0; p < j; ++p) djj -= a(j, p) * a(j, p);
    if (!(djj > tol)) return djj >= -tol ? kDegenerate : kNotEuclidean;
    const double ljj = sqrt(djj), inv = 1.0 / ljj;
    a(j, j) = ljj;
    for (int64_t i = j + 1; i < dim; ++i) {
      double v = a(i, j);
      for (int64_t p = 0; p < j; ++p) v -= a(i, p) * a(j, p);
      a(i, j) = v * inv;
    }
  }
  return kPositiveDefinite;
}

// log V of the (n-1)-simplex: log prod_j L_jj - log dim! (log_dim_factorial); -inf when degenerate,
// NaN when the distances are not Euclidean (no such simplex).
// The product is rescaled before it can overflow or underflow, so a few logs suffice.
template <typename T, typename Mat>
SK_HD double log_volume_one(const T* d, int64_t n, double log_dim_factorial, double input_eps, Mat g) {
  const int64_t dim = n - 1;
  gram_from_sqdist(d, n, g);
  const int status = cholesky(g, dim, pivot_rtol(n, input_eps));
  if (status == kDegenerate) return -std::numeric_limits<double>::infinity();
  if (status == kNotEuclidean) return std::numeric_limits<double>::quiet_NaN();
  double acc = -log_dim_factorial, prod = 1.0;
  for (int64_t j = 0; j < dim; ++j) {
    prod *= g(j, j);
    if (prod > 1e150 || prod < 1e-150) { acc += log(prod); prod = 1.0; }
  }
  return acc + log(prod);
}

// d(log V)/dD scaled by gout, written to gd (n x n). With Ginv = G^{-1}:
//   dD_ij = -Ginv_ij / 4 (i, j >= 1),  dD_0i = dD_i0 = rowsum(Ginv)_i / 4,  dD_00 = 0.
// Degenerate (and non-Euclidean) inputs get a zero gradient. g and w are dim x dim scratch matrices.
template <typename T, typename Mat>
SK_HD void log_volume_backward_one(const T* d, int64_t n, double gout, double input_eps, T* gd, Mat g, Mat w) {
  const int64_t dim = n - 1;
  for (int64_t i = 0; i < n * n; ++i) gd[i] = static_cast<T>(0.0);
  gram_from_sqdist(d, n, g);
  if (cholesky(g, dim, pivot_rtol(n, input_eps)) != kPositiveDefinite) return;
  // w <- L^{-1} (lower triangular), by forward substitution column by column.
  for (int64_t j = 0; j < dim; ++j) {
    for (int64_t i = 0; i < dim; ++i) {
      if (i < j) { w(i, j) = 0.0; continue; }
      double v = (i == j) ? 1.0 : 0.0;
      for (int64_t p = j; p < i; ++p) v -= g(i, p) * w(p, j);
      w(i, j) = v / g(i, i);
    }
  }
  // g <- Ginv = L^{-T} L^{-1}: Ginv_ij = sum_{p >= max(i, j)} w_pi w_pj.
  for (int64_t i = 0; i < dim; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      double v = 0.0;
      for (int64_t p = i; p < dim; ++p) v += w(p, i) * w(p, j);
      g(i, j) = v;
      g(j, i) = v;
    }
  }
  const double c = 0.25 * gout;
  for (int64_t i = 0; i < dim; ++i) {
    double row = 0.0;
    for (int64_t j = 0; j < dim; ++j) {
      row += g(i, j);
      gd[(i + 1) * n + (j + 1)] = static_cast<T>(-c * g(i, j));
    }
    gd[i + 1] = static_cast<T>(c * row);
    gd[(i + 1) * n] = static_cast<T>(c * row);
  }
}

// Signed determinant of the bordered Cayley-Menger matrix [[0, 1^T], [1, D]], by LU
// with partial pivoting. b is an (n+1) x (n+1) scratch matrix.
template <typename T, typename Mat>
SK_HD double cayley_menger_one(const T* d, int64_t n, Mat b) {
  const int64_t m = n + 1;
  b(0, 0) = 0.0;
  for (int64_t j = 1; j < m; ++j) { b(0, j) = 1.0; b(j, 0) = 1.0; }
  for (int64_t i = 1; i < m; ++i)
    for (int64_t j = 1; j < m; ++j) b(i, j) = static_cast<double>(d[(i - 1) * n + (j - 1)]);
  double det = 1.0;
  for (int64_t c = 0; c < m; ++c) {
    int64_t piv = c;
    for (int64_t r = c + 1; r < m; ++r)
      if (fabs(b(r, c)) > fabs(b(piv, c))) piv = r;
    if (b(piv, c) == 0.0) return 0.0;
    if (piv != c) {
      for (int64_t j = 0; j < m; ++j) { const double t = b(c, j); b(c, j) = b(piv, j); b(piv, j) = t; }
      det = -det;
    }
    const double p = b(c, c);
    det *= p;
    for (int64_t r = c + 1; r < m; ++r) {
      const double f = b(r, c) / p;
      for (int64_t j = c + 1; j < m; ++j) b(r, j) -= f * b(c, j);
    }
  }
  return det;
}

}  // namespace detail
}  // namespace geometry
}  // namespace simplexkern
