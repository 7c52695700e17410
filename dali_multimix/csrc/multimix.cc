// The multimix operator: schema, shared Setup (validation + sampling) and the CPU backend.
#include "multimix.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "dali/core/float16.h"
#include "dali/core/static_switch.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace dali {
namespace multimix_op {

using ::multimix::kCutmix;
using ::multimix::kFmix;
using ::multimix::kMixup;

namespace {

// Sub-streams of a sample's Philox generator, far enough apart never to overlap.
constexpr uint64_t kLambdaStream = 0;
constexpr uint64_t kCenterStream = 1ull << 24;
constexpr uint64_t kFmixStream = 2ull << 24;
// The batch stream, GetSampleRNG(nsamples_): a Philox sequence no sample of the iteration uses
// (sample i has sequence i * kSkipaheadPerSample from the iteration's master state), so what is
// drawn once per batch does not depend on num_threads and DALI checkpoints restore it. Its
// sub-streams: the partner permutation, and lambda_scope "batch"'s ratios, centre and noise map.
constexpr uint64_t kPartnerStream = 0;
constexpr uint64_t kBatchLambdaStream = 3ull << 24;
constexpr uint64_t kBatchCenterStream = 4ull << 24;
constexpr uint64_t kBatchFmixStream = 5ull << 24;
constexpr double kFmixDecayPower = 3.0;  // FMix's default
// Batches whose output is larger than this (beyond the last-level cache) are written with
// non-temporal stores where the loop has them.
constexpr int64_t kStreamOutputBytes = 16 << 20;

bool IsLabelType(DALIDataType t) {
  switch (t) {
    case DALI_UINT8: case DALI_UINT16: case DALI_UINT32: case DALI_UINT64:
    case DALI_INT8: case DALI_INT16: case DALI_INT32: case DALI_INT64:
    case DALI_FLOAT16: case DALI_FLOAT: case DALI_FLOAT64:
      return true;
    default:
      return false;
  }
}

std::string ShapeStr(const TensorShape<> &s) {
  std::string r = "(";
  for (int d = 0; d < s.size(); d++) r += (d ? ", " : "") + std::to_string(s[d]);
  return r + (s.size() == 1 ? ",)" : ")");
}

}  // namespace

int ParseMode(const std::string &mode) {
  if (mode == "mixup") return kMixup;
  if (mode == "cutmix") return kCutmix;
  if (mode == "fmix") return kFmix;
  Fail("argument `mode`: expected one of \"mixup\", \"cutmix\", \"fmix\"; got \"", mode, "\"");
}

::multimix::LambdaSampling ParseLambdaSampling(const std::string &how) {
  if (how == "sorted") return ::multimix::LambdaSampling::kSorted;
  if (how == "stratified") return ::multimix::LambdaSampling::kStratified;
  Fail("argument `lambda_sampling`: expected \"sorted\" or \"stratified\"; got \"", how, "\"");
}

LambdaScope ParseLambdaScope(const std::string &scope) {
  if (scope == "batch") return LambdaScope::kBatch;
  if (scope == "sample") return LambdaScope::kSample;
  Fail("argument `lambda_scope`: expected \"batch\" or \"sample\"; got \"", scope, "\"");
}

template <typename Backend>
Multimix<Backend>::Multimix(const OpSpec &spec)
    : Base(spec),
      k_(spec.GetArgument<int>("k")),
      alpha_(spec.GetArgument<float>("alpha")),
      mode_(ParseMode(spec.GetArgument<std::string>("mode"))),
      lambda_sampling_(ParseLambdaSampling(spec.GetArgument<std::string>("lambda_sampling"))),
      lambda_scope_(ParseLambdaScope(spec.GetArgument<std::string>("lambda_scope"))),
      has_lambdas_(spec.ArgumentDefined("lambdas")),
      has_partners_(spec.ArgumentDefined("partners")),
      has_centers_(spec.ArgumentDefined("centers")),
      has_fmix_scores_(spec.ArgumentDefined("fmix_scores")) {
  if (k_ < 1 || k_ > kMaxK)
    Fail("argument `k`: expected an integer from 1 to ", kMaxK, "; got ", k_);
  if (!(alpha_ > 0.0f) || !std::isfinite(alpha_))
    Fail("argument `alpha`: expected a finite number > 0; got ", alpha_);
  if (has_centers_ && mode_ != kCutmix)
    Fail("argument `centers` applies to mode \"cutmix\" only; mode is \"",
         spec.GetArgument<std::string>("mode"), "\"");
  if (has_fmix_scores_ && mode_ != kFmix)
    Fail("argument `fmix_scores` applies to mode \"fmix\" only; mode is \"",
         spec.GetArgument<std::string>("mode"), "\"");
}

template <typename Backend>
void Multimix<Backend>::ValidateImages(const Workspace &ws) {
  const auto shape = ws.GetInputShape(0);
  dtype_ = ws.GetInputDataType(0);
  layout_ = ws.GetInputLayout(0);
  nsamples_ = shape.num_samples();
  if (dtype_ != DALI_UINT8 && dtype_ != DALI_FLOAT16 && dtype_ != DALI_FLOAT)
    Fail("input `images`: expected dtype uint8, float16 or float32; got ", dtype_);
  if (nsamples_ == 0) return;
  sample_shape_ = shape[0];
  if (sample_shape_.size() == 0)
    Fail("input `images`: expected samples of at least 1 dimension; got scalars");
  for (int i = 1; i < nsamples_; i++) {
    if (shape[i] != sample_shape_)
      Fail("input `images`: all samples of a batch must have the same shape; sample 0 has shape ",
           ShapeStr(sample_shape_), " but sample ", i, " has shape ", ShapeStr(shape[i]));
  }
  if (volume(sample_shape_) == 0)
    Fail("input `images`: samples are empty (shape ", ShapeStr(sample_shape_), ")");

  spatial_ = SpatialLayout{};
  if (mode_ == kMixup) return;
  const char *mode_name = mode_ == kCutmix ? "cutmix" : "fmix";
  int h_dim = layout_.find('H'), w_dim = layout_.find('W');
  if (h_dim < 0 || w_dim != h_dim + 1)
    Fail("input `images`: mode \"", mode_name, "\" needs a layout with adjacent H and W dimensions "
         "(HWC, CHW, HW, ...); got layout \"", layout_.str(), "\" (set the layout at the source, "
         "e.g. fn.reshape(images, layout=\"HWC\"))");
  spatial_.h = static_cast<int>(sample_shape_[h_dim]);
  spatial_.w = static_cast<int>(sample_shape_[w_dim]);
  for (int d = 0; d < h_dim; d++) spatial_.outer *= sample_shape_[d];
  for (int d = w_dim + 1; d < sample_shape_.size(); d++) spatial_.inner *= sample_shape_[d];
}

template <typename Backend>
void Multimix<Backend>::ValidateLabels(const Workspace &ws) {
  const auto shape = ws.GetInputShape(1);
  DALIDataType type = ws.GetInputDataType(1);
  if (shape.num_samples() != nsamples_)
    Fail("input `labels`: expected one label per image (", nsamples_, " samples); got ",
         shape.num_samples(), " samples");
  if (!IsLabelType(type))
    Fail("input `labels`: expected an integer or floating-point dtype; got ", type);
  for (int i = 1; i < nsamples_; i++) {
    if (shape[i] != shape[0])
      Fail("input `labels`: all labels of a batch must have the same shape; sample 0 has shape ",
           ShapeStr(shape[0]), " but sample ", i, " has shape ", ShapeStr(shape[i]));
  }
}

namespace {

/// A per-sample override for every sample: from an argument input (converted from int32/int64 for
/// integer overrides, float32/float64 for ratios) or from one constant given for all samples.
template <typename T>
std::vector<std::vector<T>> OverrideValues(const OpSpec &spec, const Workspace &ws,
                                           const char *name, int nsamples,
                                           const std::vector<T> &constant) {
  if (!spec.HasTensorArgument(name))
    return std::vector<std::vector<T>>(nsamples, constant);
  const auto &arg = ws.ArgumentInput(name);
  if (arg.num_samples() != nsamples)
    Fail("argument `", name, "`: expected ", nsamples, " samples; got ", arg.num_samples());
  std::vector<std::vector<T>> values(nsamples);
  for (int i = 0; i < nsamples; i++) {
    auto &v = values[i];
    v.resize(volume(arg.shape()[i]));
    auto convert = [&](const auto *src) {
      for (size_t j = 0; j < v.size(); j++) v[j] = static_cast<T>(src[j]);
    };
    DALIDataType type = arg.type();
    if (std::is_integral_v<T> && type == DALI_INT32) {
      convert(arg.tensor<int32_t>(i));
    } else if (std::is_integral_v<T> && type == DALI_INT64) {
      convert(arg.tensor<int64_t>(i));
    } else if (!std::is_integral_v<T> && type == DALI_FLOAT) {
      convert(arg.tensor<float>(i));
    } else if (!std::is_integral_v<T> && type == DALI_FLOAT64) {
      convert(arg.tensor<double>(i));
    } else {
      Fail("argument `", name, "`: expected dtype ",
           std::is_integral_v<T> ? "int32 or int64" : "float32 or float64", "; got ", type);
    }
  }
  return values;
}

}  // namespace

template <typename Backend>
void Multimix<Backend>::SampleLambdas(const Workspace &ws) {
  if (!has_lambdas_ && lambda_scope_ == LambdaScope::kBatch) {
    // one sorted set lambda_1..lambda_K for every pair of the batch (Eq. 7-9, Prop. III.2)
    auto rng = this->GetSampleRNG(nsamples_);
    rng.skipahead(kBatchLambdaStream);
    ::multimix::sample_lambdas(rng, k_, alpha_, lambda_sampling_, mix_[0].lambdas);
    for (int i = 1; i < nsamples_; i++)
      std::copy(mix_[0].lambdas, mix_[0].lambdas + k_, mix_[i].lambdas);
    return;
  }
  if (!has_lambdas_) {
    for (int i = 0; i < nsamples_; i++) {
      auto rng = this->GetSampleRNG(i);
      rng.skipahead(kLambdaStream);
      ::multimix::sample_lambdas(rng, k_, alpha_, lambda_sampling_, mix_[i].lambdas);
    }
    return;
  }
  std::vector<float> constant;
  if (spec_.HasArgument("lambdas")) constant = spec_.template GetRepeatedArgument<float>("lambdas");
  auto values = OverrideValues<float>(spec_, ws, "lambdas", nsamples_, constant);
  for (int i = 0; i < nsamples_; i++) {
    const auto &v = values[i];
    if (static_cast<int>(v.size()) != k_)
      Fail("argument `lambdas` of sample ", i, ": expected k=", k_, " values; got ", v.size());
    for (int s = 0; s < k_; s++) {
      if (!(v[s] >= 0.0f && v[s] <= 1.0f))
        Fail("argument `lambdas` of sample ", i, ": expected values in [0, 1]; value ", s,
             " is ", v[s]);
      if (s > 0 && v[s] < v[s - 1])
        Fail("argument `lambdas` of sample ", i, ": expected non-decreasing values (the "
             "interpolations are ordered); value ", s, " (", v[s], ") < value ", s - 1, " (",
             v[s - 1], ")");
      mix_[i].lambdas[s] = v[s];
    }
  }
}

template <typename Backend>
void Multimix<Backend>::SamplePartners(const Workspace &ws) {
  if (!has_partners_) {
    std::vector<int> perm(nsamples_);
    auto rng = this->GetSampleRNG(nsamples_);  // the batch stream: no sample uses it
    rng.skipahead(kPartnerStream);
    ::multimix::random_permutation(rng, nsamples_, perm.data());
    for (int i = 0; i < nsamples_; i++) mix_[i].partner = perm[i];
    return;
  }
  std::vector<int64_t> constant;
  if (spec_.HasArgument("partners")) constant = {spec_.template GetArgument<int>("partners")};
  auto values = OverrideValues<int64_t>(spec_, ws, "partners", nsamples_, constant);
  for (int i = 0; i < nsamples_; i++) {
    if (values[i].size() != 1)
      Fail("argument `partners` of sample ", i, ": expected one index; got ", values[i].size(),
           " values");
    const int64_t p = values[i][0];
    if (p < 0 || p >= nsamples_)
      Fail("argument `partners` of sample ", i, ": expected an index in [0, ", nsamples_,
           ") (the batch size); got ", p);
    mix_[i].partner = static_cast<int>(p);
  }
}

template <typename Backend>
void Multimix<Backend>::SampleCenters(const Workspace &ws) {
  const int h = spatial_.h, w = spatial_.w;
  if (!has_centers_ && lambda_scope_ == LambdaScope::kBatch) {
    // one centre for the batch: every row gets the same nested boxes (CutMix's one box per batch)
    auto rng = this->GetSampleRNG(nsamples_);
    rng.skipahead(kBatchCenterStream);
    const int cy = ::multimix::uniform_int(rng, h);
    const int cx = ::multimix::uniform_int(rng, w);
    for (auto &m : mix_) {
      m.cy = cy;
      m.cx = cx;
    }
    return;
  }
  if (!has_centers_) {
    for (int i = 0; i < nsamples_; i++) {
      auto rng = this->GetSampleRNG(i);
      rng.skipahead(kCenterStream);
      mix_[i].cy = ::multimix::uniform_int(rng, h);
      mix_[i].cx = ::multimix::uniform_int(rng, w);
    }
    return;
  }
  std::vector<int64_t> constant;
  if (spec_.HasArgument("centers")) {
    for (int c : spec_.template GetRepeatedArgument<int>("centers")) constant.push_back(c);
  }
  auto values = OverrideValues<int64_t>(spec_, ws, "centers", nsamples_, constant);
  for (int i = 0; i < nsamples_; i++) {
    const auto &c = values[i];
    if (c.size() != 2)
      Fail("argument `centers` of sample ", i, ": expected 2 values (y, x); got ", c.size());
    if (c[0] < 0 || c[0] >= h || c[1] < 0 || c[1] >= w)
      Fail("argument `centers` of sample ", i, ": expected y in [0, ", h, ") and x in [0, ", w,
           "); got (", c[0], ", ", c[1], ")");
    mix_[i].cy = static_cast<int>(c[0]);
    mix_[i].cx = static_cast<int>(c[1]);
  }
}

template <typename Backend>
void Multimix<Backend>::ValidateFmixScores(const Workspace &ws) const {
  const auto &arg = ws.ArgumentInput("fmix_scores");
  if (arg.type() != DALI_FLOAT)
    Fail("argument `fmix_scores`: expected dtype float32; got ", arg.type());
  if (arg.num_samples() != nsamples_)
    Fail("argument `fmix_scores`: expected ", nsamples_, " samples; got ", arg.num_samples());
  TensorShape<> expected{spatial_.h, spatial_.w};
  for (int i = 0; i < nsamples_; i++) {
    if (arg.shape()[i] != expected)
      Fail("argument `fmix_scores` of sample ", i, ": expected shape ", ShapeStr(expected),
           " (H, W of the images); got ", ShapeStr(arg.shape()[i]));
    const float *s = arg.tensor<float>(i);
    for (int64_t p = 0; p < volume(expected); p++) {
      if (!std::isfinite(s[p]))
        Fail("argument `fmix_scores` of sample ", i, ": expected finite values; element ", p,
             " is ", s[p]);
    }
  }
}

template <typename Backend>
void Multimix<Backend>::ComputeWeights() {
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;
  for (auto &m : mix_) {
    for (int s = 0; s < k_; s++) {
      if (mode_ == kMixup) {
        m.weights[s] = m.lambdas[s];
      } else if (mode_ == kCutmix) {
        m.boxes[s] = ::multimix::nested_box(spatial_.h, spatial_.w, m.cy, m.cx, m.lambdas[s]);
        m.weights[s] = ::multimix::box_weight(m.boxes[s], spatial_.h, spatial_.w);
      } else {
        m.counts[s] = ::multimix::fmix_count(m.lambdas[s], pixels);
        m.weights[s] = static_cast<float>(static_cast<double>(m.counts[s]) / pixels);
      }
    }
  }
}

template <typename Backend>
bool Multimix<Backend>::SetupImpl(std::vector<OutputDesc> &output_desc, const Workspace &ws) {
  ValidateImages(ws);
  ValidateLabels(ws);
  mix_.assign(nsamples_, SampleMix{});
  if (nsamples_ > 0) {
    SampleLambdas(ws);
    SamplePartners(ws);
    if (mode_ == kCutmix) SampleCenters(ws);
    if (mode_ == kFmix && has_fmix_scores_) ValidateFmixScores(ws);
    if (mode_ == kFmix && !has_fmix_scores_ &&
        (fmix_basis_.h != spatial_.h || fmix_basis_.w != spatial_.w))
      fmix_basis_ = ::multimix::FmixBasis(spatial_.h, spatial_.w, kFmixDecayPower);
    ComputeWeights();
  }
  PrepareBatchFmix();

  output_desc.resize(4);
  TensorShape<> mixed_shape = shape_cat(TensorShape<1>{k_}, sample_shape_);
  output_desc[0] = {uniform_list_shape(nsamples_, mixed_shape), dtype_};
  output_desc[1] = {uniform_list_shape(nsamples_, TensorShape<1>{k_}), DALI_FLOAT};
  output_desc[2] = {ws.GetInputShape(1), ws.GetInputDataType(1)};
  output_desc[3] = {uniform_list_shape(nsamples_, TensorShape<0>{}), DALI_INT32};
  return true;
}

template <typename Backend>
void Multimix<Backend>::PrepareBatchFmix() {
  shared_fmix_levels_ = false;
  if (nsamples_ == 0 || mode_ != kFmix || has_fmix_scores_ || lambda_scope_ != LambdaScope::kBatch)
    return;
  // one noise map for the batch (FMix's one mask per batch), drawn from the batch stream
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;
  batch_fmix_scores_.resize(pixels);
  auto rng = this->GetSampleRNG(nsamples_);
  rng.skipahead(kBatchFmixStream);
  ::multimix::fmix_score_map(rng, fmix_basis_, batch_fmix_scores_.data(),
                             batch_fmix_scratch_.spectrum);
  // its K levels once for the batch, unless per-sample `lambdas` give samples different counts
  for (int i = 1; i < nsamples_; i++) {
    if (!std::equal(mix_[0].counts, mix_[0].counts + k_, mix_[i].counts)) return;
  }
  batch_fmix_levels_.resize(pixels);
  ::multimix::fmix_levels(batch_fmix_scores_.data(), pixels, mix_[0].counts, k_,
                          batch_fmix_levels_.data(), batch_fmix_scratch_.select);
  shared_fmix_levels_ = true;
}

template <typename Backend>
void Multimix<Backend>::ComputeFmixLevels(int i, const float *given_scores, unsigned char *levels,
                                          FmixScratch &scratch) const {
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;
  const float *scores = given_scores;
  if (!scores && lambda_scope_ == LambdaScope::kBatch) scores = batch_fmix_scores_.data();
  if (!scores) {
    scratch.scores.resize(pixels);
    auto rng = this->GetSampleRNG(i);
    rng.skipahead(kFmixStream);
    ::multimix::fmix_score_map(rng, fmix_basis_, scratch.scores.data(), scratch.spectrum);
    scores = scratch.scores.data();
  }
  ::multimix::fmix_levels(scores, pixels, mix_[i].counts, k_, levels, scratch.select);
}

// ---------------------------------------------------------------------------------------------
// CPU backend

namespace {

// The mixup loop, written over __restrict pointers so that it vectorises; for uint8 and float32
// an AVX2 loop is picked at run time where the CPU has it (no FMA: results are identical).
// DALI_MULTIMIX_NO_AVX2=1 forces the portable loop (the tests compare both).
template <typename T>
void BlendSpanPortable(T *__restrict out, const T *__restrict a, const T *__restrict b, int64_t n,
                       float lam) {
  for (int64_t e = 0; e < n; e++) out[e] = ::multimix::Blend<T>::apply(a[e], b[e], lam);
}

#if defined(__x86_64__)

inline bool Aligned32(const void *p) {
  return (reinterpret_cast<uintptr_t>(p) & 31) == 0;
}

// Hand-vectorised mixup, 32 bytes at a time, with the operations of Blend<T> (two products, one
// sum; for uint8 the 1.5 * 2^23 rounding, saturating packs doing the clamp): bit-identical.
struct Avx2Float {
  using T = float;
  using Vec = __m256;
  static constexpr int kWidth = 8;
  __attribute__((target("avx2"))) static Vec Mix(const T *a, const T *b, __m256 w_own,
                                                 __m256 w_partner) {
    return _mm256_add_ps(_mm256_mul_ps(w_own, _mm256_loadu_ps(a)),
                         _mm256_mul_ps(w_partner, _mm256_loadu_ps(b)));
  }
  __attribute__((target("avx2"))) static void Store(T *out, Vec v) { _mm256_storeu_ps(out, v); }
  __attribute__((target("avx2"))) static void Stream(T *out, Vec v) { _mm256_stream_ps(out, v); }
};

struct Avx2Uint8 {
  using T = uint8_t;
  using Vec = __m256i;
  static constexpr int kWidth = 32;
  __attribute__((target("avx2"))) static Vec Mix(const T *a, const T *b, __m256 w_own,
                                                 __m256 w_partner) {
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    __m256i q[4];
    for (int j = 0; j < 4; j++) {
      __m256 fa = _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(a + 8 * j))));
      __m256 fb = _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(b + 8 * j))));
      __m256 v = _mm256_add_ps(_mm256_mul_ps(w_own, fa), _mm256_mul_ps(w_partner, fb));
      q[j] = _mm256_cvttps_epi32(_mm256_sub_ps(_mm256_add_ps(v, magic), magic));
    }
    __m256i packed = _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]),
                                         _mm256_packus_epi32(q[2], q[3]));
    return _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  }
  __attribute__((target("avx2"))) static void Store(T *out, Vec v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), v);
  }
  __attribute__((target("avx2"))) static void Stream(T *out, Vec v) {
    _mm256_stream_si256(reinterpret_cast<__m256i *>(out), v);
  }
};

