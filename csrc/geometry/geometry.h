// C++ entry points of the geometry ops; each call goes through the dispatcher, so
// device kernels and autograd apply as they do from Python.
#pragma once

#include <ATen/ATen.h>

namespace simplexkern {
namespace geometry {

// (..., n, n) squared-distance matrices -> (...,) log-volumes of the (n-1)-simplexes.
// Every matrix is validated on the way (finite, >= 0, symmetric, zero diagonal, to check_rtol
// times its largest entry; Euclidean) and a defect raises c10::ValueError. check_rtol < 0 (the
// default) means 64 times the dtype's epsilon; NaN skips the validation (e.g. for finite
// differences of single entries).
at::Tensor log_volume(const at::Tensor& sqdist, double check_rtol = -1.0);

// (..., n, n) -> (...,) signed determinants of the bordered matrices [[0, 1^T], [1, D]].
at::Tensor cayley_menger_determinant(const at::Tensor& sqdist, double check_rtol = -1.0);

// (batch, n, D) vertices -> (batch, n, n) float64 squared distances from differences taken in
// float64 (no |a|^2 + |b|^2 - 2<a, b> cancellation).
at::Tensor pairwise_sqdist(const at::Tensor& vertices);

namespace detail {
// dV = 2 L V with W = G + G^T and L = diag(W 1) - W, in float64, a block of coordinates at a time.
at::Tensor _pairwise_sqdist_backward(const at::Tensor& grad, const at::Tensor& vertices);
at::Tensor _log_volume_backward(const at::Tensor& grad, const at::Tensor& sqdist);
void check_sqdist(const at::Tensor& sqdist);
// Raises c10::ValueError for a non-zero code of sqdist_defect (simplex_geometry.h).
void raise_sqdist_defect(int code);
// Machine epsilon of a floating dtype: the precision the input distances carry.
double dtype_eps(at::ScalarType dtype);
// The validation tolerance a check_rtol argument stands for (see log_volume).
double check_tolerance(double check_rtol, at::ScalarType dtype);
}  // namespace detail

}  // namespace geometry
}  // namespace simplexkern
