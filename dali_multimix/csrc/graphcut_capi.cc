// C ABI of the native Puzzle Mix graph cuts and block transport (loaded with ctypes by
// dali_multimix/torch/graphcut.py; ctypes releases the GIL for the call): all graphs (grids) of a
// batch in one call, spread over std::threads. Also a streaming-write bandwidth probe for the
// benchmarks' limits (bench/), and the operator's FMix noise (multimix_sampling.h,
// multimix_philox.h: the DALI-free headers the operator compiles; its map in both builds, its
// normals) for the tests to check. Built as its own small shared library (CMakeLists.txt:
// multimix_graphcut); it needs neither DALI nor Python.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>
#define MULTIMIX_HAVE_SSE2 1
#endif

#include "graphcut_grid.h"
#include "multimix_philox.h"
#include "multimix_sampling.h"
#include "puzzle_energy.h"
#include "puzzle_transport.h"

namespace {

// Whether no value is inf or nan (exponent bits all ones), without a branch per value.
bool AllFinite(const double *x, int64_t n) {
  uint64_t all_ones = 0;
  for (int64_t i = 0; i < n; i++) {
    uint64_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    all_ones |= static_cast<uint64_t>((bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
  }
  return all_ones == 0;
}

int Threads(int requested, int64_t work) {
  int t = requested > 0 ? requested : static_cast<int>(std::thread::hardware_concurrency());
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(std::max(t, 1), work)));
}

template <typename F>
void Parallel(int threads, F &&body) {
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; t++) pool.emplace_back(body, t);
  body(0);
  for (auto &th : pool) th.join();
}

// GOMP_parallel of the OpenMP runtime the calling process runs (torch's intra-op threads), or
// null: std::threads. Its team is awake right after torch's parallel ops, and new threads would
// share the cores with it spinning (measured: 500 cuts after a torch op 16-17 ms, on its team
// 12.5 ms, 2 cores).
using GompParallel = void (*)(void (*)(void *), void *, unsigned, unsigned);
std::atomic<GompParallel> g_gomp_parallel{nullptr};

// Runs worker() on `threads` threads (the OpenMP team when one is set: it may have fewer
// members, so worker must share the work out itself).
template <typename F>
void RunTeam(int threads, F &&worker) {
  const GompParallel gomp = g_gomp_parallel.load();
  if (gomp && threads > 1) {
    using W = std::remove_reference_t<F>;
    gomp([](void *w) { (*static_cast<W *>(w))(); }, &worker, static_cast<unsigned>(threads), 0);
    return;
  }
  Parallel(threads, [&](int) { worker(); });
}

// Calls body(i, scratch) for every item i in [0, items), the items handed out one at a time to
// `threads` threads, each with a Scratch of its own reused across its items.
template <typename Scratch, typename F>
void ForEachItem(int64_t items, int32_t threads, F &&body) {
  std::atomic<int64_t> next{0};
  RunTeam(Threads(threads, items), [&] {
    Scratch scratch;
    for (int64_t i; (i = next.fetch_add(1)) < items;) body(i, scratch);
  });
}

// the grid sizes the solver takes (graphcut.py _check_energies says the same to the user)
bool SizesOk(int32_t n, int32_t m, int32_t L) {
  return n >= 1 && m >= 1 && L >= 2 && n <= 4096 && m <= 4096 && L <= 256 &&
         static_cast<int64_t>(n) * m * (L - 1) <= (1 << 24);
}

// the image sizes the FMix test exports take
bool FmixSizeOk(int32_t h, int32_t w) { return h >= 1 && w >= 1 && h <= 65535 && w <= 65535; }

}  // namespace

