// Boykov-Kolmogorov max-flow (Y. Boykov, V. Kolmogorov, "An Experimental Comparison of
// Min-Cut/Max-Flow Algorithms for Energy Minimization in Vision", PAMI 2004), the algorithm of
// PyMaxflow's maxflow library, for Puzzle Mix's small graphs (at most 16 x 16 blocks x 3 bits).
// Three departures from BK's search, each measured faster on these graphs (about every node is a
// root: trees one or two arcs deep) and none changing the cut: the growth does not re-hang nodes
// on shorter paths, an orphan takes the first neighbour whose tree path still reaches a terminal
// (BK: the nearest one), and a node's scan goes on from the arc that carried the last
// augmentation. Double capacities; every bottleneck is one of the capacities, so a saturated arc
// reaches exactly 0. After Solve(), InSink(i) is true iff i can still reach the sink in the residual
// graph (PyMaxflow's segment 1; free nodes are on the source side, as its default).
// No DALI, no Python: plain C++.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace multimix_graphcut {

class MaxFlow {
 public:
  // The arcs of a graph shape, once: BeginTopology(nodes), then AddArcPair(i, j) per pair of arcs
  // i -> j, j -> i (returns the pair's index), then FinishTopology(). The arcs of a node are
  // stored contiguously (CSR) in the order a linked-list graph would visit them (newest first),
  // so the search is that of a graph built arc by arc. A pair may keep capacity 0 in both
  // directions (an absent arc): no flow, tree or orphan step ever uses it.
  void BeginTopology(int nodes) {
    n_ = nodes;
    tail_.clear();
    pair_head_.clear();
  }

  int AddArcPair(int i, int j) {
    tail_.push_back(i);
    pair_head_.push_back(j);
    return static_cast<int>(tail_.size()) - 1;
  }

  void FinishTopology() {
    const int pairs = static_cast<int>(tail_.size());
    begin_.assign(n_ + 1, 0);
    for (int p = 0; p < pairs; p++) {
      begin_[tail_[p] + 1]++;
      begin_[pair_head_[p] + 1]++;
    }
    for (int i = 0; i < n_; i++) begin_[i + 1] += begin_[i];
    std::vector<int> fill(begin_.begin() + 1, begin_.end());  // filled from the end: newest first
    arc_.assign(2 * pairs, Arc{});
    forward_.assign(pairs, 0);
    for (int p = 0; p < pairs; p++) {
      const int i = tail_[p], j = pair_head_[p];
      const int a = --fill[i], b = --fill[j];
      arc_[a].head = j;
      arc_[b].head = i;
      arc_[a].sister = b;
      arc_[b].sister = a;
      forward_[p] = a;
    }
    topology_ = arc_;
    topology_begin_ = begin_;
    parent_.resize(n_);
    sink_.resize(n_);
    tr_.resize(n_);
    ts_.resize(n_);
    queued_.resize(n_);
    active_.resize(n_ + 1);
    orphans_.resize(n_);
  }

  // Starts a graph on the topology: no flow, no terminal capacities, every arc capacity 0.
  void Reset() {
    ClearTrees();
    std::fill(tr_.begin(), tr_.end(), 0.0);
    arc_ = topology_;  // every arc of the topology, capacity 0
    begin_ = topology_begin_;
  }

  // Keeps only the arcs inside a group (group[i] == group[j] >= 0: the arcs of nodes of group -1
  // and those between groups are dropped), with their residual capacities: the scans of the next
  // Solve() visit only those. The pair indices of SetArcPair hold again only after the next
  // Reset(), which restores every arc.
  void KeepArcsInGroups(const int *group) {
    remap_.resize(arc_.size());
    Arc *arc = arc_.data();
    int *remap = remap_.data(), kept = 0;
    for (int i = 0; i < n_; i++) {
      const int g = group[i], first = kept, end = begin_[i + 1];
      if (g >= 0) {  // a node of group -1 keeps no arc
        for (int a = begin_[i]; a < end; a++) {
          if (group[arc[a].head] != g) continue;  // so is its sister: neither is remapped
          const int sister = arc[a].sister;
          arc[kept] = arc[a];
          remap[a] = kept;
          if (sister < a) {  // already moved: link the two
            arc[kept].sister = remap[sister];
            arc[remap[sister]].sister = kept;
          }
          kept++;
        }
      }
      begin_[i] = first;
    }
    begin_[n_] = kept;
    arc_.resize(kept);
  }

