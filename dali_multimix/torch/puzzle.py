"""Puzzle Mix (Kim, Choo, Song, ICML 2020) and multi-mix Puzzle Mix (Shen et al.).

Puzzle Mix needs the model (its saliency is the gradient of the loss with respect to the input),
so it runs in torch, after the loader. Per batch: one saliency pass, one partner permutation, one
block count per side drawn from {2, 4, 8, 16}; per mixing ratio lambda a mask on the block grid
that keeps the salient blocks of both images (a graph cut of unary saliency costs, a prior from
lambda and a smoothness term from the images' local statistics), then an optimal-transport-like
move of each image's blocks under its mask, then the mix. Multi-mix makes K masks from K sorted
ratios (K priors, K transports) for the same saliency, partners and block size.

The defaults are those of the original CIFAR-100 setting (ALGORITHMS.md): n_labels 3, beta 1.2,
gamma 0.5, eta 0.2, neighbourhood 4, transport with eps 0.8 and 4-pixel cells, clean_lam 0.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from math import comb
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import sampling
from .graphcut import GridEnergy, solve_exact, solve_swap
from .mixing import MAX_K

SOLVERS = {"exact": solve_exact, "swap": solve_swap}
_POOLS: dict = {}


def _solver_pool(workers: int) -> ProcessPoolExecutor:
    """A persistent pool of `workers` processes for the graph cuts (spawned: no fork of a process
    that holds torch's and DALI's threads)."""
    if workers not in _POOLS:
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[workers]


class PuzzleResult(NamedTuple):
    """B*K rows (row b*K + k: sample b at step k, ordered by weight): images (N, C, H, W);
    labels, partner_labels (N,); weights (N,) the fraction taken from the partner."""

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weights: torch.Tensor


def input_saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   clean_lam: float = 0.0) -> torch.Tensor:
    """(B, H, W) saliency: sqrt(mean over channels of (d loss / d x)^2) on the clean batch.

    clean_lam = 0: an eval-mode pass whose parameter gradients are discarded (the original's
    CIFAR setting). clean_lam > 0: a training-mode pass whose loss, scaled by clean_lam, keeps its
    parameter gradients (they add to the step's)."""
    was_training = model.training
    x = x.detach().requires_grad_(True)
    if clean_lam > 0:
        loss = clean_lam * F.cross_entropy(model(x), y)
        loss.backward()
        grad = x.grad
    else:
        model.eval()
        try:
            grad = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
        finally:
            model.train(was_training)
    return grad.detach().pow(2).mean(1).sqrt()


def block_saliency(saliency: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, H, W) saliency averaged over a cells x cells grid and normalised to sum 1 per image."""
    pooled = F.avg_pool2d(saliency[:, None], saliency.shape[-1] // cells)[:, 0]
    return pooled / pooled.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]


def _border_penalty(a: torch.Tensor, b: torch.Tensor, k: int):
    """Mean |difference| across the block borders between pooled images a (upper / left block)
    and b (lower / right block): (B, n-1, n) vertical and (B, n, n-1) horizontal, for blocks of
    k x k pooled cells."""
    below = (a[:, :, k - 1:-1:k, :] - b[:, :, k::k, :]).abs().mean(1)      # (B, n-1, n*k)
    right = (a[:, :, :, k - 1:-1:k] - b[:, :, :, k::k]).abs().mean(1)      # (B, n*k, n-1)
    return F.avg_pool1d(below, k), F.avg_pool1d(right.transpose(1, 2), k).transpose(1, 2)


def puzzle_energies(saliency: torch.Tensor, images: torch.Tensor, partners: torch.Tensor,
                    lambdas: torch.Tensor, block_num: int, *, n_labels: int = 3, beta: float = 1.2,
                    gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4) -> list:
    """The mask energies of every (sample, step), a list (B) of lists (K) of GridEnergy.

    Label l of a block shows the own image with weight 1 - l/(n_labels-1). Its unary cost is the
    saliency it hides, interpolated between the two images' normalised block saliency, plus the
    prior eta * -log(Binomial(n_labels-1, lambda).pmf(l)) / n^2; the pairwise weight is beta' (=
    beta/n/16) plus beta' * gamma times the submodular part of the border mismatch of the four
    (own, partner) choices, whose modular part goes to the unary costs (as in the original)."""
    batch, _, height, width = images.shape
    block = width // block_num
    neigh = min(neigh_size, block)
    k = block // neigh
    beta_n = beta / block_num / 16
    s_own = block_saliency(saliency, block_num)
    s_partner = s_own[partners]
    own_pool = F.avg_pool2d(images, neigh)
    partner_pool = own_pool[partners]
    # theta[a][b]: a = choice of the upper / left block, b = of the lower / right; 0 own, 1 partner
    pools = (own_pool, partner_pool)
    pen = {(a, b): _border_penalty(pools[a], pools[b], k) for a in (0, 1) for b in (0, 1)}
    scale = beta_n * gamma
    cost_own, cost_partner = s_partner.clone(), s_own.clone()  # showing one hides the other
    for axis in (0, 1):
        t = {ab: scale * pen[ab][axis] for ab in pen}
        first = (slice(None), slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None), slice(None, -1))
        second = (slice(None), slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(None), slice(1, None))
        cost_own[first] += (t[0, 0] + t[0, 1]) / 2
        cost_partner[first] += (t[1, 0] + t[1, 1]) / 2
        cost_own[second] += (t[0, 0] + t[1, 0]) / 2
        cost_partner[second] += (t[0, 1] + t[1, 1]) / 2
    w_v = ((scale * (pen[0, 1][0] + pen[1, 0][0] - pen[0, 0][0] - pen[1, 1][0])) / 2 + beta_n).clamp_min(0)
    w_h = ((scale * (pen[0, 1][1] + pen[1, 0][1] - pen[0, 0][1] - pen[1, 1][1])) / 2 + beta_n).clamp_min(0)
    t_grid = torch.linspace(0, 1, n_labels, dtype=torch.float64)
    energies = []
    c_own, c_partner = cost_own.double().cpu().numpy(), cost_partner.double().cpu().numpy()
    w_v, w_h = w_v.double().cpu().numpy(), w_h.double().cpu().numpy()
    for i in range(batch):
        base = np.stack([(1 - t) * c_own[i] + t * c_partner[i] for t in t_grid.tolist()], -1)
        row = []
        for lam in lambdas[i].tolist():
            pmf = np.array([comb(n_labels - 1, l) * lam ** l * (1 - lam) ** (n_labels - 1 - l)
                            for l in range(n_labels)])
            prior = eta * -np.log(pmf + 1e-8) / block_num ** 2
            row.append(GridEnergy(base + prior, w_v[i], w_h[i]))
        energies.append(row)
    return energies


def cost_matrix(n: int) -> torch.Tensor:
    """Squared distance between the cells of an n x n grid, over (n - 1)^2: (n^2, n^2)."""
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    return ((ij[:, None] - ij[None]) ** 2).sum(-1).float() / max(n - 1, 1) ** 2


def mask_transport(mask: torch.Tensor, saliency: torch.Tensor, eps: float) -> torch.Tensor:
    """The original's block assignment (n iterations): cost_ij = eps * dist^2(i, j) - s_i * z_j,
    z = cells where the mask shows this image; each source cell claims its cheapest destination,
    in each destination the cheapest claimant wins (by argmin over the claims, as the original,
    so a destination whose claims all cost more than 0 goes to nobody), losers pay 1 more for it.
    mask, saliency (B, n, n) -> plan (B, n^2, n^2), plan[b, i, j] = 1: cell i moves to cell j."""
    batch, n = mask.shape[0], mask.shape[-1]
    cost = eps * cost_matrix(n).to(mask.device) - saliency.reshape(batch, -1, 1) * \
        (mask > 0).float().reshape(batch, 1, -1)
    plan_win = torch.zeros_like(cost)
    for _ in range(n):
        plan = torch.zeros_like(cost).scatter_(-1, cost.argmin(-1, keepdim=True), 1)
        winners = (plan * cost).argmin(-2, keepdim=True)
        plan_win = torch.zeros_like(cost).scatter_(-2, winners, 1) * plan
        cost = cost + (1 - plan_win) * plan
    return plan_win


def transport_blocks(images: torch.Tensor, plan: torch.Tensor, n: int) -> torch.Tensor:
    """Moves the n x n cells of (B, C, H, W) images as `plan` says; unclaimed cells become 0."""
    b, c, h, w = images.shape
    cells = images.reshape(b, c, n, h // n, n, w // n).permute(0, 1, 2, 4, 3, 5).reshape(b, c, n * n, -1)
    moved = torch.einsum("bij,bcip->bcjp", plan.to(images.dtype), cells)
    return moved.reshape(b, c, n, n, h // n, w // n).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


class PuzzleMix:
    """Puzzle Mix with K ordered masks per pair (k=1: the original method).

    ``PuzzleMix(k=5)(model, x, y) -> PuzzleResult`` of B*K rows. `mean` / `std` (per channel)
    undo the normalisation of x for the smoothness term, as the original. workers > 1 runs the
    graph cuts of a batch in that many worker processes.
    """

    def __init__(self, k: int = 1, *, alpha: float = 1.0, n_labels: int = 3, beta: float = 1.2,
                 gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4, transport: bool = True,
                 t_eps: float = 0.8, t_size: int = 4, block_nums: Sequence[int] = (2, 4, 8, 16),
                 solver: str = "exact", clean_lam: float = 0.0, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, workers: int = 1,
                 generator: Optional[torch.Generator] = None):
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"PuzzleMix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
        if solver not in SOLVERS:
            raise ValueError(f"PuzzleMix: `solver` must be one of {list(SOLVERS)}; got {solver!r}")
        if n_labels < 2:
            raise ValueError(f"PuzzleMix: `n_labels` must be >= 2; got {n_labels}")
        if not alpha > 0:
            raise ValueError(f"PuzzleMix: `alpha` must be > 0; got {alpha}")
        self.k, self.alpha, self.n_labels = k, alpha, n_labels
        self.beta, self.gamma, self.eta, self.neigh_size = beta, gamma, eta, neigh_size
        self.transport, self.t_eps, self.t_size = transport, t_eps, t_size
        self.block_nums, self.solver, self.clean_lam = tuple(block_nums), solver, clean_lam
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"PuzzleMix: `workers` must be an integer >= 1; got {workers!r}")
        self.mean, self.std = mean, std
        self.workers, self.generator = workers, generator

    def masks(self, saliency, images, partners, lambdas, block_num):
        """(B, K, n, n) own-image weights of the blocks, one graph cut per (sample, step)."""
        energies = puzzle_energies(saliency, images, partners, lambdas, block_num,
                                   n_labels=self.n_labels, beta=self.beta, gamma=self.gamma,
                                   eta=self.eta, neigh_size=self.neigh_size)
        # in worker processes, not threads: gco aborted the process (heap corruption) when called
        # from a thread pool, and PyMaxflow keeps the GIL, so threads would not help anyway
        flat = [e for row in energies for e in row]
        solve = SOLVERS[self.solver]
        if self.workers > 1:
            labels = list(_solver_pool(self.workers).map(solve, flat, chunksize=max(1, len(flat) // (4 * self.workers))))
        else:
            labels = [solve(e) for e in flat]
        labels = torch.from_numpy(np.stack(labels)).float().reshape(len(energies), -1, block_num, block_num)
        return 1.0 - labels / (self.n_labels - 1)

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> PuzzleResult:
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"PuzzleMix: `x` must be (B, C, H, W) with H == W; got {tuple(x.shape)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"PuzzleMix: `y` has {y.shape[0]} rows for {x.shape[0]} images")
        batch, channels, _, width = x.shape
        choices = [n for n in self.block_nums if width % n == 0 and n <= width]
        if not choices:
            raise ValueError(f"PuzzleMix: no block count of {self.block_nums} divides width {width}")
        g = self.generator
        saliency = input_saliency(model, x, y, self.clean_lam)
        block_num = choices[int(torch.randint(len(choices), (1,), generator=g))]
        partners = sampling.sample_partners(batch, generator=g).to(x.device)
        lambdas = sampling.sample_lambdas(batch, self.k, self.alpha, generator=g)
        raw = x
        if self.mean is not None and self.std is not None:
            view = (1, channels, 1, 1)
            raw = x * torch.tensor(self.std, device=x.device).view(view) + \
                torch.tensor(self.mean, device=x.device).view(view)
        with torch.no_grad():
            mask = self.masks(saliency, raw.detach(), partners, lambdas, block_num).to(x.device)
            own, partner = x.detach(), x.detach()[partners]
            cells = self._transport_cells(width, block_num)
            s_cells = block_saliency(saliency, cells) if self.transport else None
            outputs, weights = [], []
            for step in range(self.k):
                m = mask[:, step:step + 1]
                if self.transport:  # each image's blocks move under its own part of the mask
                    m = F.interpolate(m, size=cells, mode="nearest")
                    own_t = transport_blocks(own, mask_transport(m[:, 0], s_cells, self.t_eps), cells)
                    partner_t = transport_blocks(
                        partner, mask_transport(1 - m[:, 0], s_cells[partners], self.t_eps), cells)
                else:
                    own_t, partner_t = own, partner
                m_full = F.interpolate(m, size=width, mode="nearest")
                outputs.append(m_full * own_t + (1 - m_full) * partner_t)
                weights.append(1 - m_full.flatten(1).mean(1))
            images = torch.stack(outputs, 1)
            weights = torch.stack(weights, 1)
            order = weights.argsort(dim=1, stable=True)  # the K steps ordered by weight
            weights = weights.gather(1, order)
            images = images.gather(1, order.view(batch, self.k, 1, 1, 1).expand_as(images))
        return PuzzleResult(images.flatten(0, 1), y.repeat_interleave(self.k, 0),
                            y[partners].repeat_interleave(self.k, 0), weights.reshape(-1))

    def _transport_cells(self, width: int, block_num: int) -> int:
        """Cells per side of the transport grid: t_size-pixel cells when finer than the blocks."""
        return width // self.t_size if self.t_size < width // block_num else block_num


class SaliencyMix:
    """SaliencyMix (Uddin et al., ICLR 2021) with K nested boxes: the partner's box is centred on
    the peak of the partner's saliency and sized as CutMix (H*sqrt(lambda) x W*sqrt(lambda)),
    pasted at the same place; the weight is the box's area fraction. Saliency here is the input
    gradient of the model (the original uses OpenCV's static fine-grained saliency, not
    available here). k=1 is the original method. ``SaliencyMix(k)(model, x, y) -> PuzzleResult``.
    """

    def __init__(self, k: int = 1, *, alpha: float = 1.0, generator: Optional[torch.Generator] = None):
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"SaliencyMix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
        self.k, self.alpha, self.generator = k, alpha, generator

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> PuzzleResult:
        from .mixing import cutmix_masks

        if x.dim() != 4:
            raise ValueError(f"SaliencyMix: `x` must be (B, C, H, W); got {tuple(x.shape)}")
        batch, _, h, w = x.shape
        saliency = input_saliency(model, x, y)
        partners = sampling.sample_partners(batch, generator=self.generator).to(x.device)
        lambdas = sampling.sample_lambdas(batch, self.k, self.alpha, generator=self.generator)
        peak = saliency[partners].flatten(1).argmax(1).cpu()
        centers = torch.stack([peak // w, peak % w], 1)
        masks = cutmix_masks(h, w, lambdas, centers).to(x.device)           # (B, K, H, W)
        partner = x.detach()[partners]
        images = torch.where(masks[:, :, None], partner[:, None], x.detach()[:, None])
        weights = masks.flatten(2).double().mean(2).float()
        return PuzzleResult(images.flatten(0, 1), y.repeat_interleave(self.k, 0),
                            y[partners].repeat_interleave(self.k, 0), weights.reshape(-1).to(x.device))
