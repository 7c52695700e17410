"""An independent reference of multi-mix, written once for numpy and cupy alike (``xp``).

It is the oracle of the tests: fed the same ratios, partners, cutmix centres and fmix score maps
as the operator, it must give the same images (uint8 exactly, floats within 1e-6) and weights.
It shares no code with the operator: masks are built with broadcast comparisons and a sort, not
with the operator's loops, boxes and nth_element thresholds.
"""
from __future__ import annotations

import math


def _mix_dtype_result(xp, values, dtype):
    if dtype == xp.uint8:
        return xp.rint(xp.clip(values, 0, 255)).astype(xp.uint8)
    return values.astype(dtype)


def spatial_axes(layout: str) -> tuple[int, int]:
    """Axes of H and W within a sample of `layout`."""
    return layout.index("H"), layout.index("W")


def cutmix_masks(xp, h: int, w: int, lambdas, center):
    """(K, H, W) bool: box k has sides round(H*sqrt(lam_k)) x round(W*sqrt(lam_k)) around centre."""
    cy, cx = int(center[0]), int(center[1])
    ys = xp.arange(h)[:, None]
    xs = xp.arange(w)[None, :]
    masks = []
    for lam in [float(v) for v in lambdas]:
        bh = int(math.floor(h * math.sqrt(lam) + 0.5))
        bw = int(math.floor(w * math.sqrt(lam) + 0.5))
        top, left = cy - bh // 2, cx - bw // 2
        masks.append((ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw))
    return xp.stack(masks)


def fmix_masks(xp, scores, lambdas):
    """(K, H, W) bool: mask k holds the round(lam_k * H * W) highest scores (ties: lower index)."""
    h, w = scores.shape
    flat = scores.reshape(-1).astype(xp.float32)
    order = xp.lexsort(xp.stack([xp.arange(h * w), -flat]))  # by score desc, then index
    rank = xp.empty(h * w, dtype=xp.int64)
    rank[order] = xp.arange(h * w)
    counts = [int(round(float(lam) * h * w)) for lam in lambdas]  # Python rounds halves to even
    return xp.stack([(rank < n).reshape(h, w) for n in counts])


def multimix_reference(xp, images, lambdas, partners, *, mode: str, layout: str = "",
                       centers=None, fmix_scores=None):
    """Multi-mix of a batch.

    Args:
        images: (B, *shape) array (uint8, float16 or float32).
        lambdas: (B, K) ratios; partners: (B,) partner indices.
        centers: cutmix, (B, 2) (y, x); fmix_scores: fmix, (B, H, W).
    Returns:
        mixed (B, K, *shape) in the dtype of `images`, weights (B, K) float32.
    """
    images = xp.asarray(images)
    lambdas = xp.asarray(lambdas, dtype=xp.float32)
    batch, k = lambdas.shape
    mixed, weights = [], []
    for i in range(batch):
        own = images[i]
        partner = images[int(partners[i])]
        if mode == "mixup":
            lam = lambdas[i].reshape((k,) + (1,) * own.ndim)
            one = xp.float32(1.0)
            values = (one - lam) * own.astype(xp.float32) + lam * partner.astype(xp.float32)
            mixed.append(_mix_dtype_result(xp, values, own.dtype))
            weights.append(lambdas[i])
            continue
        h_axis, w_axis = spatial_axes(layout)
        h, w = own.shape[h_axis], own.shape[w_axis]
        if mode == "cutmix":
            masks = cutmix_masks(xp, h, w, [float(v) for v in lambdas[i]], centers[i])
        elif mode == "fmix":
            masks = fmix_masks(xp, xp.asarray(fmix_scores[i]), [float(v) for v in lambdas[i]])
        else:
            raise ValueError(mode)
        # (K, H, W) -> (K, ..., H, W, ...) broadcastable against the sample
        shape = [k] + [1] * own.ndim
        shape[1 + h_axis], shape[1 + w_axis] = h, w
        m = masks.reshape(shape)
        mixed.append(xp.where(m, partner[None], own[None]))
        weights.append((masks.reshape(k, -1).sum(axis=1) / float(h * w)).astype(xp.float32))
    return xp.stack(mixed), xp.stack(weights)
