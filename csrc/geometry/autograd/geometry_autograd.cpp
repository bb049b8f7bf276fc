// Autograd for the geometry ops. log_volume's backward is its own device kernel, that of the
// pairwise squared distances one composite op;
// the Cayley-Menger determinant's is d det(B)/dB = adj(B)^T, from an SVD so that it
// stays defined for singular B.
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include "../geometry.h"

namespace simplexkern {
namespace geometry {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LogVolumeFunction : public torch::autograd::Function<LogVolumeFunction> {
 public:
  static constexpr bool is_traceable = true;  // compiled autograd traces the backward
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& sqdist, double check_rtol) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({sqdist});
    return log_volume(sqdist, check_rtol);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor sqdist = ctx->get_saved_variables()[0];
    return {detail::_log_volume_backward(grad[0], sqdist), at::Tensor()};
  }
};

class PairwiseSqdistFunction : public torch::autograd::Function<PairwiseSqdistFunction> {
 public:
  static constexpr bool is_traceable = true;  // compiled autograd traces the backward
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& vertices) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({vertices});
    return pairwise_sqdist(vertices);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    return {detail::_pairwise_sqdist_backward(grad[0], ctx->get_saved_variables()[0])};
  }
};

// adj(B) = det(U) det(V) V diag(prod_{j != i} s_j) U^T for B = U diag(s) V^T.
at::Tensor adjugate(const at::Tensor& b) {
  auto [u, s, vh] = at::linalg_svd(b, /*full_matrices=*/false);
  const int64_t m = s.size(-1);
  const at::Tensor one = at::ones_like(s.narrow(-1, 0, 1));
  const at::Tensor left = at::cat({one, at::cumprod(s.narrow(-1, 0, m - 1), -1)}, -1);
  const at::Tensor right =
      at::cat({one, at::cumprod(s.flip(-1).narrow(-1, 0, m - 1), -1)}, -1).flip(-1);
  const at::Tensor sign = (at::linalg_det(u) * at::linalg_det(vh)).unsqueeze(-1).unsqueeze(-1);
  return sign * at::matmul(vh.mT() * (left * right).unsqueeze(-2), u.mT());
}

class CayleyMengerFunction : public torch::autograd::Function<CayleyMengerFunction> {
 public:
  static constexpr bool is_traceable = true;  // compiled autograd traces the backward
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& sqdist, double check_rtol) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({sqdist});
    return cayley_menger_determinant(sqdist, check_rtol);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grad) {
    const at::Tensor sqdist = ctx->get_saved_variables()[0];
    const int64_t n = sqdist.size(-1);
    std::vector<int64_t> shape(sqdist.sizes().begin(), sqdist.sizes().end());
    shape[shape.size() - 1] = shape[shape.size() - 2] = n + 1;
    at::Tensor b = at::ones(shape, sqdist.options().dtype(at::kDouble));
    b.select(-1, 0).select(-1, 0).zero_();
    b.narrow(-2, 1, n).narrow(-1, 1, n).copy_(sqdist);
    const at::Tensor gb = adjugate(b).mT().narrow(-2, 1, n).narrow(-1, 1, n);
    return {(grad[0].to(at::kDouble).unsqueeze(-1).unsqueeze(-1) * gb).to(sqdist.scalar_type()), at::Tensor()};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(simplexkern, Autograd, m) {
  m.impl("log_volume",
         [](const at::Tensor& sqdist, double check_rtol) { return LogVolumeFunction::apply(sqdist, check_rtol); });
  m.impl("cayley_menger_determinant", [](const at::Tensor& sqdist, double check_rtol) {
    return CayleyMengerFunction::apply(sqdist, check_rtol);
  });
  m.impl("_log_volume_backward", torch::autograd::autogradNotImplementedFallback());
  m.impl("_pairwise_sqdist", [](const at::Tensor& vertices) { return PairwiseSqdistFunction::apply(vertices); });
  m.impl("_pairwise_sqdist_backward", torch::autograd::autogradNotImplementedFallback());
}

}  // namespace geometry
}  // namespace simplexkern
