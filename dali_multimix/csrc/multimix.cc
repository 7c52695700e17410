// The multimix operator: schema, shared Setup (validation + sampling) and the CPU backend.
#include "multimix.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "dali/core/float16.h"
#include "dali/core/static_switch.h"
#include "multimix_philox.h"

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
      // no silent conversion: a float64 value that float32 cannot hold is an error, named with
      // the value passed (not the value it would have become)
      const double *src = arg.tensor<double>(i);
      for (size_t j = 0; j < v.size(); j++) {
        const double d = src[j], a = std::fabs(d);
        if (std::isfinite(d) && (a > std::numeric_limits<float>::max() ||
                                 (a != 0.0 && a < std::numeric_limits<float>::min())))
          Fail("argument `", name, "` of sample ", i, ": value ", j, " (", d, ") ",
               a > 1.0 ? "overflows" : "underflows", " float32, the type the operator stores");
      }
      convert(src);
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

namespace {

#if defined(__x86_64__)
// Whether the AVX2 loops run: the CPU has AVX2 and DALI_MULTIMIX_NO_AVX2=1 does not ask for the
// portable ones (the tests compare both).
bool HostHasAvx2() {
  static const bool avx2 = [] {
    const char *off = std::getenv("DALI_MULTIMIX_NO_AVX2");
    return __builtin_cpu_supports("avx2") && !(off && off[0] == '1');
  }();
  return avx2;
}
#endif

template <typename Rng>
void FmixScoreMap(Rng &rng, const ::multimix::FmixBasis &basis, float *out,
                  std::vector<double> &scratch, float *range) {
#if defined(__x86_64__)
  if (HostHasAvx2()) return ::multimix::fmix_score_map_avx2(rng, basis, out, scratch, range);
#endif
  ::multimix::fmix_score_map(rng, basis, out, scratch, range);
}

void FmixLevels(const float *scores, int64_t pixels, const int64_t *counts, int k,
                unsigned char *levels, ::multimix::FmixLevelScratch &scratch, const float *range) {
#if defined(__x86_64__)
  if (HostHasAvx2())
    return ::multimix::fmix_levels_avx2(scores, pixels, counts, k, levels, scratch, range);
#endif
  ::multimix::fmix_levels(scores, pixels, counts, k, levels, scratch, range);
}

/// The words of `rng` from `skip` words on, as the header-only PhiloxStream (the same words, blocks
/// computed many at a time; DALI's generator makes one out-of-line call per 4-word block).
::multimix::PhiloxStream FmixNoiseStream(Philox4x32_10 rng, uint64_t skip) {
  rng.skipahead(skip);
  const Philox4x32_10::State st = rng.get_state();
  return ::multimix::PhiloxStream(st.key, st.ctr[0], st.ctr[1], st.phase);
}

}  // namespace

template <typename Backend>
void Multimix<Backend>::PrepareBatchFmix() {
  shared_fmix_levels_ = false;
  if (nsamples_ == 0 || mode_ != kFmix || has_fmix_scores_ || lambda_scope_ != LambdaScope::kBatch)
    return;
  // one noise map for the batch (FMix's one mask per batch), drawn from the batch stream
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;
  batch_fmix_scores_.resize(pixels);
  auto rng = FmixNoiseStream(this->GetSampleRNG(nsamples_), kBatchFmixStream);
  FmixScoreMap(rng, fmix_basis_, batch_fmix_scores_.data(), batch_fmix_scratch_.spectrum,
               batch_fmix_range_);
  // its K levels once for the batch, unless per-sample `lambdas` give samples different counts
  for (int i = 1; i < nsamples_; i++) {
    if (!std::equal(mix_[0].counts, mix_[0].counts + k_, mix_[i].counts)) return;
  }
  batch_fmix_levels_.resize(pixels);
  FmixLevels(batch_fmix_scores_.data(), pixels, mix_[0].counts, k_, batch_fmix_levels_.data(),
             batch_fmix_scratch_.select, batch_fmix_range_);
  shared_fmix_levels_ = true;
}

