"""Puzzle Mix and multi-mix Puzzle Mix.

Puzzle Mix: J.-H. Kim, W. Choo, H. O. Song, "Puzzle Mix: Exploiting Saliency and Local Statistics
for Optimal Mixup", ICML 2020; the authors' code: https://github.com/snu-mllab/PuzzleMix
(``mixup.py``: ``mixup_graph``, ``graphcut_multi``, ``neigh_penalty``, ``mask_transport``,
``transport_image``). Multi-mix: Shen, Yu, Yang, Kwok, "Mixup Augmentation with Multiple
Interpolations", Sec. III-A3: K masks from K mixing priors, each parameterised by one lambda_k.

Puzzle Mix needs the model (its saliency is the gradient of the loss with respect to the input),
so it runs in torch, after the loader. Per batch: one saliency pass, one partner permutation, one
block count per side drawn from {2, 4, 8, 16}; per mixing ratio lambda a mask on the block grid
that keeps the salient blocks of both images (a graph cut of unary saliency costs, a prior from
lambda and a smoothness term from the images' local statistics), then an optimal-transport-like
move of each image's blocks under its mask, then the mix. Multi-mix makes K masks from K sorted
ratios (K priors, K transports) for the same saliency, partners and block size.

Conventions. lambda is the partner's share (the paper's mix(z, z'; lambda) = (1-lambda) z +
lambda z'); the original's ratio is the own image's share, so its ``alpha`` is 1 - lambda here.
A mask m is the own image's weight per block (1, 0.5, 0 with three labels); the mixed image is
m * x_own' + (1 - m) * x_partner' (x' transported) and the label weight is 1 - mean(m).

Pixel scale: ``mean`` / ``std`` are per-channel, on DALI's 0..255 scale (the numbers given to
``fn.crop_mirror_normalize``); the pixel-level terms (block-border statistics) are computed on
[0, 1] pixels, (x * std + mean) / 255, as the original (which un-normalises with [0, 1]-scale
statistics). On 0..255 pixels that term is 255x too strong and the K masks collapse toward the
middle (measured: mean partner fraction [.48 .50 .51 .51 .60] for lambda = .1 .. .9 instead of
[0 0 .5 .98 1]).

Any image size (square images). The rules, each equal to the original wherever the original runs
(it needs the side divisible by the block count and the block side by the neighbourhood and
transport cell sizes, and transport grids of 2, 4, 8 or 16 cells):

- block counts that do not divide the side are left out of the random choice (28 px: 2 and 4);
- neighbourhood: the largest divisor of the block side that is <= ``neigh_size`` (the original
  takes min(neigh_size, block side)); e.g. 224 px, 16 blocks of 14 px: 2 (the authors' ImageNet
  code uses neigh_size 2 throughout);
- transport cells: the largest divisor of the block side that is <= ``t_size`` when that is
  smaller than the block and gives at most :data:`MAX_TRANSPORT_GRID` cells per side; the block
  grid otherwise (and for ``t_size=-1``, the original's "same resolution as the graph cut", the
  setting of its Tiny-ImageNet and ImageNet code). 32 px, t_size 4: 8 x 8 cells for 2 and 4 blocks,
  the block grid for 8 and 16, as the original's CIFAR setting.

The defaults are those of the original CIFAR-100 setting: n_labels 3, beta 1.2, gamma 0.5, eta
0.2, neighbourhood 4, transport with eps 0.8 and 4-pixel cells, clean_lam 0, one lambda per batch.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache, partial
from math import comb
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import sampling
from .graphcut import NATIVE_TRANSPORT_MAX_SIDE, GridEnergy, native_available, native_library, \
    solve_steps, solve_exact, solve_native, solve_swap, swap_scale, transport_native
from .mixing import MAX_K

#: "exact": the optimum, natively (the energies and cuts of all graphs of a batch in one call over
#: threads: puzzle_masks_native, or graphcut.solve_steps on the torch energies of CUDA tensors)
#: when libmultimix_graphcut.so is built, else PyMaxflow; "native" / "maxflow": that
#: implementation of the same optimum only; "swap": gco's alpha-beta swap (the original's solver)
SOLVERS = {"exact": solve_exact, "swap": solve_swap, "native": solve_native, "maxflow": solve_exact}
#: the largest transport grid (cells per side) built from t_size-pixel cells; the original's
#: cost matrices exist for 2, 4, 8 and 16 cells per side only
MAX_TRANSPORT_GRID = 16
_POOLS: dict = {}


def _solver_pool(workers: int) -> ProcessPoolExecutor:
    """A persistent pool of `workers` processes for the graph cuts (spawned: no fork of a process
    that holds torch's and DALI's threads)."""
    if workers not in _POOLS:
        _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    return _POOLS[workers]


def _map_in_workers(solve, energies: list, workers: int) -> list:
    """solve(e) for every energy in `workers` spawned processes. A pool that breaks (most often:
    the script that created it has no ``if __name__ == "__main__":`` guard, so every spawned worker
    re-runs it) is dropped and reported with that cause instead of a bare BrokenProcessPool."""
    try:
        return list(_solver_pool(workers).map(solve, energies,
                                              chunksize=max(1, len(energies) // (4 * workers))))
    except BrokenProcessPool as err:
        _POOLS.pop(workers, None)
        raise RuntimeError(
            f"PuzzleMix: the {workers} graph-cut worker processes (workers={workers}) died. Worker "
            "processes are spawned and re-import the main script: put the script's training code "
            "under `if __name__ == \"__main__\":`, or use workers=1 (the native solver, the default "
            "where it is built, runs threads and needs no workers)") from err


class PuzzleResult(NamedTuple):
    """B*K rows (row b*K + k: sample b at step k, ordered by weight): images (N, C, H, W);
    labels, partner_labels (N,); weights (N,) the fraction taken from the partner."""

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weights: torch.Tensor


class PuzzleMixed(NamedTuple):
    """What :meth:`PuzzleMix.mix` makes, steps in the order of the given lambdas (B samples, K steps,
    n blocks per side): images (B, K, C, H, W) the mixed images; weights (B, K) the partner's share
    1 - mean(mask); masks (B, K, n, n) the own image's weight per block; own_moved and partner_moved
    (B, K, C, H, W) the two images after transport (equal to the inputs without transport)."""

    images: torch.Tensor
    weights: torch.Tensor
    masks: torch.Tensor
    own_moved: torch.Tensor
    partner_moved: torch.Tensor


def check_pixel_stats(mean, std, channels: Optional[int] = None,
                      who: str = "PuzzleMix") -> tuple[tuple, tuple]:
    """Validates per-channel `mean` / `std` on DALI's 0..255 scale (what ``fn.crop_mirror_normalize``
    takes) and returns them as tuples of floats. Raises ValueError naming the argument when one is
    missing, has the wrong length for `channels`, is not finite, has std <= 0, lies outside
    0..255, or looks like [0, 1]-scale numbers (every mean and std <= 1)."""
    out = []
    for name, value in (("mean", mean), ("std", std)):
        if value is None:
            raise ValueError(f"{who}: `{name}` is required: the per-channel {name} the images were "
                             f"normalised with, on the 0..255 scale (as given to "
                             f"fn.crop_mirror_normalize); got None")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().reshape(-1).tolist()
        elif isinstance(value, np.ndarray):
            value = value.reshape(-1).tolist()
        elif isinstance(value, (int, float)):
            value = [value]
        try:
            value = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: `{name}` must be a sequence of numbers (one per channel, "
                             f"0..255 scale); got {value!r}") from None
        if not value or (channels is not None and len(value) not in (1, channels)):
            raise ValueError(f"{who}: `{name}` must have one value per channel ({channels} for these "
                             f"images) or a single value; got {len(value)}: {list(value)}")
        if not all(math.isfinite(v) for v in value):
            raise ValueError(f"{who}: `{name}` must be finite; got {list(value)}")
        if name == "std" and min(value) <= 0:
            raise ValueError(f"{who}: `std` must be > 0 in every channel; got {list(value)}")
        if name == "mean" and (min(value) < 0 or max(value) > 255):
            raise ValueError(f"{who}: `mean` must lie in 0..255 (the 0..255 pixel scale); got "
                             f"{list(value)}")
        if name == "std" and max(value) > 255:
            raise ValueError(f"{who}: `std` must be <= 255 (the 0..255 pixel scale); got {list(value)}")
        out.append(value)
    if max(out[0]) <= 1 and max(out[1]) <= 1:
        raise ValueError(f"{who}: `mean` and `std` must be on the 0..255 scale (e.g. CIFAR-100 mean "
                         f"[129.3, 124.1, 112.4], std [68.2, 65.4, 70.4]); got mean {list(out[0])}, "
                         f"std {list(out[1])}, which look like [0, 1]-scale numbers: multiply by 255")
    return out[0], out[1]


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of n that is <= limit (at least 1)."""
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def neighbourhood_size(block: int, neigh_size: int) -> int:
    """Pixels per side of the neighbourhoods pooled for the border statistics of blocks of
    `block` pixels: the largest divisor of `block` <= neigh_size (the original: min(neigh_size,
    block), the same wherever that divides the block)."""
    return largest_divisor_at_most(block, neigh_size)


