// Schemas of the geometry ops and their shape-only (Meta) kernels.
#include "geometry.h"

#include <algorithm>

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace simplexkern {
namespace geometry {

at::Tensor log_volume(const at::Tensor& sqdist, double check_rtol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("simplexkern::log_volume", "")
                       .typed<decltype(log_volume)>();
  return op.call(sqdist, check_rtol);
}

at::Tensor cayley_menger_determinant(const at::Tensor& sqdist, double check_rtol) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("simplexkern::cayley_menger_determinant", "")
                       .typed<decltype(cayley_menger_determinant)>();
  return op.call(sqdist, check_rtol);
}

at::Tensor pairwise_sqdist(const at::Tensor& vertices) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("simplexkern::_pairwise_sqdist", "")
                       .typed<decltype(pairwise_sqdist)>();
  return op.call(vertices);
}

namespace detail {

at::Tensor _pairwise_sqdist_backward(const at::Tensor& grad, const at::Tensor& vertices) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("simplexkern::_pairwise_sqdist_backward", "")
                       .typed<decltype(_pairwise_sqdist_backward)>();
  return op.call(grad, vertices);
}

at::Tensor _log_volume_backward(const at::Tensor& grad, const at::Tensor& sqdist) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("simplexkern::_log_volume_backward", "")
                       .typed<decltype(_log_volume_backward)>();
  return op.call(grad, sqdist);
}

void check_sqdist(const at::Tensor& sqdist) {
  TORCH_CHECK(at::isFloatingType(sqdist.scalar_type()),
              "sqdist must be a floating-point tensor, got ", sqdist.scalar_type());
  TORCH_CHECK(sqdist.dim() >= 2 && sqdist.size(-1) == sqdist.size(-2) && sqdist.size(-1) >= 1,
              "sqdist must have shape (..., n, n) with n >= 1, got ", sqdist.sizes());
}

void raise_sqdist_defect(int code) {
  switch (code) {
    case 0: return;
    case 5: TORCH_CHECK_VALUE(false, "sqdist is not a Euclidean distance matrix (no simplex has these distances)");
    case 4: TORCH_CHECK_VALUE(false, "sqdist must be finite, but it contains NaN or inf");
    case 3: TORCH_CHECK_VALUE(false, "sqdist must hold squared distances (>= 0), but it has negative entries");
    case 2: TORCH_CHECK_VALUE(false, "sqdist must be symmetric in its last two dimensions");
    default: TORCH_CHECK_VALUE(false, "sqdist must have a zero diagonal (the distance of a vertex to itself)");
  }
}

double dtype_eps(at::ScalarType dtype) {
  switch (dtype) {
    case at::kDouble: return 2.220446049250313e-16;
    case at::kFloat: return 1.1920928955078125e-07;
    case at::kHalf: return 9.765625e-04;
    default: return 7.8125e-03;  // bfloat16
  }
}

double check_tolerance(double check_rtol, at::ScalarType dtype) {
  return check_rtol < 0 ? 64 * dtype_eps(dtype) : check_rtol;  // NaN stays NaN: no validation
}

}  // namespace detail

namespace {

at::Tensor batch_result_meta(const at::Tensor& sqdist, double check_rtol) {
  detail::check_sqdist(sqdist);
  return at::empty(sqdist.sizes().slice(0, sqdist.dim() - 2), sqdist.options());
}

at::Tensor pairwise_sqdist_meta(const at::Tensor& vertices) {
  TORCH_CHECK(vertices.dim() == 3, "vertices must have shape (batch, n, D)");
  return at::empty({vertices.size(0), vertices.size(1), vertices.size(1)}, vertices.options().dtype(at::kDouble));
}

// Every device: ATen matrix products over blocks of coordinates, so the float64 copy of the
// vertices never exceeds 32 MiB however many parameters a vertex has.
at::Tensor pairwise_sqdist_backward(const at::Tensor& grad, const at::Tensor& vertices) {
  TORCH_CHECK(vertices.dim() == 3, "vertices must have shape (batch, n, D)");
  const at::Tensor g = grad.to(at::kDouble);
  const at::Tensor w = g + g.mT();
  const at::Tensor lap = at::diag_embed(w.sum(-1)) - w;
  const int64_t batch = vertices.size(0), n = vertices.size(1), dim = vertices.size(2);
  const int64_t chunk = std::max<int64_t>(1024, (int64_t{1} << 22) / std::max<int64_t>(batch * n, 1));
  at::Tensor out = at::empty_like(vertices);
  for (int64_t start = 0; start < dim; start += chunk) {
    const int64_t len = std::min(chunk, dim - start);
    out.narrow(2, start, len).copy_(at::matmul(lap, vertices.narrow(2, start, len).to(at::kDouble)).mul_(2));
  }
  return out;
}

at::Tensor pairwise_sqdist_backward_meta(const at::Tensor& grad, const at::Tensor& vertices) {
  return at::empty_like(vertices);
}

at::Tensor log_volume_backward_meta(const at::Tensor& grad, const at::Tensor& sqdist) {
  detail::check_sqdist(sqdist);
  return at::empty_like(sqdist);
}

}  // namespace

TORCH_LIBRARY(simplexkern, m) {
  // check_rtol: validation tolerance; < 0 (default) 64 times the dtype's epsilon, NaN none.
  m.def("log_volume(Tensor sqdist, float check_rtol=-1.0) -> Tensor");
  m.def("cayley_menger_determinant(Tensor sqdist, float check_rtol=-1.0) -> Tensor");
  m.def("_log_volume_backward(Tensor grad, Tensor sqdist) -> Tensor");
  // (batch, n, D) vertices -> (batch, n, n) float64 squared distances from exact differences.
  // Its CPU kernel is in cpu/, its CUDA kernel the Triton kernel registered by
  // simplexkern/ops/triton/pairwise_sqdist.py, its autograd in autograd/.
  m.def("_pairwise_sqdist(Tensor vertices) -> Tensor");
  m.def("_pairwise_sqdist_backward(Tensor grad, Tensor vertices) -> Tensor");
}

TORCH_LIBRARY_IMPL(simplexkern, CompositeExplicitAutograd, m) {
  m.impl("_pairwise_sqdist_backward", pairwise_sqdist_backward);
}

TORCH_LIBRARY_IMPL(simplexkern, Meta, m) {
  m.impl("log_volume", batch_result_meta);
  m.impl("cayley_menger_determinant", batch_result_meta);
  m.impl("_log_volume_backward", log_volume_backward_meta);
  m.impl("_pairwise_sqdist", pairwise_sqdist_meta);
  m.impl("_pairwise_sqdist_backward", pairwise_sqdist_backward_meta);
}

}  // namespace geometry
}  // namespace simplexkern