template <typename Backend>
void Multimix<Backend>::ComputeFmixLevels(int i, const float *given_scores, unsigned char *levels,
                                          FmixScratch &scratch) const {
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;
  const float *scores = given_scores;
  const float *range = nullptr;  // given scores: fmix_levels finds their range
  if (!scores && lambda_scope_ == LambdaScope::kBatch) {
    scores = batch_fmix_scores_.data();
    range = batch_fmix_range_;
  }
  if (!scores) {
    scratch.scores.resize(pixels);
    auto rng = FmixNoiseStream(this->GetSampleRNG(i), kFmixStream);
    FmixScoreMap(rng, fmix_basis_, scratch.scores.data(), scratch.spectrum, scratch.range);
    scores = scratch.scores.data();
    range = scratch.range;
  }
  FmixLevels(scores, pixels, mix_[i].counts, k_, levels, scratch.select, range);
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

// Hand-vectorised mixup of all K steps at once, 256 output bytes of each step per turn: the
// inputs of the chunk are loaded (uint8: converted to float) once into registers / L1 and blended
// K times, each step's 256 bytes stored back to back (whole cache lines for the write-combining
// buffers, which interleaved 32-byte stores to K streams thrash). The operations of Blend<T>: two
// products, one sum, no FMA; for uint8 cvtps rounds half to even, which is what round_to_u8's
// 1.5 * 2^23 addition does for values in [0, 255], and saturating packs clamp: bit-identical.
struct Avx2Float {
  using T = float;
  static constexpr int kChunk = 64;  // elements: 256 bytes
  struct Prepared {
    __m256 a[8], b[8];
  };
  __attribute__((target("avx2"))) static void Prepare(const T *a, const T *b, Prepared &p) {
    for (int j = 0; j < 8; j++) {
      p.a[j] = _mm256_loadu_ps(a + 8 * j);
      p.b[j] = _mm256_loadu_ps(b + 8 * j);
    }
  }
  template <bool kStream>
  __attribute__((target("avx2"))) static void Emit(T *out, const Prepared &p, __m256 w_own,
                                                   __m256 w_partner) {
    for (int j = 0; j < 8; j++) {
      const __m256 v =
          _mm256_add_ps(_mm256_mul_ps(w_own, p.a[j]), _mm256_mul_ps(w_partner, p.b[j]));
      if (kStream) _mm256_stream_ps(out + 8 * j, v);
      else         _mm256_storeu_ps(out + 8 * j, v);
    }
  }
};

struct Avx2Uint8 {
  using T = uint8_t;
  static constexpr int kChunk = 256;
  struct Prepared {
    __m256 a[32], b[32];  // 8 blocks of 32 bytes, 4 vectors of 8 each
  };
  __attribute__((target("avx2"))) static void Prepare(const T *a, const T *b, Prepared &p) {
    for (int j = 0; j < 32; j++) {
      p.a[j] = _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(a + 8 * j))));
      p.b[j] = _mm256_cvtepi32_ps(
          _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(b + 8 * j))));
    }
  }
  template <bool kStream>
  __attribute__((target("avx2"))) static void Emit(T *out, const Prepared &p, __m256 w_own,
                                                   __m256 w_partner) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int blk = 0; blk < 8; blk++) {
      __m256i q[4];
      for (int j = 0; j < 4; j++) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(w_own, p.a[4 * blk + j]),
                                       _mm256_mul_ps(w_partner, p.b[4 * blk + j]));
        q[j] = _mm256_cvtps_epi32(v);
      }
      const __m256i v = _mm256_permutevar8x32_epi32(
          _mm256_packus_epi16(_mm256_packus_epi32(q[0], q[1]), _mm256_packus_epi32(q[2], q[3])),
          order);
      __m256i *dst = reinterpret_cast<__m256i *>(out + 32 * blk);
      if (kStream) _mm256_stream_si256(dst, v);
      else         _mm256_storeu_si256(dst, v);
    }
  }
};

