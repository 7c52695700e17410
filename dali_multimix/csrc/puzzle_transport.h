// Puzzle Mix's block transport (J.-H. Kim et al., ICML 2020; the authors' mixup.py
// `mask_transport`) for one n x n grid, natively: the same rounds, the same float32 costs and the
// same tie rules as the torch rounds of dali_multimix/torch/puzzle.py:transport_sources (which
// equal the original's dense one-hot rounds bit for bit; tests/test_puzzle.py checks all three
// against each other).
//   cost[i][j] = eps * dist^2(i, j) / (n - 1)^2 - s_i * z_j      (z_j = 1 where the mask is > 0)
// Each round every source i claims the first cheapest destination of its row; in each destination
// the original's argmin over all sources of plan[i][j] * cost[i][j] picks the winner: claimants
// count with their cost, every other source with 0, the first index wins ties (so a destination
// whose claims all cost more than 0 goes to nobody). Losers pay 1 more for their claim and claim
// again; n rounds. Only losers look again (a winner's row is unchanged), and a look reads the
// cells nearest first and stops where no farther cell can be cheaper (CheapestDestination).
// No DALI, no Python: plain C++ (built into libmultimix_graphcut, compiled with
// -ffp-contract=off so that the float32 arithmetic is torch's).
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace multimix_graphcut {

// The largest grid side (its scratch holds (n^2)^2 costs and indices: 12 MiB per thread at 32).
constexpr int kMaxTransportSide = 32;

// For every cell i of an n x n grid, the cells by squared distance from i, then by index:
// cell[i * n^2 + t] the t-th nearest, distance2[i * n^2 + t] its squared distance. Built once per
// n and process (shared read-only by the threads).
struct DistanceOrder {
  std::vector<int32_t> cell, distance2;

  explicit DistanceOrder(int n) {
    const int cells = n * n;
    cell.resize(static_cast<size_t>(cells) * cells);
    distance2.resize(cell.size());
    std::vector<std::pair<int32_t, int32_t>> row(cells);
    for (int i = 0; i < cells; i++) {
      for (int j = 0; j < cells; j++) {
        const int dy = i / n - j / n, dx = i % n - j % n;
        row[j] = {dy * dy + dx * dx, j};
      }
      std::sort(row.begin(), row.end());
      for (int t = 0; t < cells; t++) {
        cell[static_cast<size_t>(i) * cells + t] = row[t].second;
        distance2[static_cast<size_t>(i) * cells + t] = row[t].first;
      }
    }
  }

  static const DistanceOrder &For(int n) {
    static std::mutex lock;
    static std::map<int, std::unique_ptr<DistanceOrder>> orders;
    std::lock_guard<std::mutex> guard(lock);
    auto &order = orders[n];
    if (!order) order = std::make_unique<DistanceOrder>(n);
    return *order;
  }
};

// Scratch reused across the grids one thread transports.
struct TransportScratch {
  int n = 0;
  const DistanceOrder *order = nullptr;
  // cost[i * cells + j] where losers have paid (costs only rise), valid where stamp == grid
  std::vector<float> paid;
  std::vector<int64_t> stamp;
  int64_t grid = 0;
  std::vector<float> claim_cost, lowest;
  std::vector<int32_t> claims, claimants, first_claimant;

  void Prepare(int side) {
    const int cells = side * side;
    if (side != n) {
      n = side;
      order = &DistanceOrder::For(side);
      paid.assign(static_cast<size_t>(cells) * cells, 0.0f);
      stamp.assign(paid.size(), -1);
    }
    claims.resize(cells);
    claim_cost.resize(cells);
    lowest.resize(cells);
    claimants.resize(cells);
    first_claimant.resize(cells);
    grid++;
  }
};

// The cheapest destination of source i and its cost: torch.argmin's choice (the first index of the
// smallest cost) without reading the whole row. Cells are visited nearest first; every cost at
// squared distance >= d is at least min(eps * d / denom - s, eps * d / denom) (float rounding is
// monotone, and paying only raises a cost), so once that bound exceeds the best cost found, no
// later cell can win, nor tie it (a tie would need an equal cost). eps < 0 (or NaN) reads the
// whole row.
inline int32_t CheapestDestination(int i, const float *shown, float s_i, float eps, float denom,
                                   int cells, const TransportScratch &s, float *cost_out) {
  const int32_t *order = s.order->cell.data() + static_cast<size_t>(i) * cells;
  const int32_t *d2 = s.order->distance2.data() + static_cast<size_t>(i) * cells;
  const size_t row = static_cast<size_t>(i) * cells;
  const bool prune = eps >= 0;
  int32_t best = -1;
  float best_cost = 0.0f;
  for (int t = 0; t < cells; t++) {
    const float weighted = eps * (static_cast<float>(d2[t]) / denom);
    if (best >= 0 && prune && std::min(weighted - s_i, weighted) > best_cost) break;
    const int32_t j = order[t];
    const float c = s.stamp[row + j] == s.grid ? s.paid[row + j] : weighted - s_i * shown[j];
    if (best < 0 || c < best_cost || (c == best_cost && j < best)) {
      best = j;
      best_cost = c;
    }
  }
  *cost_out = best_cost;
  return best;
}

// One grid: mask (n * n) the mask of the image's cells (> 0: the cell shows this image), saliency
// (n * n) its cell saliency; writes source[j] = the cell moved to destination j, or n * n where
// nothing moves there.
inline void TransportGrid(const float *mask, const float *saliency, int n, float eps,
                          int64_t *source, TransportScratch &s) {
  const int cells = n * n;
  const float denom = static_cast<float>(std::max(n - 1, 1) * std::max(n - 1, 1));
  s.Prepare(n);
  float shown[kMaxTransportSide * kMaxTransportSide];
  for (int j = 0; j < cells; j++) shown[j] = mask[j] > 0 ? 1.0f : 0.0f;
  for (int i = 0; i < cells; i++)
    s.claims[i] = CheapestDestination(i, shown, saliency[i], eps, denom, cells, s, &s.claim_cost[i]);
  const float inf = std::numeric_limits<float>::infinity();
  for (int round = 0; round < n; round++) {
    std::fill(s.claimants.begin(), s.claimants.end(), 0);
    std::fill(s.lowest.begin(), s.lowest.end(), inf);
    std::fill(s.first_claimant.begin(), s.first_claimant.end(), cells);
    for (int i = 0; i < cells; i++) {
      const int32_t j = s.claims[i];
      s.claimants[j]++;
      s.lowest[j] = std::min(s.lowest[j], s.claim_cost[i]);
    }
    // a source that did not claim j counts with cost 0: the lowest is at most 0
    for (int j = 0; j < cells; j++)
      if (s.claimants[j] < cells) s.lowest[j] = std::min(s.lowest[j], 0.0f);
    for (int i = 0; i < cells; i++) {
      const int32_t j = s.claims[i];
      if (s.claim_cost[i] == s.lowest[j] && i < s.first_claimant[j]) s.first_claimant[j] = i;
    }
    // the first source that did not claim j is 0 unless source 0 claimed j; then the first i
    // with another claim. A 0-cost non-claimant before every lowest claimant wins the argmin.
    const int32_t first_claim = s.claims[0];
    int32_t first_other = cells;
    for (int i = 1; i < cells; i++)
      if (s.claims[i] != first_claim) { first_other = i; break; }
    for (int j = 0; j < cells; j++) {
      const int32_t other = j == first_claim ? first_other : 0;
      if (s.claimants[j] < cells && s.lowest[j] == 0.0f && other < s.first_claimant[j])
        s.first_claimant[j] = cells;  // the winner is a source that did not claim j: nobody moves
    }
    if (round == n - 1) break;
    for (int i = 0; i < cells; i++) {
      const int32_t j = s.claims[i];
      if (s.first_claimant[j] == i) continue;  // won: its row is unchanged
      const size_t at = static_cast<size_t>(i) * cells + j;
      s.paid[at] = s.claim_cost[i] + 1.0f;  // the loser pays 1 more for its claim
      s.stamp[at] = s.grid;
      s.claims[i] = CheapestDestination(i, shown, saliency[i], eps, denom, cells, s, &s.claim_cost[i]);
    }
  }
  for (int j = 0; j < cells; j++) source[j] = s.first_claimant[j];
}

}  // namespace multimix_graphcut
