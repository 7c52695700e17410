// The randomness of multi-mix, kept apart from the mixing: ordered / stratified mixing ratios,
// pairing, cutmix centres and the FMix low-frequency noise with its nested thresholds.
// Host code only, templated on any generator with `uint32_t next()` (DALI's Philox4x32_10).
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
#define DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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

/// The layers of the standard normal's ziggurat (Marsaglia & Tsang 2000, 128 layers of equal
/// area kV; the base layer holds the tail beyond kR), as Doornik 2005 (ZIGNOR) lays them out:
/// x[i] the right edge of layer i (x[0] = kV / f(kR), the base's equivalent width; x[1] = kR;
/// x[128] = 0), ratio[i] = x[i + 1] / x[i], the part of layer i under the curve throughout.
struct NormalZiggurat {
  static constexpr int kLayers = 128;
  static constexpr double kR = 3.442619855899;
  static constexpr double kV = 9.91256303526217e-3;
  double x[kLayers + 1], ratio[kLayers];

  NormalZiggurat() {
    double f = std::exp(-0.5 * kR * kR);
    x[0] = kV / f;
    x[1] = kR;
    x[kLayers] = 0.0;
    for (int i = 2; i < kLayers; i++) {
      x[i] = std::sqrt(-2.0 * std::log(kV / x[i - 1] + f));
      f = std::exp(-0.5 * x[i] * x[i]);
    }
    for (int i = 0; i < kLayers; i++) ratio[i] = x[i + 1] / x[i];
  }

  static const NormalZiggurat &tables() {
    static const NormalZiggurat z;
    return z;
  }
};