/// `stream`: non-temporal stores (from the first 32-byte aligned element on).
template <typename Kernel>
__attribute__((target("avx2"))) void BlendSpanAvx2(typename Kernel::T *out,
                                                   const typename Kernel::T *a,
                                                   const typename Kernel::T *b, int64_t n,
                                                   float lam, bool stream) {
  using T = typename Kernel::T;
  const __m256 w_own = _mm256_set1_ps(1.0f - lam), w_partner = _mm256_set1_ps(lam);
  int64_t e = 0;
  if (stream) {
    for (; e < n && !Aligned32(out + e); e++)
      out[e] = ::multimix::Blend<T>::apply(a[e], b[e], lam);
    for (; e + Kernel::kWidth <= n; e += Kernel::kWidth)
      Kernel::Stream(out + e, Kernel::Mix(a + e, b + e, w_own, w_partner));
    _mm_sfence();
  } else {
    for (; e + Kernel::kWidth <= n; e += Kernel::kWidth)
      Kernel::Store(out + e, Kernel::Mix(a + e, b + e, w_own, w_partner));
  }
  for (; e < n; e++) out[e] = ::multimix::Blend<T>::apply(a[e], b[e], lam);
}

bool UseAvx2() {
  const char *off = std::getenv("DALI_MULTIMIX_NO_AVX2");
  return __builtin_cpu_supports("avx2") && !(off && off[0] == '1');
}
#endif