extern "C" {

// The version of this ABI (the Python side refuses another).
int mm_graphcut_abi_version(void) { return 7; }

// The batched calls below run their threads as a team of the OpenMP runtime whose
// GOMP_parallel this is (graphcut.py passes torch's), or on std::threads (null, the default).
void mm_use_openmp_team(void *gomp_parallel) {
  g_gomp_parallel.store(reinterpret_cast<GompParallel>(gomp_parallel));
}

// graphs grids of n x m blocks, L labels: unary (graphs, n, m, L), cost_v (graphs, n-1, m),
// cost_h (graphs, n, m-1), C-contiguous float64, finite, weights >= 0 (the caller checks);
// labels (graphs, n, m) int32 out. threads <= 0: one per hardware thread.
// Returns 0, or -1 for sizes out of range (nothing written).
int mm_graphcut_solve(const double *unary, const double *cost_v, const double *cost_h,
                      int64_t graphs, int32_t n, int32_t m, int32_t L, int32_t threads,
                      int32_t *labels) {
  if (graphs < 0 || !SizesOk(n, m, L)) return -1;
  if (graphs == 0) return 0;
  const int64_t su = static_cast<int64_t>(n) * m * L, sv = static_cast<int64_t>(n - 1) * m,
                sh = static_cast<int64_t>(n) * (m - 1), sl = static_cast<int64_t>(n) * m;
  ForEachItem<multimix_graphcut::GridScratch>(graphs, threads, [&](int64_t g, auto &scratch) {
    multimix_graphcut::SolveGrid(unary + g * su, cost_v + g * sv, cost_h + g * sh, n, m, L,
                                 labels + g * sl, scratch);
  });
  return 0;
}

// `groups` groups of `steps` graphs that share their pairwise weights (Puzzle Mix: the K steps of
// a sample): unary (groups, steps, n, m, L), cost_v (groups, n-1, m), cost_h (groups, n, m-1),
// as mm_graphcut_solve's; labels (groups, steps, n, m) out, the same as mm_graphcut_solve gives
// each graph (cut nested where the steps' costs are ordered: graphcut_grid.h SolveSteps).
// Returns 0, or -1 for sizes out of range (nothing written).
int mm_graphcut_solve_steps(const double *unary, const double *cost_v, const double *cost_h,
                            int64_t groups, int32_t steps, int32_t n, int32_t m, int32_t L,
                            int32_t threads, int32_t *labels) {
  if (groups < 0 || steps < 1 || steps > 4096 || !SizesOk(n, m, L)) return -1;
  if (groups == 0) return 0;
  const int64_t su = static_cast<int64_t>(steps) * n * m * L, sv = static_cast<int64_t>(n - 1) * m,
                sh = static_cast<int64_t>(n) * (m - 1), sl = static_cast<int64_t>(steps) * n * m;
  ForEachItem<multimix_graphcut::GridScratch>(groups, threads, [&](int64_t g, auto &scratch) {
    multimix_graphcut::SolveSteps(unary + g * su, cost_v + g * sv, cost_h + g * sh, steps, n, m,
                                  L, labels + g * sl, scratch);
  });
  return 0;
}

// Puzzle Mix's masks of a batch from its inputs (puzzle_energy.h: the energies of
// dali_multimix/torch/puzzle.py:puzzle_energy_arrays, bit for bit; then SolveSteps on each
// sample's K steps). s_own (batch, n, n) float32: the normalised block saliency; pixels (batch,
// C, side, side) float32 on the [0, 1] scale; partners (batch) int64; prior (batch, steps, L) and
// t_grid (L) float64; neigh: the pooled neighbourhood (divides side / n); scale, beta_n: the
// border term's weights as float32. Writes the labels (batch, steps, n, n) int32 when `labels` is
// not null, the own image's weights 1 - l / (L - 1) of those labels (batch, steps, n, n) float32
// (puzzle.py:own_weights's numbers) when `weights` is not null, and the energies (unary (batch,
// steps, n, n, L), cost_v (batch, n-1, n), cost_h (batch, n, n-1) float64) when `unary` is not
// null (cost_v, cost_h then too). Returns 0; -1 for sizes out of range or a partner outside
// [0, batch) (nothing written); -2 when a sample's energies are not finite (*bad_sample: the
// first such sample; no labels or weights for it).
int mm_puzzle_masks(const float *s_own, const float *pixels, const int64_t *partners,
                    const double *prior, const double *t_grid, int64_t batch, int32_t steps,
                    int32_t channels, int32_t side, int32_t block_num, int32_t neigh, int32_t L,
                    float scale, float beta_n, int32_t threads, int32_t *labels, float *weights,
                    double *unary, double *cost_v, double *cost_h, int64_t *bad_sample) {
  if (batch < 0 || steps < 1 || steps > 4096 || channels < 1 ||
      channels > multimix_graphcut::kPuzzleMaxChannels || block_num < 1 || neigh < 1 ||
      side % block_num != 0 || (side / block_num) % neigh != 0 || side > 65536 ||
      !SizesOk(block_num, block_num, L))
    return -1;
  if (unary && (!cost_v || !cost_h)) return -1;
  for (int64_t i = 0; i < batch; i++)
    if (partners[i] < 0 || partners[i] >= batch) return -1;
  if (batch == 0) return 0;
  const multimix_graphcut::PuzzleEnergyShape shape{channels, side / neigh, block_num, L, steps,
                                                  scale, beta_n};
  const int n = block_num, P = shape.pooled;
  const int64_t pool_size = static_cast<int64_t>(channels) * P * P, image = pool_size * neigh * neigh;
  std::vector<float> pools(static_cast<size_t>(batch * pool_size));
  ForEachItem<int>(batch, threads, [&](int64_t i, int &) {
    multimix_graphcut::AvgPoolPlanes(pixels + i * image, channels, side, side, neigh, neigh,
                                     &pools[i * pool_size]);
  });
  const int64_t cells = static_cast<int64_t>(n) * n, su = steps * cells * L, sv = (n - 1) * n;
  std::atomic<int64_t> first_bad{batch};
  ForEachItem<multimix_graphcut::PuzzleEnergyScratch>(batch, threads, [&](int64_t i, auto &s) {
    double *u = unary ? unary + i * su : nullptr, *wv = unary ? cost_v + i * sv : nullptr,
           *wh = unary ? cost_h + i * sv : nullptr;
    if (!u) {
      s.unary.resize(su);
      s.cost_v.resize(sv);
      s.cost_h.resize(sv);
      u = s.unary.data(), wv = s.cost_v.data(), wh = s.cost_h.data();
    }
    const int64_t j = partners[i];
    multimix_graphcut::PuzzleSampleEnergy(&pools[i * pool_size], &pools[j * pool_size],
                                          s_own + i * cells, s_own + j * cells, prior + i * steps * L,
                                          t_grid, shape, u, wv, wh, s);
    if (!AllFinite(u, su) || !AllFinite(wv, sv) || !AllFinite(wh, sv)) {
      for (int64_t b = first_bad.load(); i < b && !first_bad.compare_exchange_weak(b, i);) {}
      return;
    }
    if (!labels && !weights) return;
    int32_t *own_labels = labels ? labels + i * steps * cells : nullptr;
    if (!own_labels) {
      s.labels.resize(steps * cells);
      own_labels = s.labels.data();
    }
    multimix_graphcut::SolveSteps(u, wv, wh, steps, n, n, L, own_labels, s.grid);
    if (weights) {  // while the labels are in cache: float32, as numpy computes them
      const float top = static_cast<float>(L - 1);
      float *w = weights + i * steps * cells;
      for (int64_t c = 0; c < steps * cells; c++)
        w[c] = 1.0f - static_cast<float>(own_labels[c]) / top;
    }
  });
  if (first_bad.load() < batch) {
    if (bad_sample) *bad_sample = first_bad.load();
    return -2;
  }
  return 0;
}

// The binomial pmf of Puzzle Mix's label prior as the original computes it in Python floats:
// out (count, L) [l] = combs[l] * lambdas[i] ** l * (1 - lambdas[i]) ** (L - 1 - l), with libm's
// pow, which Python's ** calls (combs: float(comb(L - 1, l)), as Python converts the int).
void mm_binomial_pmf(const double *lambdas, int64_t count, int32_t L, const double *combs,
                     double *out) {
  for (int64_t i = 0; i < count; i++) {
    const double lam = lambdas[i];
    for (int l = 0; l < L; l++)
      out[i * L + l] = combs[l] * std::pow(lam, static_cast<double>(l)) *
                       std::pow(1 - lam, static_cast<double>(L - 1 - l));
  }
}

// torch's CPU avg_pool2d of `planes` planes (h, w) float32 by kh x kw windows (puzzle_energy.h
// AvgPoolPlanes, the same numbers bit for bit): out (planes, h / kh, w / kw). Returns 0, or -1
// for sizes out of range (nothing written).
int mm_avg_pool(const float *x, int64_t planes, int32_t h, int32_t w, int32_t kh, int32_t kw,
                float *out) {
  if (planes < 0 || h < 1 || w < 1 || kh < 1 || kw < 1 || kh > h || kw > w || h > 65536 ||
      w > 65536)
    return -1;
  multimix_graphcut::AvgPoolPlanes(x, planes, h, w, kh, kw, out);
  return 0;
}

// Puzzle Mix's block transport of `grids` n x n grids: mask (grids, n, n) float32 (> 0: the cell
// shows the image), saliency (grids, n, n) float32 cell saliency, eps the distance weight; writes
// source (grids, n * n) int64: the cell moved to each destination, n * n for none (see
// puzzle_transport.h). threads <= 0: one per hardware thread. Returns 0, or -1 for n out of
// range (nothing written).
int mm_puzzle_transport(const float *mask, const float *saliency, int64_t grids, int32_t n,
                        float eps, int32_t threads, int64_t *source) {
  if (grids < 0 || n < 1 || n > multimix_graphcut::kMaxTransportSide) return -1;
  if (grids == 0) return 0;
  const int64_t cells = static_cast<int64_t>(n) * n;
  ForEachItem<multimix_graphcut::TransportScratch>(grids, threads, [&](int64_t g, auto &scratch) {
    multimix_graphcut::TransportGrid(mask + g * cells, saliency + g * cells, n, eps,
                                     source + g * cells, scratch);
  });
  return 0;
}

// The memory limit of an operator that reads `src_bytes` and writes `dst_bytes`: every thread
// reads its share of src (16-byte loads, folded into a checksum so nothing is elided) and writes
// its share of dst with non-temporal (streaming) 16-byte stores of data that is never zero: a
// machine may write zeros faster than other data (the 2-core VM of the CPU tables does, 2.2x:
// 385 MB in 6.6 vs 14.6 ms), and an operator writes images, not zeros. Returns the checksum.
uint64_t mm_stream_read_write(const void *src, int64_t src_bytes, void *dst, int64_t dst_bytes,
                              int32_t threads) {
  const int T = Threads(threads, 1 << 16);
  std::vector<uint64_t> sums(T, 0);
  Parallel(T, [&](int t) {
    auto share = [&](int64_t total, int64_t &lo, int64_t &hi) {
      int64_t chunk = (total / T) & ~int64_t(63);
      lo = chunk * t;
      hi = t == T - 1 ? total : lo + chunk;
    };
    int64_t lo, hi;
    share(src_bytes, lo, hi);
    const char *s = static_cast<const char *>(src);
    uint64_t acc = 0;
#ifdef MULTIMIX_HAVE_SSE2
    __m128i v = _mm_setzero_si128();
    int64_t i = lo;
    for (; i + 64 <= hi; i += 64) {
      v = _mm_xor_si128(v, _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i)));
      v = _mm_xor_si128(v, _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i + 16)));
      v = _mm_xor_si128(v, _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i + 32)));
      v = _mm_xor_si128(v, _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i + 48)));
    }
    uint64_t lanes[2];
    std::memcpy(lanes, &v, 16);
    acc = lanes[0] ^ lanes[1];
    for (; i < hi; i++) acc += static_cast<unsigned char>(s[i]);