/// Steps s = 0..k-1 of one image: out + s * stride = (1 - lams[s]) * a + lams[s] * b.
/// `stream`: non-temporal stores (from the first 32-byte aligned element on; when the steps are
/// not 32-byte aligned alike, step by step).
template <typename Kernel>
__attribute__((target("avx2"))) void BlendStepsAvx2(typename Kernel::T *out, int64_t stride,
                                                    const typename Kernel::T *a,
                                                    const typename Kernel::T *b, int64_t n,
                                                    const float *lams, int k, bool stream) {
  using T = typename Kernel::T;
  constexpr int kGroup = 8;  // output streams written together
  if (k > kGroup || (stream && k > 1 && (stride * sizeof(T)) % 32 != 0)) {
    const int group = k > kGroup ? kGroup : 1;
    for (int s = 0; s < k; s += group)
      BlendStepsAvx2<Kernel>(out + s * stride, stride, a, b, n, lams + s, std::min(group, k - s),
                             stream);
    return;
  }
  __m256 w_own[kGroup], w_partner[kGroup];
  for (int s = 0; s < k; s++) {
    w_own[s] = _mm256_set1_ps(1.0f - lams[s]);
    w_partner[s] = _mm256_set1_ps(lams[s]);
  }
  auto scalar = [&](int64_t e) {
    for (int s = 0; s < k; s++)
      out[s * stride + e] = ::multimix::Blend<T>::apply(a[e], b[e], lams[s]);
  };
  typename Kernel::Prepared prepared;
  int64_t e = 0;
  if (stream) {
    for (; e < n && !Aligned32(out + e); e++) scalar(e);
    for (; e + Kernel::kChunk <= n; e += Kernel::kChunk) {
      Kernel::Prepare(a + e, b + e, prepared);
      for (int s = 0; s < k; s++)
        Kernel::template Emit<true>(out + s * stride + e, prepared, w_own[s], w_partner[s]);
    }
    _mm_sfence();
  } else {
    for (; e + Kernel::kChunk <= n; e += Kernel::kChunk) {
      Kernel::Prepare(a + e, b + e, prepared);
      for (int s = 0; s < k; s++)
        Kernel::template Emit<false>(out + s * stride + e, prepared, w_own[s], w_partner[s]);
    }
  }
  for (; e < n; e++) scalar(e);
}

#endif

/// The K mixup steps of one image, `stride` elements apart. `stream`: write with non-temporal
/// stores (for outputs much larger than the cache, which are not re-read soon): they skip
/// reading the destination lines into the cache first.
template <typename T>
void BlendSteps(T *out, int64_t stride, const T *a, const T *b, int64_t n, const float *lams,
                int k, bool stream) {
#if defined(__x86_64__)
  const bool use_avx2 = HostHasAvx2();
  if constexpr (std::is_same_v<T, float>) {
    if (use_avx2) return BlendStepsAvx2<Avx2Float>(out, stride, a, b, n, lams, k, stream);
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    if (use_avx2) return BlendStepsAvx2<Avx2Uint8>(out, stride, a, b, n, lams, k, stream);
  }
#endif
  for (int s = 0; s < k; s++) BlendSpanPortable(out + s * stride, a, b, n, lams[s]);
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

#if defined(__x86_64__)
/// Levels widened to the element size (32 bytes of elements), the step broadcast alike, and the
/// lanes where level > step (keep own).
template <int kSize> struct FmixLanes;
template <> struct FmixLanes<1> {
  __attribute__((target("avx2"))) static __m256i Levels(const unsigned char *l) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(l));
  }
  __attribute__((target("avx2"))) static __m256i Step(int s) {
    return _mm256_set1_epi8(static_cast<char>(s));
  }
  __attribute__((target("avx2"))) static __m256i Above(__m256i l, __m256i s) {
    return _mm256_cmpgt_epi8(l, s);
  }
};
template <> struct FmixLanes<2> {
  __attribute__((target("avx2"))) static __m256i Levels(const unsigned char *l) {
    return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(l)));
  }
  __attribute__((target("avx2"))) static __m256i Step(int s) {
    return _mm256_set1_epi16(static_cast<int16_t>(s));
  }
  __attribute__((target("avx2"))) static __m256i Above(__m256i l, __m256i s) {
    return _mm256_cmpgt_epi16(l, s);
  }
};
template <> struct FmixLanes<4> {
  __attribute__((target("avx2"))) static __m256i Levels(const unsigned char *l) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(l)));
  }
  __attribute__((target("avx2"))) static __m256i Step(int s) { return _mm256_set1_epi32(s); }
  __attribute__((target("avx2"))) static __m256i Above(__m256i l, __m256i s) {
    return _mm256_cmpgt_epi32(l, s);
  }
};