  // Clears the search trees and keeps the flow (the residual capacities): a warm start of the
  // next Solve() after terminal or arc capacities changed (Kohli, Torr, "Dynamic graph cuts",
  // PAMI 2007; the trees are grown afresh).
  void ClearTrees() {
    std::fill(parent_.begin(), parent_.end(), kNone);
    std::fill(sink_.begin(), sink_.end(), 0);
    std::fill(ts_.begin(), ts_.end(), 0);
    std::fill(queued_.begin(), queued_.end(), 0);
  }

  // The residual terminal capacity of i (source minus sink): add d to it; set it to v.
  void ShiftTerminal(int i, double d) { tr_[i] += d; }
  void SetTerminal(int i, double v) { tr_[i] = v; }

  // Terminal capacities: source -> i `source`, i -> sink `sink` (only the difference matters).
  void AddTerminal(int i, double source, double sink) {
    double d = tr_[i];
    if (d > 0) source += d; else sink -= d;
    tr_[i] = source - sink;
  }

  // Capacities of pair p: its arc i -> j `cap`, j -> i `rev` (residual ones after a Solve()).
  void SetArcPair(int p, double cap, double rev) {
    Arc &f = arc_[forward_[p]], &r = arc_[f.sister];
    f.cap = cap;
    r.cap = rev;
  }

  void Solve() {
    // Greedy pre-pass: push flow along every path source -> i -> j -> sink of one arc (most of
    // the flow of these grids; far cheaper than growing trees for them).
    for (int i = 0; i < n_; i++) {
      double ti = tr_[i];
      if (ti <= 0) continue;
      for (int a = begin_[i], end = begin_[i + 1]; a < end && ti > 0; a++) {
        int j = arc_[a].head;
        if (arc_[a].cap <= 0 || tr_[j] >= 0) continue;
        double b = std::min(std::min(ti, -tr_[j]), arc_[a].cap);
        ti -= b;
        tr_[j] += b;
        Push(a, b);
      }
      tr_[i] = ti;
    }
    head_active_ = tail_active_ = 0;
    orphan_count_ = 0;
    for (int i = 0; i < n_; i++) {
      if (tr_[i] != 0) {
        sink_[i] = tr_[i] < 0;
        parent_[i] = kTerminal;
        ts_[i] = 0;
        Activate(i);
      }
    }
    time_ = 0;
    int current = -1, resume = 0;
    while (true) {
      int i = current;
      if (i < 0 || parent_[i] == kNone) {
        i = -1;
        while (head_active_ != tail_active_) {
          int c = active_[head_active_];
          head_active_ = head_active_ + 1 == n_ + 1 ? 0 : head_active_ + 1;
          queued_[c] = 0;
          if (parent_[c] != kNone) { i = c; break; }
        }
        if (i < 0) break;
        resume = begin_[i];
      }
      current = -1;
      int middle = -1, a = resume, end = begin_[i + 1];  // middle: source tree -> sink tree
      if (!sink_[i]) {
        for (; a < end; a++) {
          if (arc_[a].cap <= 0) continue;
          int j = arc_[a].head;
          if (parent_[j] == kNone) {
            sink_[j] = 0; parent_[j] = arc_[a].sister;
            Activate(j);
          } else if (sink_[j]) {
            middle = a; break;
          }
        }
      } else {
        for (; a < end; a++) {
          if (arc_[arc_[a].sister].cap <= 0) continue;
          int j = arc_[a].head;
          if (parent_[j] == kNone) {
            sink_[j] = 1; parent_[j] = arc_[a].sister;
            Activate(j);
          } else if (!sink_[j]) {
            middle = arc_[a].sister; break;
          }
        }
      }
      if (middle >= 0) {
        current = i;  // go on from this arc: it may carry more
        resume = a;
        Augment(middle);
        time_++;
        while (orphan_count_ > 0) Adopt(orphans_[--orphan_count_]);
      }
    }
  }

  // The (n, m, L) grid shape whose arcs the topology holds (SolveGrid's key).
  int shape[3] = {0, 0, 0};

  bool InSink(int i) const { return parent_[i] != kNone && sink_[i]; }

 private:
  static constexpr int kNone = -1, kTerminal = -2, kOrphan = -3;

  void Activate(int i) {
    if (!queued_[i]) {  // a FIFO ring: a node is queued at most once at a time
      queued_[i] = 1;
      active_[tail_active_] = i;
      tail_active_ = tail_active_ + 1 == n_ + 1 ? 0 : tail_active_ + 1;
    }
  }

