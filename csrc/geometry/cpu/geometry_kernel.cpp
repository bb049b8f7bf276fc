// CPU kernels of the geometry ops: one matrix per task, parallel over the batch. With
// check_rtol >= 0 each matrix is validated while it is in cache, before it is used.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <type_traits>
#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "../geometry.h"
#include "../simplex_geometry.h"

namespace simplexkern {
namespace geometry {
namespace {

using detail::DenseMat;

// Runs fn(b, matrix, scratch) for every matrix b of the flattened (N, n, n) batch, with a
// per-thread float64 scratch of `words` entries. Raises for the worst input defect found;
// returns the largest code fn itself returned (for defects only the computation reveals).
template <typename scalar_t, typename Fn>
int for_each_matrix(const at::Tensor& d, double check_rtol, int64_t words, int64_t grain, Fn fn) {
  const int64_t batch = d.size(0), n = d.size(1);
  const scalar_t* in = d.const_data_ptr<scalar_t>();
  std::atomic<int> worst{0}, found{0};
  auto raise_to = [](std::atomic<int>& target, int value) {
    int seen = target.load();
    while (value > seen && !target.compare_exchange_weak(seen, value)) {}
  };
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(words + 1);
    int local = 0, local_found = 0;
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* m = in + b * n * n;
      if (check_rtol >= 0) {
        const int defect = detail::sqdist_defect(m, n, check_rtol);
        if (defect) { local = defect > local ? defect : local; continue; }
      }
      if constexpr (std::is_same_v<decltype(fn(b, m, scratch.data())), void>) {
        fn(b, m, scratch.data());
      } else {
        const int code = fn(b, m, scratch.data());
        local_found = code > local_found ? code : local_found;
      }
    }
    raise_to(worst, local);
    raise_to(found, local_found);
  });
  detail::raise_sqdist_defect(worst.load());
  return found.load();
}

at::Tensor flat(const at::Tensor& sqdist) {
  detail::check_sqdist(sqdist);
  const int64_t n = sqdist.size(-1);
  return sqdist.contiguous().view({-1, n, n});
}

at::Tensor batch_shape_empty(const at::Tensor& sqdist) {
  return at::empty(sqdist.sizes().slice(0, sqdist.dim() - 2), sqdist.options());
}

at::Tensor log_volume_cpu(const at::Tensor& sqdist, double check_rtol) {
  const at::Tensor d = flat(sqdist);
  check_rtol = detail::check_tolerance(check_rtol, d.scalar_type());
  const int64_t n = d.size(1), dim = n - 1;
  const double log_dim_factorial = std::lgamma(static_cast<double>(n)), eps = detail::dtype_eps(d.scalar_type());
  at::Tensor out = batch_shape_empty(sqdist);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "log_volume_cpu", [&] {
    scalar_t* res = out.data_ptr<scalar_t>();
    const int non_euclidean = for_each_matrix<scalar_t>(d, check_rtol, dim * dim, 64,
                                                        [&](int64_t b, const scalar_t* m, double* scratch) {
      const double v = detail::log_volume_one(m, n, log_dim_factorial, eps, DenseMat{scratch, dim});
      res[b] = static_cast<scalar_t>(v);
      return v != v ? detail::kNotEuclideanDefect : 0;
    });
    if (check_rtol >= 0) detail::raise_sqdist_defect(non_euclidean);
  });
  return out;
}

at::Tensor cayley_menger_cpu(const at::Tensor& sqdist, double check_rtol) {
  const at::Tensor d = flat(sqdist);
  check_rtol = detail::check_tolerance(check_rtol, d.scalar_type());
  const int64_t n = d.size(1);
  at::Tensor out = batch_shape_empty(sqdist);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "cayley_menger_cpu", [&] {
    scalar_t* res = out.data_ptr<scalar_t>();
    for_each_matrix<scalar_t>(d, check_rtol, (n + 1) * (n + 1), 64, [&](int64_t b, const scalar_t* m, double* scratch) {
      res[b] = static_cast<scalar_t>(detail::cayley_menger_one(m, n, DenseMat{scratch, n + 1}));
    });
  });
  return out;
}

