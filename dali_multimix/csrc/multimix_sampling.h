// The randomness of multi-mix, kept apart from the mixing: ordered / stratified mixing ratios,
// pairing, cutmix centres and the FMix low-frequency noise with its nested thresholds.
// Host code only, templated on any generator with `uint32_t next()` (DALI's Philox4x32_10).
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
#define DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

/// Two independent standard normal variates (Marsaglia's polar method: a point uniform in the unit
/// disc, rejected outside it, scaled radially): no trigonometry, one log per pair.
template <typename Rng>
void standard_normal_pair(Rng &rng, double out[2]) {
  for (;;) {
    const double u = 2.0 * uniform_open(rng) - 1.0;  // never 0: uniform_open's grid is odd
    const double v = 2.0 * uniform_open(rng) - 1.0;
    const double s = u * u + v * v;
    if (s >= 1.0) continue;
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    out[0] = u * f;
    out[1] = v * f;
    return;
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
/// pair of standard normals times `basis.scale`.
template <typename Rng>
void fmix_spectrum(Rng &rng, const FmixBasis &basis, double *spec) {
  const int n = basis.nky * basis.nkx;
  for (int i = 0; i < n; i++) {
    double z[2];
    standard_normal_pair(rng, z);
    spec[2 * i] = basis.scale[i] * z[0];
    spec[2 * i + 1] = basis.scale[i] * z[1];
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

/// FMix's low-frequency noise map (Harris et al.): a complex Gaussian spectrum scaled by
/// `basis.scale` (fmix_spectrum), real inverse DFT to (H, W). Only the relative order of the
/// values matters (the masks are quantiles), so the transform's constant factor is dropped; it is
/// evaluated directly on the kept frequencies, separably: G = (H x F_y) times the spectrum
/// (F_y x F_x), in double, then the rows times (F_x x W), in float, with the real transform's
/// symmetries halving both products: conjugate frequency pairs (ky, h - ky) share one set of
/// twiddles, and rows h - y / columns w - x are the same sums as y / x with the sine terms negated.
/// Vectorisable loops (the operator compiles this with AVX2 where the CPU has it) keep blocks of
/// accumulators in registers; every value's sums run in a fixed order, so both builds agree.
template <typename Rng>
void fmix_score_map(Rng &rng, const FmixBasis &basis, float *out,
                    std::vector<double> &scratch) {
  const int h = basis.h, w = basis.w, nky = basis.nky, nkx = basis.nkx;
  const int nterms = static_cast<int>(basis.term_a.size());
  const int hy = h / 2 + 1, hx = w / 2 + 1;  // rows 0..h/2, columns 0..w/2
  scratch.resize(static_cast<size_t>(nky) * nkx * 2 + static_cast<size_t>(nterms) * 4 +
                 static_cast<size_t>(hy) * 4 + static_cast<size_t>(nkx) * h * 2 +
                 static_cast<size_t>(hx) + 8);
  double *spec = scratch.data();
  double *coef = spec + static_cast<size_t>(nky) * nkx * 2;  // per term: P1, Q1, Q2, P2
  double *acc = coef + static_cast<size_t>(nterms) * 4;      // A_re, B_re, A_im, B_im [hy]
  double *g = acc + static_cast<size_t>(hy) * 4;             // [nkx][re h, im h]
  // C, S [hx] (floats in the doubles' space)
  float *cs = reinterpret_cast<float *>(g + static_cast<size_t>(nkx) * h * 2);
  fmix_spectrum(rng, basis, spec);
  // G[kx][y] = sum_ky X[ky][kx] e^{2 pi i ky y / h}; a pair (X+ = p + iq at ky, X- = u + iv at
  // h - ky) gives (p+u) c - (q-v) s + i((q+v) c + (p-u) s) at y, and the sine terms negated at h - y
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
    double *__restrict are = acc, *__restrict bre = acc + hy;
    double *__restrict aim = acc + 2 * hy, *__restrict bim = acc + 3 * hy;
    int y0 = 0;
    for (; y0 + 8 <= hy; y0 += 8) {  // 8 rows in registers across the terms
      VecD4 r[8] = {};
      for (int t = 0; t < nterms; t++) {
        const size_t row = static_cast<size_t>(basis.term_a[t]) * h + y0;
        const VecD4 c0 = MULTIMIX_LOAD_D4(basis.cos_y.data() + row);
        const VecD4 c1 = MULTIMIX_LOAD_D4(basis.cos_y.data() + row + 4);
        const VecD4 s0 = MULTIMIX_LOAD_D4(basis.sin_y.data() + row);
        const VecD4 s1 = MULTIMIX_LOAD_D4(basis.sin_y.data() + row + 4);
        const double p1 = coef[4 * t], q1 = coef[4 * t + 1], q2 = coef[4 * t + 2],
                     p2 = coef[4 * t + 3];
        r[0] += p1 * c0; r[1] += p1 * c1;
        r[2] += q1 * s0; r[3] += q1 * s1;
        r[4] += q2 * c0; r[5] += q2 * c1;
        r[6] += p2 * s0; r[7] += p2 * s1;
      }
      for (int j = 0; j < 4; j++) {
        MULTIMIX_STORE_D4(acc + j * hy + y0, r[2 * j]);
        MULTIMIX_STORE_D4(acc + j * hy + y0 + 4, r[2 * j + 1]);
      }
    }
    for (int y = y0; y < hy; y++) are[y] = bre[y] = aim[y] = bim[y] = 0.0;
    for (int t = 0; t < nterms && y0 < hy; t++) {
      const double p1 = coef[4 * t], q1 = coef[4 * t + 1], q2 = coef[4 * t + 2],
                   p2 = coef[4 * t + 3];
      const double *__restrict c = basis.cos_y.data() + static_cast<size_t>(basis.term_a[t]) * h;
      const double *__restrict s = basis.sin_y.data() + static_cast<size_t>(basis.term_a[t]) * h;
      for (int y = y0; y < hy; y++) {
        are[y] += p1 * c[y];
        bre[y] += q1 * s[y];
        aim[y] += q2 * c[y];
        bim[y] += p2 * s[y];
      }
    }
    double *re = g + static_cast<size_t>(kx) * 2 * h, *im = re + h;
    for (int y = 0; y < hy && y < h; y++) {
      re[y] = are[y] - bre[y];
      im[y] = aim[y] + bim[y];
    }
    for (int y = 1; h - y > y; y++) {
      re[h - y] = are[y] + bre[y];
      im[h - y] = aim[y] - bim[y];
    }
  }
  // score[y][x] = C - S and score[y][w - x] = C + S, with C = sum_kx gr cos_x, S = sum_kx gi sin_x
  constexpr int kChunk = 32;
  float *cc = cs, *ss = cs + hx + 8;
  for (int y = 0; y < h; y++) {
    int x0 = 0;
    for (; x0 + kChunk <= hx; x0 += kChunk) {  // 32 columns of C and S in registers across kx
      VecF8 ac[4] = {}, as[4] = {};
      for (int kx = 0; kx < nkx; kx++) {
        const float gr = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + y]);
        const float gi = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + h + y]);
        const float *ct = basis.cos_x.data() + static_cast<size_t>(kx) * w + x0;
        const float *st = basis.sin_x.data() + static_cast<size_t>(kx) * w + x0;
        for (int j = 0; j < 4; j++) {
          ac[j] += gr * MULTIMIX_LOAD_F8(ct + 8 * j);
          as[j] += gi * MULTIMIX_LOAD_F8(st + 8 * j);
        }
      }
      for (int j = 0; j < 4; j++) {
        MULTIMIX_STORE_F8(cc + x0 + 8 * j, ac[j]);
        MULTIMIX_STORE_F8(ss + x0 + 8 * j, as[j]);
      }
    }
    // then 8 columns at a time (past hx where the table has them: C, S are padded), then singly
    for (; x0 < hx && x0 + 8 <= w; x0 += 8) {
      VecF8 ac = {}, as = {};
      for (int kx = 0; kx < nkx; kx++) {
        const float gr = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + y]);
        const float gi = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + h + y]);
        ac += gr * MULTIMIX_LOAD_F8(basis.cos_x.data() + static_cast<size_t>(kx) * w + x0);
        as += gi * MULTIMIX_LOAD_F8(basis.sin_x.data() + static_cast<size_t>(kx) * w + x0);
      }
      MULTIMIX_STORE_F8(cc + x0, ac);
      MULTIMIX_STORE_F8(ss + x0, as);
    }
    if (x0 < hx) {
      for (int x = x0; x < hx; x++) cc[x] = ss[x] = 0.0f;
      for (int kx = 0; kx < nkx; kx++) {
        const float gr = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + y]);
        const float gi = static_cast<float>(g[static_cast<size_t>(kx) * 2 * h + h + y]);
        const float *__restrict ct = basis.cos_x.data() + static_cast<size_t>(kx) * w;
        const float *__restrict st = basis.sin_x.data() + static_cast<size_t>(kx) * w;
        for (int x = x0; x < hx; x++) {
          cc[x] += gr * ct[x];
          ss[x] += gi * st[x];
        }
      }
    }
    float *__restrict row = out + static_cast<size_t>(y) * w;
    const float *__restrict c = cc, *__restrict sn = ss;
    for (int x = 0; x < hx && x < w; x++) row[x] = c[x] - sn[x];
    const int mirrored_end = (w + 1) / 2;  // the columns w - x with x < w - x (a counted loop: it
    for (int x = 1; x < mirrored_end; x++) row[w - x] = c[x] + sn[x];  // vectorises, reversed)
  }
}

