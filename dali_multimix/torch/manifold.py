"""Manifold multi-mix for any nn.Module, with forward hooks (the model's code is not touched).

Shen et al. extend multi-mix to manifold mixup (Verma et al.): at a hidden layer s drawn per
batch, the activation batch of B becomes B*K ordered interpolations of sample pairs
(lambda_1 <= ... <= lambda_K), and everything downstream runs on B*K rows (row b*K + k is sample b
at step k). By default one set lambda_1..lambda_K serves the whole batch (``lambda_scope="batch"``,
the paper's Eq. 7-9 and Prop. III.2, and manifold mixup's one lambda per batch). Usage::

    with ManifoldMultiMix(model, layers=["", "layer1", "layer2"], k=5, alpha=2.0) as mm:
        logits = model(x)                          # (B*K, C) in training mode
        loss = mixed_cross_entropy(logits, *mm.targets(y))

"" (or "input") names the model's input, layer 0. In eval mode nothing is mixed. Leaving the
block removes every hook.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from .. import sampling
from .mixing import MAX_K, blend

INPUT = ("", "input")


@dataclass
class ManifoldMix:
    """What the last training forward drew: the layer, the ratios (B, K) and the partners (B,)."""

    layer: str
    lambdas: torch.Tensor
    partners: torch.Tensor


class ManifoldMultiMix:
    """Attaches manifold multi-mix to `model` for the duration of a ``with`` block.

    Args:
        model: any nn.Module; its first positional input is the batch (B, ...).
        layers: candidate module names (``dict(model.named_modules())``); "" is the input.
        k: interpolations per pair (1 = manifold mixup).
        alpha: Beta(alpha, alpha) ratios (manifold mixup uses 2.0 on CIFAR).
        lambda_sampling: "sorted" (the paper) or "stratified".
        lambda_scope: "batch" (default: one sorted set of K ratios for all B pairs of a batch, the
            paper's Eq. 7-9 / Prop. III.2, as manifold mixup's one lambda per batch) or "sample"
            (K ratios per pair). `last.lambdas` is (B, K) either way (equal rows for "batch").
        generator: source of all random draws (layer, ratios, partners).
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], *, k: int = 5, alpha: float = 2.0,
                 lambda_sampling: str = "sorted", lambda_scope: str = "batch",
                 generator: Optional[torch.Generator] = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"ManifoldMultiMix: `model` must be an nn.Module; got {type(model).__name__}")
        if isinstance(layers, str) or len(layers) == 0:
            raise ValueError(f"ManifoldMultiMix: `layers` must be a non-empty list of module names; "
                             f"got {layers!r}")
        modules = dict(model.named_modules())
        for name in layers:
            if name not in INPUT and name not in modules:
                known = [n for n in modules if n][:12]
                raise ValueError(f"ManifoldMultiMix: `layers` names {name!r}, which is not a module of "
                                 f"the model (known: {known}{', ...' if len(modules) > 13 else ''}; "
                                 f"'' is the input)")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= MAX_K:
            raise ValueError(f"ManifoldMultiMix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
        if not isinstance(alpha, numbers.Real) or not alpha > 0:
            raise ValueError(f"ManifoldMultiMix: `alpha` must be > 0; got {alpha!r}")
        if lambda_sampling not in sampling.LAMBDA_SAMPLINGS:
            raise ValueError(f"ManifoldMultiMix: `lambda_sampling` must be one of "
                             f"{sampling.LAMBDA_SAMPLINGS}; got {lambda_sampling!r}")
        if lambda_scope not in sampling.LAMBDA_SCOPES:
            raise ValueError(f"ManifoldMultiMix: `lambda_scope` must be one of "
                             f"{sampling.LAMBDA_SCOPES}; got {lambda_scope!r}")
        self.model, self.layers, self.k, self.alpha = model, list(layers), int(k), float(alpha)
        self.lambda_sampling, self.lambda_scope = lambda_sampling, lambda_scope
        self.generator = generator
        self._modules = {name: (model if name in INPUT else modules[name]) for name in self.layers}
        self._handles: list = []
        self._pending: Optional[str] = None
        self.last: Optional[ManifoldMix] = None

    # -- attaching ---------------------------------------------------------------------------
    def __enter__(self) -> "ManifoldMultiMix":
        if self._handles:
            raise RuntimeError("ManifoldMultiMix is already attached")
        self._handles.append(self.model.register_forward_pre_hook(self._start, with_kwargs=True))
        for name in self.layers:
            if name not in INPUT:
                self._handles.append(self._modules[name].register_forward_hook(self._make_hook(name)))
        self._handles.append(self.model.register_forward_hook(self._finish))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending = None

    # -- the hooks ---------------------------------------------------------------------------
    def _start(self, module, args, kwargs):
        self.last = None
        self._pending = None
        if not module.training:
            return None
        g = self.generator
        device = g.device if g is not None else "cpu"
        index = int(torch.randint(len(self.layers), (1,), generator=g, device=device))
        self._pending = self.layers[index]
        if self._pending in INPUT:
            if not args or not isinstance(args[0], torch.Tensor):
                raise ValueError("ManifoldMultiMix: mixing the input needs the batch as the model's "
                                 "first positional argument")
            self._pending = None
            return (self._mix(self.layers[index], args[0]),) + tuple(args[1:]), kwargs
        return None

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if self._pending != name:
                return None
            self._pending = None
            if not isinstance(output, torch.Tensor):
                raise ValueError(f"ManifoldMultiMix: layer {name!r} returns {type(output).__name__}; "
                                 f"only layers that return one tensor can be mixed")
            return self._mix(name, output)
        return hook

    def _finish(self, module, inputs, output):
        if self._pending is not None:
            name, self._pending = self._pending, None
            raise RuntimeError(f"ManifoldMultiMix: layer {name!r} was not called during the forward "
                               f"pass, so nothing was mixed")

    def _mix(self, layer: str, h: torch.Tensor) -> torch.Tensor:
        batch = h.shape[0]
        lam = sampling.sample_lambdas(batch, self.k, self.alpha,
                                      lambda_sampling=self.lambda_sampling,
                                      lambda_scope=self.lambda_scope, generator=self.generator)
        partners = sampling.sample_partners(batch, generator=self.generator)
        self.last = ManifoldMix(layer, lam, partners)
        mixed = mix_activations(h, lam, partners)
        return mixed

    # -- the loss side -----------------------------------------------------------------------
    def targets(self, labels: torch.Tensor):
        """(labels, partner_labels, weights), each with B*K rows, for `mixed_cross_entropy`, from
        the last forward. After an eval-mode forward: the labels, themselves, and zero weights."""
        if self.last is None:
            return labels, labels, torch.zeros(labels.shape[0], device=labels.device)
        lam, partners = self.last.lambdas, self.last.partners.to(labels.device)
        if labels.shape[0] != lam.shape[0]:
            raise ValueError(f"ManifoldMultiMix.targets: `labels` has {labels.shape[0]} rows but the "
                             f"last forward mixed a batch of {lam.shape[0]}")
        k = lam.shape[1]
        return (labels.repeat_interleave(k, dim=0),
                labels.index_select(0, partners).repeat_interleave(k, dim=0),
                lam.reshape(-1).to(labels.device))


def mix_activations(h: torch.Tensor, lambdas: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
    """(B, ...) activations -> (B*K, ...): row b*K + k is (1 - lambda_bk) h_b + lambda_bk h_partner(b).
    Keeps the channels-last memory format of 4-D inputs."""
    mixed = blend(h, h.index_select(0, partners.to(h.device)), lambdas.to(h.device)).flatten(0, 1)
    if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous():
        mixed = mixed.contiguous(memory_format=torch.channels_last)
    return mixed
