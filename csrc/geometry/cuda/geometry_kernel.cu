// CUDA kernels of the geometry ops: one thread per matrix, float64 scratch in global
// memory laid out element-major (stride = batch) so that a warp's accesses coalesce.
// With check_rtol >= 0 each thread validates its matrix first and records a defect code.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>

#include "../geometry.h"
#include "../simplex_geometry.h"

namespace simplexkern {
namespace geometry {
namespace {

using detail::StridedMat;
constexpr int kThreads = 128;

// Index of this thread's matrix, or -1 when it is past the batch or its matrix is invalid.
template <typename T>
__device__ int64_t matrix_index(const T* d, int64_t batch, int64_t n, double check_rtol, int* defects) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return -1;
  if (check_rtol >= 0) {
    const int defect = detail::sqdist_defect(d + b * n * n, n, check_rtol);
    defects[b] = defect;
    if (defect) return -1;
  }
  return b;
}

template <typename T>
__global__ void log_volume_kernel(const T* d, int64_t batch, int64_t n, double log_dim_factorial, double eps, double check_rtol,
                                  int* defects, double* scratch, T* out) {
  const int64_t b = matrix_index(d, batch, n, check_rtol, defects);
  if (b < 0) return;
  const double v = detail::log_volume_one(d + b * n * n, n, log_dim_factorial, eps, StridedMat{scratch + b, n - 1, batch});
  out[b] = static_cast<T>(v);
  if (check_rtol >= 0 && v != v) defects[b] = detail::kNotEuclideanDefect;
}

template <typename T>
__global__ void cayley_menger_kernel(const T* d, int64_t batch, int64_t n, double check_rtol, int* defects,
                                     double* scratch, T* out) {
  const int64_t b = matrix_index(d, batch, n, check_rtol, defects);
  if (b < 0) return;
  out[b] = static_cast<T>(detail::cayley_menger_one(d + b * n * n, n, StridedMat{scratch + b, n + 1, batch}));
}

template <typename T>
__global__ void log_volume_backward_kernel(const T* d, const double* gout, int64_t batch, int64_t n, double eps,
                                           double* scratch, T* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  const int64_t dim = n - 1;
  detail::log_volume_backward_one(d + b * n * n, n, gout[b], eps, out + b * n * n, StridedMat{scratch + b, dim, batch},
                                  StridedMat{scratch + dim * dim * batch + b, dim, batch});
}

// Everything a launch over the flattened (N, n, n) batch needs.
struct Launch {
  at::Tensor d, scratch, defects;
  int64_t batch, n;
  int blocks;

  Launch(const at::Tensor& sqdist, int64_t scratch_words_per_matrix, double check_rtol) {
    detail::check_sqdist(sqdist);
    n = sqdist.size(-1);
    d = sqdist.contiguous().view({-1, n, n});
    batch = d.size(0);
    blocks = static_cast<int>((batch + kThreads - 1) / kThreads);
    scratch = at::empty({std::max<int64_t>(scratch_words_per_matrix, 1) * batch}, d.options().dtype(at::kDouble));
    defects = at::zeros({check_rtol >= 0 ? batch : 1}, d.options().dtype(at::kInt));
  }

  void raise_defects(double check_rtol) const {
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (check_rtol >= 0 && batch > 0) detail::raise_sqdist_defect(defects.max().item<int>());
  }
};

at::Tensor batch_shape_empty(const at::Tensor& sqdist) {
  return at::empty(sqdist.sizes().slice(0, sqdist.dim() - 2), sqdist.options());
}

at::Tensor log_volume_cuda(const at::Tensor& sqdist, double check_rtol) {
  const c10::cuda::CUDAGuard guard(sqdist.device());
  check_rtol = detail::check_tolerance(check_rtol, sqdist.scalar_type());
  const Launch l(sqdist, (sqdist.size(-1) - 1) * (sqdist.size(-1) - 1), check_rtol);
  at::Tensor out = batch_shape_empty(sqdist);
  if (l.batch == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.d.scalar_type(), "log_volume_cuda", [&] {
    log_volume_kernel<scalar_t><<<l.blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        l.d.const_data_ptr<scalar_t>(), l.batch, l.n, std::lgamma(static_cast<double>(l.n)),
        detail::dtype_eps(l.d.scalar_type()), check_rtol,
        l.defects.data_ptr<int>(), l.scratch.data_ptr<double>(), out.data_ptr<scalar_t>());
  });
  l.raise_defects(check_rtol);
  return out;
}

at::Tensor cayley_menger_cuda(const at::Tensor& sqdist, double check_rtol) {
  const c10::cuda::CUDAGuard guard(sqdist.device());
  check_rtol = detail::check_tolerance(check_rtol, sqdist.scalar_type());
  const Launch l(sqdist, (sqdist.size(-1) + 1) * (sqdist.size(-1) + 1), check_rtol);
  at::Tensor out = batch_shape_empty(sqdist);
  if (l.batch == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.d.scalar_type(), "cayley_menger_cuda", [&] {
    cayley_menger_kernel<scalar_t><<<l.blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        l.d.const_data_ptr<scalar_t>(), l.batch, l.n, check_rtol, l.defects.data_ptr<int>(),
        l.scratch.data_ptr<double>(), out.data_ptr<scalar_t>());
  });
  l.raise_defects(check_rtol);
  return out;
}

at::Tensor log_volume_backward_cuda(const at::Tensor& grad, const at::Tensor& sqdist) {
  const c10::cuda::CUDAGuard guard(sqdist.device());
  const Launch l(sqdist, 2 * (sqdist.size(-1) - 1) * (sqdist.size(-1) - 1), -1.0);
  const at::Tensor g = grad.to(at::kDouble).contiguous().view({-1});
  TORCH_CHECK(g.numel() == l.batch, "grad must have one entry per matrix");
  at::Tensor out = at::empty({l.batch, l.n, l.n}, l.d.options());
  if (l.batch == 0) return out.view(sqdist.sizes());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, l.d.scalar_type(), "log_volume_backward_cuda", [&] {
    log_volume_backward_kernel<scalar_t><<<l.blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        l.d.const_data_ptr<scalar_t>(), g.const_data_ptr<double>(), l.batch, l.n,
        detail::dtype_eps(l.d.scalar_type()), l.scratch.data_ptr<double>(),
        out.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out.view(sqdist.sizes());
}

}  // namespace

TORCH_LIBRARY_IMPL(simplexkern, CUDA, m) {
  m.impl("log_volume", log_volume_cuda);
  m.impl("cayley_menger_determinant", cayley_menger_cuda);
  m.impl("_log_volume_backward", log_volume_backward_cuda);
}

}  // namespace geometry
}  // namespace simplexkern
