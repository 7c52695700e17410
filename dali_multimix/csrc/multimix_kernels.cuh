// CUDA kernels of multi-mix. Self-contained (no DALI): the operator (multimix.cu) launches them,
// and the GPU test compiles this file with NVRTC (cupy.RawModule) on machines without DALI.
// Compile with --fmad=false so that the per-element math matches the CPU bit for bit.
#ifndef DALI_MULTIMIX_CSRC_MULTIMIX_KERNELS_CUH_
#define DALI_MULTIMIX_CSRC_MULTIMIX_KERNELS_CUH_

#include "multimix_math.h"

namespace multimix {

/// Bytes that one thread of MixKernel loads and stores at once (one 128-bit access).
constexpr int kVectorBytes = 16;

/// Elements of T in one vector: the kernel's unit of work (16 uint8, 8 half, 4 float).
template <typename T>
struct VectorWidth {
  static constexpr int value = kVectorBytes / static_cast<int>(sizeof(T));
};

template <typename T>
struct alignas(kVectorBytes) Vector {
  T v[VectorWidth<T>::value];
};

/// Output vector `v` (elements v*N .. v*N+N-1) of a job whose three images are 16-byte aligned:
/// one 128-bit load of each input, one 128-bit store, the same per-element math as mix_element.
/// The spatial position is computed once per vector (32-bit when the image allows) and stepped.
template <typename T>
__device__ __forceinline__ void mix_vector(const MixJob<T> &job, long long v) {
  constexpr int N = VectorWidth<T>::value;
  const Vector<T> a = reinterpret_cast<const Vector<T> *>(job.own)[v];
  const Vector<T> b = reinterpret_cast<const Vector<T> *>(job.partner)[v];
  Vector<T> r;
  if (job.mode == kMixup) {
#pragma unroll
    for (int i = 0; i < N; i++) r.v[i] = Blend<T>::apply(a.v[i], b.v[i], job.lam);
  } else {
    int y, x, c;
    element_yxc(v * N, job.h, job.w, job.inner, &y, &x, &c);
#pragma unroll
    for (int i = 0; i < N; i++) {
      r.v[i] = takes_partner(job, y, x) ? b.v[i] : a.v[i];
      next_element(job.h, job.w, job.inner, &y, &x, &c);
    }
  }
  reinterpret_cast<Vector<T> *>(job.out)[v] = r;
}

/// One thread block row per job (blockIdx.y), a grid-stride loop over the job's 16-byte vectors
/// when its output and both inputs are 16-byte aligned, then element by element over the rest
/// (the tail, or the whole image when it is not aligned).
template <typename T>
__global__ void MixKernel(const MixJob<T> *jobs, int njobs) {
  constexpr int N = VectorWidth<T>::value;
  for (int j = blockIdx.y; j < njobs; j += gridDim.y) {
    const MixJob<T> job = jobs[j];
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    const long long first = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
    const unsigned long long addresses = reinterpret_cast<unsigned long long>(job.out) |
                                         reinterpret_cast<unsigned long long>(job.own) |
                                         reinterpret_cast<unsigned long long>(job.partner);
    const long long vectors = addresses % kVectorBytes == 0 ? job.volume / N : 0;
    for (long long v = first; v < vectors; v += stride) mix_vector(job, v);
    for (long long e = vectors * N + first; e < job.volume; e += stride)
      job.out[e] = mix_element(job, e);
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