/// `stream`: write with non-temporal stores (for outputs much larger than the cache, which are not
/// re-read soon): they skip reading the destination lines into the cache first.
template <typename T>
void BlendSpan(T *out, const T *a, const T *b, int64_t n, float lam, bool stream) {
#if defined(__x86_64__)
  static const bool use_avx2 = UseAvx2();
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2) return BlendSpanAvx2<Avx2Float>(out, a, b, n, lam, stream);
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    if (use_avx2) return BlendSpanAvx2<Avx2Uint8>(out, a, b, n, lam, stream);
  }
#endif
  BlendSpanPortable(out, a, b, n, lam);
}

template <typename T>
void CutmixImage(T *out, const T *own, const T *partner, const SpatialLayout &sp, const Box &box) {
  const int64_t row = static_cast<int64_t>(sp.w) * sp.inner;
  const int64_t x0 = box.x0 * sp.inner, x1 = box.x1 * sp.inner;
  for (int64_t o = 0; o < sp.outer; o++) {
    for (int y = 0; y < sp.h; y++) {
      const int64_t off = (o * sp.h + y) * row;
      if (y < box.y0 || y >= box.y1 || x0 == x1) {
        std::memcpy(out + off, own + off, row * sizeof(T));
      } else {
        std::memcpy(out + off, own + off, x0 * sizeof(T));
        std::memcpy(out + off + x0, partner + off + x0, (x1 - x0) * sizeof(T));
        std::memcpy(out + off + x1, own + off + x1, (row - x1) * sizeof(T));
      }
    }
  }
}