#else
    for (int64_t i = lo; i < hi; i++) acc += static_cast<unsigned char>(s[i]);
#endif
    share(dst_bytes, lo, hi);
    char *d = static_cast<char *>(dst);
#ifdef MULTIMIX_HAVE_SSE2
    int64_t j = lo;
    const uint64_t data = acc | 0x0101010101010101ull;  // every byte non-zero
    for (; j < hi && (reinterpret_cast<uintptr_t>(d + j) & 15); j++) d[j] = static_cast<char>(data);
    const __m128i fill = _mm_set1_epi64x(static_cast<long long>(data));
    for (; j + 64 <= hi; j += 64) {
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + j), fill);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + j + 16), fill);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + j + 32), fill);
      _mm_stream_si128(reinterpret_cast<__m128i *>(d + j + 48), fill);
    }
    for (; j < hi; j++) d[j] = static_cast<char>(data);
    _mm_sfence();
#else
    std::memset(d + lo, static_cast<int>(acc & 0xff) | 1, static_cast<size_t>(hi - lo));
#endif
    sums[t] = acc;
  });
  uint64_t total = 0;
  for (uint64_t s : sums) total ^= s;
  return total;
}

// n words of the Philox4x32-10 stream that the operator's FMix noise draws from (multimix_philox.h),
// from the state (key, counter ctr_hi:ctr_lo, phase 0..3) of DALI's Philox4x32_10.
void mm_philox_words(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, int32_t phase, int64_t n,
                     uint32_t *out) {
  multimix::PhiloxStream rng(key, ctr_lo, ctr_hi, phase);
  for (int64_t i = 0; i < n; i++) out[i] = rng.next();
}

