"""Multi-mix of torch tensors (CPU or GPU), with the DALI operator's semantics.

For users without a DALI pipeline, for the manifold hook and for benchmarks. Given the same
ratios, partners, centres and noise, :func:`multimix_batch` returns exactly what ``fn.multimix``
returns (uint8 rounded half to even, the same boxes and fmix thresholds); the randomness comes
from :mod:`dali_multimix.sampling`.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Optional

import torch

from .. import sampling

MODES = ("mixup", "cutmix", "fmix")
MAX_K = 64
_DTYPES = (torch.uint8, torch.float16, torch.float32)


class MultimixResult(NamedTuple):
    """images (B, K, *sample shape) in the input dtype; weights (B, K) float32, the fraction taken
    from the partner, non-decreasing; partner_labels: labels[partners]; partners (B,) int64."""

    images: torch.Tensor
    weights: torch.Tensor
    partner_labels: torch.Tensor
    partners: torch.Tensor


def blend(own: torch.Tensor, partner: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """Input mixup of (B, *shape) tensors at ratios (B, K): (B, K, *shape), computed in float32 as
    (1 - lambda) * own + lambda * partner (uint8 rounded half to even, float16 to nearest)."""
    lam = lambdas.to(device=own.device, dtype=torch.float32)
    lam = lam.reshape(lam.shape + (1,) * (own.dim() - 1))
    out = (1.0 - lam) * own.unsqueeze(1).float() + lam * partner.unsqueeze(1).float()
    if own.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(own.dtype)


def cutmix_masks(h: int, w: int, lambdas: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) bool: box k has sides round(H*sqrt(lambda_k)) x round(W*sqrt(lambda_k))
    around the sample's centre (y, x), spanning [c - side//2, c - side//2 + side), clipped."""
    lam = lambdas.to(torch.float64)
    bh = torch.floor(h * torch.sqrt(lam) + 0.5).long()
    bw = torch.floor(w * torch.sqrt(lam) + 0.5).long()
    top = centers[:, 0:1].long() - bh // 2
    left = centers[:, 1:2].long() - bw // 2
    ys = torch.arange(h, device=lam.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=lam.device).view(1, 1, 1, w)
    t, l = top[..., None, None], left[..., None, None]
    return (ys >= t) & (ys < t + bh[..., None, None]) & (xs >= l) & (xs < l + bw[..., None, None])