template <typename T>
inline void FmixScalar(T *out, int64_t stride, const T *own, const T *partner,
                       const unsigned char *element_levels, int64_t e, int k, int first_step) {
  for (int s = 0; s < k; s++)
    out[s * stride + e] = ::multimix::fmix_takes(element_levels[e],
                                                 static_cast<unsigned char>(first_step + s))
                              ? partner[e] : own[e];
}

/// 256 bytes of elements (8 blocks of 32) of every step, each step's stored back to back (whole
/// cache lines for the write-combining buffers); the inputs are re-read from L1 per step.
template <typename T, bool kStream>
__attribute__((target("avx2"))) inline void FmixBody(T *out, int64_t stride, const T *own,
                                                     const T *partner,
                                                     const unsigned char *element_levels,
                                                     int64_t e, const __m256i *steps, int k) {
  constexpr int kWidth = 32 / sizeof(T);
  for (int s = 0; s < k; s++) {
    for (int blk = 0; blk < 8; blk++) {
      const int64_t f = e + blk * kWidth;
      const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(own + f));
      const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(partner + f));
      const __m256i l = FmixLanes<sizeof(T)>::Levels(element_levels + f);
      const __m256i v = _mm256_blendv_epi8(p, o, FmixLanes<sizeof(T)>::Above(l, steps[s]));
      __m256i *dst = reinterpret_cast<__m256i *>(out + s * stride + f);
      if (kStream) _mm256_stream_si256(dst, v);
      else         _mm256_storeu_si256(dst, v);
    }
  }
}

/// The K fmix steps of one image at once (outputs `stride` elements apart): the two inputs and
/// the levels are loaded once per 32 bytes of elements and selected K times (level <= step takes
/// the partner, as fmix_takes; levels are at most kMaxK = 64, so signed compares hold).
/// `stream`: non-temporal stores, as BlendStepsAvx2. `first_step`: the step of out[0 .. stride).
template <typename T>
__attribute__((target("avx2"))) void FmixStepsAvx2(T *out, int64_t stride, const T *own,
                                                   const T *partner,
                                                   const unsigned char *element_levels, int64_t n,
                                                   int k, bool stream, int first_step = 0) {
  constexpr int kGroup = 8;
  if (k > kGroup || (stream && k > 1 && (stride * sizeof(T)) % 32 != 0)) {
    const int group = k > kGroup ? kGroup : 1;
    for (int s = 0; s < k; s += group)
      FmixStepsAvx2(out + s * stride, stride, own, partner, element_levels, n,
                    std::min(group, k - s), stream, first_step + s);
    return;
  }
  constexpr int kWidth = 32 / sizeof(T);
  __m256i steps[kGroup];
  for (int s = 0; s < k; s++) steps[s] = FmixLanes<sizeof(T)>::Step(first_step + s);
  int64_t e = 0;
  if (stream) {
    for (; e < n && !Aligned32(out + e); e++)
      FmixScalar(out, stride, own, partner, element_levels, e, k, first_step);
    for (; e + 8 * kWidth <= n; e += 8 * kWidth)
      FmixBody<T, true>(out, stride, own, partner, element_levels, e, steps, k);
    _mm_sfence();
  } else {
    for (; e + 8 * kWidth <= n; e += 8 * kWidth)
      FmixBody<T, false>(out, stride, own, partner, element_levels, e, steps, k);
  }
  for (; e < n; e++) FmixScalar(out, stride, own, partner, element_levels, e, k, first_step);
}

