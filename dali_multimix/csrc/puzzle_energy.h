// Puzzle Mix's mask energies of one sample (Kim et al. 2020, the original's mixup_graph /
// neigh_penalty), computed as dali_multimix/torch/puzzle.py:puzzle_energy_arrays computes them
// with torch on the CPU, operation by operation in the same float32 arithmetic and order, so
// that the energies, and so the labels of the cuts, are the same bit for bit (the tests compare
// them): average pools sum their window row by row from 0 and divide by its size; the mean over
// C <= 4 channels adds them in order and divides by C (torch's order for C <= 4); the float32
// terms become float64 only where the torch code converts them. The block saliency (its
// normalising sum is torch's vectorised reduction) and the label prior (Python floats and
// numpy's log) arrive computed. No DALI, no Python.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "graphcut_grid.h"

namespace multimix_graphcut {

// the channels whose mean the energies reproduce bit for bit (torch adds C > 4 in another order)
constexpr int kPuzzleMaxChannels = 4;

// torch's CPU avg_pool2d of `planes` planes (h, w) by kh x kw windows (no padding, stride = window):
// (planes, h / kh, w / kw). Each window summed row by row from 0, then divided by its size; rows
// of at least 8 windows are summed all at once (vectorised: each sum in the same order).
inline void AvgPoolPlanes(const float *x, int64_t planes, int h, int w, int kh, int kw,
                          float *out) {
  const int oh = h / kh, ow = w / kw;
  const float size = static_cast<float>(kh * kw);
  for (int64_t p = 0; p < planes; p++) {
    const float *plane = x + static_cast<size_t>(p) * h * w;
    for (int i = 0; i < oh; i++) {
      float *__restrict o = out + (static_cast<size_t>(p) * oh + i) * ow;
      const float *window_row = plane + static_cast<size_t>(i) * kh * w;
      if (ow >= 8) {
        std::fill(o, o + ow, 0.0f);
        for (int di = 0; di < kh; di++) {
          const float *__restrict row = window_row + static_cast<size_t>(di) * w;
          for (int dj = 0; dj < kw; dj++)
            for (int j = 0; j < ow; j++) o[j] += row[static_cast<size_t>(j) * kw + dj];
        }
        for (int j = 0; j < ow; j++) o[j] /= size;
        continue;
      }
      for (int j = 0; j < ow; j++) {
        const float *window = window_row + static_cast<size_t>(j) * kw;
        float sum = 0.0f;
        for (int di = 0; di < kh; di++)
          for (int dj = 0; dj < kw; dj++) sum += window[static_cast<size_t>(di) * w + dj];
        o[j] = sum / size;
      }
    }
  }
}

// The sizes and constants of one batch's energies.
struct PuzzleEnergyShape {
  int channels;   // C <= kPuzzleMaxChannels
  int pooled;     // P: cells per side of the pooled images (side / neigh)
  int block_num;  // n: blocks per side; P = n * k
  int labels;     // L
  int steps;      // K
  float scale;    // beta / n / 16 * gamma (the border term's weight), as torch rounds it
  float beta_n;   // beta / n / 16
};

// Scratch of PuzzleSampleEnergy, reused across the samples of a thread.
struct PuzzleEnergyScratch {
  std::vector<float> pen, cost;
  std::vector<double> unary, cost_v, cost_h;
  std::vector<int32_t> labels;
  GridScratch grid;
};

// The mean over C channels of |a - b|, the channels `plane` floats apart.
inline float ChannelMeanAbs(const float *a, const float *b, int channels, size_t plane) {
  float sum = std::fabs(a[0] - b[0]);
  for (int c = 1; c < channels; c++) sum += std::fabs(a[c * plane] - b[c * plane]);
  return sum / static_cast<float>(channels);
}

// The original's neigh_penalty of one (upper / left, lower / right) choice: mean |a - b| across
// the block borders, pools a, b (C, P, P): pen_v (n - 1, n) across horizontal borders (the last
// pooled row of a block against the first of the block below, averaged over the k cells of the
// border), pen_h (n, n - 1) across vertical ones.
inline void BorderPenalty(const float *a, const float *b, const PuzzleEnergyShape &s, float *pen_v,
                          float *pen_h) {
  const int n = s.block_num, P = s.pooled, k = P / n;
  const size_t plane = static_cast<size_t>(P) * P;
  for (int i = 0; i + 1 < n; i++) {
    const int r = i * k + k - 1;
    for (int j = 0; j < n; j++) {
      float sum = 0.0f;
      for (int col = j * k; col < j * k + k; col++)
        sum += ChannelMeanAbs(a + r * P + col, b + (r + 1) * P + col, s.channels, plane);
      pen_v[i * n + j] = sum / static_cast<float>(k);
    }
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j + 1 < n; j++) {
      const int col = j * k + k - 1;
      float sum = 0.0f;
      for (int r = i * k; r < i * k + k; r++)
        sum += ChannelMeanAbs(a + r * P + col, b + r * P + col + 1, s.channels, plane);
      pen_h[i * (n - 1) + j] = sum / static_cast<float>(k);
    }
}

// The energies of one sample: own / partner pools (C, P, P), own / partner block saliency (n, n)
// (normalised), prior (K, L) and the label grid t (L) in float64. Writes unary (K, n, n, L),
// cost_v (n - 1, n), cost_h (n, n - 1) in float64, puzzle_energy_arrays's numbers.
inline void PuzzleSampleEnergy(const float *own_pool, const float *partner_pool,
                               const float *s_own, const float *s_partner, const double *prior,
                               const double *t_grid, const PuzzleEnergyShape &s, double *unary,
                               double *cost_v, double *cost_h, PuzzleEnergyScratch &scratch) {
  const int n = s.block_num, L = s.labels, cells = n * n, edges = (n - 1) * n;
  // pen[q][axis]: q = 2 a + b, a the choice of the upper / left block (0 own, 1 partner), b of
  // the lower / right; both axes hold (n - 1) n values
  scratch.pen.resize(static_cast<size_t>(8) * edges);
  float *pen = scratch.pen.data();
  const float *pools[2] = {own_pool, partner_pool};
  for (int q = 0; q < 4; q++)
    BorderPenalty(pools[q >> 1], pools[q & 1], s, pen + (2 * q) * edges, pen + (2 * q + 1) * edges);
  scratch.cost.resize(static_cast<size_t>(2) * cells);
  float *c_own = scratch.cost.data(), *c_partner = c_own + cells;  // showing one hides the other
  std::copy(s_partner, s_partner + cells, c_own);
  std::copy(s_own, s_own + cells, c_partner);
  for (int axis = 0; axis < 2; axis++) {
    // edge e joins cell `first` (upper / left) and first + step (lower / right), row by row
    const int rows = axis == 0 ? n - 1 : n, cols = axis == 0 ? n : n - 1, step = axis == 0 ? n : 1;
    auto for_edges = [&](auto &&f) {
      for (int i = 0, e = 0; i < rows; i++)
        for (int j = 0; j < cols; j++, e++) f(e, i * n + j);
    };
    const float *t00 = pen + (2 * 0 + axis) * edges, *t01 = pen + (2 * 1 + axis) * edges,
                *t10 = pen + (2 * 2 + axis) * edges, *t11 = pen + (2 * 3 + axis) * edges;
    auto t = [&](const float *pen_ab, int e) { return s.scale * pen_ab[e]; };
    // torch adds each of the four terms to its whole slice in turn
    for_edges([&](int e, int c) { c_own[c] += (t(t00, e) + t(t01, e)) / 2.0f; });
    for_edges([&](int e, int c) { c_partner[c] += (t(t10, e) + t(t11, e)) / 2.0f; });
    for_edges([&](int e, int c) { c_own[c + step] += (t(t00, e) + t(t10, e)) / 2.0f; });
    for_edges([&](int e, int c) { c_partner[c + step] += (t(t01, e) + t(t11, e)) / 2.0f; });
    double *w = axis == 0 ? cost_v : cost_h;
    for (int e = 0; e < edges; e++) {
      const float v = (t(t01, e) + t(t10, e) - t(t00, e) - t(t11, e)) / 2.0f + s.beta_n;
      w[e] = static_cast<double>(std::max(v, 0.0f));
    }
  }
  // the saliency term of every (cell, label) in step 0's slice, then each step's prior added to it
  for (int p = 0; p < cells; p++) {
    const double own = c_own[p], partner = c_partner[p];
    for (int l = 0; l < L; l++) unary[p * L + l] = (1.0 - t_grid[l]) * own + t_grid[l] * partner;
  }
  const int slice = cells * L;
  for (int k = s.steps - 1; k >= 0; k--) {  // step 0 last: its slice holds the saliency terms
    double *u = unary + static_cast<size_t>(k) * slice;
    for (int p = 0; p < cells; p++)
      for (int l = 0; l < L; l++) u[p * L + l] = unary[p * L + l] + prior[k * L + l];
  }
}

}  // namespace multimix_graphcut