  void Augment(int middle) {
    double b = arc_[middle].cap;
    for (int i = arc_[arc_[middle].sister].head;;) {  // source side: arcs parent -> i
      int a = parent_[i];
      if (a == kTerminal) { b = std::min(b, tr_[i]); break; }
      b = std::min(b, arc_[arc_[a].sister].cap);
      i = arc_[a].head;
    }
    for (int i = arc_[middle].head;;) {  // sink side: arcs i -> parent
      int a = parent_[i];
      if (a == kTerminal) { b = std::min(b, -tr_[i]); break; }
      b = std::min(b, arc_[a].cap);
      i = arc_[a].head;
    }
    Push(middle, b);
    for (int i = arc_[arc_[middle].sister].head;;) {
      int a = parent_[i];
      if (a == kTerminal) {
        tr_[i] -= b;
        if (tr_[i] == 0) MakeOrphan(i);
        break;
      }
      Push(arc_[a].sister, b);
      int up = arc_[a].head;
      if (arc_[arc_[a].sister].cap == 0) MakeOrphan(i);
      i = up;
    }
    for (int i = arc_[middle].head;;) {
      int a = parent_[i];
      if (a == kTerminal) {
        tr_[i] += b;
        if (tr_[i] == 0) MakeOrphan(i);
        break;
      }
      Push(a, b);
      int up = arc_[a].head;
      if (arc_[a].cap == 0) MakeOrphan(i);
      i = up;
    }
  }

  void MakeOrphan(int i) {  // a node is an orphan at most once at a time
    parent_[i] = kOrphan;
    orphans_[orphan_count_++] = i;
  }

  // A new parent for orphan i in its own tree (the first whose path reaches a terminal: ts_ marks
  // the nodes checked since the last augmentation), or frees it.
  void Adopt(int i) {
    const bool sink = sink_[i];
    for (int a0 = begin_[i], end = begin_[i + 1]; a0 < end; a0++) {
      // source tree: the arc j -> i must have capacity; sink tree: i -> j
      if ((sink ? arc_[a0].cap : arc_[arc_[a0].sister].cap) <= 0) continue;
      int j = arc_[a0].head;
      if (sink_[j] != sink || parent_[j] == kNone) continue;
      bool rooted = false;
      while (true) {  // is j's root a terminal? (nodes checked since the last augmentation: ts_)
        if (ts_[j] == time_) { rooted = true; break; }
        int a = parent_[j];
        if (a == kTerminal) { rooted = true; break; }
        if (a == kOrphan) break;
        j = arc_[a].head;
      }
      if (rooted) {
        for (j = arc_[a0].head; ts_[j] != time_ && parent_[j] != kTerminal; j = arc_[parent_[j]].head)
          ts_[j] = time_;
        parent_[i] = a0;
        ts_[i] = time_;
        return;
      }
    }
    parent_[i] = kNone;  // free: its neighbours in the tree become active, its children orphans
    for (int a0 = begin_[i], end = begin_[i + 1]; a0 < end; a0++) {
      int j = arc_[a0].head;
      if (sink_[j] != sink || parent_[j] == kNone) continue;
      if ((sink ? arc_[a0].cap : arc_[arc_[a0].sister].cap) > 0) Activate(j);
      int a = parent_[j];
      if (a != kTerminal && a != kOrphan && arc_[a].head == i) MakeOrphan(j);
    }
  }

  int n_ = 0;
  // an arc: its residual capacity, its end node and its reverse arc (`sister`, whose capacity is
  // the reverse residual: 16 bytes, not 24 with a copy of it, measured 2 % faster)
  struct Arc {
    double cap = 0.0;
    int head = 0, sister = 0;
  };

  // sends b along arc a: less room on it, more on its reverse
  void Push(int a, double b) {
    Arc &f = arc_[a], &r = arc_[f.sister];
    f.cap -= b;
    r.cap += b;
  }

  // topology: the arcs of node i are arc_[begin_[i] .. begin_[i + 1]); forward_[p] is the arc
  // i -> j of pair p (tail_, pair_head_: the pairs as added)
  std::vector<Arc> arc_, topology_;
  std::vector<int> topology_begin_, remap_;
  std::vector<int> begin_, forward_, tail_, pair_head_;
  std::vector<int> parent_, ts_, active_, orphans_;
  std::vector<int> sink_, queued_;  // int, not char: char stores alias everything
  std::vector<double> tr_;
  int time_ = 0;
  int head_active_ = 0, tail_active_ = 0, orphan_count_ = 0;
};

}  // namespace multimix_graphcut
