// Branch-free expf for vectorised loops (std::exp is a libm call the vectoriser cannot
// inline without -ffast-math).
//
// exp(x) = 2^n * exp(r), n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2]; exp(r) by a
// degree-6 polynomial (Cephes coefficients); 2^n built in the exponent bits. Max relative
// error about 2 ulp over the range softmax uses (x <= 0). Inputs below -87.3 return exactly 0
// (masked logits are -inf and must give probability 0, not a denormal).
#pragma once

#include <cstdint>
#include <cstring>

namespace fastdecode::kernels {

__attribute__((always_inline)) inline float fast_expf(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const bool underflow = !(x >= -87.3f);      // also true for NaN and -inf
  float xc = x > 88.3f ? 88.3f : x;
  xc = underflow ? 0.0f : xc;
  const float nf = (xc * kLog2e + kRoundMagic) - kRoundMagic;
  const float r = (xc - nf * kLn2Hi) - nf * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t n = static_cast<int32_t>(nf);
  const int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  const float y = p * scale;
  return underflow ? 0.0f : y;
}

}  // namespace fastdecode::kernels
