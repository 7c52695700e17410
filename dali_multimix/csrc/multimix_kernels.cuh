// CUDA kernels of multi-mix. Self-contained (no DALI): the operator (multimix.cu) launches them,
// and the GPU test compiles this file with NVRTC (cupy.RawModule) on machines without DALI.
// Compile with --fmad=false so that the per-element math matches the CPU bit for bit.
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_KERNELS_CUH_
#define DALI_MULTIMIX_CSRC_MULTIMIX_KERNELS_CUH_

#include "multimix_math.h"

namespace multimix {

/// One thread block row per job (blockIdx.y), a grid-stride loop over the job's elements.
template <typename T>
__global__ void MixKernel(const MixJob<T> *jobs, int njobs) {
  for (int j = blockIdx.y; j < njobs; j += gridDim.y) {
    const MixJob<T> job = jobs[j];
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    for (long long e = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
         e < job.volume; e += stride) {
      job.out[e] = mix_element(job, e);
    }
  }
}

/// A byte copy (partner labels, weights, partner indices).
struct CopyJob {
  void *dst;
  const void *src;
  long long bytes;
};

__global__ void CopyBytesKernel(const CopyJob *jobs, int njobs) {
  for (int j = blockIdx.y; j < njobs; j += gridDim.y) {
    const CopyJob job = jobs[j];
    unsigned char *dst = static_cast<unsigned char *>(job.dst);
    const unsigned char *src = static_cast<const unsigned char *>(job.src);
    for (long long b = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
         b < job.bytes; b += static_cast<long long>(gridDim.x) * blockDim.x)
      dst[b] = src[b];
  }
}

}  // namespace multimix

#endif  // DALI_MULTIMIX_CSRC_MULTIMIX_KERNELS_CUH_
