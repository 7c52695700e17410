// The randomness of multi-mix, kept apart from the mixing: ordered / stratified mixing ratios,
// pairing, cutmix centres and the FMix low-frequency noise with its nested thresholds.
// Host code only, templated on any generator with `uint32_t next()` (DALI's Philox4x32_10).
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
#define DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "multimix_math.h"

namespace multimix {

/// Uniform double in the open interval (0, 1), 53 random bits.
template <typename Rng>
double uniform_open(Rng &rng) {
  uint64_t hi = rng.next() >> 5;  // 27 bits
  uint64_t lo = rng.next() >> 6;  // 26 bits
  return (static_cast<double>((hi << 26) | lo) + 0.5) * (1.0 / 9007199254740992.0);
}

/// Uniform integer in [0, n) (multiply-shift; the bias is below n / 2^32).
template <typename Rng>
int uniform_int(Rng &rng, int n) {
  return static_cast<int>((static_cast<uint64_t>(rng.next()) * static_cast<uint64_t>(n)) >> 32);
}

/// Standard normal variate (Box-Muller, one of the pair).
template <typename Rng>
double standard_normal(Rng &rng) {
  double u1 = uniform_open(rng);
  double u2 = uniform_open(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

/// log of a Gamma(shape, 1) variate (Marsaglia-Tsang; shape < 1 boosted by U^(1/shape)),
/// kept in log space so that Beta(alpha, alpha) with a tiny alpha does not underflow.
template <typename Rng>
double log_gamma_variate(Rng &rng, double shape) {
  double boost = 0.0;
  if (shape < 1.0) {
    boost = std::log(uniform_open(rng)) / shape;
    shape += 1.0;
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = standard_normal(rng);
    double v = 1.0 + c * x;
    if (v <= 0.0) continue;
    v = v * v * v;
    double u = uniform_open(rng);
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v))
      return std::log(d) + std::log(v) + boost;
  }
}

/// A Beta(alpha, alpha) variate: X / (X + Y) with X, Y ~ Gamma(alpha).
template <typename Rng>
double beta_variate(Rng &rng, double alpha) {
  double lx = log_gamma_variate(rng, alpha);
  double ly = log_gamma_variate(rng, alpha);
  return 1.0 / (1.0 + std::exp(ly - lx));
}

/// Regularised incomplete beta function I_x(a, b) (continued fraction, modified Lentz).
inline double incomplete_beta(double a, double b, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  if (x > (a + 1.0) / (a + b + 2.0))
    return 1.0 - incomplete_beta(b, a, 1.0 - x);
  const double tiny = 1e-300;
  double log_front = a * std::log(x) + b * std::log1p(-x) - std::log(a) -
                     (std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b));
  double f = 1.0, c = 1.0, d = 0.0;
  for (int i = 0; i <= 400; i++) {
    int m = i / 2;
    double numerator;
    if (i == 0) {
      numerator = 1.0;
    } else if (i % 2 == 0) {
      numerator = (m * (b - m) * x) / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
    } else {
      numerator = -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
    }
    d = 1.0 + numerator * d;
    if (std::fabs(d) < tiny) d = tiny;
    d = 1.0 / d;
    c = 1.0 + numerator / c;
    if (std::fabs(c) < tiny) c = tiny;
    double cd = c * d;
    f *= cd;
    if (std::fabs(1.0 - cd) < 1e-15) break;
  }
  return std::exp(log_front) * (f - 1.0);
}

/// Quantile of Beta(alpha, alpha) at probability p (bisection to double precision).
inline double beta_quantile(double alpha, double p) {
  double lo = 0.0, hi = 1.0;
  for (int it = 0; it < 100 && hi - lo > 1e-16; it++) {
    double mid = 0.5 * (lo + hi);
    if (incomplete_beta(alpha, alpha, mid) < p) lo = mid; else hi = mid;
  }
  return 0.5 * (lo + hi);
}

enum class LambdaSampling { kSorted, kStratified };

/// K mixing ratios, non-decreasing: K sorted draws from Beta(alpha, alpha) (the paper), or one
/// draw from each of K equal-probability strata of Beta(alpha, alpha) (ordered by construction).
template <typename Rng>
void sample_lambdas(Rng &rng, int k, double alpha, LambdaSampling how, float *out) {
  if (how == LambdaSampling::kSorted) {
    for (int i = 0; i < k; i++)
      out[i] = static_cast<float>(beta_variate(rng, alpha));
    std::sort(out, out + k);
  } else {
    for (int i = 0; i < k; i++)
      out[i] = static_cast<float>(beta_quantile(alpha, (i + uniform_open(rng)) / k));
  }
}

/// A uniformly random permutation of [0, n) (Fisher-Yates).
template <typename Rng>
void random_permutation(Rng &rng, int n, int *out) {
  std::iota(out, out + n, 0);
  for (int i = n - 1; i > 0; i--)
    std::swap(out[i], out[uniform_int(rng, i + 1)]);
}

/// Lowest frequencies kept per axis by fmix_score_map: every frequency of images up to 32 pixels;
/// for larger images the dropped part of the 1/f^3 spectrum carries < 1e-4 of the noise power.
constexpr int kFmixMaxFreq = 16;