// The operator's FMix noise of an (h, w) image drawn from that stream, decay power `decay`:
// writes the kept frequency rows ky (nky int32, ascending), the spectrum on them (nky, nkx, 2)
// float64 (re, im) and the score map (h, w) float32. Returns nky * 65536 + nkx; with kys == NULL
// it only returns that. Returns -1 for h, w outside [1, 65535] (nothing written).
int32_t mm_fmix_noise(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, int32_t phase, int32_t h,
                      int32_t w, double decay, int32_t *kys, double *spectrum, float *map) {
  if (!FmixSizeOk(h, w)) return -1;
  const multimix::FmixBasis basis(h, w, decay);
  if (kys) {
    std::copy(basis.kys.begin(), basis.kys.end(), kys);
    multimix::PhiloxStream rng(key, ctr_lo, ctr_hi, phase);
    multimix::PhiloxStream same = rng;
    multimix::fmix_spectrum(rng, basis, spectrum);
    std::vector<double> scratch;
    multimix::fmix_score_map(same, basis, map, scratch);
  }
  return basis.nky * 65536 + basis.nkx;
}

// n standard normal variates of the FMix spectrum's generator (the ziggurat) from that stream.
void mm_standard_normals(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, int32_t phase, int64_t n,
                         double *out) {
  multimix::PhiloxStream rng(key, ctr_lo, ctr_hi, phase);
  const multimix::NormalZiggurat &z = multimix::NormalZiggurat::tables();
  for (int64_t i = 0; i < n; i++) out[i] = multimix::standard_normal_ziggurat(rng, z);
}

// The same map and its (minimum, maximum) from the portable build of the header (avx2 = 0) or
// the build with AVX2, as the operator compiles it (avx2 = 1): the tests compare the two bit
// for bit. Returns 1 (map written), 0 (avx2 = 1 on a CPU without AVX2: nothing written) or -1
// (bad sizes).
int32_t mm_fmix_map(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, int32_t phase, int32_t h,
                    int32_t w, double decay, int32_t avx2, float *map, float *range) {
  if (!FmixSizeOk(h, w)) return -1;
  const multimix::FmixBasis basis(h, w, decay);
  multimix::PhiloxStream rng(key, ctr_lo, ctr_hi, phase);
  std::vector<double> scratch;
  if (!avx2) {
    multimix::fmix_score_map(rng, basis, map, scratch, range);
    return 1;
  }
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) {
    multimix::fmix_score_map_avx2(rng, basis, map, scratch, range);
    return 1;
  }
#endif
  return 0;
}

}  // extern "C"