/// A standard normal variate by the ziggurat (Doornik's ZIGNOR: a uniform u in (-1, 1) and a
/// layer i per try; 98.8% of tries end at the first comparison). Two words per try: u from 53
/// of their bits, i from 7 of the other 11.
template <typename Rng>
double standard_normal_ziggurat(Rng &rng, const NormalZiggurat &z) {
  constexpr double kR = NormalZiggurat::kR;
  for (;;) {
    const uint32_t a = rng.next(), b = rng.next();
    const uint64_t bits = (static_cast<uint64_t>(a >> 5) << 26) | (b >> 6);
    const double u = 2.0 * ((static_cast<double>(bits) + 0.5) * (1.0 / 9007199254740992.0)) - 1.0;
    const int i = static_cast<int>((a & 31u) | ((b & 3u) << 5));
    if (std::fabs(u) < z.ratio[i]) return u * z.x[i];  // inside the layer's rectangle
    if (i == 0) {  // the base: the tail beyond kR (Marsaglia 1964)
      double t, y;
      do {
        t = std::log(uniform_open(rng)) / kR;
        y = std::log(uniform_open(rng));
      } while (-2.0 * y < t * t);
      return u < 0.0 ? t - kR : kR - t;
    }
    // the wedge between x[i + 1] and x[i]: accept under the curve
    const double v = u * z.x[i];
    const double f0 = std::exp(-0.5 * (z.x[i] * z.x[i] - v * v));
    const double f1 = std::exp(-0.5 * (z.x[i + 1] * z.x[i + 1] - v * v));
    if (f1 + uniform_open(rng) * (f0 - f1) < 1.0) return v;
  }
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
  std::vector<int> kys;                   // [nky]: the kept frequency rows ky, ascending
  std::vector<double> scale;              // [nky * nkx]
  std::vector<double> cos_y, sin_y;       // [nky * h]: angle 2 pi ky y / h
  std::vector<float> cos_x, sin_x;        // [nkx * w]: angle 2 pi kx x / w, times the irfft weight
  // fmix_score_map: the kept ky as terms of conjugate pairs (ky, h - ky) or single ky
  std::vector<int> term_a, term_b;        // index of ky (its twiddles), of h - ky or -1
  int even_terms = 0;                     // the terms of even ky, which come first

  FmixBasis() = default;
  FmixBasis(int h_, int w_, double decay) : h(h_), w(w_) {
    const int fy_max = std::min(kFmixMaxFreq, h / 2);
    nkx = std::min(kFmixMaxFreq, w / 2) + 1;
    for (int ky = 0; ky <= fy_max; ky++) kys.push_back(ky);
    for (int ky = std::max(h - fy_max, fy_max + 1); ky < h; ky++) kys.push_back(ky);
    nky = static_cast<int>(kys.size());
    for (int a = 0; a < nky; a++) {
      const int partner = kys[a] == 0 || 2 * kys[a] == h ? -1 : h - kys[a];
      if (partner >= 0 && partner < kys[a]) continue;  // taken with its pair
      int b = -1;
      for (int j = 0; j < nky; j++) b = kys[j] == partner ? j : b;
      term_a.push_back(a);
      term_b.push_back(b);
    }
    // even ky first (a pair's ky and h - ky share parity when h is even): fmix_score_map sums
    // the two parities apart for even h
    std::vector<int> order(term_a.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_partition(order.begin(), order.end(), [&](int t) { return kys[term_a[t]] % 2 == 0; });
    std::vector<int> a_sorted, b_sorted;
    for (int t : order) {
      a_sorted.push_back(term_a[t]);
      b_sorted.push_back(term_b[t]);
      even_terms += kys[term_a[t]] % 2 == 0;
    }
    term_a = a_sorted;
    term_b = b_sorted;
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

/// FMix's complex Gaussian spectrum on the kept frequencies: [nky * nkx] (re, im) pairs, each a
/// pair of standard normals (the ziggurat) times `basis.scale`.
template <typename Rng>
void fmix_spectrum(Rng &rng, const FmixBasis &basis, double *spec) {
  const NormalZiggurat &z = NormalZiggurat::tables();
  const int n = basis.nky * basis.nkx;
  for (int i = 0; i < n; i++) {
    const double re = standard_normal_ziggurat(rng, z);
    const double im = standard_normal_ziggurat(rng, z);
    spec[2 * i] = basis.scale[i] * re;
    spec[2 * i + 1] = basis.scale[i] * im;
  }
}

// Fixed-width vectors (GCC / Clang vector extensions): the compiler keeps a block of
// accumulators in registers; element-wise operations, so the arithmetic is that of the scalars.
// (Macros, not functions: a function passing 32-byte vectors warns of an ABI without AVX.)
typedef double VecD4 __attribute__((vector_size(32)));
typedef float VecF8 __attribute__((vector_size(32)));
typedef double VecD4Unaligned __attribute__((vector_size(32), aligned(8), may_alias));
typedef float VecF8Unaligned __attribute__((vector_size(32), aligned(4), may_alias));
#define MULTIMIX_LOAD_D4(p) (*reinterpret_cast<const VecD4Unaligned *>(p))
#define MULTIMIX_LOAD_F8(p) (*reinterpret_cast<const VecF8Unaligned *>(p))
#define MULTIMIX_STORE_D4(p, v) (*reinterpret_cast<VecD4Unaligned *>(p) = (v))
#define MULTIMIX_STORE_F8(p, v) (*reinterpret_cast<VecF8Unaligned *>(p) = (v))
typedef uint16_t VecU16 __attribute__((vector_size(32)));
typedef int16_t VecI16 __attribute__((vector_size(32)));
typedef unsigned char VecU8x16 __attribute__((vector_size(16)));
typedef uint16_t VecU16Unaligned __attribute__((vector_size(32), aligned(2), may_alias));
#define MULTIMIX_LOAD_U16(p) (*reinterpret_cast<const VecU16Unaligned *>(p))

/// A running minimum and maximum of floats: 4 vectors of each (independent chains), scalars for
/// the tails. min() / max() as a < b ? a : b, which is what vminps / vmaxps compute.
struct FmixRange {
  VecF8 lo[4], hi[4];
  float lo1 = std::numeric_limits<float>::infinity(), hi1 = -std::numeric_limits<float>::infinity();
  FmixRange() {
    for (int j = 0; j < 4; j++) {
      lo[j] = VecF8{} + lo1;
      hi[j] = VecF8{} + hi1;
    }
  }
  void add(const float *v, int64_t n) {
    int64_t p = 0;
    for (; p + 32 <= n; p += 32) {
      for (int j = 0; j < 4; j++) {
        const VecF8 x = MULTIMIX_LOAD_F8(v + p + 8 * j);
        lo[j] = x < lo[j] ? x : lo[j];
        hi[j] = x > hi[j] ? x : hi[j];
      }
    }
    for (; p < n; p++) {
      lo1 = v[p] < lo1 ? v[p] : lo1;
      hi1 = v[p] > hi1 ? v[p] : hi1;
    }
  }
  void get(float range[2]) const {
    float l = lo1, h = hi1;
    for (int j = 0; j < 4; j++) {
      for (int i = 0; i < 8; i++) {
        l = lo[j][i] < l ? lo[j][i] : l;
        h = hi[j][i] > h ? hi[j][i] : h;
      }
    }
    range[0] = l;
    range[1] = h;
  }
};

/// The smallest and the largest of n > 0 scores.
inline void fmix_score_range(const float *scores, int64_t n, float range[2]) {
  FmixRange r;
  r.add(scores, n);
  r.get(range);
}

/// Adds g times 8 kVectors table entries (cos / sin at one kx) to blocks of accumulators.
template <int kVectors>
inline void fmix_accumulate(VecF8 (&c)[kVectors], VecF8 (&s)[kVectors], float gr, float gi,
                            const float *ct, const float *st) {
  for (int j = 0; j < kVectors; j++) {
    c[j] += gr * MULTIMIX_LOAD_F8(ct + 8 * j);
    s[j] += gi * MULTIMIX_LOAD_F8(st + 8 * j);
  }
}

/// fmix_score_map's first product for kx, rows [y0, y0 + 8) and terms [t0, t1): the four sums
/// A_re = sum P1 cos, B_re = sum Q1 sin, A_im = sum Q2 cos, B_im = sum P2 sin over the terms'
/// twiddles, to sums[j * stride + y]. 8 rows of the 4 sums stay in registers across the terms.
inline void fmix_row_sums(const FmixBasis &basis, const double *coef, int t0, int t1, int y0,
                          double *sums, int stride) {
  VecD4 r[8] = {};
  for (int t = t0; t < t1; t++) {
    const size_t row = static_cast<size_t>(basis.term_a[t]) * basis.h + y0;
    const VecD4 c0 = MULTIMIX_LOAD_D4(basis.cos_y.data() + row);
    const VecD4 c1 = MULTIMIX_LOAD_D4(basis.cos_y.data() + row + 4);
    const VecD4 s0 = MULTIMIX_LOAD_D4(basis.sin_y.data() + row);
    const VecD4 s1 = MULTIMIX_LOAD_D4(basis.sin_y.data() + row + 4);
    const double p1 = coef[4 * t], q1 = coef[4 * t + 1], q2 = coef[4 * t + 2], p2 = coef[4 * t + 3];
    r[0] += p1 * c0; r[1] += p1 * c1;
    r[2] += q1 * s0; r[3] += q1 * s1;
    r[4] += q2 * c0; r[5] += q2 * c1;
    r[6] += p2 * s0; r[7] += p2 * s1;
  }
  for (int j = 0; j < 4; j++) {
    MULTIMIX_STORE_D4(sums + j * stride + y0, r[2 * j]);
    MULTIMIX_STORE_D4(sums + j * stride + y0 + 4, r[2 * j + 1]);
  }
}

/// The same for rows [y0, y1) one at a time (images too small for blocks of 8 rows).
inline void fmix_row_sums_scalar(const FmixBasis &basis, const double *coef, int t0, int t1,
                                 int y0, int y1, double *sums, int stride) {
  for (int y = y0; y < y1; y++)
    sums[y] = sums[stride + y] = sums[2 * stride + y] = sums[3 * stride + y] = 0.0;
  for (int t = t0; t < t1; t++) {
    const double *c = basis.cos_y.data() + static_cast<size_t>(basis.term_a[t]) * basis.h;
    const double *sn = basis.sin_y.data() + static_cast<size_t>(basis.term_a[t]) * basis.h;
    for (int y = y0; y < y1; y++) {
      sums[y] += coef[4 * t] * c[y];
      sums[stride + y] += coef[4 * t + 1] * sn[y];
      sums[2 * stride + y] += coef[4 * t + 2] * c[y];
      sums[3 * stride + y] += coef[4 * t + 3] * sn[y];
    }
  }
}

/// fmix_score_map's second product, columns [x0, x0 + 8 kVectors) of row y: C = sum_kx gr
/// cos_x and S = sum_kx gi sin_x, or (kByParity, for even w) the sums over the even and over the
/// odd kx apart, to sums[j * stride + x] (C, S or even C, odd C, even S, odd S). g: [kx][re h,
/// im h] in float.
template <int kVectors, bool kByParity>
inline void fmix_column_sums(const FmixBasis &basis, const float *g, int y, int x0, float *sums,
                             int stride) {
  const int h = basis.h, w = basis.w;
  VecF8 ce[kVectors] = {}, co[kVectors] = {}, se[kVectors] = {}, so[kVectors] = {};
  for (int kx = 0; kx < basis.nkx; kx++) {
    const size_t e = static_cast<size_t>(kx) * w + x0;
    const float gr = g[static_cast<size_t>(kx) * 2 * h + y];
    const float gi = g[static_cast<size_t>(kx) * 2 * h + h + y];
    if (kByParity && kx % 2 == 1)
      fmix_accumulate<kVectors>(co, so, gr, gi, basis.cos_x.data() + e, basis.sin_x.data() + e);
    else
      fmix_accumulate<kVectors>(ce, se, gr, gi, basis.cos_x.data() + e, basis.sin_x.data() + e);
  }
  for (int j = 0; j < kVectors; j++) {
    float *at = sums + x0 + 8 * j;
    if (kByParity) {
      MULTIMIX_STORE_F8(at, ce[j]);
      MULTIMIX_STORE_F8(at + stride, co[j]);
      MULTIMIX_STORE_F8(at + 2 * stride, se[j]);
      MULTIMIX_STORE_F8(at + 3 * stride, so[j]);
    } else {
      MULTIMIX_STORE_F8(at, ce[j]);
      MULTIMIX_STORE_F8(at + stride, se[j]);
    }
  }
}

/// Rounds n up to a multiple of 8.
inline int round_up8(int n) { return (n + 7) / 8 * 8; }

/// FMix's low-frequency noise map (Harris et al.): a complex Gaussian spectrum scaled by
/// `basis.scale` (fmix_spectrum), real inverse DFT to (H, W). Only the relative order of the
/// values matters (the masks are quantiles), so the transform's constant factor is dropped; it is
/// evaluated directly on the kept frequencies, separably: G = (H x F_y) times the spectrum
/// (F_y x F_x), in double, then the rows times (F_x x W), in float. The real transform's
/// symmetries shrink both products: conjugate frequency pairs (ky, h - ky) share one set of
/// twiddles; rows h - y / columns w - x are the same sums as y / x with the sine terms negated;
/// and for even H (W) the rows H/2 - y (columns W/2 - x) are the sums of y (x) with the odd
/// frequencies' terms negated, so each product is evaluated on a quarter of its rows (columns),
/// its even and odd frequencies summed apart. Vectorisable loops (the operator compiles this
/// with AVX2 where the CPU has it) keep blocks of accumulators in registers; every value's sums
/// run in a fixed order, so both builds agree. `range`, if given, receives the map's minimum and
/// maximum (for fmix_levels).
template <typename Rng>
void fmix_score_map(Rng &rng, const FmixBasis &basis, float *out, std::vector<double> &scratch,
                    float *range = nullptr) {
  const int h = basis.h, w = basis.w, nky = basis.nky, nkx = basis.nkx;
  const int nterms = static_cast<int>(basis.term_a.size());
  const int hy = h / 2 + 1, hx = w / 2 + 1;  // rows 0..h/2, columns 0..w/2
  // rows summed: 0..h/4 by parity (even h), else 0..h/2; in blocks of 8 where the table has them
  const bool rows_by_parity = h % 2 == 0;
  const int rows = rows_by_parity ? h / 4 + 1 : hy;
  const bool row_blocks = round_up8(rows) <= h;
  const int row_stride = round_up8(hy);
  // columns likewise: 0..w/4 by parity (even w), else 0..w/2; in vectors of 8 where they fit
  const bool cols_by_parity = w % 2 == 0;
  const int cols = cols_by_parity ? w / 4 + 1 : hx;
  const bool col_vectors = round_up8(cols) <= w;
  const int col_stride = round_up8(hx);
  scratch.resize(static_cast<size_t>(nky) * nkx * 2 + static_cast<size_t>(nterms) * 4 +
                 static_cast<size_t>(row_stride) * 8 + static_cast<size_t>(nkx) * h +
                 static_cast<size_t>(col_stride) * 2);
  double *spec = scratch.data();
  double *coef = spec + static_cast<size_t>(nky) * nkx * 2;  // per term: P1, Q1, Q2, P2
  double *acc = coef + static_cast<size_t>(nterms) * 4;      // 4 sums x (even, odd) [row_stride]
  // floats in the doubles' space: G [nkx][re h, im h], the column sums [4][col_stride]
  float *g = reinterpret_cast<float *>(acc + static_cast<size_t>(row_stride) * 8);
  float *col_sums = g + static_cast<size_t>(nkx) * h * 2;
  fmix_spectrum(rng, basis, spec);
  // G[kx][y] = sum_ky X[ky][kx] e^{2 pi i ky y / h}; a pair (X+ = p + iq at ky, X- = u + iv at
  // h - ky) gives (p+u) c - (q-v) s + i((q+v) c + (p-u) s) at y, and the sine terms negated at h - y
  double *even = acc, *odd = acc + 4 * static_cast<size_t>(row_stride);
  const int t_even = rows_by_parity ? basis.even_terms : nterms;
  for (int kx = 0; kx < nkx; kx++) {
    for (int t = 0; t < nterms; t++) {
      const int a = basis.term_a[t], b = basis.term_b[t];
      const double p = spec[(a * nkx + kx) * 2], q = spec[(a * nkx + kx) * 2 + 1];
      const double u = b >= 0 ? spec[(b * nkx + kx) * 2] : 0.0;
      const double v = b >= 0 ? spec[(b * nkx + kx) * 2 + 1] : 0.0;
      coef[4 * t] = p + u;
      coef[4 * t + 1] = q - v;
      coef[4 * t + 2] = q + v;
      coef[4 * t + 3] = p - u;
    }
    if (row_blocks) {
      for (int y0 = 0; y0 < rows; y0 += 8) {
        fmix_row_sums(basis, coef, 0, t_even, y0, even, row_stride);
        if (rows_by_parity) fmix_row_sums(basis, coef, t_even, nterms, y0, odd, row_stride);
      }
    } else {
      fmix_row_sums_scalar(basis, coef, 0, t_even, 0, rows, even, row_stride);
      if (rows_by_parity) fmix_row_sums_scalar(basis, coef, t_even, nterms, 0, rows, odd, row_stride);
    }
    double *are = even, *bre = even + row_stride, *aim = even + 2 * row_stride;
    double *bim = even + 3 * row_stride;
    if (rows_by_parity) {  // rows h/2 - y from y (the sines' sums change sign too), then y
      const int half = h / 2;
      for (int y = 0; y < (half + 1) / 2; y++) {  // 2 y < h/2
        are[half - y] = are[y] - odd[y];
        bre[half - y] = odd[row_stride + y] - bre[y];
        aim[half - y] = aim[y] - odd[2 * row_stride + y];
        bim[half - y] = odd[3 * row_stride + y] - bim[y];
      }
      for (int y = 0; y < rows; y++) {  // rows = h/4 + 1: 2 y <= h/2
        are[y] += odd[y];
        bre[y] += odd[row_stride + y];
        aim[y] += odd[2 * row_stride + y];
        bim[y] += odd[3 * row_stride + y];
      }
    }
    float *re = g + static_cast<size_t>(kx) * 2 * h, *im = re + h;
    for (int y = 0; y < hy && y < h; y++) {
      re[y] = static_cast<float>(are[y] - bre[y]);
      im[y] = static_cast<float>(aim[y] + bim[y]);
    }
    for (int y = 1; h - y > y; y++) {
      re[h - y] = static_cast<float>(are[y] + bre[y]);
      im[h - y] = static_cast<float>(aim[y] - bim[y]);
    }
  }
  // score[y][x] = C - S and score[y][w - x] = C + S, with C = sum_kx gr cos_x, S = sum_kx gi sin_x
  FmixRange row_range;
  for (int y = 0; y < h; y++) {
    if (col_vectors) {  // passes of at most 4 vectors (2 by parity), the last takes the remainder
      const int vectors = round_up8(cols) / 8;
      for (int v = 0; v < vectors;) {
        const int n = std::min(cols_by_parity ? 2 : 4, vectors - v);
        if (cols_by_parity && n == 2) fmix_column_sums<2, true>(basis, g, y, 8 * v, col_sums, col_stride);
        else if (cols_by_parity) fmix_column_sums<1, true>(basis, g, y, 8 * v, col_sums, col_stride);
        else if (n == 4) fmix_column_sums<4, false>(basis, g, y, 8 * v, col_sums, col_stride);
        else if (n == 3) fmix_column_sums<3, false>(basis, g, y, 8 * v, col_sums, col_stride);
        else if (n == 2) fmix_column_sums<2, false>(basis, g, y, 8 * v, col_sums, col_stride);
        else fmix_column_sums<1, false>(basis, g, y, 8 * v, col_sums, col_stride);
        v += n;
      }
    } else {
      const int nsums = cols_by_parity ? 4 : 2;
      for (int j = 0; j < nsums; j++)
        for (int x = 0; x < cols; x++) col_sums[j * col_stride + x] = 0.0f;
      for (int kx = 0; kx < nkx; kx++) {
        const float gr = g[static_cast<size_t>(kx) * 2 * h + y];
        const float gi = g[static_cast<size_t>(kx) * 2 * h + h + y];
        const float *ct = basis.cos_x.data() + static_cast<size_t>(kx) * w;
        const float *st = basis.sin_x.data() + static_cast<size_t>(kx) * w;
        float *c = col_sums + (cols_by_parity && kx % 2 ? col_stride : 0);
        float *sn = col_sums + (cols_by_parity ? (kx % 2 ? 3 : 2) : 1) * col_stride;
        for (int x = 0; x < cols; x++) {
          c[x] += gr * ct[x];
          sn[x] += gi * st[x];
        }
      }
    }
    float *__restrict row = out + static_cast<size_t>(y) * w;
    if (cols_by_parity) {  // C, S at x <= w/4 and at w/2 - x from the parity sums on 0..w/4
      const int half = w / 2, direct = half / 2 + 1, mirrored = (half + 1) / 2;
      const float *__restrict ce = col_sums, *__restrict co = col_sums + col_stride;
      const float *__restrict se = col_sums + 2 * col_stride;
      const float *__restrict so = col_sums + 3 * col_stride;
      row[0] = (ce[0] + co[0]) - (se[0] + so[0]);
      for (int x = 1; x < direct; x++) {  // columns x and w - x
        const float c = ce[x] + co[x], sn = se[x] + so[x];
        row[x] = c - sn;
        row[w - x] = c + sn;
      }
      row[half] = (ce[0] - co[0]) - (so[0] - se[0]);
      for (int x = 1; x < mirrored; x++) {  // columns w/2 - x and w/2 + x: the odd terms negated
        const float c = ce[x] - co[x], sn = so[x] - se[x];  // (and the sines, at w/2 - x)
        row[half - x] = c - sn;
        row[half + x] = c + sn;
      }
    } else {
      const float *__restrict c = col_sums, *__restrict sn = col_sums + col_stride;
      for (int x = 0; x < hx; x++) row[x] = c[x] - sn[x];
      const int mirrored_end = (w + 1) / 2;  // the columns w - x with x < w - x (a counted loop:
      for (int x = 1; x < mirrored_end; x++) row[w - x] = c[x] + sn[x];  // vectorises, reversed)
    }
    if (range) row_range.add(row, w);  // while the row is in L1
  }
  if (range) row_range.get(range);
}

/// The number of pixels the partner fills at ratio lam: round(lam * H * W), halves to even.
inline int64_t fmix_count(float lam, int64_t pixels) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(lam) * static_cast<double>(pixels)));
}

