// Puzzle Mix's multi-label grid energy as one s-t cut, built exactly as
// dali_multimix/torch/graphcut.py:solve_exact builds it for PyMaxflow (same graph, same arithmetic
// order): L - 1 ordered bits per block (bit b of block p is 1 iff l_p >= b), linear bit costs from
// the unary differences and the convex pairwise term, an infinite chain arc per consecutive bit
// pair, and 2 w arcs between the bits of neighbouring blocks. No DALI, no Python.
//
// SolveSteps solves the K graphs of one Puzzle Mix sample (the same pairwise weights, K unaries)
// with nested cuts: where the linear costs of two steps are ordered bit by bit, the minimal
// sink set of the cheaper one contains that of the other (Gallo, Grigoriadis, Tarjan, "A fast
// parametric maximum flow algorithm", SIAM J. Comput. 1989; below: the proof for this energy), so
// each step after the first is cut on the bits its neighbours leave open, with the settled bits
// folded into terminal capacities. Same labels as SolveGrid step by step.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "graphcut_maxflow.h"

namespace multimix_graphcut {

// Calls f(p, q, e) for every 4-neighbour edge e of an n x m grid in the order solve_exact lists
// them: the (n - 1) m vertical ones first (p = (i, j), q = (i + 1, j)), then the horizontal ones
// (q = (i, j + 1)), row by row.
template <typename F>
inline void ForEachEdge(int n, int m, F &&f) {
  const int n_v = (n - 1) * m;
  for (int e = 0; e < n_v; e++) f(e, e + m, e);
  for (int i = 0, e = n_v; i < n; i++)
    for (int j = 0; j + 1 < m; j++, e++) f(i * m + j, i * m + j + 1, e);
}

// The pairwise weight of edge e: its cost / (L - 1)^2.
inline double EdgeWeight(const double *cost_v, const double *cost_h, int n, int m, int L, int e) {
  const int n_v = (n - 1) * m;
  return (e < n_v ? cost_v[e] : cost_h[e - n_v]) * (1.0 / static_cast<double>((L - 1) * (L - 1)));
}

// The linear cost of every bit (nodes x (L - 1): the cost of the bit being 1, i.e. of its node
// on the sink side) into `linear`; returns the capacity that stands for infinity (above every
// finite cut).
inline double LinearCosts(const double *unary, const double *cost_v, const double *cost_h, int n,
                          int m, int L, double *linear) {
  const int bits = L - 1, nodes = n * m;
  for (int p = 0; p < nodes; p++)
    for (int b = 0; b < bits; b++) linear[p * bits + b] = unary[p * L + b + 1] - unary[p * L + b];
  // as np.add.at: all p contributions in edge order, then all q contributions
  double abs_w = 0.0;
  ForEachEdge(n, m, [&](int p, int, int e) {
    const double w = EdgeWeight(cost_v, cost_h, n, m, L, e);
    for (int b = 0; b < bits; b++) linear[p * bits + b] += w * ((2.0 * (b + 1) - 1.0) - 2.0 * bits);
    abs_w += std::fabs(w);
  });
  ForEachEdge(n, m, [&](int, int q, int e) {
    const double w = EdgeWeight(cost_v, cost_h, n, m, L, e);
    for (int b = 0; b < bits; b++) linear[q * bits + b] += w * (2.0 * (b + 1) - 1.0);
  });
  double abs_lin = 0.0;
  for (int v = 0; v < nodes * bits; v++) abs_lin += std::fabs(linear[v]);
  // PyMaxflow's (numpy's pairwise) sums differ in order; any value above every finite cut will do
  return 1.0 + abs_lin + 4.0 * abs_w * bits * bits;
}

// Calls f(u, v, e) for every arc pair u -> v of the bit graph of an n x m grid with L labels, in
// the order of its pairs in the topology: the chain pairs p_b -> p_(b+1) (e = -1), then the
// bits^2 pairs q_c -> p_b of each edge e.
template <typename F>
inline void ForEachArcPair(int n, int m, int L, F &&f) {
  const int bits = L - 1, nodes = n * m;
  for (int p = 0; p < nodes; p++)
    for (int b = 0; b + 1 < bits; b++) f(p * bits + b, p * bits + b + 1, -1);
  ForEachEdge(n, m, [&](int p, int q, int e) {
    for (int b = 0; b < bits; b++)
      for (int c = 0; c < bits; c++) f(q * bits + c, p * bits + b, e);
  });
}

// Lays out the arcs of an n x m grid with L labels in `flow`, once per shape.
inline void EnsureTopology(int n, int m, int L, MaxFlow &flow) {
  if (flow.shape[0] == n && flow.shape[1] == m && flow.shape[2] == L) return;
  flow.BeginTopology(n * m * (L - 1));
  ForEachArcPair(n, m, L, [&](int u, int v, int) { flow.AddArcPair(u, v); });
  flow.FinishTopology();
  flow.shape[0] = n; flow.shape[1] = m; flow.shape[2] = L;
}

// One cut of the bit graph: `linear` and `infinite` from LinearCosts. fixed (nodes x bits, or
// null): 1 for a bit known to be 1 (sink side), -1 known 0 (source side), 0 open; the arcs
// between an open and a settled bit become terminal capacities of the open one (an arc u -> v
// is cut iff u is on the source side and v on the sink side). Writes in_sink (nodes x bits).
inline void CutBits(const double *linear, double infinite, const double *cost_v,
                    const double *cost_h, int n, int m, int L, const int8_t *fixed,
                    uint8_t *in_sink, MaxFlow &flow) {
  const int bits = L - 1, nodes = n * m;
  EnsureTopology(n, m, L, flow);
  flow.Reset();
  for (int v = 0; v < nodes * bits; v++) {
    if (fixed && fixed[v]) continue;
    double c = linear[v];
    flow.AddTerminal(v, c > 0 ? c : 0.0, c < 0 ? -c : 0.0);
  }
  // the arc u -> v of capacity cap, pair `pair`
  auto arc = [&](int pair, int u, int v, double cap) {
    const int fu = fixed ? fixed[u] : 0, fv = fixed ? fixed[v] : 0;
    if (!fu && !fv) flow.SetArcPair(pair, cap, 0.0);
    else if (!fu && fv > 0) flow.AddTerminal(u, 0.0, cap);   // cut iff u is on the source side
    else if (fu < 0 && !fv) flow.AddTerminal(v, cap, 0.0);   // cut iff v is on the sink side
  };
  // x_b >= x_(b+1): the chain arcs are infinite; [x_pb = 1][x_qc = 0]: arc q_c -> p_b of 2 w (no
  // arc where w is 0: the pair keeps capacity 0)
  int pair = 0;
  ForEachArcPair(n, m, L, [&](int u, int v, int e) {
    const double cap = e < 0 ? infinite : 2.0 * EdgeWeight(cost_v, cost_h, n, m, L, e);
    if (cap > 0) arc(pair, u, v, cap);
    pair++;
  });
  flow.Solve();
  for (int v = 0; v < nodes * bits; v++)
    in_sink[v] = fixed && fixed[v] ? fixed[v] > 0 : flow.InSink(v);
}

inline void LabelsFromBits(const uint8_t *in_sink, int nodes, int bits, int32_t *labels) {
  for (int p = 0; p < nodes; p++) {
    int l = 0;
    for (int b = 0; b < bits; b++) l += in_sink[p * bits + b];
    labels[p] = l;
  }
}

// Scratch of SolveGrid / SolveSteps, reused across the graphs of a thread.
struct GridScratch {
  std::vector<double> linear, infinite;
  std::vector<uint8_t> in_sink;
  std::vector<int8_t> fixed;
  std::vector<int> order;
  MaxFlow flow;
};

// One graph: unary (n, m, L), cost_v (n-1, m), cost_h (n, m-1), all C-contiguous float64;
// writes the labels (n, m) of minimum energy (the canonical cut: a bit is 1 iff its node still
// reaches the sink).
inline void SolveGrid(const double *unary, const double *cost_v, const double *cost_h, int n, int m,
                      int L, int32_t *labels, GridScratch &s) {
  const int size = n * m * (L - 1);
  s.linear.resize(size);
  s.in_sink.resize(size);
  const double infinite = LinearCosts(unary, cost_v, cost_h, n, m, L, s.linear.data());
  CutBits(s.linear.data(), infinite, cost_v, cost_h, n, m, L, nullptr, s.in_sink.data(), s.flow);
  LabelsFromBits(s.in_sink.data(), n * m, L - 1, labels);
}

// Why the cuts nest: E(T) = sum_(v in T) linear(v) + (arcs cut) + const is the energy of the sink
// set T, and A, B the least minimisers of E and E' = E + d with d(v) <= 0 for every bit v (the
// cut above gives the least one: a node that still reaches the sink is on the sink side of every
// minimum cut). If A is not inside B, A & B is smaller than A, so E(A & B) > E(A), and by
// submodularity E(A | B) < E(B); then E'(A | B) = E(A | B) + d(A | B) < E(B) + d(B) = E'(B), a
// contradiction. So A is inside B: cutting E', the bits in A are known to be 1; cutting E, the
// bits outside B are known to be 0. Settling them and cutting the rest gives the least minimiser
// of the restricted problem, which is the unrestricted one itself (it obeys the restriction, and
// the minimisers are closed under intersection).

// Solves positions [lo, hi] of `order` (steps whose sink sets grow along it); below / above: the
// positions just outside whose sink sets are known (-1: none).
inline void SolveNested(const double *cost_v, const double *cost_h, int n, int m, int L, int lo,
                        int hi, int below, int above, GridScratch &s) {
  if (lo > hi) return;
  const int size = n * m * (L - 1), mid = (lo + hi) / 2, step = s.order[mid];
  int8_t *fixed = nullptr;
  if (below >= 0 || above >= 0) {
    const uint8_t *sub = below >= 0 ? &s.in_sink[static_cast<size_t>(s.order[below]) * size] : nullptr;
    const uint8_t *sup = above >= 0 ? &s.in_sink[static_cast<size_t>(s.order[above]) * size] : nullptr;
    fixed = s.fixed.data();
    for (int v = 0; v < size; v++) fixed[v] = sub && sub[v] ? 1 : (sup && !sup[v] ? -1 : 0);
  }
  CutBits(&s.linear[static_cast<size_t>(step) * size], s.infinite[step], cost_v, cost_h, n, m, L,
          fixed, &s.in_sink[static_cast<size_t>(step) * size], s.flow);
  SolveNested(cost_v, cost_h, n, m, L, lo, mid - 1, below, mid, s);
  SolveNested(cost_v, cost_h, n, m, L, mid + 1, hi, mid, above, s);
}

// The K graphs of one sample: unary (K, n, m, L) and the shared cost_v (n-1, m), cost_h (n, m-1);
// writes labels (K, n, m), equal to SolveGrid's for each step. Runs of consecutive steps whose
// linear costs are ordered bit by bit (Puzzle Mix's priors for ascending lambdas) are cut nested,
// the middle step first; any other step is cut on its own.
inline void SolveSteps(const double *unary, const double *cost_v, const double *cost_h, int K,
                       int n, int m, int L, int32_t *labels, GridScratch &s) {
  const int size = n * m * (L - 1);
  s.linear.resize(static_cast<size_t>(K) * size);
  s.in_sink.resize(static_cast<size_t>(K) * size);
  s.infinite.resize(K);
  s.fixed.resize(size);
  for (int k = 0; k < K; k++)
    s.infinite[k] = LinearCosts(unary + static_cast<size_t>(k) * n * m * L, cost_v, cost_h, n, m, L,
                                &s.linear[static_cast<size_t>(k) * size]);
  // +1: step k's costs <= step k-1's (its sink set contains the other's), -1: >=, 0: neither
  auto relation = [&](int k) {
    const double *a = &s.linear[static_cast<size_t>(k - 1) * size], *b = a + size;
    bool le = true, ge = true;
    for (int v = 0; v < size && (le || ge); v++) {
      le = le && b[v] <= a[v];
      ge = ge && b[v] >= a[v];
    }
    return le ? 1 : (ge ? -1 : 0);  // equal costs count as +1
  };
  for (int first = 0; first < K;) {
    int last = first, dir = 0;
    while (last + 1 < K) {
      const int r = relation(last + 1);
      if (r == 0 || (dir != 0 && r != dir)) break;
      dir = r;
      last++;
    }
    s.order.clear();
    for (int k = first; k <= last; k++) s.order.push_back(dir >= 0 ? k : first + last - k);
    SolveNested(cost_v, cost_h, n, m, L, 0, last - first, -1, -1, s);
    first = last + 1;
  }
  for (int k = 0; k < K; k++)
    LabelsFromBits(&s.in_sink[static_cast<size_t>(k) * size], n * m, L - 1,
                   labels + static_cast<size_t>(k) * n * m);
}

}  // namespace multimix_graphcut
