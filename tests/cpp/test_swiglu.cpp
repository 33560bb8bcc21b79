// csrc/kernels/swiglu: silu(gate) * up against the double formula, including gates whose
// exp(-gate) leaves fp32's range; residual adds.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "kernels/swiglu.h"

using namespace fastdecode::kernels;

TEST_CASE("silu_mul matches gate / (1 + exp(-gate)) * up", "[swiglu]") {
  std::vector<float> gate, up;
  for (int i = -400; i <= 400; ++i) {
    gate.push_back(i * 0.05f);  // -20 .. 20
    up.push_back(1.0f + 0.01f * i);
  }
  for (float g : {-200.0f, -88.5f, -87.0f, 87.0f, 88.5f, 200.0f}) {
    gate.push_back(g);
    up.push_back(2.0f);
  }
  std::vector<float> out(gate.size());
  silu_mul(gate.data(), up.data(), static_cast<int64_t>(gate.size()), out.data());
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i], want = g / (1.0 + std::exp(-g)) * up[i];
    REQUIRE(std::isfinite(out[i]));
    REQUIRE(std::fabs(out[i] - want) <= 1e-6 * std::fabs(want) + 1e-30);
  }
  // in place (out aliases gate)
  std::vector<float> g2 = gate;
  silu_mul(g2.data(), up.data(), static_cast<int64_t>(g2.size()), g2.data());
  CHECK(g2 == out);
}

TEST_CASE("add_rows adds elementwise, in place too", "[swiglu]") {
  std::vector<float> a = {1, 2, 3, -4, 5}, b = {0.5f, -2, 10, 4, 1e-8f}, out(5);
  add_rows(a.data(), b.data(), 5, out.data());
  for (int i = 0; i < 5; ++i) REQUIRE(out[i] == a[i] + b[i]);
  add_rows(a.data(), b.data(), 5, a.data());
  CHECK(a == out);
}
