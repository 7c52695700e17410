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
// the steps are bisected: each bit is open only between the steps that settled it, and every
// level of the bisection is one max-flow over the open bits, warm started from the level
// before. Same labels as SolveGrid step by step.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "graphcut_maxflow.h"

namespace multimix_graphcut {

// The functions below take the bit count L - 1 as the template argument kBits where it is known at
// compile time (SolveGrid and SolveSteps dispatch the common label counts to it, so the compiler
// unrolls the loops over bits), 0 where it is taken from L at run time. Same arithmetic either way.
template <int kBits>
inline int BitCount(int L) {
  return kBits > 0 ? kBits : L - 1;
}

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

// The pairwise weight of every edge, in ForEachEdge's order, into `w` (resized): its cost /
// (L - 1)^2. Returns w's data.
template <int kBits>
inline const double *EdgeWeights(const double *cost_v, const double *cost_h, int n, int m, int L,
                                 std::vector<double> &w) {
  const int n_v = (n - 1) * m, edges = n_v + n * (m - 1);
  const int bits = BitCount<kBits>(L);
  const double scale = 1.0 / static_cast<double>(bits * bits);
  w.resize(edges);
  for (int e = 0; e < edges; e++) w[e] = (e < n_v ? cost_v[e] : cost_h[e - n_v]) * scale;
  return w.data();
}

// The linear cost of every bit (nodes x (L - 1): the cost of the bit being 1, i.e. of its node
// on the sink side) into `linear`; returns the capacity that stands for infinity (above every
// finite cut).
template <int kBits>
inline double LinearCosts(const double *unary, const double *w, int n, int m, int L,
                          double *linear) {
  const int bits = BitCount<kBits>(L), labels = bits + 1, nodes = n * m;
  for (int p = 0; p < nodes; p++)
    for (int b = 0; b < bits; b++)
      linear[p * bits + b] = unary[p * labels + b + 1] - unary[p * labels + b];
  // as np.add.at: all p contributions in edge order, then all q contributions
  double abs_w = 0.0;
  ForEachEdge(n, m, [&](int p, int, int e) {
    for (int b = 0; b < bits; b++) linear[p * bits + b] += w[e] * ((2.0 * (b + 1) - 1.0) - 2.0 * bits);
    abs_w += std::fabs(w[e]);
  });
  ForEachEdge(n, m, [&](int, int q, int e) {
    for (int b = 0; b < bits; b++) linear[q * bits + b] += w[e] * (2.0 * (b + 1) - 1.0);
  });
  double abs_lin = 0.0;
  for (int v = 0; v < nodes * bits; v++) abs_lin += std::fabs(linear[v]);
  // PyMaxflow's (numpy's pairwise) sums differ in order; any value above every finite cut will do
  return 1.0 + abs_lin + 4.0 * abs_w * bits * bits;
}

// Calls f(u, v, e) for every arc pair u -> v of the bit graph of an n x m grid with L labels, in
// the order of its pairs in the topology: the chain pairs p_b -> p_(b+1) (e = -1), then the
// bits^2 pairs q_c -> p_b of each edge e.
template <int kBits, typename F>
inline void ForEachArcPair(int n, int m, int L, F &&f) {
  const int bits = BitCount<kBits>(L), nodes = n * m;
  for (int p = 0; p < nodes; p++)
    for (int b = 0; b + 1 < bits; b++) f(p * bits + b, p * bits + b + 1, -1);
  ForEachEdge(n, m, [&](int p, int q, int e) {
    for (int b = 0; b < bits; b++)
      for (int c = 0; c < bits; c++) f(q * bits + c, p * bits + b, e);
  });
}

// Lays out the arcs of an n x m grid with L labels in `flow`, once per shape.
template <int kBits>
inline void EnsureTopology(int n, int m, int L, MaxFlow &flow) {
  if (flow.shape[0] == n && flow.shape[1] == m && flow.shape[2] == L) return;
  flow.BeginTopology(n * m * BitCount<kBits>(L));
  ForEachArcPair<kBits>(n, m, L, [&](int u, int v, int) { flow.AddArcPair(u, v); });
  flow.FinishTopology();
  flow.shape[0] = n; flow.shape[1] = m; flow.shape[2] = L;
}

// Builds the bit graph of one energy in `flow`: `linear` and `infinite` from LinearCosts.
template <int kBits>
inline void BuildBits(const double *linear, double infinite, const double *w, int n, int m, int L,
                      MaxFlow &flow) {
  const int bits = BitCount<kBits>(L), nodes = n * m;
  EnsureTopology<kBits>(n, m, L, flow);
  flow.Reset();
  for (int v = 0; v < nodes * bits; v++) {
    double c = linear[v];
    flow.AddTerminal(v, c > 0 ? c : 0.0, c < 0 ? -c : 0.0);
  }
  // x_b >= x_(b+1): the chain arcs are infinite; [x_pb = 1][x_qc = 0]: arc q_c -> p_b of 2 w (no
  // arc where w is 0: the pair keeps capacity 0); an arc u -> v is cut iff u is on the source
  // side and v on the sink side
  int pair = 0;
  ForEachArcPair<kBits>(n, m, L, [&](int, int, int e) {
    const double cap = e < 0 ? infinite : 2.0 * w[e];
    if (cap > 0) flow.SetArcPair(pair, cap, 0.0);
    pair++;
  });
}

template <int kBits>
inline void LabelsFromBits(const uint16_t *in_sink, int nodes, int L, int32_t *labels) {
  const int bits = BitCount<kBits>(L);
  for (int p = 0; p < nodes; p++) {
    int l = 0;
    for (int b = 0; b < bits; b++) l += in_sink[p * bits + b];
    labels[p] = l;
  }
}

// Scratch of SolveGrid / SolveSteps, reused across the graphs of a thread.
struct GridScratch {
  std::vector<double> linear, infinite, weights;
  std::vector<uint16_t> in_sink;  // not uint8_t: char stores alias everything
  std::vector<int> order, lo, hi, probe, group;
  MaxFlow flow;
};

// Calls f(std::integral_constant<int, kBits>) with kBits = L - 1 for the label counts 2 to 5
// (Puzzle Mix's: 3 by default), with 0 (run time) for any other.
template <typename F>
inline void WithBitCount(int L, F &&f) {
  switch (L) {
    case 2: return f(std::integral_constant<int, 1>());
    case 3: return f(std::integral_constant<int, 2>());
    case 4: return f(std::integral_constant<int, 3>());
    case 5: return f(std::integral_constant<int, 4>());
    default: return f(std::integral_constant<int, 0>());
  }
}

// One graph: unary (n, m, L), cost_v (n-1, m), cost_h (n, m-1), all C-contiguous float64;
// writes the labels (n, m) of minimum energy (the canonical cut: a bit is 1 iff its node still
// reaches the sink).
inline void SolveGrid(const double *unary, const double *cost_v, const double *cost_h, int n, int m,
                      int L, int32_t *labels, GridScratch &s) {
  WithBitCount(L, [&](auto bit_count) {
    constexpr int kBits = decltype(bit_count)::value;
    const int size = n * m * BitCount<kBits>(L);
    s.linear.resize(size);
    s.in_sink.resize(size);
    const double *w = EdgeWeights<kBits>(cost_v, cost_h, n, m, L, s.weights);
    const double infinite = LinearCosts<kBits>(unary, w, n, m, L, s.linear.data());
    BuildBits<kBits>(s.linear.data(), infinite, w, n, m, L, s.flow);
    s.flow.Solve();
    for (int v = 0; v < size; v++) s.in_sink[v] = s.flow.InSink(v);
    LabelsFromBits<kBits>(s.in_sink.data(), n * m, L, labels);
  });
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
//
// Why the flow of a level carries over: after a cut of sink set T, an arc u -> v from outside T
// into T is saturated and an arc from T out of it carries no flow (each pair has capacity in one
// direction only). The next level cuts T and its complement apart, the bits outside settled to 0
// for the steps inside, those inside to 1 for the steps outside: the saturated arc becomes the
// terminal capacity of its open end, used in full by the same flow, and the other arc vanishes
// with no flow on it. So the flow, with the arcs between the parts dropped and each open bit's
// terminal capacity moved by the change of its linear cost, is a flow of the next level's graph,
// and the max-flow goes on from it.

// Solves positions 0 .. R-1 of `order` (steps whose sink sets grow along it): a bisection over
// the positions in which every bit keeps the interval [lo, hi] of positions it is still open for
// (its sink membership is settled below lo, 0, and above hi, 1); each level cuts every open bit
// for the middle of its interval, the bits of one interval joined, those of different intervals
// apart. Where an interval has two middles, the one next to the bit's last cut: a sample's bits
// tend to switch at the same steps, so fewer stay open (K = 5, the benchmark's 16 x 16 blocks:
// 250 instead of 364 of 512 bits at the third level, 4 % less time). The edge weights are those
// in s.weights.
template <int kBits>
inline void SolveLevels(int n, int m, int L, int R, GridScratch &s) {
  const int size = n * m * BitCount<kBits>(L);
  // one capacity for infinity at every level: the largest of the steps'
  double infinite = s.infinite[s.order[0]];
  for (int r = 1; r < R; r++) infinite = std::max(infinite, s.infinite[s.order[r]]);
  const int *order = s.order.data();
  const double *linear_all = s.linear.data();
  uint16_t *in_sink_all = s.in_sink.data();
  auto linear = [&](int pos) { return linear_all + static_cast<size_t>(order[pos]) * size; };
  auto in_sink = [&](int pos) { return in_sink_all + static_cast<size_t>(order[pos]) * size; };
  const int first_probe = (R - 1) / 2;  // every bit's, at the first level
  s.lo.assign(size, 0);
  s.hi.assign(size, R - 1);
  s.probe.assign(size, first_probe);
  s.group.resize(size);
  int *lo = s.lo.data(), *hi = s.hi.data(), *probe = s.probe.data(), *group = s.group.data();
  MaxFlow &flow = s.flow;
  BuildBits<kBits>(linear(first_probe), infinite, s.weights.data(), n, m, L, flow);
  while (true) {
    flow.Solve();
    bool open = false;
    for (int v = 0; v < size; v++) {
      if (lo[v] > hi[v]) continue;
      const int mid = probe[v];
      if (flow.InSink(v)) {  // 1 from mid on
        for (int r = mid; r <= hi[v]; r++) in_sink(r)[v] = 1;
        hi[v] = mid - 1;
        probe[v] = (lo[v] + hi[v] + 1) / 2;
      } else {  // 0 up to mid
        for (int r = lo[v]; r <= mid; r++) in_sink(r)[v] = 0;
        lo[v] = mid + 1;
        probe[v] = (lo[v] + hi[v]) / 2;
      }
      if (lo[v] <= hi[v]) {
        open = true;
        flow.ShiftTerminal(v, linear(probe[v])[v] - linear(mid)[v]);
        group[v] = lo[v] * R + hi[v];
      } else {
        flow.SetTerminal(v, 0.0);
        group[v] = -1;
      }
    }
    if (!open) break;
    flow.KeepArcsInGroups(group);
    flow.ClearTrees();
  }
}

// SolveSteps for the bit count BitCount<kBits>(L).
template <int kBits>
inline void SolveStepsWithBits(const double *unary, const double *cost_v, const double *cost_h,
                               int K, int n, int m, int L, int32_t *labels, GridScratch &s) {
  const int size = n * m * BitCount<kBits>(L);
  s.linear.resize(static_cast<size_t>(K) * size);
  s.in_sink.resize(static_cast<size_t>(K) * size);
  s.infinite.resize(K);
  const double *w = EdgeWeights<kBits>(cost_v, cost_h, n, m, L, s.weights);
  for (int k = 0; k < K; k++)
    s.infinite[k] = LinearCosts<kBits>(unary + static_cast<size_t>(k) * n * m * L, w, n, m, L,
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
    SolveLevels<kBits>(n, m, L, last - first + 1, s);
    first = last + 1;
  }
  for (int k = 0; k < K; k++)
    LabelsFromBits<kBits>(&s.in_sink[static_cast<size_t>(k) * size], n * m, L,
                          labels + static_cast<size_t>(k) * n * m);
}

// The K graphs of one sample: unary (K, n, m, L) and the shared cost_v (n-1, m), cost_h (n, m-1);
// writes labels (K, n, m), equal to SolveGrid's for each step. Runs of consecutive steps whose
// linear costs are ordered bit by bit (Puzzle Mix's priors for ascending lambdas) are cut nested,
// the middle step first; any other step is cut on its own.
inline void SolveSteps(const double *unary, const double *cost_v, const double *cost_h, int K,
                       int n, int m, int L, int32_t *labels, GridScratch &s) {
  WithBitCount(L, [&](auto bit_count) {
    SolveStepsWithBits<decltype(bit_count)::value>(unary, cost_v, cost_h, K, n, m, L, labels, s);
  });
}

}  // namespace multimix_graphcut