/// The number of pixels the partner fills at ratio lam: round(lam * H * W), halves to even.
inline int64_t fmix_count(float lam, int64_t pixels) {
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(lam) * static_cast<double>(pixels)));
}

/// Buffers of fmix_levels, reused across calls.
struct FmixLevelScratch {
  std::vector<uint16_t> bucket;   // per pixel
  std::vector<uint32_t> hist;     // 4 interleaved histograms (no store-to-load chains)
  std::vector<int64_t> start;     // per bucket: first rank
  std::vector<uint64_t> keys;     // keys of the pixels in threshold buckets
  std::vector<uint32_t> members;  // those pixels
};

/// Per-pixel level for K nested fmix masks: mask k takes the `counts[k]` pixels of highest score
/// (ties by lower index: the order of fmix_key), and the partner fills pixel p at step k iff
/// k >= level[p]. `counts` must be non-decreasing.
///
/// The K thresholds are found together by a bucket select: pixels are binned by score on a
/// uniform grid between the minimum and the maximum (monotone, so bins respect the order). A
/// pixel outside every threshold's bin gets its level from its bin alone (the number of
/// thresholds in earlier bins); only the pixels of the (at most K) bins holding a threshold rank
/// are ordered exactly, by full key. The result does not depend on the number of bins.
inline void fmix_levels(const float *scores, int64_t pixels, const int64_t *counts, int k,
                        unsigned char *levels, FmixLevelScratch &scratch) {
  const int kBuckets = static_cast<int>(std::min<int64_t>(4096, std::max<int64_t>(16, pixels / 8)));
  float lo = scores[0], hi = scores[0];
  {
    VecF8 vlo = {}, vhi = {};
    vlo += lo;
    vhi += hi;
    int64_t p = 0;
    for (; p + 8 <= pixels; p += 8) {
      const VecF8 v = MULTIMIX_LOAD_F8(scores + p);
      vlo = v < vlo ? v : vlo;
      vhi = v > vhi ? v : vhi;
    }
    for (int j = 0; j < 8; j++) {
      lo = vlo[j] < lo ? vlo[j] : lo;
      hi = vhi[j] > hi ? vhi[j] : hi;
    }
    for (; p < pixels; p++) {
      lo = scores[p] < lo ? scores[p] : lo;
      hi = scores[p] > hi ? scores[p] : hi;
    }
  }
  float scale = hi > lo ? kBuckets / (hi - lo) : 0.0f;
  if (!std::isfinite(scale)) scale = 0.0f;
  auto &bucket = scratch.bucket;
  bucket.resize(pixels);
  uint16_t *__restrict bk = bucket.data();
  for (int64_t p = 0; p < pixels; p++) {
    int b = static_cast<int>((scores[p] - lo) * scale);
    b = b < 0 ? 0 : (b < kBuckets - 1 ? b : kBuckets - 1);
    bk[p] = static_cast<uint16_t>(kBuckets - 1 - b);
  }
  scratch.hist.assign(4 * kBuckets, 0);
  uint32_t *__restrict hist = scratch.hist.data();
  {
    int64_t p = 0;
    for (; p + 4 <= pixels; p += 4) {
      hist[bk[p]]++;
      hist[kBuckets + bk[p + 1]]++;
      hist[2 * kBuckets + bk[p + 2]]++;
      hist[3 * kBuckets + bk[p + 3]]++;
    }
    for (; p < pixels; p++) hist[bk[p]]++;
  }
  auto &start = scratch.start;
  start.resize(kBuckets + 1);
  start[0] = 0;
  for (int b = 0; b < kBuckets; b++)
    start[b + 1] = start[b] + hist[b] + hist[kBuckets + b] + hist[2 * kBuckets + b] +
                   hist[3 * kBuckets + b];
  int threshold_bucket[kMaxK];
  for (int s = 0; s < k; s++) {
    if (counts[s] <= 0) { threshold_bucket[s] = -1; continue; }
    if (counts[s] >= pixels) { threshold_bucket[s] = kBuckets; continue; }
    const int64_t rank = counts[s] - 1;
    threshold_bucket[s] =
        static_cast<int>(std::upper_bound(start.begin(), start.end(), rank) - start.begin()) - 1;
  }
  // a pixel's level: the steps whose threshold bucket lies before its bucket (255: its bucket holds
  // a threshold), 16 pixels at a time
  int before_all = 0, nd = 0;  // steps that take nothing; distinct threshold buckets in the grid
  uint16_t distinct[kMaxK];
  int16_t steps_at[kMaxK];
  for (int s = 0; s < k; s++) {
    const int t = threshold_bucket[s];
    if (t < 0) {
      before_all++;
    } else if (t < kBuckets) {
      if (nd > 0 && distinct[nd - 1] == t) {
        steps_at[nd - 1]++;
      } else {
        distinct[nd] = static_cast<uint16_t>(t);
        steps_at[nd++] = 1;
      }
    }
  }
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
  }
  auto &members = scratch.members;
  members.clear();
  for (int64_t q = 0; q < p; q += 8) {  // levels are <= kMaxK < 128: 255 alone has the top bit
    uint64_t word;
    std::memcpy(&word, levels + q, sizeof(word));
    if (word & 0x8080808080808080ull) {
      for (int64_t j = q; j < q + 8; j++)
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
  // the pixels of bucket b occupy ranks [start[b], start[b+1]); their sorted keys are contiguous
  size_t pos = 0;
  int prev_b = -2;
  for (int s = 0; s < k; s++) {
    const int b = threshold_bucket[s];
    if (b < 0 || b >= kBuckets || b == prev_b) continue;
    prev_b = b;
    const size_t n = static_cast<size_t>(start[b + 1] - start[b]);
    // limits of every step with this threshold bucket
    uint64_t lim[kMaxK];
    int ns = 0;
    for (int t = s; t < k && threshold_bucket[t] == b; t++)
      lim[ns++] = keys[pos + (counts[t] - 1 - start[b])] + 1;
    const int before = s;  // the steps whose threshold bucket lies before b
    for (size_t i = 0; i < n; i++) {
      const uint64_t key = keys[pos + i];
      int level = before;
      for (int j = 0; j < ns; j++) level += key >= lim[j];
      levels[static_cast<uint32_t>(key)] = static_cast<unsigned char>(level);
    }
    pos += n;
  }
}

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_SAMPLING_H_