/// fmix step `step` of one image from per-element levels (the pixel's level repeated over the
/// elements it spans): a flat select that vectorises.
template <typename T>
void FmixImage(T *__restrict out, const T *__restrict own, const T *__restrict partner,
               const unsigned char *__restrict element_levels, int64_t n, int step) {
  const auto s = static_cast<unsigned char>(step);
  for (int64_t e = 0; e < n; e++) {
    const T p = partner[e], o = own[e];  // both loaded: the select then vectorises
    out[e] = ::multimix::fmix_takes(element_levels[e], s) ? p : o;
  }
}

/// Spreads per-pixel levels (h*w) over the elements of an [outer, H, W, inner] image.
inline void SpreadLevels(const unsigned char *pixel_levels, const SpatialLayout &sp,
                         unsigned char *element_levels) {
  const int64_t pixels = static_cast<int64_t>(sp.h) * sp.w;
  unsigned char *dst = element_levels;
  for (int64_t o = 0; o < sp.outer; o++) {
    if (sp.inner == 1) {
      std::memcpy(dst, pixel_levels, pixels);
      dst += pixels;
    } else {
      for (int64_t p = 0; p < pixels; p++)
        for (int64_t c = 0; c < sp.inner; c++) *dst++ = pixel_levels[p];
    }
  }
}

}  // namespace