/// FMix's low-frequency noise map (Harris et al., decay power `decay`): a complex Gaussian
/// spectrum scaled by 1 / max(f, 1/max(H, W))^decay, real inverse FFT to (H, W). Only the relative
/// order of the values matters (the masks are quantiles), so the inverse transform's scale is
/// dropped and the transform is evaluated directly on the kept frequencies.
template <typename Rng>
void fmix_score_map(Rng &rng, int h, int w, double decay, float *out,
                    std::vector<double> &scratch) {
  const int fy_max = std::min(kFmixMaxFreq, h / 2);
  const int nkx = std::min(kFmixMaxFreq, w / 2) + 1;
  std::vector<int> kys;
  for (int ky = 0; ky <= fy_max; ky++) kys.push_back(ky);
  for (int ky = h - fy_max; ky < h; ky++)
    if (ky > fy_max) kys.push_back(ky);
  const int nky = static_cast<int>(kys.size());
  const double floor_f = 1.0 / std::max(h, w);

  // spectrum (re, im) per kept (ky, kx), then G[kx][y] = sum_ky X[ky][kx] e^{2 pi i ky y / h}
  scratch.assign(static_cast<size_t>(nky) * nkx * 2 + static_cast<size_t>(nkx) * h * 2, 0.0);
  double *spec = scratch.data();
  double *g = spec + static_cast<size_t>(nky) * nkx * 2;
  for (int a = 0; a < nky; a++) {
    int ky = kys[a];
    double fy = (ky <= h / 2 ? ky : ky - h) / static_cast<double>(h);
    if (h % 2 == 0 && ky == h / 2) fy = std::fabs(fy);
    for (int kx = 0; kx < nkx; kx++) {
      double fx = kx / static_cast<double>(w);
      double f = std::sqrt(fy * fy + fx * fx);
      double scale = 1.0 / std::pow(std::max(f, floor_f), decay);
      spec[(a * nkx + kx) * 2 + 0] = scale * standard_normal(rng);
      spec[(a * nkx + kx) * 2 + 1] = scale * standard_normal(rng);
    }
  }
  for (int kx = 0; kx < nkx; kx++) {
    for (int y = 0; y < h; y++) {
      double re = 0.0, im = 0.0;
      for (int a = 0; a < nky; a++) {
        double theta = 2.0 * M_PI * static_cast<double>((static_cast<int64_t>(kys[a]) * y) % h) / h;
        double c = std::cos(theta), s = std::sin(theta);
        double sr = spec[(a * nkx + kx) * 2], si = spec[(a * nkx + kx) * 2 + 1];
        re += sr * c - si * s;
        im += sr * s + si * c;
      }
      g[(kx * h + y) * 2] = re;
      g[(kx * h + y) * 2 + 1] = im;
    }
  }
  // score[y][x] = sum_kx weight_kx * Re(G[kx][y] e^{2 pi i kx x / w}); irfft counts the inner
  // columns twice (their conjugates) and the DC / Nyquist columns once.
  std::vector<float> cos_t(static_cast<size_t>(nkx) * w), sin_t(static_cast<size_t>(nkx) * w);
  for (int kx = 0; kx < nkx; kx++) {
    double weight = (kx == 0 || (w % 2 == 0 && kx == w / 2)) ? 1.0 : 2.0;
    for (int x = 0; x < w; x++) {
      double theta = 2.0 * M_PI * static_cast<double>((static_cast<int64_t>(kx) * x) % w) / w;
      cos_t[kx * w + x] = static_cast<float>(weight * std::cos(theta));
      sin_t[kx * w + x] = static_cast<float>(weight * std::sin(theta));
    }
  }
  for (int y = 0; y < h; y++) {
    float *__restrict row = out + static_cast<size_t>(y) * w;
    std::fill(row, row + w, 0.0f);
    for (int kx = 0; kx < nkx; kx++) {
      const float gr = static_cast<float>(g[(kx * h + y) * 2]);
      const float gi = static_cast<float>(g[(kx * h + y) * 2 + 1]);
      const float *__restrict ct = cos_t.data() + static_cast<size_t>(kx) * w;
      const float *__restrict st = sin_t.data() + static_cast<size_t>(kx) * w;
      for (int x = 0; x < w; x++) row[x] += gr * ct[x] - gi * st[x];
    }
  }
}

/// The number of pixels the partner fills at ratio lam: round(lam * H * W), halves to even.
inline int64_t fmix_count(float lam, int64_t pixels) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(lam) * static_cast<double>(pixels)));
}

/// Per-pixel level for K nested fmix masks: mask k takes the `counts[k]` pixels of highest score
/// (ties by index), and the partner fills pixel p at step k iff k >= level[p].
/// `counts` must be non-decreasing.
inline void fmix_levels(const float *scores, int64_t pixels, const int64_t *counts, int k,
                        unsigned char *levels, std::vector<uint64_t> &keys,
                        std::vector<uint64_t> &order) {
  keys.resize(pixels);
  for (int64_t p = 0; p < pixels; p++)
    keys[p] = fmix_key(scores[p], static_cast<unsigned int>(p));
  order = keys;
  // limit[s]: a pixel is taken at step s iff its key < limit[s]; nested partial selections.
  uint64_t limits[kMaxK];
  int64_t prefix = pixels;
  for (int s = k - 1; s >= 0; s--) {
    int64_t n = counts[s];
    if (n <= 0) {
      limits[s] = 0;
    } else if (n >= pixels) {
      limits[s] = ~0ull;
    } else {
      std::nth_element(order.begin(), order.begin() + (n - 1), order.begin() + prefix);
      limits[s] = order[n - 1] + 1;
      prefix = n;
    }
  }
  for (int64_t p = 0; p < pixels; p++) {
    int level = 0;
    while (level < k && keys[p] >= limits[level]) level++;
    levels[p] = static_cast<unsigned char>(level);
  }
}

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
