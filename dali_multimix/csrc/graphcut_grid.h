// Puzzle Mix's multi-label grid energy as one s-t cut, built exactly as
// dali_multimix/torch/graphcut.py:solve_exact builds it for PyMaxflow (same graph, same arithmetic
// order): L - 1 ordered bits per block (bit b of block p is 1 iff l_p >= b), linear bit costs from
// the unary differences and the convex pairwise term, an infinite chain arc per consecutive bit
// pair, and 2 w arcs between the bits of neighbouring blocks. No DALI, no Python.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "graphcut_maxflow.h"

namespace multimix_graphcut {

// One graph: unary (n, m, L), cost_v (n-1, m), cost_h (n, m-1), all C-contiguous float64;
// writes the labels (n, m) of minimum energy. `linear` and `flow` are reusable scratch (`flow`
// keeps the arcs of the last grid shape).
inline void SolveGrid(const double *unary, const double *cost_v, const double *cost_h, int n, int m,
                      int L, int32_t *labels, std::vector<double> &linear, MaxFlow &flow) {
  const int bits = L - 1, nodes = n * m;
  const double w_scale = 1.0 / static_cast<double>((L - 1) * (L - 1));
  linear.resize(static_cast<size_t>(nodes) * bits);
  for (int p = 0; p < nodes; p++)
    for (int b = 0; b < bits; b++)
      linear[p * bits + b] = unary[p * L + b + 1] - unary[p * L + b];
  const int n_v = (n - 1) * m, n_h = n * (m - 1), edges = n_v + n_h;
  // edge e: vertical ones first (p = (i, j), q = (i + 1, j)), then horizontal (q = (i, j + 1))
  auto edge = [&](int e, int &p, int &q, double &w) {
    if (e < n_v) {
      p = e; q = e + m; w = cost_v[e] * w_scale;
    } else {
      int k = e - n_v, i = k / (m - 1), j = k % (m - 1);
      p = i * m + j; q = p + 1; w = cost_h[k] * w_scale;
    }
  };
  // as np.add.at: all p contributions in edge order, then all q contributions
  double abs_w = 0.0;
  for (int e = 0; e < edges; e++) {
    int p, q; double w;
    edge(e, p, q, w);
    for (int b = 0; b < bits; b++)
      linear[p * bits + b] += w * ((2.0 * (b + 1) - 1.0) - 2.0 * bits);
    abs_w += std::fabs(w);
  }
  for (int e = 0; e < edges; e++) {
    int p, q; double w;
    edge(e, p, q, w);
    for (int b = 0; b < bits; b++)
      linear[q * bits + b] += w * (2.0 * (b + 1) - 1.0);
  }
  double abs_lin = 0.0;
  for (double v : linear) abs_lin += std::fabs(v);
  // PyMaxflow's (numpy's pairwise) sums differ in order; any value above every finite cut will do
  const double infinite = 1.0 + abs_lin + 4.0 * abs_w * bits * bits;
  // the arcs of this grid shape, once per shape: the chain pairs, then bits^2 pairs per edge
  if (flow.shape[0] != n || flow.shape[1] != m || flow.shape[2] != L) {
    flow.BeginTopology(nodes * bits);
    for (int p = 0; p < nodes; p++)
      for (int b = 0; b + 1 < bits; b++) flow.AddArcPair(p * bits + b, p * bits + b + 1);
    for (int e = 0; e < edges; e++) {
      int p, q; double w;
      edge(e, p, q, w);
      for (int b = 0; b < bits; b++)
        for (int c = 0; c < bits; c++) flow.AddArcPair(q * bits + c, p * bits + b);
    }
    flow.FinishTopology();
    flow.shape[0] = n; flow.shape[1] = m; flow.shape[2] = L;
  }
  flow.Reset();
  for (int v = 0; v < nodes * bits; v++) {
    double c = linear[v];
    flow.AddTerminal(v, c > 0 ? c : 0.0, c < 0 ? -c : 0.0);
  }
  const int chain = nodes * (bits - 1);
  for (int pair = 0; pair < chain; pair++)  // x_b >= x_(b+1)
    flow.SetArcPair(pair, infinite, 0.0);
  for (int e = 0; e < edges; e++) {  // [x_pb = 1][x_qc = 0]: arc q_c -> p_b of 2 w
    int p, q; double w;
    edge(e, p, q, w);
    if (!(w > 0)) continue;  // no arc: the pairs keep capacity 0
    for (int bc = 0; bc < bits * bits; bc++) flow.SetArcPair(chain + e * bits * bits + bc, 2.0 * w, 0.0);
  }
  flow.Solve();
  for (int p = 0; p < nodes; p++) {
    int l = 0;
    for (int b = 0; b < bits; b++) l += flow.InSink(p * bits + b);
    labels[p] = l;
  }
}

}  // namespace multimix_graphcut
