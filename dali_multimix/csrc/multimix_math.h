// Per-element arithmetic of multi-mix (Shen et al., "Mixup Augmentation with Multiple Interpolations").
//
// This header is the single definition of how one output element is computed. It is used by the
// CPU operator (multimix.cc), by the CUDA kernels (multimix_kernels.cuh) and, compiled by NVRTC,
// by the GPU test on machines without DALI. It therefore includes nothing: no DALI, no standard
// library. Everything here must give bit-identical results on the host and on the device.
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_MATH_H_
#define DALI_MULTIMIX_CSRC_MULTIMIX_MATH_H_

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define MULTIMIX_HD __host__ __device__ __forceinline__
#else
#define MULTIMIX_HD inline
#endif

namespace multimix {

enum Mode : int { kMixup = 0, kCutmix = 1, kFmix = 2 };

/// The largest number of interpolations per pair.
constexpr int kMaxK = 64;

/// A half-open box [y0, y1) x [x0, x1) in pixel coordinates.
struct Box {
  int y0, y1, x0, x1;
};

MULTIMIX_HD int clamp_int(int v, int lo, int hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

MULTIMIX_HD double sqrt_double(double x) {
#if defined(__CUDA_ARCH__)
  return sqrt(x);  // IEEE correctly rounded on the device, as on the host
#else
  return __builtin_sqrt(x);
#endif
}

/// Side of the cutmix box for a mixing ratio `lam`: round(size * sqrt(lam)), halves rounded up.
MULTIMIX_HD int box_side(int size, float lam) {
  double side = static_cast<double>(size) * sqrt_double(static_cast<double>(lam));
  return static_cast<int>(side + 0.5);  // side >= 0, so truncation is floor
}

/// Box k of multi-mix cutmix: size H*sqrt(lam) x W*sqrt(lam) around the shared centre (cy, cx),
/// clipped to the image. Boxes of non-decreasing `lam` around one centre are nested.
MULTIMIX_HD Box nested_box(int h, int w, int cy, int cx, float lam) {
  int bh = box_side(h, lam);
  int bw = box_side(w, lam);
  int y0 = cy - bh / 2;
  int x0 = cx - bw / 2;
  Box b;
  b.y0 = clamp_int(y0, 0, h);
  b.y1 = clamp_int(y0 + bh, 0, h);
  b.x0 = clamp_int(x0, 0, w);
  b.x1 = clamp_int(x0 + bw, 0, w);
  return b;
}

/// The fraction of the image that the (clipped) box takes from the partner: the label weight.
MULTIMIX_HD float box_weight(const Box &b, int h, int w) {
  long long area = static_cast<long long>(b.y1 - b.y0) * (b.x1 - b.x0);
  return static_cast<float>(static_cast<double>(area) / (static_cast<double>(h) * w));
}

MULTIMIX_HD bool in_box(const Box &b, int y, int x) {
  return y >= b.y0 && y < b.y1 && x >= b.x0 && x < b.x1;
}

/// fmix: the partner fills pixel p at step k iff k >= level[p] (levels come from the ranking of
/// the pixel's Fourier-noise score, see fmix_key). Nested by construction.
MULTIMIX_HD bool fmix_takes(unsigned char level, unsigned char step) {
  return level <= step;
}

/// A strict total order of pixels for the fmix mask: higher score first, ties by lower index.
/// Smaller key = taken earlier. -0.0 and +0.0 count as equal.
MULTIMIX_HD unsigned long long fmix_key(float score, unsigned int index) {
  if (score == 0.0f) score = 0.0f;
  unsigned int bits;
#if defined(__CUDA_ARCH__)
  bits = __float_as_uint(score);
#else
  __builtin_memcpy(&bits, &score, sizeof(bits));
#endif
  unsigned int ascending = (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
  unsigned int descending = ~ascending;
  return (static_cast<unsigned long long>(descending) << 32) | index;
}

/// Saturating conversion to uint8 with rounding half to even, without the rounding-mode
/// dependent rint(): adding 1.5 * 2^23 leaves an integer ulp (valid for |v| < 2^22; mixup values
/// lie in [0, 255]). The clamp is done on integers so that the CPU loops vectorise.
MULTIMIX_HD unsigned char round_to_u8(float v) {
  const float magic = 12582912.0f;
  v = v + magic;
  v = v - magic;
  int i = static_cast<int>(v);
  i = i < 0 ? 0 : i;
  i = i > 255 ? 255 : i;
  return static_cast<unsigned char>(i);
}

MULTIMIX_HD unsigned int float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  unsigned int u;
  __builtin_memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

MULTIMIX_HD float bits_float(unsigned int u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

/// IEEE binary16 storage. Conversions are done here, in software, so that host and device (and
/// numpy's float16) agree bit for bit whatever half library the host build brings.
struct Half {
  unsigned short bits;
};

/// binary16 -> float32, exact.
MULTIMIX_HD float half_to_float(Half h) {
  const unsigned int exp_mask = 0x7C00u << 13;
  unsigned int u = (static_cast<unsigned int>(h.bits) & 0x7FFFu) << 13;
  const unsigned int exp = u & exp_mask;
  u += (127u - 15u) << 23;               // rebias the exponent
  if (exp == exp_mask) {                 // inf / NaN
    u += (128u - 16u) << 23;
  } else if (exp == 0) {                 // zero / subnormal: renormalise through float arithmetic
    u += 1u << 23;
    u = float_bits(bits_float(u) - bits_float(113u << 23));
  }
  return bits_float(u | ((static_cast<unsigned int>(h.bits) & 0x8000u) << 16));
}

/// float32 -> binary16, rounding to nearest, ties to even (as numpy and __float2half_rn).
MULTIMIX_HD Half float_to_half(float f) {
  unsigned int u = float_bits(f);
  const unsigned int sign = u & 0x80000000u;
  u ^= sign;
  unsigned int h;
  if (u >= (127u + 16u) << 23) {         // |f| >= 65536, inf or NaN
    h = u > 0x7F800000u ? 0x7E00u : 0x7C00u;
  } else if (u < 113u << 23) {           // the result is subnormal or zero: let the FPU round
    const unsigned int magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    h = float_bits(bits_float(u) + bits_float(magic)) - magic;
  } else {                               // normal: rebias and round the 13 dropped bits to even
    const unsigned int odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xFFFu + odd;
    h = u >> 13;                         // a carry into the exponent gives inf when due
  }
  Half r;
  r.bits = static_cast<unsigned short>(h | (sign >> 16));
  return r;
}

/// Input mixup of one element: (1 - lam) * a + lam * b, evaluated in float32 as written
/// (no fused multiply-add: the CUDA code is compiled with --fmad=false).
template <typename T>
struct Blend {
  static MULTIMIX_HD T apply(T a, T b, float lam) {
    return (1.0f - lam) * a + lam * b;
  }
};

template <>
struct Blend<unsigned char> {
  static MULTIMIX_HD unsigned char apply(unsigned char a, unsigned char b, float lam) {
    float r = (1.0f - lam) * static_cast<float>(a) + lam * static_cast<float>(b);
    return round_to_u8(r);
  }
};

template <>
struct Blend<Half> {
  static MULTIMIX_HD Half apply(Half a, Half b, float lam) {
    return float_to_half((1.0f - lam) * half_to_float(a) + lam * half_to_float(b));
  }
};

/// Parameters of one output image: sample i mixed with its partner at step k.
template <typename T>
struct MixJob {
  T *out;
  const T *own;
  const T *partner;
  const unsigned char *levels;  // fmix: h*w per-pixel levels; unused otherwise
  long long volume;             // elements per image
  int mode;
  int step;
  float lam;                    // mixup ratio
  Box box;                      // cutmix box
  int h, w, inner;              // spatial extent and elements per pixel after W (C for HWC, 1 for CHW)
};

/// Spatial coordinates of flat element e of an image laid out as [outer, H, W, inner].
MULTIMIX_HD void element_yx(long long e, int h, int w, int inner, int *y, int *x) {
  long long pixel = e / inner;
  *x = static_cast<int>(pixel % w);
  *y = static_cast<int>((pixel / w) % h);
}

/// As element_yx, plus the position c inside the pixel (0 .. inner-1), for stepping with
/// next_element; 32-bit arithmetic when e fits (the GPU's 64-bit division is slow).
MULTIMIX_HD void element_yxc(long long e, int h, int w, int inner, int *y, int *x, int *c) {
  if (e < 2147483647LL) {
    const unsigned int i = static_cast<unsigned int>(e);
    const unsigned int pixel = i / static_cast<unsigned int>(inner);
    *c = static_cast<int>(i - pixel * static_cast<unsigned int>(inner));
    *x = static_cast<int>(pixel % static_cast<unsigned int>(w));
    *y = static_cast<int>((pixel / static_cast<unsigned int>(w)) % static_cast<unsigned int>(h));
  } else {
    const long long pixel = e / inner;
    *c = static_cast<int>(e - pixel * inner);
    *x = static_cast<int>(pixel % w);
    *y = static_cast<int>((pixel / w) % h);
  }
}

/// Steps (y, x, c) from element e to element e + 1 (row-major [outer, H, W, inner]).
MULTIMIX_HD void next_element(int h, int w, int inner, int *y, int *x, int *c) {
  if (++*c < inner) return;
  *c = 0;
  if (++*x < w) return;
  *x = 0;
  if (++*y == h) *y = 0;
}

/// Whether pixel (y, x) of a cutmix or fmix job comes from the partner.
template <typename T>
MULTIMIX_HD bool takes_partner(const MixJob<T> &job, int y, int x) {
  return job.mode == kCutmix ? in_box(job.box, y, x)
                             : fmix_takes(job.levels[y * job.w + x],
                                          static_cast<unsigned char>(job.step));
}

/// Output element e of a job: the definition that both backends implement.
template <typename T>
MULTIMIX_HD T mix_element(const MixJob<T> &job, long long e) {
  if (job.mode == kMixup)
    return Blend<T>::apply(job.own[e], job.partner[e], job.lam);
  int y, x;
  element_yx(e, job.h, job.w, job.inner, &y, &x);
  return takes_partner(job, y, x) ? job.partner[e] : job.own[e];
}

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_MATH_H_
