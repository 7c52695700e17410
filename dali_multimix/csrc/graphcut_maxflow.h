// Boykov-Kolmogorov max-flow (Y. Boykov, V. Kolmogorov, "An Experimental Comparison of
// Min-Cut/Max-Flow Algorithms for Energy Minimization in Vision", PAMI 2004), the algorithm of
// PyMaxflow's maxflow library, for Puzzle Mix's small graphs (at most 16 x 16 blocks x 3 bits).
// Double capacities; every bottleneck is one of the capacities, so a saturated arc reaches
// exactly 0. After Solve(), InSink(i) is true iff i can still reach the sink in the residual
// graph (PyMaxflow's segment 1; free nodes are on the source side, as its default).
// No DALI, no Python: plain C++.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace multimix_graphcut {

class MaxFlow {
 public:
  // Clears the graph and makes `nodes` nodes with no arcs; capacity hints for `arcs` arc pairs.
  void Reset(int nodes, int arcs_hint) {
    n_ = nodes;
    first_.assign(nodes, -1);
    parent_.assign(nodes, kNone);
    sink_.assign(nodes, 0);
    tr_.assign(nodes, 0.0);
    ts_.assign(nodes, 0);
    dist_.assign(nodes, 0);
    queued_.assign(nodes, 0);
    head_.clear();
    next_.clear();
    cap_.clear();
    head_.reserve(2 * arcs_hint);
    next_.reserve(2 * arcs_hint);
    cap_.reserve(2 * arcs_hint);
    flow_ = 0.0;
  }

  // Terminal capacities: source -> i `source`, i -> sink `sink` (only the difference matters).
  void AddTerminal(int i, double source, double sink) {
    double d = tr_[i];
    if (d > 0) source += d; else sink -= d;
    flow_ += std::min(source, sink);
    tr_[i] = source - sink;
  }

  // An arc i -> j of capacity `cap` and j -> i of capacity `rev`.
  void AddEdge(int i, int j, double cap, double rev) {
    int a = static_cast<int>(head_.size());
    head_.push_back(j); next_.push_back(first_[i]); cap_.push_back(cap); first_[i] = a;
    head_.push_back(i); next_.push_back(first_[j]); cap_.push_back(rev); first_[j] = a + 1;
  }

  double Solve() {
    // Greedy pre-pass: push flow along every path source -> i -> j -> sink of one arc (most of
    // the flow of these grids; far cheaper than growing trees for them).
    for (int i = 0; i < n_; i++) {
      if (tr_[i] <= 0) continue;
      for (int a = first_[i]; a >= 0 && tr_[i] > 0; a = next_[a]) {
        int j = head_[a];
        if (cap_[a] <= 0 || tr_[j] >= 0) continue;
        double b = std::min(std::min(tr_[i], -tr_[j]), cap_[a]);
        tr_[i] -= b;
        tr_[j] += b;
        cap_[a] -= b;
        cap_[a ^ 1] += b;
        flow_ += b;
      }
    }
    active_.clear();
    orphans_.clear();
    for (int i = 0; i < n_; i++) {
      if (tr_[i] != 0) {
        sink_[i] = tr_[i] < 0;
        parent_[i] = kTerminal;
        ts_[i] = 0;
        dist_[i] = 1;
        Activate(i);
      }
    }
    time_ = 0;
    size_t pos = 0;
    int current = -1;
    while (true) {
      int i = current;
      if (i < 0 || parent_[i] == kNone) {
        i = -1;
        while (pos < active_.size()) {
          int c = active_[pos++];
          queued_[c] = 0;
          if (parent_[c] != kNone) { i = c; break; }
        }
        if (i < 0) break;
        if (pos > 4096 && pos * 2 > active_.size()) {  // compact the queue
          active_.erase(active_.begin(), active_.begin() + pos);
          pos = 0;
        }
      }
      current = -1;
      int middle = -1;  // arc from the source tree to the sink tree
      if (!sink_[i]) {
        for (int a = first_[i]; a >= 0; a = next_[a]) {
          if (cap_[a] <= 0) continue;
          int j = head_[a];
          if (parent_[j] == kNone) {
            sink_[j] = 0; parent_[j] = a ^ 1; ts_[j] = ts_[i]; dist_[j] = dist_[i] + 1;
            Activate(j);
          } else if (sink_[j]) {
            middle = a; break;
          } else if (ts_[j] <= ts_[i] && dist_[j] > dist_[i]) {
            parent_[j] = a ^ 1; ts_[j] = ts_[i]; dist_[j] = dist_[i] + 1;
          }
        }
      } else {
        for (int a = first_[i]; a >= 0; a = next_[a]) {
          if (cap_[a ^ 1] <= 0) continue;
          int j = head_[a];
          if (parent_[j] == kNone) {
            sink_[j] = 1; parent_[j] = a ^ 1; ts_[j] = ts_[i]; dist_[j] = dist_[i] + 1;
            Activate(j);
          } else if (!sink_[j]) {
            middle = a ^ 1; break;
          } else if (ts_[j] <= ts_[i] && dist_[j] > dist_[i]) {
            parent_[j] = a ^ 1; ts_[j] = ts_[i]; dist_[j] = dist_[i] + 1;
          }
        }
      }
      time_++;
      if (middle >= 0) {
        current = i;  // scan it again: it may have more paths
        Augment(middle);
        while (!orphans_.empty()) {
          int o = orphans_.back();
          orphans_.pop_back();
          Adopt(o);
        }
      }
    }
    return flow_;
  }