def fmix_masks(scores: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) bool: mask k holds the round(lambda_k * H * W) highest scores, ties to the lower
    pixel index; nested because the counts grow with k."""
    b, h, w = scores.shape
    order = torch.sort(scores.reshape(b, -1), dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    counts = torch.round(lambdas.to(torch.float64) * (h * w)).long().to(rank.device)
    return (rank[:, None, :] < counts[:, :, None]).reshape(b, -1, h, w)


def _check(x: torch.Tensor, labels: torch.Tensor, k: int, alpha: float, mode: str, layout: str):
    if not isinstance(x, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError(f"multimix_batch: `x` and `labels` must be tensors; got "
                        f"{type(x).__name__} and {type(labels).__name__}")
    if x.dim() < 2:
        raise ValueError(f"multimix_batch: `x` must be a batch (B, ...); got shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"multimix_batch: `x` must be uint8, float16 or float32; got {x.dtype}")
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"multimix_batch: `labels` must have one entry per sample ({x.shape[0]}); "
                         f"got {labels.shape[0]}")
    if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"multimix_batch: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
    if not isinstance(alpha, numbers.Real) or not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"multimix_batch: `alpha` must be a finite number > 0; got {alpha!r}")
    if mode not in MODES:
        raise ValueError(f"multimix_batch: `mode` must be one of {MODES}; got {mode!r}")
    if mode != "mixup":
        if len(layout) != x.dim() - 1 or "H" not in layout or "W" not in layout:
            raise ValueError(f"multimix_batch: mode {mode!r} needs `layout` naming the {x.dim() - 1} "
                             f"sample dimensions with H and W (e.g. 'CHW'); got {layout!r} for "
                             f"samples of shape {tuple(x.shape[1:])}")


def _override(name: str, value, shape: tuple, dtype) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=dtype).cpu()
    if tuple(t.shape) != shape:
        raise ValueError(f"multimix_batch: `{name}` must have shape {shape}; got {tuple(t.shape)}")
    return t


def multimix_batch(
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 5,
    alpha: float = 1.0,
    mode: str = "mixup",
    layout: str = "CHW",
    lambda_sampling: str = "sorted",
    lambda_scope: str = "batch",
    generator: Optional[torch.Generator] = None,
    lambdas=None,
    partners=None,
    centers=None,
    fmix_scores=None,
) -> MultimixResult:
    """K ordered interpolations of every sample of a tensor batch with a partner.

    Multi-mix (Shen et al., "Mixup Augmentation with Multiple Interpolations"), the semantics of
    the DALI operator :func:`dali_multimix.multimix` on tensors: x (B, *shape) -> images
    (B, K, *shape). Modes "mixup", "cutmix" (K nested boxes around one centre) and "fmix" (K nested
    masks of one FMix noise map). `layout` names the sample dimensions (cutmix / fmix need H and W).

    `lambda_scope` "batch" (the default, as the paper's Eq. 7-9 and Prop. III.2: "a single lambda
    ... used on all sample pairs in the batch", and the originals of mixup, CutMix and FMix): one
    sorted set lambda_1..lambda_K, one cutmix centre and one FMix noise map for the whole batch, so
    every row gets the same ratios, boxes and masks; "sample": one of each per sample. The weights
    are each sample's exact area in both (the draws: :mod:`dali_multimix.sampling`).

    Overrides (lambdas (B, K), partners (B,), centers (B, 2), fmix_scores (B, H, W)) replace the
    random draws, which otherwise come from `generator`, whatever the scope.

    Returns:
        MultimixResult: images (B, K, *shape) in x's dtype, weights (B, K) float32,
        partner_labels (labels[partners]), partners (B,) int64.
    """
    _check(x, labels, k, alpha, mode, layout)
    sampling.check_lambda_scope(lambda_scope, "multimix_batch: `lambda_scope`")
    batch = x.shape[0]
    if lambdas is None:
        lam = sampling.sample_lambdas(batch, k, alpha, lambda_sampling=lambda_sampling,
                                      lambda_scope=lambda_scope, generator=generator)
    else:
        lam = _override("lambdas", lambdas, (batch, k), torch.float32)
        if not ((lam >= 0) & (lam <= 1)).all() or (lam.diff(dim=1) < 0).any():
            raise ValueError("multimix_batch: `lambdas` must lie in [0, 1] and be non-decreasing "
                             "along k")
    if partners is None:
        perm = sampling.sample_partners(batch, generator=generator)
    else:
        perm = _override("partners", partners, (batch,), torch.int64)
        if ((perm < 0) | (perm >= batch)).any():
            raise ValueError(f"multimix_batch: `partners` must be indices in [0, {batch}); got "
                             f"{perm.tolist()}")
    perm_dev = perm.to(x.device)
    partner = x.index_select(0, perm_dev)

    if mode == "mixup":
        images = blend(x, partner, lam)
        weights = lam.clone()
    else:
        h_dim, w_dim = layout.index("H"), layout.index("W")
        h, w = x.shape[1 + h_dim], x.shape[1 + w_dim]
        if mode == "cutmix":
            if centers is None:
                ctr = sampling.sample_centers(batch, h, w, lambda_scope=lambda_scope,
                                              generator=generator)
            else:
                ctr = _override("centers", centers, (batch, 2), torch.int64)
            masks = cutmix_masks(h, w, lam, ctr)
        else:
            if fmix_scores is not None:
                masks = fmix_masks(_override("fmix_scores", fmix_scores, (batch, h, w),
                                             torch.float32), lam)
            elif lambda_scope == "batch":
                # one noise map for the batch (the same draw as sampling.fmix_scores(batch, ...));
                # with the batch's own ratios its K masks are computed once and shared by the rows
                scores = sampling.fmix_scores(1, h, w, lambda_scope="batch", generator=generator)
                if lambdas is None:
                    masks = fmix_masks(scores, lam[:1]).expand(batch, k, h, w)
                else:
                    masks = fmix_masks(scores.expand(batch, h, w), lam)
            else:
                scores = sampling.fmix_scores(batch, h, w, lambda_scope="sample",
                                              generator=generator)
                masks = fmix_masks(scores, lam)
        weights = (masks.reshape(batch, k, -1).sum(-1).double() / (h * w)).float()
        shape = [batch, k] + [1] * (x.dim() - 1)
        shape[2 + h_dim], shape[2 + w_dim] = h, w
        masks = masks.to(x.device)
        if h_dim > w_dim:
            masks = masks.transpose(-1, -2)
        images = torch.where(masks.reshape(shape), partner.unsqueeze(1), x.unsqueeze(1))
    return MultimixResult(images, weights.to(x.device), labels.index_select(0, perm_dev.to(labels.device)),
                          perm_dev)
