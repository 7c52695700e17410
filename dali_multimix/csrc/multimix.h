// The multimix DALI operator: K ordered interpolations of each sample with a partner
// (Shen et al., "Mixup Augmentation with Multiple Interpolations").
//
// This header holds what both backends share: argument parsing, validation (Setup), and the
// per-iteration sampling of ratios, partners, centres and boxes. multimix.cc defines the schema
// and the CPU RunImpl; multimix.cu the GPU RunImpl, which launches multimix_kernels.cuh.
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_H_
#define DALI_MULTIMIX_CSRC_MULTIMIX_H_

#include <memory>
#include <string>
#include <vector>

#include "dali/core/float16.h"
#include "dali/core/tensor_layout.h"
#include "dali/operators/random/rng_base.h"
#include "dali/pipeline/operator/operator.h"
#include "dali/pipeline/util/thread_pool.h"

#include "multimix_math.h"
#include "multimix_sampling.h"

namespace dali {
namespace multimix_op {

using ::multimix::Box;
using ::multimix::kMaxK;

/// The element type the shared math works on: DALI's float16 is stored as ::multimix::Half.
template <typename T> struct StorageType { using type = T; };
template <> struct StorageType<float16> { using type = ::multimix::Half; };

/// Everything drawn (or given) for one sample in one iteration.
struct SampleMix {
  int partner = 0;
  int cy = 0, cx = 0;           // cutmix centre
  float lambdas[kMaxK] = {};    // the mixing ratios, non-decreasing
  float weights[kMaxK] = {};    // the exact fraction taken from the partner at each step
  Box boxes[kMaxK] = {};        // cutmix
  int64_t counts[kMaxK] = {};   // fmix: pixels taken from the partner
};

/// Where H and W are in a sample: elements are [outer, H, W, inner].
struct SpatialLayout {
  int h = 0, w = 0;
  int64_t outer = 1, inner = 1;
};

/// Reports bad input: the message names the operator, the argument and, where it applies, the
/// sample index. DALI turns the exception into a Python error; it never aborts the process.
template <typename... Args>
[[noreturn]] void Fail(const Args &...args) {
  throw std::invalid_argument(make_string("multimix: ", args...));
}

/// Reusable buffers of the fmix mask computation.
struct FmixScratch {
  std::vector<float> scores;
  float range[2] = {0.0f, 0.0f};  // the scores' minimum and maximum
  std::vector<double> spectrum;
  ::multimix::FmixLevelScratch select;
};

/// How far one random draw reaches (Shen et al., Eq. 7-9 and Prop. III.2 take one lambda for all
/// pairs of a batch, as the originals of mixup, CutMix and FMix do).
///   kBatch:  one sorted set lambda_1..lambda_K, one cutmix centre and one FMix noise map for the
///            whole batch, drawn from the batch stream (GetSampleRNG(nsamples), no sample's);
///   kSample: a fresh set, centre and noise map per sample, each from the sample's own stream.
enum class LambdaScope { kBatch, kSample };

int ParseMode(const std::string &mode);
::multimix::LambdaSampling ParseLambdaSampling(const std::string &how);
LambdaScope ParseLambdaScope(const std::string &scope);

template <typename Backend>
class Multimix : public rng::OperatorWithRng<Operator<Backend>> {
  using Base = rng::OperatorWithRng<Operator<Backend>>;

 public:
  explicit Multimix(const OpSpec &spec);

 protected:
  bool SetupImpl(std::vector<OutputDesc> &output_desc, const Workspace &ws) override;
  void RunImpl(Workspace &ws) override;

  /// The fmix levels of sample i (h*w bytes) from `given_scores` (h*w) or, if null, the batch's
  /// noise map (lambda_scope "batch") or the sample's own fresh noise (lambda_scope "sample").
  void ComputeFmixLevels(int i, const float *given_scores, unsigned char *levels,
                         FmixScratch &scratch) const;

  /// fmix levels shared by every sample of the batch, or null: set when the batch shares one
  /// noise map (lambda_scope "batch", no `fmix_scores`) and every sample has the same K pixel
  /// counts (always, unless per-sample `lambdas` differ). Then the map and its K-level selection
  /// are computed once per batch (in Setup), not once per sample.
  const unsigned char *SharedFmixLevels() const {
    return shared_fmix_levels_ ? batch_fmix_levels_.data() : nullptr;
  }

  /// CPU: writes weights, partner labels and partner indices (outputs 1-3).
  void FillHostOutputs(Workspace &ws);

  /// Threads for host work per sample (GPU backend: the per-sample fmix noise maps): the
  /// executor's pool where it gives the operator one, else the operator's own, of the pipeline's
  /// num_threads, made at first use.
  ThreadPool &HostThreadPool(Workspace &ws) {
    if (ws.HasThreadPool()) return ws.GetThreadPool();
    if (!own_thread_pool_)
      own_thread_pool_ = std::make_unique<OldThreadPool>(
          std::max(1, spec_.template GetArgument<int>("num_threads")),
          spec_.template GetArgument<int>("device_id"), false, "multimix host work");
    return *own_thread_pool_;
  }

  using Base::spec_;

  int k_;
  float alpha_;
  int mode_;
  ::multimix::LambdaSampling lambda_sampling_;
  LambdaScope lambda_scope_;
  bool has_lambdas_, has_partners_, has_centers_, has_fmix_scores_;

  // per-iteration state, filled in SetupImpl
  int nsamples_ = 0;
  DALIDataType dtype_ = DALI_NO_TYPE;
  TensorShape<> sample_shape_;
  TensorLayout layout_;
  SpatialLayout spatial_;
  std::vector<SampleMix> mix_;
  ::multimix::FmixBasis fmix_basis_;  // for the current H, W (fmix without given scores)
  std::vector<float> batch_fmix_scores_;         // lambda_scope "batch": the batch's noise map
  float batch_fmix_range_[2] = {0.0f, 0.0f};    // its minimum and maximum
  std::vector<unsigned char> batch_fmix_levels_;  // its levels, when every sample shares them
  bool shared_fmix_levels_ = false;
  FmixScratch batch_fmix_scratch_;
  std::unique_ptr<ThreadPool> own_thread_pool_;

 private:
  void ValidateImages(const Workspace &ws);
  void ValidateLabels(const Workspace &ws);
  void SampleLambdas(const Workspace &ws);
  void SamplePartners(const Workspace &ws);
  void SampleCenters(const Workspace &ws);
  void ComputeWeights();
  void ValidateFmixScores(const Workspace &ws) const;
  void PrepareBatchFmix();
};

// Each backend specialises these (multimix.cc, multimix.cu).
template <> void Multimix<CPUBackend>::RunImpl(Workspace &ws);
template <> void Multimix<CPUBackend>::FillHostOutputs(Workspace &ws);
template <> void Multimix<GPUBackend>::RunImpl(Workspace &ws);

}  // namespace multimix_op
}  // namespace dali

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_H_