def transport_grid(width: int, block_num: int, t_size: int) -> int:
    """Cells per side of the transport grid (see the module docstring): width / c with c the
    largest divisor of the block side <= t_size, when c is smaller than the block and the grid has
    at most MAX_TRANSPORT_GRID cells per side; else the block grid (always for t_size = -1)."""
    block = width // block_num
    if t_size == -1 or t_size >= block:
        return block_num
    cells = width // largest_divisor_at_most(block, t_size)
    return cells if cells <= MAX_TRANSPORT_GRID else block_num


def block_choices(width: int, block_nums: Sequence[int]) -> list:
    """The block counts of `block_nums` usable for square images of side `width`: those that divide
    it (28 px: 2, 4, 7, 14, 28 of any list)."""
    return [n for n in block_nums if 1 <= n <= width and width % n == 0]


def input_saliency(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                   clean_lam: float = 0.0, *,
                   scaler: Optional["torch.amp.GradScaler"] = None) -> torch.Tensor:
    """(B, H, W) saliency of (B, C, H, W) inputs: sqrt(mean over channels of (d loss / d x)^2) on
    the clean batch (Puzzle Mix, Kim et al. 2020, Sec. 3).

    clean_lam = 0: an eval-mode pass whose parameter gradients are discarded (the original's
    CIFAR setting). clean_lam > 0: a training-mode pass whose loss, clean_lam * cross-entropy,
    keeps its parameter gradients (they add to the step's). Under mixed precision pass the
    step's GradScaler: that loss is then backpropagated as ``scaler.scale(loss)``, like the mixed
    loss, so that ``scaler.unscale_`` gives its true gradient (the saliency is unscaled too)."""
    was_training = model.training
    x = x.detach().requires_grad_(True)
    if clean_lam > 0:
        loss = clean_lam * F.cross_entropy(model(x), y)
        scaled = scaler is not None and scaler.is_enabled()
        (scaler.scale(loss) if scaled else loss).backward()
        grad = x.grad / scaler.get_scale() if scaled else x.grad
    else:
        model.eval()
        try:
            grad = torch.autograd.grad(F.cross_entropy(model(x), y), x)[0]
        finally:
            model.train(was_training)
    return grad.detach().float().pow(2).mean(1).sqrt()


def block_saliency(saliency: torch.Tensor, cells: int) -> torch.Tensor:
    """(B, H, W) saliency averaged over a cells x cells grid and normalised to sum 1 per image:
    (B, cells, cells)."""
    pooled = F.avg_pool2d(saliency[:, None], saliency.shape[-1] // cells)[:, 0]
    return _sum_to_one(pooled)


def _sum_to_one(pooled: torch.Tensor) -> torch.Tensor:
    """(B, n, n) block saliency divided by its sum per image (at least 1e-12)."""
    return pooled / pooled.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]


def _sum_to_one_in_place(pooled: np.ndarray) -> np.ndarray:
    """:func:`_sum_to_one` of a float32 array, in place: torch's sums (its order of the adds), the
    clamp and the division in numpy (exact float32 operations: the same numbers, fewer torch ops)."""
    sums = torch.from_numpy(pooled).flatten(1).sum(1).numpy()
    with np.errstate(invalid="ignore"):  # non-finite saliency: the library names the sample
        pooled /= np.maximum(sums, np.float32(1e-12))[:, None, None]
    return pooled


def _border_penalty(a: torch.Tensor, b: torch.Tensor, k: int):
    """The original's ``neigh_penalty``: mean |difference| across the block borders between pooled
    images a (upper / left block) and b (lower / right block): (B, n-1, n) vertical and
    (B, n, n-1) horizontal, for blocks of k x k pooled cells."""
    below = (a[:, :, :-1, :] - b[:, :, 1:, :])[:, :, k - 1::k, :]
    right = (a[:, :, :, :-1] - b[:, :, :, 1:])[:, :, :, k - 1::k]
    if k == 1:  # a 1 x 1 average is the value itself (x / 1 == x exactly): skip the pooling
        return below.abs().mean(1), right.abs().mean(1)
    return (F.avg_pool2d(below.abs().mean(1), kernel_size=(1, k)),
            F.avg_pool2d(right.abs().mean(1), kernel_size=(k, 1)))


