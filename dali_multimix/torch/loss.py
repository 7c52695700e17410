"""The loss of mixed samples: cross-entropy against (1 - w) * y + w * y'.

Multi-mix averages this over all B*K mixed samples: the paper's L_multi-mix (Shen et al.,
Sec. III-B, the loss whose batch gradient is Eq. 7). For integer labels the loss is computed
from two gathered log-probabilities per row (no B*K x C target is built):
(1 - w) * CE(y) + w * CE(y') equals CE against the mixed one-hot target, and label smoothing,
being affine in the target, distributes the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .iterator import MixedLabels


def _check(logits, labels, partner_labels, weights, label_smoothing, reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"mixed_cross_entropy: `reduction` must be 'mean', 'sum' or 'none'; "
                         f"got {reduction!r}")
    if logits.dim() != 2:
        raise ValueError(f"mixed_cross_entropy: `logits` must be (N, C); got shape {tuple(logits.shape)}")
    n = logits.shape[0]
    for name, t in (("labels", labels), ("partner_labels", partner_labels), ("weights", weights)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"mixed_cross_entropy: `{name}` must be a tensor; got {type(t).__name__}")
        if t.shape[0] != n:
            raise ValueError(f"mixed_cross_entropy: `{name}` has {t.shape[0]} rows but `logits` has "
                             f"{n}; flatten (B, K, ...) outputs to (B*K, ...) first")
    if weights.dim() != 1:
        raise ValueError(f"mixed_cross_entropy: `weights` must be (N,); got shape {tuple(weights.shape)}")
    if labels.shape != partner_labels.shape:
        raise ValueError(f"mixed_cross_entropy: `labels` {tuple(labels.shape)} and `partner_labels` "
                         f"{tuple(partner_labels.shape)} must have the same shape")
    if labels.is_floating_point() and labels.shape != logits.shape:
        raise ValueError(f"mixed_cross_entropy: soft `labels` must be (N, C) = {tuple(logits.shape)}; "
                         f"got {tuple(labels.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"mixed_cross_entropy: `label_smoothing` must be in [0, 1]; got {label_smoothing}")


def _class_index(labels: torch.Tensor) -> torch.Tensor:
    return labels.reshape(labels.shape[0]).long()


def mixed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor,
                        weights: torch.Tensor, label_smoothing: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (N, C) against the mixed targets (1 - w) * y + w * y'.

    Args:
        logits: (N, C), N = B*K mixed samples.
        labels, partner_labels: (N,) or (N, 1) class indices, or (N, C) soft / one-hot targets.
        weights: (N,) fraction taken from the partner (the operator's `weights`, flattened).
        label_smoothing: as in ``torch.nn.functional.cross_entropy``.
        reduction: "mean", "sum" or "none".
    """
    _check(logits, labels, partner_labels, weights, label_smoothing, reduction)
    w = weights.to(logits.dtype)
    if labels.is_floating_point():
        target = (1 - w)[:, None] * labels.to(logits.dtype) + w[:, None] * partner_labels.to(logits.dtype)
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction=reduction)
    logp = F.log_softmax(logits, dim=1)
    nll_own = -logp.gather(1, _class_index(labels)[:, None]).squeeze(1)
    nll_partner = -logp.gather(1, _class_index(partner_labels)[:, None]).squeeze(1)
    loss = (1 - w) * nll_own + w * nll_partner
    if label_smoothing > 0:
        loss = (1 - label_smoothing) * loss - label_smoothing * logp.mean(dim=1)
    return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[reduction]()


def mixed_soft_targets(labels: torch.Tensor, partner_labels: torch.Tensor, weights: torch.Tensor,
                       num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """Dense targets (N, C): (1 - w) * y + w * y', smoothed as (1 - eps) * t + eps / C."""
    if labels.is_floating_point():
        own, partner = labels.float(), partner_labels.float()
    else:
        own = F.one_hot(_class_index(labels), num_classes).float()
        partner = F.one_hot(_class_index(partner_labels), num_classes).float()
    w = weights.float()[:, None]
    target = (1 - w) * own + w * partner
    return (1 - label_smoothing) * target + label_smoothing / num_classes


class MultimixCrossEntropy(torch.nn.CrossEntropyLoss):
    """``criterion(output, target)`` for loops written for ``nn.CrossEntropyLoss``.

    With a :class:`MixedLabels` target (what ``MultimixClassificationIterator`` yields for mixed
    rows, still one after ``.squeeze(-1).long()`` / ``.cuda()``): the multi-mix loss, the mean
    over the N = B*K rows of the cross-entropy against (1 - w) * y + w * y' (Shen et al., Eq. 7),
    as :func:`mixed_cross_entropy`. With any other target (validation, plain pipelines):
    exactly ``nn.CrossEntropyLoss``. ``output``: (N, C) logits.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean"):
        super().__init__(reduction=reduction, label_smoothing=label_smoothing)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if isinstance(target, MixedLabels):
            return mixed_cross_entropy(input, target.plain(), target.partner_labels, target.weights,
                                       label_smoothing=self.label_smoothing,
                                       reduction=self.reduction)
        return super().forward(input, target)