at::Tensor log_volume_backward_cpu(const at::Tensor& grad, const at::Tensor& sqdist) {
  const at::Tensor d = flat(sqdist);
  const int64_t batch = d.size(0), n = d.size(1), dim = n - 1;
  const double eps = detail::dtype_eps(d.scalar_type());
  const at::Tensor g = grad.to(at::kDouble).contiguous().view({-1});
  TORCH_CHECK(g.numel() == batch, "grad must have one entry per matrix");
  at::Tensor out = at::empty({batch, n, n}, d.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, d.scalar_type(), "log_volume_backward_cpu", [&] {
    const double* gout = g.const_data_ptr<double>();
    scalar_t* res = out.data_ptr<scalar_t>();
    for_each_matrix<scalar_t>(d, -1.0, 2 * dim * dim, 16, [&](int64_t b, const scalar_t* m, double* scratch) {
      detail::log_volume_backward_one(m, n, gout[b], eps, res + b * n * n, DenseMat{scratch, dim},
                                      DenseMat{scratch + dim * dim, dim});
    });
  });
  return out.view(sqdist.sizes());
}

// One pass over the vertices: each task takes a block of coordinates, accumulates every
// pair's squared differences in float64 (four partial sums per pair), then adds its block
// sums to the result under a lock.
at::Tensor pairwise_sqdist_cpu(const at::Tensor& vertices) {
  TORCH_CHECK(vertices.dim() == 3, "vertices must have shape (batch, n, D)");
  const at::Tensor v = vertices.contiguous();
  const int64_t batch = v.size(0), n = v.size(1), dim = v.size(2);
  at::Tensor out = at::zeros({batch, n, n}, v.options().dtype(at::kDouble));
  double* res = out.data_ptr<double>();
  std::mutex lock;
  constexpr int64_t kBlock = 1024;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "pairwise_sqdist_cpu", [&] {
    const scalar_t* in = v.const_data_ptr<scalar_t>();
    at::parallel_for(0, (dim + kBlock - 1) / kBlock, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> local(batch * n * n, 0.0), x(n * kBlock);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t lo = blk * kBlock, len = std::min(kBlock, dim - lo);
        for (int64_t b = 0; b < batch; ++b) {
          for (int64_t i = 0; i < n; ++i)
            for (int64_t c = 0; c < len; ++c) x[i * kBlock + c] = static_cast<double>(in[(b * n + i) * dim + lo + c]);
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t j = i + 1; j < n; ++j) {
              const double *xi = x.data() + i * kBlock, *xj = x.data() + j * kBlock;
              double a[4] = {0.0, 0.0, 0.0, 0.0};
              int64_t c = 0;
              for (; c + 4 <= len; c += 4)
                for (int q = 0; q < 4; ++q) { const double e = xi[c + q] - xj[c + q]; a[q] += e * e; }
              for (; c < len; ++c) { const double e = xi[c] - xj[c]; a[0] += e * e; }
              local[(b * n + i) * n + j] += (a[0] + a[1]) + (a[2] + a[3]);
            }
          }
        }
      }
      const std::lock_guard<std::mutex> guard(lock);
      for (int64_t b = 0; b < batch; ++b)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = i + 1; j < n; ++j) res[(b * n + i) * n + j] += local[(b * n + i) * n + j];
    });
  });
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) res[(b * n + j) * n + i] = res[(b * n + i) * n + j];
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(simplexkern, CPU, m) {
  m.impl("log_volume", log_volume_cpu);
  m.impl("cayley_menger_determinant", cayley_menger_cpu);
  m.impl("_log_volume_backward", log_volume_backward_cpu);
  m.impl("_pairwise_sqdist", pairwise_sqdist_cpu);
}

}  // namespace geometry
}  // namespace simplexkern