template <>
void Multimix<CPUBackend>::RunImpl(Workspace &ws) {
  const auto &images = ws.Input<CPUBackend>(0);
  auto &mixed = ws.Output<CPUBackend>(0);
  if (!layout_.empty()) mixed.SetLayout(TensorLayout("F") + layout_);
  auto &tp = ws.GetThreadPool();
  const int64_t image_volume = ::dali::volume(sample_shape_);
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;

  const TensorList<CPUBackend> *fmix_scores =
      has_fmix_scores_ ? &ws.ArgumentInput("fmix_scores") : nullptr;
  // fmix levels shared by the batch (lambda_scope "batch"): spread over the elements once
  std::vector<unsigned char> shared_element_levels;
  if (const unsigned char *shared = SharedFmixLevels()) {
    shared_element_levels.resize(image_volume);
    SpreadLevels(shared, spatial_, shared_element_levels.data());
  }

  TYPE_SWITCH(dtype_, type2id, T, (uint8_t, float16, float), (
    using S = typename StorageType<T>::type;
    const bool stream = nsamples_ * k_ * image_volume * sizeof(T) >= kStreamOutputBytes;
    for (int i = 0; i < nsamples_; i++) {
      tp.AddWork([&, i](int) {
        const SampleMix &m = mix_[i];
        const S *own = reinterpret_cast<const S *>(images.tensor<T>(i));
        const S *partner = reinterpret_cast<const S *>(images.tensor<T>(m.partner));
        S *out = reinterpret_cast<S *>(mixed.mutable_tensor<T>(i));
        if (mode_ == kMixup) {
          for (int s = 0; s < k_; s++)
            BlendSpan(out + s * image_volume, own, partner, image_volume, m.lambdas[s], stream);
        } else if (mode_ == kCutmix) {
          for (int s = 0; s < k_; s++)
            CutmixImage(out + s * image_volume, own, partner, spatial_, m.boxes[s]);
        } else if (!shared_element_levels.empty()) {
          for (int s = 0; s < k_; s++)
            FmixImage(out + s * image_volume, own, partner, shared_element_levels.data(),
                      image_volume, s);
        } else {
          thread_local FmixScratch scratch;
          thread_local std::vector<unsigned char> levels, element_levels;
          levels.resize(pixels);
          element_levels.resize(image_volume);
          ComputeFmixLevels(i, fmix_scores ? fmix_scores->tensor<float>(i) : nullptr,
                            levels.data(), scratch);
          SpreadLevels(levels.data(), spatial_, element_levels.data());
          for (int s = 0; s < k_; s++)
            FmixImage(out + s * image_volume, own, partner, element_levels.data(), image_volume,
                      s);
        }
      }, image_volume * k_);
    }
    tp.RunAll();
  ), Fail("input `images`: unsupported dtype ", dtype_));  // NOLINT
  FillHostOutputs(ws);
}