  bool InSink(int i) const { return parent_[i] != kNone && sink_[i]; }

 private:
  static constexpr int kNone = -1, kTerminal = -2, kOrphan = -3;
  static constexpr int kInfDist = std::numeric_limits<int>::max();

  void Activate(int i) {
    if (!queued_[i]) { queued_[i] = 1; active_.push_back(i); }
  }

  void Augment(int middle) {
    double b = cap_[middle];
    for (int i = head_[middle ^ 1];;) {  // source side: arcs parent -> i
      int a = parent_[i];
      if (a == kTerminal) { b = std::min(b, tr_[i]); break; }
      b = std::min(b, cap_[a ^ 1]);
      i = head_[a];
    }
    for (int i = head_[middle];;) {  // sink side: arcs i -> parent
      int a = parent_[i];
      if (a == kTerminal) { b = std::min(b, -tr_[i]); break; }
      b = std::min(b, cap_[a]);
      i = head_[a];
    }
    cap_[middle] -= b;
    cap_[middle ^ 1] += b;
    for (int i = head_[middle ^ 1];;) {
      int a = parent_[i];
      if (a == kTerminal) {
        tr_[i] -= b;
        if (tr_[i] == 0) MakeOrphan(i);
        break;
      }
      cap_[a] += b;
      cap_[a ^ 1] -= b;
      int up = head_[a];
      if (cap_[a ^ 1] == 0) MakeOrphan(i);
      i = up;
    }
    for (int i = head_[middle];;) {
      int a = parent_[i];
      if (a == kTerminal) {
        tr_[i] += b;
        if (tr_[i] == 0) MakeOrphan(i);
        break;
      }
      cap_[a ^ 1] += b;
      cap_[a] -= b;
      int up = head_[a];
      if (cap_[a] == 0) MakeOrphan(i);
      i = up;
    }
    flow_ += b;
  }

  void MakeOrphan(int i) {
    parent_[i] = kOrphan;
    orphans_.push_back(i);
  }

  // A new parent for orphan i in its own tree (the one nearest a terminal), or frees it.
  void Adopt(int i) {
    const bool sink = sink_[i];
    int best = kNone, best_d = kInfDist;
    for (int a0 = first_[i]; a0 >= 0; a0 = next_[a0]) {
      // source tree: the arc j -> i must have capacity; sink tree: i -> j
      if ((sink ? cap_[a0] : cap_[a0 ^ 1]) <= 0) continue;
      int j = head_[a0];
      if (sink_[j] != sink || parent_[j] == kNone) continue;
      int d = 0;
      while (true) {  // is j's root a terminal? (distance by time-stamped hops)
        if (ts_[j] == time_) { d += dist_[j]; break; }
        int a = parent_[j];
        d++;
        if (a == kTerminal) { ts_[j] = time_; dist_[j] = 1; break; }
        if (a == kOrphan) { d = kInfDist; break; }
        j = head_[a];
      }
      if (d < kInfDist) {
        if (d < best_d) { best = a0; best_d = d; }
        for (j = head_[a0]; ts_[j] != time_; j = head_[parent_[j]]) {
          ts_[j] = time_;
          dist_[j] = d--;
        }
      }
    }
    if (best != kNone) {
      parent_[i] = best;
      ts_[i] = time_;
      dist_[i] = best_d + 1;
      return;
    }
    parent_[i] = kNone;  // free: its neighbours in the tree become active, its children orphans
    for (int a0 = first_[i]; a0 >= 0; a0 = next_[a0]) {
      int j = head_[a0];
      if (sink_[j] != sink || parent_[j] == kNone) continue;
      if ((sink ? cap_[a0] : cap_[a0 ^ 1]) > 0) Activate(j);
      int a = parent_[j];
      if (a != kTerminal && a != kOrphan && head_[a] == i) MakeOrphan(j);
    }
  }

  int n_ = 0;
  std::vector<int> first_, parent_, ts_, dist_, head_, next_, active_, orphans_;
  std::vector<int> sink_, queued_;  // int, not char: char stores alias everything
  std::vector<double> tr_, cap_;
  double flow_ = 0.0;
  int time_ = 0;
};

}  // namespace multimix_graphcut
