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
/// for larger images the dropped part of the 1/f^3 spectrum carries ~3e-6 of the noise power.
constexpr int kFmixMaxFreq = 16;

/// What FMix's noise needs of an (H, W) shape, computed once per shape: the kept frequencies, the
/// spectrum's scale 1 / max(f, 1/max(H, W))^decay, and the inverse transform's twiddle factors.
struct FmixBasis {
  int h = 0, w = 0, nky = 0, nkx = 0;
  std::vector<double> scale;              // [nky * nkx]
  std::vector<double> cos_y, sin_y;       // [nky * h]: angle 2 pi ky y / h
  std::vector<float> cos_x, sin_x;        // [nkx * w]: angle 2 pi kx x / w, times the irfft weight

  FmixBasis() = default;
  FmixBasis(int h_, int w_, double decay) : h(h_), w(w_) {
    const int fy_max = std::min(kFmixMaxFreq, h / 2);
    nkx = std::min(kFmixMaxFreq, w / 2) + 1;
    std::vector<int> kys;
    for (int ky = 0; ky <= fy_max; ky++) kys.push_back(ky);
    for (int ky = std::max(h - fy_max, fy_max + 1); ky < h; ky++) kys.push_back(ky);
    nky = static_cast<int>(kys.size());
    const double floor_f = 1.0 / std::max(h, w);
    scale.resize(static_cast<size_t>(nky) * nkx);
    for (int a = 0; a < nky; a++) {
      const double fy = (kys[a] <= h / 2 ? kys[a] : kys[a] - h) / static_cast<double>(h);
      for (int kx = 0; kx < nkx; kx++) {
        const double fx = kx / static_cast<double>(w);
        scale[a * nkx + kx] = 1.0 / std::pow(std::max(std::sqrt(fy * fy + fx * fx), floor_f), decay);
      }
    }
    cos_y.resize(static_cast<size_t>(nky) * h);
    sin_y.resize(cos_y.size());
    for (int a = 0; a < nky; a++) {
      for (int y = 0; y < h; y++) {
        const double t = 2.0 * M_PI * static_cast<double>((static_cast<int64_t>(kys[a]) * y) % h) / h;
        cos_y[a * h + y] = std::cos(t);
        sin_y[a * h + y] = std::sin(t);
      }
    }
    // irfft counts the inner columns twice (their conjugates), the DC / Nyquist columns once
    cos_x.resize(static_cast<size_t>(nkx) * w);
    sin_x.resize(cos_x.size());
    for (int kx = 0; kx < nkx; kx++) {
      const double weight = (kx == 0 || (w % 2 == 0 && kx == w / 2)) ? 1.0 : 2.0;
      for (int x = 0; x < w; x++) {
        const double t = 2.0 * M_PI * static_cast<double>((static_cast<int64_t>(kx) * x) % w) / w;
        cos_x[kx * w + x] = static_cast<float>(weight * std::cos(t));
        sin_x[kx * w + x] = static_cast<float>(weight * std::sin(t));
      }
    }
  }
};

/// FMix's low-frequency noise map (Harris et al.): a complex Gaussian spectrum scaled by
/// `basis.scale`, real inverse DFT to (H, W). Only the relative order of the values matters (the
/// masks are quantiles), so the transform's constant factor is dropped; it is evaluated directly
/// on the kept frequencies, separably (columns, then rows).
template <typename Rng>
void fmix_score_map(Rng &rng, const FmixBasis &basis, float *out, std::vector<double> &scratch) {
  const int h = basis.h, w = basis.w, nky = basis.nky, nkx = basis.nkx;
  scratch.resize(static_cast<size_t>(nky) * nkx * 2 + static_cast<size_t>(nkx) * h * 2);
  double *spec = scratch.data();
  double *g = spec + static_cast<size_t>(nky) * nkx * 2;
  for (int i = 0; i < nky * nkx; i++) {
    spec[2 * i] = basis.scale[i] * standard_normal(rng);
    spec[2 * i + 1] = basis.scale[i] * standard_normal(rng);
  }
  // G[kx][y] = sum_ky X[ky][kx] e^{2 pi i ky y / h}
  for (int kx = 0; kx < nkx; kx++) {
    for (int y = 0; y < h; y++) {
      double re = 0.0, im = 0.0;
      for (int a = 0; a < nky; a++) {
        const double c = basis.cos_y[a * h + y], s = basis.sin_y[a * h + y];
        const double sr = spec[(a * nkx + kx) * 2], si = spec[(a * nkx + kx) * 2 + 1];
        re += sr * c - si * s;
        im += sr * s + si * c;
      }
      g[(kx * h + y) * 2] = re;
      g[(kx * h + y) * 2 + 1] = im;
    }
  }
  // score[y][x] = sum_kx weight_kx * Re(G[kx][y] e^{2 pi i kx x / w})
  for (int y = 0; y < h; y++) {
    float *__restrict row = out + static_cast<size_t>(y) * w;
    std::fill(row, row + w, 0.0f);
    for (int kx = 0; kx < nkx; kx++) {
      const float gr = static_cast<float>(g[(kx * h + y) * 2]);
      const float gi = static_cast<float>(g[(kx * h + y) * 2 + 1]);
      const float *__restrict ct = basis.cos_x.data() + static_cast<size_t>(kx) * w;
      const float *__restrict st = basis.sin_x.data() + static_cast<size_t>(kx) * w;
      for (int x = 0; x < w; x++) row[x] += gr * ct[x] - gi * st[x];
    }
  }
}