template <>
void Multimix<CPUBackend>::FillHostOutputs(Workspace &ws) {
  const auto &labels = ws.Input<CPUBackend>(1);
  auto &weights = ws.Output<CPUBackend>(1);
  auto &partner_labels = ws.Output<CPUBackend>(2);
  auto &partners = ws.Output<CPUBackend>(3);
  partner_labels.SetLayout(labels.GetLayout());
  const size_t label_bytes =
      nsamples_ ? volume(labels.shape()[0]) * TypeTable::GetTypeInfo(labels.type()).size() : 0;
  for (int i = 0; i < nsamples_; i++) {
    std::memcpy(weights.mutable_tensor<float>(i), mix_[i].weights, k_ * sizeof(float));
    std::memcpy(partner_labels.raw_mutable_tensor(i), labels.raw_tensor(mix_[i].partner),
                label_bytes);
    *partners.mutable_tensor<int>(i) = mix_[i].partner;
  }
}

// The shared members, for both backends (the GPU RunImpl lives in multimix.cu).
template class Multimix<CPUBackend>;
#ifdef MULTIMIX_WITH_CUDA
template class Multimix<GPUBackend>;
#endif

DALI_REGISTER_OPERATOR(Multimix, Multimix<CPUBackend>, CPU);

DALI_SCHEMA(Multimix)
    .DocStr(R"code(Multi-mix: K ordered interpolations of every sample with a partner.

Implements "Mixup Augmentation with Multiple Interpolations" (Shen et al.). For each sample x with
partner x' (a fresh random permutation of the batch by default) it draws K mixing ratios
lambda_1 <= ... <= lambda_K (K sorted draws from Beta(alpha, alpha)) and emits K mixed images:

* ``mixup``:  (1 - lambda_k) x + lambda_k x'
* ``cutmix``: x with the partner's pixels in box k; the K boxes share one random centre and box k
  measures H*sqrt(lambda_k) x W*sqrt(lambda_k) (nested), clipped at the border.
* ``fmix``:   x with the partner's pixels where one low-frequency Fourier noise map
  (FMix, decay power 3) is in its top lambda_k fraction (nested masks).

``lambda_scope`` says how far one draw reaches: ``"batch"`` (default; the paper's Eq. 7-9 and
Prop. III.2, and the originals of mixup, CutMix and FMix) draws one set lambda_1..lambda_K, one
cutmix centre and one fmix noise map for the whole batch; ``"sample"`` draws them per sample.
The weights are the exact area per sample in both.

Outputs: the mixed images (K, *input shape) with layout "F" + input layout and the input dtype
(uint8 rounded half to even); the weights (K,) float32, the exact fraction taken from the partner
(non-decreasing); the partner's label; the partner's index (int32).)code")
    .NumInput(2)
    .InputDox(0, "images", "TensorList",
              "Samples of one shape, uint8/float16/float32. mixup: any layout; cutmix/fmix: a "
              "layout with adjacent H and W (HWC, CHW, HW, ...).")
    .InputDox(1, "labels", "TensorList",
              "One label per sample: an integer class or a vector of (soft) label values.")
    .NumOutput(4)
    .AddOptionalArg("k", "Number of ordered interpolations per sample (1 to 64).", 5)
    .AddOptionalArg("alpha", "Parameter of the Beta(alpha, alpha) mixing distribution.", 1.0f)
    .AddOptionalArg("mode", "\"mixup\", \"cutmix\" or \"fmix\".", std::string("mixup"))
    .AddOptionalArg("lambda_sampling",
                    "\"sorted\": K sorted Beta draws (the paper). \"stratified\": one draw from "
                    "each of K equal-probability strata of the Beta distribution.",
                    std::string("sorted"))
    .AddOptionalArg("lambda_scope",
                    "\"batch\": one set of K ratios, one cutmix centre and one fmix noise map "
                    "for the whole batch (the paper's Eq. 7-9 and Prop. III.2; the originals). "
                    "\"sample\": a fresh set, centre and noise map per sample. Per-sample "
                    "`lambdas`, `centers` and `fmix_scores` override either.",
                    std::string("batch"))
    .AddOptionalArg<std::vector<float>>(
        "lambdas", "Per-sample override of the K mixing ratios (non-decreasing, in [0, 1]).",
        nullptr, true)
    .AddOptionalArg<int>("partners", "Per-sample override of the partner index.", nullptr, true)
    .AddOptionalArg<std::vector<int>>(
        "centers", "cutmix: per-sample override of the box centre (y, x) in pixels.", nullptr,
        true)
    .AddOptionalArg<std::vector<float>>(
        "fmix_scores", "fmix: per-sample (H, W) score map replacing the Fourier noise.", nullptr,
        true)
    .AddRandomSeedArg()
    .AddRandomStateArg();

}  // namespace multimix_op
}  // namespace dali
