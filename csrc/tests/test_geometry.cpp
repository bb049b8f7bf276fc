// C++ unit tests of the geometry ops, through the dispatcher (CPU kernels + autograd).
// Prints one line per check and a closing "N passed, M failed" line; exits non-zero on failure.
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>

#include "geometry/geometry.h"

namespace sg = simplexkern::geometry;

namespace {

int passed = 0, failed = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  (ok ? passed : failed)++;
}

bool close(double a, double b, double rtol) { return std::fabs(a - b) <= rtol * std::fabs(b) + 1e-300; }

// Squared distances of the rows of x (n x D), float64, from exact differences.
at::Tensor sqdist_of(const at::Tensor& x) {
  const at::Tensor diff = x.unsqueeze(-2) - x.unsqueeze(-3);
  return (diff * diff).sum(-1);
}

void unit_right_simplexes() {
  // Vertices 0, e_1..e_dim: V = 1/dim!.
  for (int64_t dim = 1; dim <= 19; ++dim) {
    at::Tensor x = at::zeros({dim + 1, dim}, at::kDouble);
    x.narrow(0, 1, dim).copy_(at::eye(dim, at::kDouble));
    const double lv = sg::log_volume(sqdist_of(x)).item<double>();
    check(close(lv, -std::lgamma(double(dim + 1)), 1e-12), "unit right simplex dim=" + std::to_string(dim));
  }
}

void regular_simplexes() {
  // Edge a, dimension dim: V = a^dim / dim! * sqrt((dim + 1) / 2^dim).
  for (int64_t dim : {1, 2, 3, 7, 15}) {
    const double a = 1.7;
    at::Tensor d = at::full({dim + 1, dim + 1}, a * a, at::kDouble) - a * a * at::eye(dim + 1, at::kDouble);
    const double expect = dim * std::log(a) - std::lgamma(double(dim + 1)) + 0.5 * (std::log(dim + 1.0) - dim * std::log(2.0));
    check(close(sg::log_volume(d).item<double>(), expect, 1e-12), "regular simplex dim=" + std::to_string(dim));
  }
}

void cayley_menger_matches_gram() {
  // det B = (-1)^(dim+1) 2^dim (dim!)^2 V^2 for random simplexes.
  at::manual_seed(0);
  for (int64_t dim : {1, 2, 4, 8}) {
    const at::Tensor d = sqdist_of(at::randn({dim + 1, dim + 3}, at::kDouble));
    const double lv = sg::log_volume(d).item<double>();
    const double det = sg::cayley_menger_determinant(d).item<double>();
    const double expect = ((dim + 1) % 2 ? -1.0 : 1.0) * std::pow(2.0, double(dim)) *
                          std::exp(2 * std::lgamma(double(dim + 1)) + 2 * lv);
    check(close(det, expect, 1e-10), "Cayley-Menger vs Gram dim=" + std::to_string(dim));
  }
}

void degenerate() {
  at::Tensor x = at::tensor({0.0, 0.0, 1.0, 2.0, 2.0, 4.0}, at::kDouble).view({3, 2});  // collinear
  at::Tensor d = sqdist_of(x).requires_grad_(true);
  const at::Tensor lv = sg::log_volume(d);
  check(std::isinf(lv.item<double>()) && lv.item<double>() < 0, "collinear triangle gives -inf");
  lv.backward();
  check(d.grad().isfinite().all().item<bool>() && d.grad().abs().max().item<double>() == 0.0,
        "degenerate simplex has a zero gradient");
  check(sg::cayley_menger_determinant(d.detach()).abs().item<double>() < 1e-12, "collinear Cayley-Menger det is 0");
}

void gradient_matches_finite_differences() {
  at::manual_seed(1);
  const int64_t n = 5;
  const at::Tensor d0 = sqdist_of(at::randn({n, 6}, at::kDouble));
  at::Tensor d = d0.clone().requires_grad_(true);
  sg::log_volume(d).backward();
  const at::Tensor g = d.grad();
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const double h = 1e-6;
      at::Tensor dp = d0.clone(), dm = d0.clone();
      dp[i][j] += h;
      dm[i][j] -= h;
      const double unchecked = std::nan("");  // one entry moved: no longer a distance matrix
      const double fd = (sg::log_volume(dp, unchecked).item<double>() - sg::log_volume(dm, unchecked).item<double>()) /
                        (2 * h);
      worst = std::max(worst, std::fabs(fd - g[i][j].item<double>()));
    }
  }
  check(worst < 1e-6, "log_volume gradient vs central differences (max err " + std::to_string(worst) + ")");
}

void batched_equals_single() {
  at::manual_seed(2);
  const at::Tensor x = at::randn({3, 4, 6, 9}, at::kDouble);
  const at::Tensor d = sqdist_of(x);
  const at::Tensor lv = sg::log_volume(d);
  bool same = lv.sizes() == at::IntArrayRef({3, 4});
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t b = 0; b < 4; ++b) same = same && lv[a][b].item<double>() == sg::log_volume(d[a][b]).item<double>();
  check(same, "batch (3, 4) equals one call per matrix");
  const at::Tensor lv32 = sg::log_volume(d.to(at::kFloat));
  check(lv32.scalar_type() == at::kFloat && (lv32.to(at::kDouble) - lv).abs().max().item<double>() < 1e-4,
        "float32 input agrees with float64");
}

void validation_raises_value_errors() {
  const at::Tensor good = sqdist_of(at::randn({4, 3}, at::kDouble));
  auto raises = [](const at::Tensor& d, const std::string& what) {
    try {
      sg::log_volume(d, 1e-12);
    } catch (const c10::ValueError& e) {
      return std::string(e.what()).find(what) != std::string::npos;
    }
    return false;
  };
  check(!std::isnan(sg::log_volume(good, 1e-12).item<double>()), "valid matrix passes the check");
  at::Tensor bad = good.clone();
  bad[0][1] += 0.5;
  check(raises(bad, "symmetric"), "asymmetric matrix raises ValueError");
  bad = good.clone();
  bad[2][2] = 0.5;
  check(raises(bad, "zero diagonal"), "non-zero diagonal raises ValueError");
  bad = -good;
  check(raises(bad, ">= 0"), "negative distances raise ValueError");
  bad = good.clone();
  bad[1][0] = std::nan("");
  check(raises(bad, "NaN"), "NaN raises ValueError");
}

void pairwise_sqdist_exact_differences() {
  // Close float32 vertices far from the origin: direct float64 differences stay exact.
  at::manual_seed(3);
  const at::Tensor x = (1e4 * at::randn({1, 2000}) + 1e-3 * at::randn({4, 2000})).unsqueeze(0);
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("simplexkern::_pairwise_sqdist", "")
                       .typed<at::Tensor(const at::Tensor&)>();
  const at::Tensor got = op.call(x)[0];
  const at::Tensor ref = sqdist_of(x[0].to(at::kDouble));
  check(got.scalar_type() == at::kDouble && ((got - ref).abs() / ref.max()).max().item<double>() < 1e-14,
        "pairwise squared distances match float64 differences");
}

}  // namespace

int main() {
  unit_right_simplexes();
  regular_simplexes();
  cayley_menger_matches_gram();
  degenerate();
  gradient_matches_finite_differences();
  batched_equals_single();
  validation_raises_value_errors();
  pairwise_sqdist_exact_differences();
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