/// The number of pixels the partner fills at ratio lam: round(lam * H * W), halves to even.
inline int64_t fmix_count(float lam, int64_t pixels) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(lam) * static_cast<double>(pixels)));
}

/// Buffers of fmix_levels, reused across calls.
struct FmixLevelScratch {
  std::vector<uint16_t> bucket;   // per pixel
  std::vector<int64_t> start;     // per bucket: first rank
  std::vector<int64_t> fill;
  std::vector<uint64_t> grouped;  // keys of the needed buckets, grouped by bucket
};

/// Per-pixel level for K nested fmix masks: mask k takes the `counts[k]` pixels of highest score
/// (ties by lower index: the order of fmix_key), and the partner fills pixel p at step k iff
/// k >= level[p]. `counts` must be non-decreasing.
///
/// The K thresholds are found together by a bucket select: pixels are binned by score on a
/// uniform grid between the minimum and the maximum (monotone, so bins respect the order), and
/// only the bins holding a threshold rank are ordered exactly, by full key.
inline void fmix_levels(const float *scores, int64_t pixels, const int64_t *counts, int k,
                        unsigned char *levels, FmixLevelScratch &scratch) {
  constexpr int kBuckets = 4096;
  float lo = scores[0], hi = scores[0];
  for (int64_t p = 1; p < pixels; p++) {
    lo = scores[p] < lo ? scores[p] : lo;
    hi = scores[p] > hi ? scores[p] : hi;
  }
  float scale = hi > lo ? kBuckets / (hi - lo) : 0.0f;
  if (!std::isfinite(scale)) scale = 0.0f;  // a range too narrow to divide: one bucket
  auto &bucket = scratch.bucket;
  bucket.resize(pixels);
  scratch.start.assign(kBuckets + 1, 0);
  for (int64_t p = 0; p < pixels; p++) {
    int b = static_cast<int>((scores[p] - lo) * scale);
    b = b < 0 ? 0 : (b < kBuckets - 1 ? b : kBuckets - 1);
    b = kBuckets - 1 - b;  // high scores first
    bucket[p] = static_cast<uint16_t>(b);
    scratch.start[b + 1]++;
  }
  for (int b = 0; b < kBuckets; b++) scratch.start[b + 1] += scratch.start[b];

  // the bucket of each threshold rank, and the keys of those buckets grouped by bucket
  std::vector<char> needed(kBuckets, 0);
  int threshold_bucket[kMaxK];
  for (int s = 0; s < k; s++) {
    threshold_bucket[s] = -1;
    if (counts[s] <= 0 || counts[s] >= pixels) continue;
    const int64_t rank = counts[s] - 1;
    int b = static_cast<int>(std::upper_bound(scratch.start.begin(), scratch.start.end(), rank) -
                             scratch.start.begin()) - 1;
    threshold_bucket[s] = b;
    needed[b] = 1;
  }
  scratch.grouped.resize(pixels);
  scratch.fill.assign(scratch.start.begin(), scratch.start.end() - 1);
  for (int64_t p = 0; p < pixels; p++) {
    if (needed[bucket[p]])
      scratch.grouped[scratch.fill[bucket[p]]++] = fmix_key(scores[p], static_cast<unsigned>(p));
  }
  uint64_t limits[kMaxK];  // a pixel is taken at step s iff its key < limits[s]
  for (int s = 0; s < k; s++) {
    if (counts[s] <= 0) {
      limits[s] = 0;
    } else if (counts[s] >= pixels) {
      limits[s] = ~0ull;
    } else {
      const int b = threshold_bucket[s];
      auto first = scratch.grouped.begin() + scratch.start[b];
      auto last = scratch.grouped.begin() + scratch.start[b + 1];
      auto nth = first + (counts[s] - 1 - scratch.start[b]);
      std::nth_element(first, nth, last);
      limits[s] = *nth + 1;
    }
  }
  // limits are non-decreasing, so the steps that do not take p are a prefix: count them
  for (int64_t p = 0; p < pixels; p++) {
    const uint64_t key = fmix_key(scores[p], static_cast<unsigned>(p));
    int level = 0;
    for (int s = 0; s < k; s++) level += key >= limits[s];
    levels[p] = static_cast<unsigned char>(level);
  }
}

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
