"""The randomness of multi-mix on the torch side, kept apart from the mixing.

The same distributions and rules as the DALI operator (csrc/multimix_sampling.h): K ordered
ratios (sorted Beta(alpha, alpha) draws, the paper, or one draw per equal-probability stratum),
a random permutation for the pairing, integer cutmix centres, and FMix's low-frequency noise.

Every function takes an optional ``torch.Generator``. With one, it draws only from that generator
and leaves torch's global RNG state untouched; without one, it draws from torch's default
generator (torch's own convention: ``torch.manual_seed`` makes it reproducible, and the global
state advances).

``lambda_scope`` says how far one draw reaches. ``"batch"`` (the default, as the paper's analysis,
Eq. 7-9 and Prop. III.2, and every original: mixup, manifold mixup, CutMix, FMix, Puzzle Mix):
one sorted set lambda_1..lambda_K, one cutmix centre and one FMix noise map for the whole batch,
repeated on every row. ``"sample"``: a fresh draw per sample (a variance-reduction choice).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from scipy.special import betaincinv

LAMBDA_SAMPLINGS = ("sorted", "stratified")
LAMBDA_SCOPES = ("batch", "sample")


def check_lambda_scope(lambda_scope: str, who: str = "lambda_scope") -> None:
    """Raises ValueError unless `lambda_scope` is "batch" or "sample"."""
    if lambda_scope not in LAMBDA_SCOPES:
        raise ValueError(f"{who}: expected one of {LAMBDA_SCOPES}; got {lambda_scope!r}")


def _draws(batch: int, lambda_scope: str) -> int:
    """How many independent draws a batch of `batch` rows takes under `lambda_scope`."""
    check_lambda_scope(lambda_scope)
    return 1 if lambda_scope == "batch" else batch


def _uniform(shape, generator: Optional[torch.Generator]) -> torch.Tensor:
    device = generator.device if generator is not None else "cpu"
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device).cpu()


def sample_lambdas(batch: int, k: int, alpha: float, *, lambda_sampling: str = "sorted",
                   lambda_scope: str = "batch",
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, k) float32 ratios, non-decreasing along k (Shen et al., Sec. III).

    "sorted": K i.i.d. Beta(alpha, alpha) draws, sorted; "stratified": lambda_k is the Beta
    quantile of (k + U_k) / K, one draw from each of K equal-probability strata.
    lambda_scope "batch": one set of K ratios repeated on every row; "sample": one set per row.
    Drawn by inverse transform from uniforms of `generator` (CPU tensor).
    """
    if lambda_sampling not in LAMBDA_SAMPLINGS:
        raise ValueError(f"lambda_sampling must be one of {LAMBDA_SAMPLINGS}; got {lambda_sampling!r}")
    draws = _draws(batch, lambda_scope)
    u = _uniform((draws, k), generator).numpy()
    if lambda_sampling == "stratified":
        u = (np.arange(k)[None, :] + u) / k
    lam = betaincinv(alpha, alpha, u).astype(np.float32)
    if lambda_sampling == "sorted":
        lam = np.sort(lam, axis=1)
    return torch.from_numpy(np.array(np.broadcast_to(lam, (batch, k))))


def sample_partners(batch: int, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch,) int64: a uniformly random permutation (the partner of sample i is partners[i])."""
    device = generator.device if generator is not None else "cpu"
    return torch.randperm(batch, generator=generator, device=device).cpu()


def sample_centers(batch: int, h: int, w: int, *, lambda_scope: str = "batch",
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, 2) int64 cutmix centres (y, x), uniform over the pixels; shared by the K boxes
    (and, with lambda_scope "batch", by every row of the batch)."""
    u = _uniform((_draws(batch, lambda_scope), 2), generator)
    centers = torch.stack([(u[:, 0] * h).long().clamp_(max=h - 1),
                           (u[:, 1] * w).long().clamp_(max=w - 1)], 1)
    return centers.expand(batch, 2).contiguous()


def fmix_scores(batch: int, h: int, w: int, *, decay_power: float = 3.0, lambda_scope: str = "batch",
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(batch, h, w) float32 FMix noise maps (Harris et al.): a complex Gaussian spectrum scaled by
    1 / max(f, 1/max(h, w))^decay_power, inverse real FFT. Masks threshold these at quantiles.
    lambda_scope "batch": one map repeated on every row (the original); "sample": one per row."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    scale = 1.0 / torch.clamp(torch.sqrt(fy * fy + fx * fx), min=1.0 / max(h, w)) ** decay_power
    device = generator.device if generator is not None else "cpu"
    parts = torch.randn((_draws(batch, lambda_scope), 2) + tuple(scale.shape), generator=generator,
                        dtype=torch.float64, device=device).cpu()
    spectrum = torch.complex(parts[:, 0] * scale, parts[:, 1] * scale)
    maps = torch.fft.irfftn(spectrum, s=(h, w), dim=(-2, -1)).float()
    return maps.expand(batch, h, w).contiguous()