def puzzle_energy_arrays(saliency: torch.Tensor, pixels: torch.Tensor, partners: torch.Tensor,
                         lambdas: torch.Tensor, block_num: int, *, n_labels: int = 3,
                         beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                         neigh_size: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The energies of :func:`puzzle_energies` as arrays, for the batched solver: unary
    (B, K, n, n, n_labels), cost_v (B, n-1, n), cost_h (B, n, n-1) float64 (the pairwise weights
    are those of every step of a sample). Same arithmetic, so the same numbers bit for bit."""
    batch, _, height, width = pixels.shape
    block = width // block_num
    neigh = neighbourhood_size(block, neigh_size)
    k = block // neigh
    beta_n = beta / block_num / 16
    s_own = block_saliency(saliency, block_num)
    s_partner = s_own[partners]
    own_pool = F.avg_pool2d(pixels, neigh)
    partner_pool = own_pool[partners]
    # theta[a][b]: a = choice of the upper / left block, b = of the lower / right; 0 own, 1 partner
    # the four (a, b) pairs in one call: rows [q * B, (q + 1) * B) are pair q = 2a + b
    first_pool = torch.cat((own_pool, own_pool, partner_pool, partner_pool))
    second_pool = torch.cat((own_pool, partner_pool, own_pool, partner_pool))
    pen_v, pen_h = _border_penalty(first_pool, second_pool, k)
    pen = {(a, b): (pen_v[(2 * a + b) * batch:(2 * a + b + 1) * batch],
                    pen_h[(2 * a + b) * batch:(2 * a + b + 1) * batch]) for a in (0, 1) for b in (0, 1)}
    scale = beta_n * gamma
    cost_own, cost_partner = s_partner.clone(), s_own.clone()  # showing one hides the other
    weights = []
    for axis in (0, 1):
        t = {ab: scale * pen[ab][axis] for ab in pen}
        first = (slice(None), slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None), slice(None, -1))
        second = (slice(None), slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(None), slice(1, None))
        cost_own[first] += (t[0, 0] + t[0, 1]) / 2
        cost_partner[first] += (t[1, 0] + t[1, 1]) / 2
        cost_own[second] += (t[0, 0] + t[1, 0]) / 2
        cost_partner[second] += (t[0, 1] + t[1, 1]) / 2
        weights.append(((t[0, 1] + t[1, 0] - t[0, 0] - t[1, 1]) / 2 + beta_n).clamp_min(0))
    w_v, w_h = (w.double().cpu().numpy() for w in weights)
    t_grid = torch.from_numpy(label_grid(n_labels))
    c_own, c_partner = cost_own.cpu().double(), cost_partner.cpu().double()
    # (1 - t) * c_own + t * c_partner per label t, elementwise in float64: (B, n, n, L)
    base = (1 - t_grid) * c_own[..., None] + t_grid * c_partner[..., None]
    prior = torch.from_numpy(label_prior(lambdas, block_num, n_labels, eta))
    unary = (base[:, None] + prior[:, :, None, None, :]).numpy()
    return unary, w_v, w_h


def label_grid(n_labels: int) -> np.ndarray:
    """The partner's share t_l = l / (n_labels - 1) of each label l, as the energies use it:
    (n_labels,) float64 (np.linspace's numbers)."""
    return np.linspace(0, 1, n_labels)


@lru_cache(maxsize=None)
def _binomial_coefficients(n_labels: int) -> np.ndarray:
    """comb(n_labels - 1, l) for each label l as float64, read-only (computed once per count)."""
    combs = np.array([float(comb(n_labels - 1, l)) for l in range(n_labels)])
    combs.flags.writeable = False
    return combs


@lru_cache(maxsize=None)
def _library_label_grid(n_labels: int) -> np.ndarray:
    """:func:`label_grid`, read-only for the library's calls (computed once per count)."""
    grid = label_grid(n_labels)
    grid.flags.writeable = False
    return grid


def label_prior(lambdas: torch.Tensor, block_num: int, n_labels: int, eta: float) -> np.ndarray:
    """The prior cost of each label for each (sample, step): eta * -log(Binomial(n_labels - 1,
    lambda).pmf(l) + 1e-8) / n^2, (B, K, n_labels) float64 for lambdas (B, K), computed as the
    original: the pmf in Python floats per distinct lambda (in the native library when it is
    built, per lambda: the same libm pow that Python's ** calls, the same numbers), then the rest
    in float64."""
    lams = np.ascontiguousarray(lambdas.detach().cpu().numpy(), dtype=np.float64)
    last = n_labels - 1
    lib = native_library()
    if lib is not None:  # every lambda: a call of libm's pow costs less than finding the distinct
        combs = _binomial_coefficients(n_labels)
        pmf = np.empty(lams.shape + (n_labels,))
        lib.mm_binomial_pmf(lams.ctypes.data, lams.size, n_labels, combs.ctypes.data, pmf.ctypes.data)
    else:  # Python floats, once per distinct lambda
        distinct, index = np.unique(lams, return_inverse=True)
        terms = [(comb(last, l), l, last - l) for l in range(n_labels)]
        pmf = np.array([[c * lam ** a * (1 - lam) ** b for c, a, b in terms]
                        for lam in distinct.tolist()], dtype=np.float64).reshape(len(distinct), n_labels)
        pmf = pmf[index.reshape(lams.shape)]
    return eta * -np.log(pmf + 1e-8) / block_num ** 2


def puzzle_energies(saliency: torch.Tensor, pixels: torch.Tensor, partners: torch.Tensor,
                    lambdas: torch.Tensor, block_num: int, *, n_labels: int = 3, beta: float = 1.2,
                    gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4) -> list:
    """The mask energies of every (sample, step), a list (B) of lists (K) of GridEnergy.

    saliency (B, H, W); pixels (B, C, H, W) on the [0, 1] scale (un-normalised: the border term
    is calibrated for it); partners (B,); lambdas (B, K) partner shares; block_num n divides H = W.
    Label l of a block shows the own image with weight 1 - l/(n_labels-1). Its unary cost is the
    saliency it hides, interpolated between the two images' normalised block saliency, plus the
    prior eta * -log(Binomial(n_labels-1, lambda).pmf(l) + 1e-8) / n^2; the pairwise weight is beta'
    (= beta/n/16) plus beta' * gamma times the submodular part of the border mismatch of the four
    (own, partner) choices, whose modular part goes to the unary costs (as ``mixup_graph``, with
    the same float32 arithmetic, so that the original's integer quantisation gives its labels)."""
    unary, w_v, w_h = puzzle_energy_arrays(saliency, pixels, partners, lambdas, block_num,
                                           n_labels=n_labels, beta=beta, gamma=gamma, eta=eta,
                                           neigh_size=neigh_size)
    return [[GridEnergy(u, w_v[i], w_h[i]) for u in unary[i]] for i in range(unary.shape[0])]


#: the channel counts whose energies the native library computes bit for bit as torch does
#: (csrc/puzzle_energy.h; torch adds the channels of larger images in another order)
NATIVE_ENERGY_MAX_CHANNELS = 4


def native_energies_apply(saliency: torch.Tensor, pixels: torch.Tensor) -> bool:
    """Whether :func:`puzzle_masks_native` takes these inputs: float32 CPU tensors, at most
    :data:`NATIVE_ENERGY_MAX_CHANNELS` channels, and the native library built."""
    return (saliency.device.type == "cpu" and pixels.device.type == "cpu"
            and saliency.dtype == torch.float32 and pixels.dtype == torch.float32
            and pixels.dim() == 4 and 1 <= pixels.shape[1] <= NATIVE_ENERGY_MAX_CHANNELS
            and native_available())


def own_weights(labels: np.ndarray, n_labels: int) -> torch.Tensor:
    """The own image's weight 1 - l / (n_labels - 1) of each label l, as a float32 CPU tensor of
    the labels' shape (in numpy: no parallel torch op, which would leave torch's OpenMP workers
    spinning before the transport)."""
    return torch.from_numpy(1.0 - labels.astype(np.float32) / np.float32(n_labels - 1))


def _address(array: Optional[np.ndarray]) -> Optional[int]:
    """The data address of an array for a native call; None (a null pointer) for None."""
    return None if array is None else array.ctypes.data


def _puzzle_native(who: str, saliency: torch.Tensor, pixels: torch.Tensor, partners: torch.Tensor,
                   lambdas: torch.Tensor, block_num: int, n_labels: int, beta: float, gamma: float,
                   eta: float, neigh_size: int, output: str, threads: int):
    """One call of the native library's mm_puzzle_masks: its `output`, "labels" (int32),
    "weights" (:func:`own_weights` of the labels, written by the library) or "energies"."""
    if not native_energies_apply(saliency, pixels):
        raise ValueError(f"{who}: needs float32 CPU `saliency` and `pixels` with 1 to "
                         f"{NATIVE_ENERGY_MAX_CHANNELS} channels and libmultimix_graphcut.so; got "
                         f"{saliency.dtype} {saliency.device} and {pixels.dtype} {pixels.device} "
                         f"{tuple(pixels.shape)} (use puzzle_energy_arrays)")
    batch, channels, height, width = pixels.shape
    if height != width or width % block_num != 0 or saliency.shape != (batch, height, width):
        raise ValueError(f"{who}: `pixels` must be (B, C, H, H) with H divisible by block_num "
                         f"{block_num} and `saliency` (B, H, H); got {tuple(pixels.shape)} and "
                         f"{tuple(saliency.shape)}")
    lambdas = torch.as_tensor(lambdas)
    if lambdas.dim() != 2 or lambdas.shape[0] != batch or tuple(partners.shape) != (batch,):
        raise ValueError(f"{who}: `lambdas` must be (B, K) and `partners` (B,) for B = {batch}; "
                         f"got {tuple(lambdas.shape)} and {tuple(partners.shape)}")
    lib = native_library()
    block = width // block_num
    neigh = neighbourhood_size(block, neigh_size)
    beta_n = beta / block_num / 16
    # block_saliency with the pooling in the library (bit for bit): torch would pool in parallel,
    # and its OpenMP workers spin for ~10 ms after, taking a core from the cuts
    sal = np.ascontiguousarray(saliency.detach().numpy())
    pooled = np.empty((batch, block_num, block_num), np.float32)
    if lib.mm_avg_pool(sal.ctypes.data, batch, height, width, block, block, pooled.ctypes.data):
        raise ValueError(f"{who}: the library refused to pool saliency {tuple(saliency.shape)}")
    s_own = _sum_to_one_in_place(pooled)
    pix = np.ascontiguousarray(pixels.detach().numpy())
    mates = np.ascontiguousarray(partners.detach().cpu().numpy(), dtype=np.int64)
    prior = np.ascontiguousarray(label_prior(lambdas, block_num, n_labels, eta))
    t_grid = _library_label_grid(n_labels)
    steps = prior.shape[1]
    labels = weights = unary = cost_v = cost_h = None
    if output == "energies":
        unary = np.empty((batch, steps, block_num, block_num, n_labels))
        cost_v = np.empty((batch, block_num - 1, block_num))
        cost_h = np.empty((batch, block_num, block_num - 1))
    elif output == "weights":
        weights = np.empty((batch, steps, block_num, block_num), np.float32)
    else:
        labels = np.empty((batch, steps, block_num, block_num), np.int32)
    bad = ctypes.c_int64(-1)
    rc = lib.mm_puzzle_masks(s_own.ctypes.data, pix.ctypes.data, mates.ctypes.data, prior.ctypes.data,
                             t_grid.ctypes.data, batch, steps, channels, width, block_num, neigh,
                             n_labels, beta_n * gamma, beta_n, threads, _address(labels),
                             _address(weights), _address(unary), _address(cost_v), _address(cost_h),
                             ctypes.byref(bad))
    if rc == -2:
        raise ValueError(f"{who}: the energies of sample {bad.value} are not finite (non-finite "
                         "saliency or pixels)")
    if rc != 0:
        raise ValueError(f"{who}: the native library refused these inputs: {batch} samples of "
                         f"{channels} x {width} x {width}, block_num {block_num}, K {steps}, "
                         f"n_labels {n_labels}, partners in [{mates.min(initial=0)}, "
                         f"{mates.max(initial=0)}]")
    if output == "energies":
        return unary, cost_v, cost_h
    return torch.from_numpy(weights) if output == "weights" else labels


def puzzle_masks_native(saliency: torch.Tensor, pixels: torch.Tensor, partners: torch.Tensor,
                        lambdas: torch.Tensor, block_num: int, *, n_labels: int = 3,
                        beta: float = 1.2, gamma: float = 0.5, eta: float = 0.2,
                        neigh_size: int = 4, threads: int = 0) -> np.ndarray:
    """The minimum-energy labels (B, K, n, n) int64 of every (sample, step) in one native call:
    the energies of :func:`puzzle_energy_arrays` (bit for bit, computed per sample in C++) cut as
    :func:`graphcut.solve_steps` cuts them, over `threads` threads (0: one per CPU), no torch op
    but the block saliency. Inputs as :func:`puzzle_energies`, float32 CPU tensors with at most
    :data:`NATIVE_ENERGY_MAX_CHANNELS` channels (:func:`native_energies_apply`)."""
    return _puzzle_native("puzzle_masks_native", saliency, pixels, partners, lambdas, block_num,
                          n_labels, beta, gamma, eta, neigh_size, "labels", threads).astype(np.int64)


def puzzle_energy_arrays_native(saliency: torch.Tensor, pixels: torch.Tensor,
                                partners: torch.Tensor, lambdas: torch.Tensor, block_num: int, *,
                                n_labels: int = 3, beta: float = 1.2, gamma: float = 0.5,
                                eta: float = 0.2, neigh_size: int = 4,
                                threads: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`puzzle_energy_arrays` computed by the native library (the energies that
    :func:`puzzle_masks_native` cuts): unary (B, K, n, n, L), cost_v (B, n-1, n), cost_h
    (B, n, n-1) float64, equal bit for bit."""
    return _puzzle_native("puzzle_energy_arrays_native", saliency, pixels, partners, lambdas,
                          block_num, n_labels, beta, gamma, eta, neigh_size, "energies", threads)


def cost_matrix(n: int) -> torch.Tensor:
    """Squared distance between the cells of an n x n grid, over (n - 1)^2: (n^2, n^2)."""
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    return ((ij[:, None] - ij[None]) ** 2).sum(-1).float() / max(n - 1, 1) ** 2


#: transport backends: "auto" (native for CPU tensors when libmultimix_graphcut.so is built and the
#: grid is at most graphcut.NATIVE_TRANSPORT_MAX_SIDE cells per side, else torch), "native", "torch"
TRANSPORT_BACKENDS = ("auto", "native", "torch")


def transport_sources(mask: torch.Tensor, saliency: torch.Tensor, eps: float, *,
                      backend: str = "auto") -> torch.Tensor:
    """The original's block assignment (``mask_transport``, n rounds) as each destination's
    source: mask, saliency (B, n, n) -> (B, n^2) int64 on mask's device, source[b, j] = the cell
    moved to cell j, n^2 where nothing moves there.

    cost_ij = eps * dist^2(i, j) / (n-1)^2 - s_i * z_j, z = cells where the mask shows this image
    (mask > 0); each round each source cell claims its cheapest destination, in each destination
    the cheapest claimant wins (by argmin over all sources of plan * cost, as the original: the
    sources that did not claim it count with 0, so a destination whose claims all cost more than
    0 goes to nobody; first index on ties), losers pay 1 more for their claim.

    backend "native": csrc/puzzle_transport.h over threads (the masks' library; inputs copied to
    the CPU); "torch": the rounds as tensor operations on mask's device; "auto": native for CPU
    tensors when the library is built and n <= graphcut.NATIVE_TRANSPORT_MAX_SIDE, else torch
    (on a GPU the rounds stay on the device, replayed as one CUDA graph per shape: no host sync).
    Both equal the original's dense rounds bit for bit (tests/test_puzzle.py)."""
    if backend not in TRANSPORT_BACKENDS:
        raise ValueError(f"transport_sources: `backend` must be one of {TRANSPORT_BACKENDS}; got {backend!r}")
    n = mask.shape[-1]
    if backend == "native" or (backend == "auto" and mask.device.type == "cpu" and native_available()
                               and n <= NATIVE_TRANSPORT_MAX_SIDE):
        source = transport_native(mask.detach().float().cpu().numpy(),
                                  saliency.detach().float().cpu().numpy(), eps)
        return torch.from_numpy(source).to(mask.device)
    if mask.is_cuda:
        return _transport_rounds_graphed(mask, saliency, eps)
    return _transport_rounds(mask, saliency, eps)


def _transport_rounds(mask: torch.Tensor, saliency: torch.Tensor, eps: float,
                      distance: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`transport_sources` in tensor operations (distance: :func:`cost_matrix` of the grid
    on mask's device; made here when None). The original computes each round on dense (n^2, n^2)
    one-hot plans; here a round works on the n^2 claims and one argmin over the costs (most
    sources lose a round, so re-reading every row is cheaper than gathering the losers' rows, and
    needs no host sync on a GPU)."""
    batch, n = mask.shape[0], mask.shape[-1]
    cells = n * n
    if distance is None:
        distance = cost_matrix(n).to(mask.device)
    cost = eps * distance - saliency.reshape(batch, -1, 1) * \
        (mask > 0).float().reshape(batch, 1, -1)
    claims = cost.argmin(-1)                                   # (B, n^2): each source's destination
    sources = torch.arange(cells, device=mask.device).expand(batch, cells)
    never = torch.full((batch, cells), cells, dtype=torch.long, device=mask.device)
    for round_ in range(n):
        claim_cost = cost.gather(-1, claims[..., None])[..., 0]
        # per destination j, the original's argmin over sources i of plan[i, j] * cost[i, j]:
        # claimants count with their cost, every other source with 0
        claimants = torch.zeros_like(never).scatter_add_(1, claims, torch.ones_like(claims))
        lowest = torch.full_like(claim_cost, float("inf")).scatter_reduce_(1, claims, claim_cost, "amin")
        others = claimants < cells                             # some source did not claim j
        lowest = torch.where(others, torch.clamp(lowest, max=0.0), lowest)
        at_lowest = claim_cost == lowest.gather(1, claims)
        first_claimant = never.clone().scatter_reduce_(1, claims, torch.where(at_lowest, sources, never), "amin")
        # the first source that did not claim j: 0, unless source 0 claimed j
        differs = claims != claims[:, :1]
        first_other = torch.where(differs.any(1), differs.float().argmax(1), torch.full_like(claims[:, 0], cells))
        first_other = torch.zeros_like(never).scatter_(1, claims[:, :1], first_other[:, None])
        zero_tie = others & (lowest == 0) & (first_other < first_claimant)
        winner = torch.where(zero_tie, never, first_claimant)  # (B, n^2 destinations), n^2: nobody
        if round_ == n - 1:
            break
        lost = winner.gather(1, claims) != sources             # source i lost its claim
        cost.view(batch, -1).scatter_add_(1, sources * cells + claims, lost.to(cost.dtype))  # losers pay 1
        claims = torch.where(lost, cost.argmin(-1), claims)  # winners' rows are unchanged
    return winner


#: CUDA graphs of the transport rounds, one per (device, shapes, dtypes, eps): static inputs, graph,
#: static output; None where capturing failed (the rounds then run eagerly)
_TRANSPORT_GRAPHS: dict = {}


def release_transport_graphs() -> None:
    """Frees the CUDA graphs of Puzzle Mix's transport (each keeps the GPU memory of one eager
    transport of its shape, e.g. about 0.3 GB for B*K = 500 grids of 16 x 16 cells, for the life
    of the process); the next GPU transport captures again."""
    _TRANSPORT_GRAPHS.clear()


def _transport_rounds_graphed(mask: torch.Tensor, saliency: torch.Tensor, eps: float) -> torch.Tensor:
    """:func:`_transport_rounds` on a GPU, captured once per shape as a CUDA graph and replayed:
    the n rounds are a few hundred small kernels whose launches, not their work, cost the time.
    The same kernels on the same values, so the same result (tests/gpu checks it against the
    eager rounds). The graphs stay cached: :func:`release_transport_graphs` frees them."""
    key = (mask.device, tuple(mask.shape), mask.dtype, tuple(saliency.shape), saliency.dtype, float(eps))
    entry = _TRANSPORT_GRAPHS.get(key, False)
    if entry is False:
        entry = None
        try:
            static_mask, static_saliency = mask.detach().clone(), saliency.detach().clone()
            distance = cost_matrix(mask.shape[-1]).to(mask.device)
            side = torch.cuda.Stream(mask.device)
            side.wait_stream(torch.cuda.current_stream(mask.device))
            with torch.cuda.stream(side):  # warm-up outside the capture (allocator, kernels)
                _transport_rounds(static_mask, static_saliency, eps, distance)
            torch.cuda.current_stream(mask.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (a DALI pipeline's) may allocate while this one captures
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = _transport_rounds(static_mask, static_saliency, eps, distance)
            # everything the graph reads must outlive it: the distances too
            entry = (static_mask, static_saliency, distance, graph, static_out)
        except (RuntimeError, TypeError):  # no capture on this device / torch: eager rounds
            entry = None
        _TRANSPORT_GRAPHS[key] = entry
    if entry is None:
        return _transport_rounds(mask, saliency, eps)
    static_mask, static_saliency, _, graph, static_out = entry
    static_mask.copy_(mask)
    static_saliency.copy_(saliency)
    graph.replay()
    return static_out.clone()


def mask_transport(mask: torch.Tensor, saliency: torch.Tensor, eps: float, *,
                   backend: str = "auto") -> torch.Tensor:
    """The original's transport plan: mask, saliency (B, n, n) -> plan (B, n^2, n^2), plan[b, i, j]
    = 1: cell i moves to cell j (a partial permutation). See :func:`transport_sources`."""
    source = transport_sources(mask, saliency, eps, backend=backend)
    batch, cells = source.shape
    plan = torch.zeros(batch, cells + 1, cells, device=mask.device)
    plan.scatter_(1, source[:, None, :], 1.0)
    return plan[:, :cells]


def move_cells(images: torch.Tensor, source: torch.Tensor, n: int) -> torch.Tensor:
    """Moves the n x n cells of (B, C, H, W) images: destination cell j gets cell source[b, j]
    ((B, n^2) as :func:`transport_sources` returns), or 0 where source is n^2 (the original's
    ``transport_image``, without its n^4 multiply-adds)."""
    b, c, h, w = images.shape
    cells = images.reshape(b, c, n, h // n, n, w // n).permute(0, 1, 2, 4, 3, 5).reshape(b, c, n * n, -1)
    filled = source < n * n
    moved = cells.gather(2, torch.where(filled, source, 0)[:, None, :, None].expand(b, c, n * n, cells.shape[-1]))
    moved = torch.where(filled[:, None, :, None], moved, torch.zeros((), dtype=images.dtype, device=images.device))
    return moved.reshape(b, c, n, n, h // n, w // n).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def transport_blocks(images: torch.Tensor, plan: torch.Tensor, n: int) -> torch.Tensor:
    """Moves the n x n cells of (B, C, H, W) images as `plan` (B, n^2, n^2) says (a partial
    permutation, as :func:`mask_transport` returns); unclaimed cells become 0 (the original's
    ``transport_image``)."""
    filled = plan.amax(1) > 0
    source = torch.where(filled, plan.argmax(1), n * n)
    return move_cells(images, source, n)


def _check_scaler(scaler, who: str) -> None:
    if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
        raise TypeError(f"{who}: `scaler` must be a torch.amp.GradScaler or None; got "
                        f"{type(scaler).__name__}")


class PuzzleMix:
    """Puzzle Mix with K ordered masks per pair (k=1: the original method; Kim et al., ICML 2020;
    multi-mix: Shen et al., Sec. III-A3).

    ``PuzzleMix(k=5, mean=MEAN, std=STD)(model, x, y) -> PuzzleResult`` of B*K rows, x (B, C, H, W)
    normalised images with H == W. `mean` / `std` (required) are the per-channel statistics x was
    normalised with, on the 0..255 scale (those of ``fn.crop_mirror_normalize``). `lambda_scope`
    "batch" (the original: one set of K ratios for the batch) or "sample". workers > 1 runs the
    graph cuts of a batch in that many worker processes (PyMaxflow and gco; the native solver
    runs all of them in one call on threads). solver "exact" (one s-t cut, optimal: the native
    library when built, else PyMaxflow), "native" / "maxflow" (that implementation of it), or
    "swap" (gco's alpha-beta swap on the original's integer quantisation). The block transport
    runs natively on CPU tensors when the library is built and as torch operations (one CUDA
    graph per shape) on GPU tensors; with solver "maxflow" (the path without the library) always
    as torch operations. The same plans either way (see :func:`transport_sources`). Image sizes, block
    counts, neighbourhoods and transport cells: see the module docstring. Sampling
    (:meth:`sample`) is kept apart from applying (:meth:`mix`).
    """

    def __init__(self, k: int = 1, *, mean: Sequence[float] = None, std: Sequence[float] = None,
                 alpha: float = 1.0, n_labels: int = 3, beta: float = 1.2,
                 gamma: float = 0.5, eta: float = 0.2, neigh_size: int = 4, transport: bool = True,
                 t_eps: float = 0.8, t_size: int = 4, block_nums: Sequence[int] = (2, 4, 8, 16),
                 solver: str = "exact", clean_lam: float = 0.0, lambda_scope: str = "batch",
                 workers: int = 1, generator: Optional[torch.Generator] = None):
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"PuzzleMix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
        if solver not in SOLVERS:
            raise ValueError(f"PuzzleMix: `solver` must be one of {list(SOLVERS)}; got {solver!r}")
        if solver == "native" and not native_available():
            raise ValueError("PuzzleMix: `solver` 'native' needs libmultimix_graphcut.so (built with "
                             "the package); it could not be loaded: use 'exact' or 'maxflow'")
        if not isinstance(n_labels, int) or n_labels < 2:
            raise ValueError(f"PuzzleMix: `n_labels` must be an integer >= 2; got {n_labels!r}")
        if not alpha > 0:
            raise ValueError(f"PuzzleMix: `alpha` must be > 0; got {alpha}")
        if not isinstance(neigh_size, int) or neigh_size < 1:
            raise ValueError(f"PuzzleMix: `neigh_size` must be an integer >= 1; got {neigh_size!r}")
        if not isinstance(t_size, int) or not (t_size >= 1 or t_size == -1):
            raise ValueError(f"PuzzleMix: `t_size` must be an integer >= 1, or -1 for the block grid; "
                             f"got {t_size!r}")
        if not block_nums or not all(isinstance(n, int) and n >= 1 for n in block_nums):
            raise ValueError(f"PuzzleMix: `block_nums` must be a non-empty sequence of integers >= 1; "
                             f"got {block_nums!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"PuzzleMix: `workers` must be an integer >= 1; got {workers!r}")
        if clean_lam < 0:
            raise ValueError(f"PuzzleMix: `clean_lam` must be >= 0; got {clean_lam}")
        sampling.check_lambda_scope(lambda_scope, "PuzzleMix: `lambda_scope`")
        self.mean, self.std = check_pixel_stats(mean, std)
        self.k, self.alpha, self.n_labels = k, alpha, n_labels
        self.beta, self.gamma, self.eta, self.neigh_size = beta, gamma, eta, neigh_size
        self.transport, self.t_eps, self.t_size = transport, t_eps, t_size
        self.block_nums, self.solver, self.clean_lam = tuple(block_nums), solver, clean_lam
        self.transport_backend = "torch" if solver == "maxflow" else "auto"
        self.lambda_scope, self.workers, self.generator = lambda_scope, workers, generator

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) normalised images -> [0, 1] pixels, x * std/255 + mean/255 (the original's
        ``input1 * std + mean`` with its [0, 1]-scale statistics)."""
        channels = x.shape[1]
        mean, std = check_pixel_stats(self.mean, self.std, channels)
        view = (1, -1, 1, 1)
        std01 = torch.tensor([v / 255 for v in std], dtype=torch.float32, device=x.device).view(view)
        mean01 = torch.tensor([v / 255 for v in mean], dtype=torch.float32, device=x.device).view(view)
        return x.float() * std01 + mean01

    def masks(self, saliency: torch.Tensor, pixels: torch.Tensor, partners: torch.Tensor,
              lambdas: torch.Tensor, block_num: int) -> torch.Tensor:
        """(B, K, n, n) own-image weights of the blocks, one graph cut per (sample, step).
        pixels: (B, C, H, W) on the [0, 1] scale (see :meth:`pixels`)."""
        kw = dict(n_labels=self.n_labels, beta=self.beta, gamma=self.gamma, eta=self.eta,
                  neigh_size=self.neigh_size)
        native = self.solver == "native" or (self.solver == "exact" and native_available())
        if native and native_energies_apply(saliency, pixels):
            # energies and cuts of every (sample, step) in one native call, threads without the GIL
            # (and own_weights of the labels written by the library, while they are in its cache)
            return _puzzle_native("PuzzleMix.masks", saliency, pixels, partners, lambdas, block_num,
                                  self.n_labels, self.beta, self.gamma, self.eta, self.neigh_size,
                                  "weights", 0)
        if native:  # the energies in torch (CUDA tensors, > 4 channels), the cuts in one call
            unary, w_v, w_h = puzzle_energy_arrays(saliency, pixels, partners, lambdas, block_num, **kw)
            return own_weights(solve_steps(unary, w_v, w_h, backend="native"), self.n_labels)
        energies = puzzle_energies(saliency, pixels, partners, lambdas, block_num, **kw)
        # in worker processes, not threads: gco aborted the process (heap corruption) when called
        # from a thread pool, and PyMaxflow keeps the GIL, so threads would not help anyway
        flat = [e for row in energies for e in row]
        solve = partial(solve_swap, scale=swap_scale(block_num)) if self.solver == "swap" else solve_exact
        if self.workers > 1:
            labels = _map_in_workers(solve, flat, self.workers)
        else:
            labels = [solve(e) for e in flat]
        return own_weights(np.stack(labels).reshape(len(energies), -1, block_num, block_num),
                           self.n_labels)

    def sample(self, batch: int, width: int,
               generator: Optional[torch.Generator] = None) -> tuple[int, torch.Tensor, torch.Tensor]:
        """The randomness of one batch: (block_num, partners (B,), lambdas (B, K) sorted), drawn
        in that order from `generator` (the global one if None). block_num is uniform over the
        block counts that divide `width`."""
        choices = block_choices(width, self.block_nums)
        if not choices:
            raise ValueError(f"PuzzleMix: no block count of `block_nums` {self.block_nums} divides the "
                             f"image side {width}")
        block_num = choices[int(torch.randint(len(choices), (1,), generator=generator))]
        partners = sampling.sample_partners(batch, generator=generator)
        lambdas = sampling.sample_lambdas(batch, self.k, self.alpha, lambda_scope=self.lambda_scope,
                                          generator=generator)
        return block_num, partners, lambdas

    def mix(self, x: torch.Tensor, saliency: torch.Tensor, partners: torch.Tensor,
            lambdas: torch.Tensor, block_num: int) -> PuzzleMixed:
        """Applies Puzzle Mix with given randomness (no sampling): x (B, C, H, W) normalised images
        (H == W), saliency (B, H, W), partners (B,) a permutation, lambdas (B, K) partner shares in
        [0, 1], block_num dividing H. Returns a :class:`PuzzleMixed`, steps in the order of lambdas."""
        self._check_images(x)
        batch, channels, _, width = x.shape
        if saliency.shape != (batch, width, width):
            raise ValueError(f"PuzzleMix.mix: `saliency` must be (B, H, W) = {(batch, width, width)}; "
                             f"got {tuple(saliency.shape)}")
        if partners.shape != (batch,) or not torch.equal(torch.sort(partners.cpu()).values, torch.arange(batch)):
            raise ValueError(f"PuzzleMix.mix: `partners` must be a permutation of 0..{batch - 1}; got "
                             f"{partners.tolist()}")
        if lambdas.dim() != 2 or lambdas.shape[0] != batch or not bool(((lambdas >= 0) & (lambdas <= 1)).all()):
            raise ValueError(f"PuzzleMix.mix: `lambdas` must be (B, K) = ({batch}, K) values in [0, 1]; "
                             f"got shape {tuple(lambdas.shape)}")
        if not isinstance(block_num, int) or block_num < 1 or width % block_num:
            raise ValueError(f"PuzzleMix.mix: `block_num` must be an integer dividing the image side "
                             f"{width}; got {block_num!r}")
        with torch.no_grad():
            mask = self.masks(saliency.detach(), self.pixels(x.detach()), partners.cpu(), lambdas,
                              block_num)
        return self.compose(x, saliency, partners, mask.to(x.device))

    def compose(self, x: torch.Tensor, saliency: torch.Tensor, partners: torch.Tensor,
                mask: torch.Tensor) -> PuzzleMixed:
        """Transport and mix under given masks (the second half of :meth:`mix`): x (B, C, H, W),
        saliency (B, H, W), partners (B,), mask (B, K, n, n) the own image's weight per block.
        Each image's blocks move under its part of the mask (own: mask > 0, partner: 1 - mask > 0)
        on the transport grid (see :func:`transport_grid`), then m * own' + (1 - m) * partner'."""
        batch, _, _, width = x.shape
        block_num = mask.shape[-1]
        if mask.dim() != 4 or mask.shape[0] != batch or mask.shape[-2] != block_num or width % block_num:
            raise ValueError(f"PuzzleMix.compose: `mask` must be (B, K, n, n) with B = {batch} and n "
                             f"dividing {width}; got {tuple(mask.shape)}")
        partners = partners.to(x.device)
        with torch.no_grad():
            x = x.detach()
            own, partner = x, x[partners]
            cells = transport_grid(width, block_num, self.t_size)
            k = mask.shape[1]
            # the K steps of every sample as one batch of B*K rows (sample-major: row b*K + s)
            m = mask.to(x.device, torch.float32).reshape(batch * k, 1, block_num, block_num)
            own_k, partner_k = own.repeat_interleave(k, 0), partner.repeat_interleave(k, 0)
            if self.transport:  # each image's blocks move under its own part of the mask
                s_cells = block_saliency(saliency.detach().float(), cells)
                m = F.interpolate(m, size=cells, mode="nearest")
                own_t = move_cells(own_k, transport_sources(
                    m[:, 0], s_cells.repeat_interleave(k, 0), self.t_eps, backend=self.transport_backend), cells)
                partner_t = move_cells(partner_k, transport_sources(
                    1 - m[:, 0], s_cells[partners].repeat_interleave(k, 0), self.t_eps,
                    backend=self.transport_backend), cells)
            else:
                own_t, partner_t = own_k, partner_k
            m_full = F.interpolate(m, size=width, mode="nearest").to(x.dtype)
            mixed = m_full * own_t + (1 - m_full) * partner_t
            weights = (1 - m_full.flatten(1).mean(1)).float().reshape(batch, k)

        def steps(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, k, *t.shape[1:])
        return PuzzleMixed(steps(mixed), weights, mask, steps(own_t), steps(partner_t))

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 scaler: Optional["torch.amp.GradScaler"] = None) -> PuzzleResult:
        """One batch: saliency pass, then :meth:`sample` and :meth:`mix`; the K steps of each
        sample ordered by weight. `scaler`: the training step's GradScaler under mixed precision,
        so that the clean loss (clean_lam > 0) is scaled like the mixed loss."""
        self._check_images(x)
        _check_scaler(scaler, "PuzzleMix")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"PuzzleMix: `y` has {y.shape[0]} rows for {x.shape[0]} images")
        batch, width = x.shape[0], x.shape[-1]
        block_choice = block_choices(width, self.block_nums)
        if not block_choice:
            raise ValueError(f"PuzzleMix: no block count of `block_nums` {self.block_nums} divides the "
                             f"image side {width}")
        self.pixels(x[:1])  # mean / std against the channels before the saliency pass
        saliency = input_saliency(model, x, y, self.clean_lam, scaler=scaler)
        block_num, partners, lambdas = self.sample(batch, width, self.generator)
        mixed = self.mix(x, saliency, partners, lambdas, block_num)
        images, weights = mixed.images, mixed.weights.to(x.device)
        order = weights.argsort(dim=1, stable=True)  # the K steps ordered by weight
        weights = weights.gather(1, order)
        images = images.gather(1, order.view(batch, -1, 1, 1, 1).expand_as(images))
        partners = partners.to(y.device)
        return PuzzleResult(images.flatten(0, 1), y.repeat_interleave(self.k, 0),
                            y[partners].repeat_interleave(self.k, 0), weights.reshape(-1))

    @staticmethod
    def _check_images(x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"PuzzleMix: `x` must be a tensor; got {type(x).__name__}")
        if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"PuzzleMix: `x` must be (B, C, H, W) with H == W; got {tuple(x.shape)}")


class SaliencyMix:
    """SaliencyMix (Uddin et al., ICLR 2021) with K nested boxes: the partner's box is centred on
    the peak of the partner's saliency (per sample) and sized as CutMix (round(H*sqrt(lambda)) x
    round(W*sqrt(lambda))), pasted at the same place; the weight is the clipped box's area
    fraction. Saliency here is the input gradient of the model (the original uses OpenCV's static
    fine-grained saliency, not available here). k=1 is the original method; `lambda_scope`
    "batch" (the original: one lambda per batch) or "sample".
    ``SaliencyMix(k)(model, x, y) -> PuzzleResult``; :meth:`mix` applies given randomness.
    """

    def __init__(self, k: int = 1, *, alpha: float = 1.0, lambda_scope: str = "batch",
                 generator: Optional[torch.Generator] = None):
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"SaliencyMix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
        if not alpha > 0:
            raise ValueError(f"SaliencyMix: `alpha` must be > 0; got {alpha}")
        sampling.check_lambda_scope(lambda_scope, "SaliencyMix: `lambda_scope`")
        self.k, self.alpha, self.lambda_scope, self.generator = k, alpha, lambda_scope, generator

    @staticmethod
    def centers(saliency: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """(B, 2) int64 box centres (y, x): the peak of each partner's (B, H, W) saliency."""
        w = saliency.shape[-1]
        peak = saliency[partners.to(saliency.device)].flatten(1).argmax(1).cpu()
        return torch.stack([peak // w, peak % w], 1)

    def mix(self, x: torch.Tensor, saliency: torch.Tensor, partners: torch.Tensor,
            lambdas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W), saliency (B, H, W), partners (B,), lambdas (B, K) -> images (B, K, C, H, W)
        with the partner inside box k, weights (B, K) its clipped area / (H W)."""
        from .mixing import cutmix_masks

        h, w = x.shape[-2:]
        masks = cutmix_masks(h, w, lambdas, self.centers(saliency, partners)).to(x.device)
        partner = x.detach()[partners.to(x.device)]
        images = torch.where(masks[:, :, None], partner[:, None], x.detach()[:, None])
        return images, masks.flatten(2).double().mean(2).float()

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 scaler: Optional["torch.amp.GradScaler"] = None) -> PuzzleResult:
        """One batch; `scaler` is accepted for symmetry with PuzzleMix (the saliency pass here
        keeps no gradient, so nothing is scaled)."""
        if x.dim() != 4:
            raise ValueError(f"SaliencyMix: `x` must be (B, C, H, W); got {tuple(x.shape)}")
        _check_scaler(scaler, "SaliencyMix")
        batch = x.shape[0]
        saliency = input_saliency(model, x, y)
        partners = sampling.sample_partners(batch, generator=self.generator)
        lambdas = sampling.sample_lambdas(batch, self.k, self.alpha, lambda_scope=self.lambda_scope,
                                          generator=self.generator)
        images, weights = self.mix(x, saliency, partners, lambdas)
        partners = partners.to(y.device)
        return PuzzleResult(images.flatten(0, 1), y.repeat_interleave(self.k, 0),
                            y[partners].repeat_interleave(self.k, 0), weights.reshape(-1).to(x.device))