/// Spreads 3 elements per pixel (HWC): 16 pixel levels to 48 bytes with three byte shuffles.
__attribute__((target("avx2"))) inline void SpreadLevels3Avx2(const unsigned char *pixel_levels,
                                                             int64_t pixels,
                                                             unsigned char *dst) {
  const __m128i m0 = _mm_setr_epi8(0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5);
  const __m128i m1 = _mm_setr_epi8(5, 5, 6, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10);
  const __m128i m2 = _mm_setr_epi8(10, 11, 11, 11, 12, 12, 12, 13, 13, 13, 14, 14, 14, 15, 15, 15);
  int64_t p = 0;
  for (; p + 16 <= pixels; p += 16, dst += 48) {
    const __m128i l = _mm_loadu_si128(reinterpret_cast<const __m128i *>(pixel_levels + p));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst), _mm_shuffle_epi8(l, m0));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 16), _mm_shuffle_epi8(l, m1));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + 32), _mm_shuffle_epi8(l, m2));
  }
  for (; p < pixels; p++, dst += 3) dst[0] = dst[1] = dst[2] = pixel_levels[p];
}
#endif

/// The K fmix steps of one image, `stride` elements apart.
template <typename T>
void FmixSteps(T *out, int64_t stride, const T *own, const T *partner,
               const unsigned char *element_levels, int64_t n, int k, bool stream) {
#if defined(__x86_64__)
  const bool use_avx2 = HostHasAvx2();
  if (use_avx2) return FmixStepsAvx2(out, stride, own, partner, element_levels, n, k, stream);
#endif
  for (int s = 0; s < k; s++) FmixImage(out + s * stride, own, partner, element_levels, n, s);
}

/// Spreads per-pixel levels (h*w) over the elements of an [outer, H, W, inner] image.
inline void SpreadLevels(const unsigned char *pixel_levels, const SpatialLayout &sp,
                         unsigned char *element_levels) {
  const int64_t pixels = static_cast<int64_t>(sp.h) * sp.w;
  unsigned char *dst = element_levels;
#if defined(__x86_64__)
  const bool use_avx2 = HostHasAvx2();
#else
  const bool use_avx2 = false;
#endif
  for (int64_t o = 0; o < sp.outer; o++) {
    if (sp.inner == 1) {
      std::memcpy(dst, pixel_levels, pixels);
      dst += pixels;
#if defined(__x86_64__)
    } else if (sp.inner == 3 && use_avx2) {
      SpreadLevels3Avx2(pixel_levels, pixels, dst);
      dst += 3 * pixels;
#endif
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
          BlendSteps(out, image_volume, own, partner, image_volume, m.lambdas, k_, stream);
        } else if (mode_ == kCutmix) {
          for (int s = 0; s < k_; s++)
            CutmixImage(out + s * image_volume, own, partner, spatial_, m.boxes[s]);
        } else if (!shared_element_levels.empty()) {
          FmixSteps(out, image_volume, own, partner, shared_element_levels.data(), image_volume,
                    k_, stream);
        } else {
          thread_local FmixScratch scratch;
          thread_local std::vector<unsigned char> levels, element_levels;
          levels.resize(pixels);
          element_levels.resize(image_volume);
          ComputeFmixLevels(i, fmix_scores ? fmix_scores->tensor<float>(i) : nullptr,
                            levels.data(), scratch);
          SpreadLevels(levels.data(), spatial_, element_levels.data());
          FmixSteps(out, image_volume, own, partner, element_levels.data(), image_volume, k_,
                    stream);
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
