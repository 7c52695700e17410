// The multimix operator's GPU backend: host-side sampling is shared (multimix.cc); here the jobs
// are uploaded and the kernels of multimix_kernels.cuh launched. The fmix masks' levels are
// computed on the host and uploaded (h*w bytes per sample, or once per batch when the batch
// shares one noise map: lambda_scope "batch").
#include <vector>

#include "dali/core/cuda_error.h"
#include "dali/core/float16.h"
#include "dali/core/static_switch.h"
#include "dali/kernels/dynamic_scratchpad.h"

#include "multimix.h"
#include "multimix_kernels.cuh"

namespace dali {
namespace multimix_op {

namespace {

constexpr int kBlock = 256;

dim3 GridFor(int64_t max_elements, int njobs) {
  int64_t blocks = (max_elements + kBlock - 1) / kBlock;
  if (blocks > 1024) blocks = 1024;
  if (blocks < 1) blocks = 1;
  return dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(std::min(njobs, 65535)));
}

}  // namespace

template <>
void Multimix<GPUBackend>::RunImpl(Workspace &ws) {
  const auto &images = ws.Input<GPUBackend>(0);
  const auto &labels = ws.Input<GPUBackend>(1);
  auto &mixed = ws.Output<GPUBackend>(0);
  auto &weights = ws.Output<GPUBackend>(1);
  auto &partner_labels = ws.Output<GPUBackend>(2);
  auto &partners = ws.Output<GPUBackend>(3);
  if (!layout_.empty()) mixed.SetLayout(TensorLayout("F") + layout_);
  partner_labels.SetLayout(labels.GetLayout());
  if (nsamples_ == 0) return;

  cudaStream_t stream = ws.stream();
  kernels::DynamicScratchpad scratch(AccessOrder{stream});
  const int64_t image_volume = ::dali::volume(sample_shape_);
  const int64_t pixels = static_cast<int64_t>(spatial_.h) * spatial_.w;

  // fmix: per-pixel levels of every sample, computed on the host, uploaded once; with
  // lambda_scope "batch" one set of levels serves the whole batch (levels_stride 0)
  const unsigned char *levels_gpu = nullptr;
  int64_t levels_stride = pixels;
  if (const unsigned char *shared = SharedFmixLevels()) {
    std::vector<unsigned char> levels(shared, shared + pixels);
    levels_gpu = scratch.ToGPU(stream, levels);
    levels_stride = 0;
  } else if (mode_ == ::multimix::kFmix) {
    // one Fourier noise map per sample: host work, spread over threads (as the CPU backend)
    std::vector<unsigned char> levels(nsamples_ * pixels);
    const TensorList<CPUBackend> *given =
        has_fmix_scores_ ? &ws.ArgumentInput("fmix_scores") : nullptr;
    ThreadPool &pool = HostThreadPool(ws);
    for (int i = 0; i < nsamples_; i++) {
      pool.AddWork([&, i](int) {
        thread_local FmixScratch fmix_scratch;
        ComputeFmixLevels(i, given ? given->tensor<float>(i) : nullptr, &levels[i * pixels],
                          fmix_scratch);
      }, pixels);
    }
    pool.RunAll();
    levels_gpu = scratch.ToGPU(stream, levels);
  }

  TYPE_SWITCH(dtype_, type2id, T, (uint8_t, float16, float), (
    using D = typename StorageType<T>::type;
    std::vector<::multimix::MixJob<D>> jobs;
    jobs.reserve(nsamples_ * k_);
    for (int i = 0; i < nsamples_; i++) {
      const SampleMix &m = mix_[i];
      for (int s = 0; s < k_; s++) {
        ::multimix::MixJob<D> job{};
        job.out = reinterpret_cast<D *>(mixed.mutable_tensor<T>(i)) + s * image_volume;
        job.own = reinterpret_cast<const D *>(images.tensor<T>(i));
        job.partner = reinterpret_cast<const D *>(images.tensor<T>(m.partner));
        job.levels = levels_gpu ? levels_gpu + i * levels_stride : nullptr;
        job.volume = image_volume;
        job.mode = mode_;
        job.step = s;
        job.lam = m.lambdas[s];
        job.box = m.boxes[s];
        job.h = spatial_.h;
        job.w = spatial_.w;
        job.inner = static_cast<int>(spatial_.inner);
        jobs.push_back(job);
      }
    }
    auto *jobs_gpu = scratch.ToGPU(stream, jobs);
    int njobs = static_cast<int>(jobs.size());
    constexpr int kWidth = ::multimix::VectorWidth<D>::value;  // elements per thread and step
    ::multimix::MixKernel<D><<<GridFor((image_volume + kWidth - 1) / kWidth, njobs), kBlock, 0,
                               stream>>>(jobs_gpu, njobs);
    CUDA_CALL(cudaGetLastError());
  ), Fail("input `images`: unsupported dtype ", dtype_));  // NOLINT

  // weights, partner indices (from the host) and partner labels (device to device)
  std::vector<float> host_weights(nsamples_ * k_);
  std::vector<int> host_partners(nsamples_);
  for (int i = 0; i < nsamples_; i++) {
    std::copy(mix_[i].weights, mix_[i].weights + k_, &host_weights[i * k_]);
    host_partners[i] = mix_[i].partner;
  }
  const float *weights_gpu = scratch.ToGPU(stream, host_weights);
  const int *partners_gpu = scratch.ToGPU(stream, host_partners);
  const int64_t label_bytes =
      ::dali::volume(labels.shape()[0]) * TypeTable::GetTypeInfo(labels.type()).size();
  std::vector<::multimix::CopyJob> copies;
  copies.reserve(3 * nsamples_);
  for (int i = 0; i < nsamples_; i++) {
    copies.push_back({weights.raw_mutable_tensor(i), weights_gpu + i * k_,
                      static_cast<long long>(k_ * sizeof(float))});
    copies.push_back({partners.raw_mutable_tensor(i), partners_gpu + i,
                      static_cast<long long>(sizeof(int))});
    if (label_bytes > 0)
      copies.push_back({partner_labels.raw_mutable_tensor(i),
                        labels.raw_tensor(mix_[i].partner), label_bytes});
  }
  auto *copies_gpu = scratch.ToGPU(stream, copies);
  int ncopies = static_cast<int>(copies.size());
  ::multimix::CopyBytesKernel<<<GridFor(std::max<int64_t>(label_bytes, k_ * 4), ncopies), kBlock,
                                0, stream>>>(copies_gpu, ncopies);
  CUDA_CALL(cudaGetLastError());
}

DALI_REGISTER_OPERATOR(Multimix, Multimix<GPUBackend>, GPU);

}  // namespace multimix_op
}  // namespace dali