/// Buffers of fmix_levels, reused across calls.
struct FmixLevelScratch {
  std::vector<uint16_t> bucket;   // per pixel
  std::vector<uint32_t> hist;     // pixels per bucket
  std::vector<uint64_t> keys;     // keys of the pixels in threshold buckets
  std::vector<uint32_t> members;  // those pixels
};

/// Per-pixel level for K nested fmix masks: mask k takes the `counts[k]` pixels of highest score
/// (ties by lower index: the order of fmix_key), and the partner fills pixel p at step k iff
/// k >= level[p]. `counts` must be non-decreasing.
///
/// The K thresholds are found together by a bucket select: pixels are binned by score on a
/// uniform grid over `range` (monotone, so bins respect the order). A pixel outside every
/// threshold's bin gets its level from its bin alone (the number of thresholds in earlier bins);
/// only the pixels of the (at most K) bins holding a threshold rank are ordered exactly, by full
/// key. The result depends neither on the number of bins nor on `range` (any lo <= hi with every
/// score in [lo, hi]), which only spreads the pixels over the bins: the scores' minimum and
/// maximum (fmix_score_range, computed when `range` is null) spread them evenly.
inline void fmix_levels(const float *scores, int64_t pixels, const int64_t *counts, int k,
                        unsigned char *levels, FmixLevelScratch &scratch,
                        const float *range = nullptr) {
  const int kBuckets = static_cast<int>(std::min<int64_t>(4096, std::max<int64_t>(16, pixels / 8)));
  float own_range[2];
  if (!range) {
    fmix_score_range(scores, pixels, own_range);
    range = own_range;
  }
  const float lo = range[0], hi = range[1];
  float scale = hi > lo ? kBuckets / (hi - lo) : 0.0f;
  if (!std::isfinite(scale)) scale = 0.0f;
  auto &bucket = scratch.bucket;
  bucket.resize(pixels);
  uint16_t *__restrict bk = bucket.data();
  for (int64_t p = 0; p < pixels; p++) {  // bucket 0 holds the highest scores
    int b = static_cast<int>((scores[p] - lo) * scale);
    b = b < 0 ? 0 : (b < kBuckets - 1 ? b : kBuckets - 1);
    bk[p] = static_cast<uint16_t>(kBuckets - 1 - b);
  }
  scratch.hist.assign(kBuckets, 0);
  uint32_t *__restrict hist = scratch.hist.data();
  {  // (unrolled by hand: GCC's code for the plain loop takes 1.4x as long)
    int64_t p = 0;
    for (; p + 4 <= pixels; p += 4) {
      hist[bk[p]]++;
      hist[bk[p + 1]]++;
      hist[bk[p + 2]]++;
      hist[bk[p + 3]]++;
    }
    for (; p < pixels; p++) hist[bk[p]]++;
  }
  // each step's threshold bucket (the bucket of rank counts[s] - 1; -1: the step takes nothing,
  // kBuckets: everything) and that bucket's first rank, in one scan of the running count that
  // skips 8 buckets at a time while no rank is reached
  int threshold_bucket[kMaxK];
  int64_t bucket_first[kMaxK];
  int s = 0;
  for (; s < k && counts[s] <= 0; s++) threshold_bucket[s] = -1;
  int last = k;
  while (last > s && counts[last - 1] >= pixels) threshold_bucket[--last] = kBuckets;
  {
    int64_t running = 0;  // pixels in buckets before b
    int b = 0;
    while (s < last) {
      const int64_t rank = counts[s] - 1;
      for (; b + 8 <= kBuckets; b += 8) {  // whole blocks of 8 buckets before the rank
        uint32_t block = 0;
        for (int j = 0; j < 8; j++) block += hist[b + j];
        if (running + block > rank) break;
        running += block;
      }
      for (; running + hist[b] <= rank; b++) running += hist[b];
      for (; s < last && counts[s] - 1 < running + hist[b]; s++) {
        threshold_bucket[s] = b;
        bucket_first[s] = running;
      }
    }
  }
  // a pixel's level: the steps whose threshold bucket lies before its bucket (255: its bucket holds
  // a threshold), 16 pixels at a time; the pixels of threshold buckets listed as they appear
  int before_all = 0, nd = 0;  // steps that take nothing; distinct threshold buckets in the grid
  uint16_t distinct[kMaxK];
  int16_t steps_at[kMaxK];
  for (int t = 0; t < k; t++) {
    const int b = threshold_bucket[t];
    if (b < 0) {
      before_all++;
    } else if (b < kBuckets) {
      if (nd > 0 && distinct[nd - 1] == b) {
        steps_at[nd - 1]++;
      } else {
        distinct[nd] = static_cast<uint16_t>(b);
        steps_at[nd++] = 1;
      }
    }
  }
  auto &members = scratch.members;
  members.clear();
  int64_t p = 0;
  for (; p + 16 <= pixels; p += 16) {
    const VecU16 b = MULTIMIX_LOAD_U16(bk + p);
    VecI16 l = {}, member = {};
    l += static_cast<int16_t>(before_all);
    for (int j = 0; j < nd; j++) {
      l += (b > distinct[j]) & steps_at[j];  // comparisons give -1 (true) or 0 per lane
      member |= b == distinct[j];
    }
    const VecU8x16 narrow = __builtin_convertvector(l | member, VecU8x16);  // -1 -> 255
    std::memcpy(levels + p, &narrow, sizeof(narrow));
    uint64_t word[2];  // levels are <= kMaxK < 128: 255 alone has the top bit
    std::memcpy(word, &narrow, sizeof(word));
    if ((word[0] | word[1]) & 0x8080808080808080ull) {
      for (int64_t j = p; j < p + 16; j++)
        if (levels[j] == 255) members.push_back(static_cast<uint32_t>(j));
    }
  }
  for (; p < pixels; p++) {  // the same, one pixel at a time
    int l = before_all;
    bool member = false;
    for (int j = 0; j < nd; j++) {
      l += bk[p] > distinct[j] ? steps_at[j] : 0;
      member |= bk[p] == distinct[j];
    }
    levels[p] = member ? 255 : static_cast<unsigned char>(l);
    if (member) members.push_back(static_cast<uint32_t>(p));
  }
  if (members.empty()) return;
  // keys of the threshold buckets' pixels, grouped by bucket (members are in pixel order)
  auto &keys = scratch.keys;
  keys.resize(members.size());
  for (size_t i = 0; i < members.size(); i++) keys[i] = fmix_key(scores[members[i]], members[i]);
  std::sort(keys.begin(), keys.end());  // key order is bucket order (bins are monotone in the key)
  // the pixels of a threshold bucket hold the ranks from its first rank on; their sorted keys
  // are contiguous
  size_t pos = 0;
  for (int t = 0; t < k;) {
    const int b = threshold_bucket[t];
    if (b < 0 || b >= kBuckets) { t++; continue; }
    // limits of every step with this threshold bucket
    uint64_t lim[kMaxK];
    int ns = 0;
    for (int u = t; u < k && threshold_bucket[u] == b; u++)
      lim[ns++] = keys[pos + (counts[u] - 1 - bucket_first[t])] + 1;
    for (size_t i = 0; i < hist[b]; i++) {
      const uint64_t key = keys[pos + i];
      int level = t;  // the steps whose threshold bucket lies before b
      for (int j = 0; j < ns; j++) level += key >= lim[j];
      levels[static_cast<uint32_t>(key)] = static_cast<unsigned char>(level);
    }
    pos += hist[b];
    t += ns;
  }
}

#if defined(__x86_64__)
// fmix_score_map and fmix_levels compiled a second time with AVX2 (flatten: their loops are
// inlined here and vectorised 8 floats / 4 doubles wide), for callers to pick at run time where
// the CPU has it (the operator; the native library's test export). The same operations in the
// same order (-ffp-contract=off: no FMA), so the same results (tests/test_fmix_noise.py compares
// the maps bit for bit).
template <typename Rng>
__attribute__((target("avx2"), flatten)) void fmix_score_map_avx2(
    Rng &rng, const FmixBasis &basis, float *out, std::vector<double> &scratch, float *range) {
  fmix_score_map(rng, basis, out, scratch, range);
}

__attribute__((target("avx2"), flatten)) inline void fmix_levels_avx2(
    const float *scores, int64_t pixels, const int64_t *counts, int k, unsigned char *levels,
    FmixLevelScratch &scratch, const float *range) {
  fmix_levels(scores, pixels, counts, k, levels, scratch, range);
}
#endif

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
