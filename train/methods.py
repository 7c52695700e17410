"""The methods registry: every baseline of the multi-mix paper and multi-mix itself, one name
each. Input-space mixing runs in the DALI pipeline (a `mixer` step after normalisation);
manifold mixing runs in the model through hooks; the rest are loss or batch settings."""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Optional

from nvidia.dali import fn, types

import dali_multimix


@dataclass(frozen=True)
class Method:
    name: str
    mode: Optional[str] = None      # input mixing in the pipeline: mixup | cutmix | fmix
    multi: bool = False             # K interpolations (cfg.k) instead of one
    manifold: bool = False          # mix hidden layers (hooks), not inputs
    cutout: bool = False
    label_smoothing: bool = False
    large_batch: bool = False       # batch of K*B samples (the compute of multi-mix)
    batch_lambda: bool = False      # one ratio for the whole batch by definition (large-batch mixup)
    augment_copies: bool = False    # K augmented copies of every sample (batch augmentation)
    takes_mix_method: bool = False  # its mixing is cfg.mix_method (any single-interpolation method)
    puzzle: bool = False            # Puzzle Mix in torch (needs the model's saliency)
    saliency_box: bool = False      # SaliencyMix in torch (needs the model's saliency)
    co_mixup: bool = False          # Co-Mixup in torch (needs the model's saliency; soft labels)
    description: str = ""


METHODS = {m.name: m for m in [
    Method("none", description="no mixing"),
    Method("mixup", mode="mixup", description="input mixup, one ratio per pair (Zhang et al.)"),
    Method("manifold_mixup", manifold=True, description="mixup of a hidden layer drawn per batch (Verma et al.)"),
    Method("cutout", cutout=True, description="one square hole of side cfg.cutout (DeVries & Taylor)"),
    Method("cutmix", mode="cutmix", description="one box of the partner (Yun et al.)"),
    Method("fmix", mode="fmix", description="one Fourier-noise mask of the partner (Harris et al.)"),
    Method("label_smoothing", label_smoothing=True, description="targets (1-eps) y + eps/C"),
    Method("large_batch", large_batch=True, description="batch K*B, no mixing"),
    Method("large_batch_mixup", mode="mixup", large_batch=True, batch_lambda=True, takes_mix_method=True,
           description="batch K*B mixed by cfg.mix_method with one ratio for the whole batch"),
    Method("batch_augmentation", augment_copies=True,
           description="K copies per sample by random crop, flip and rotation (Hoffer et al.)"),
    Method("batch_augmentation_mixup", mode="mixup", augment_copies=True, takes_mix_method=True,
           description="K augmented copies per sample, each mixed by cfg.mix_method"),
    Method("multimix", mode="mixup", multi=True, description="K ordered mixup interpolations (Shen et al.)"),
    Method("multimix_manifold", manifold=True, multi=True, description="K ordered manifold mixup interpolations"),
    Method("multimix_cutmix", mode="cutmix", multi=True, description="K nested boxes"),
    Method("multimix_fmix", mode="fmix", multi=True, description="K nested Fourier masks"),
    Method("puzzle_mix", puzzle=True, description="saliency-guided graph-cut masks + transport (Kim et al.)"),
    Method("multimix_puzzle", puzzle=True, multi=True, description="K Puzzle Mix masks from K sorted ratios"),
    Method("saliencymix", saliency_box=True, description="a CutMix box at the partner's saliency peak (Uddin et al.)"),
    Method("co_mixup", co_mixup=True, description="m_part inputs jointly mixed into as many outputs by graph cuts with a diversity term (Kim et al., ICLR 2021)"),
]}


# The single-interpolation methods that large_batch_mixup and batch_augmentation_mixup can mix with
# (the paper's Table II runs them "using the same setup with puzzle-mix", Sec. IV-B2).
SINGLE_MIXES = {
    "mixup": dict(mode="mixup"),
    "cutmix": dict(mode="cutmix"),
    "fmix": dict(mode="fmix"),
    "puzzle_mix": dict(mode=None, puzzle=True),
    "saliencymix": dict(mode=None, saliency_box=True),
}
LABEL_SMOOTHING_BASELINE = 0.1  # method label_smoothing = no mixing + smoothing 0.1 (Szegedy et al.)


def resolve_method(name: str, mix_method: str = "mixup") -> Method:
    """The registry's method, its mixing replaced by `mix_method` where it takes one."""
    method = METHODS[name]
    return replace(method, **SINGLE_MIXES[mix_method]) if method.takes_mix_method else method


def label_smoothing(method: Method, eps: float) -> float:
    """The smoothing of the method's loss: `eps` on every method when > 0; else 0.1 for the
    label_smoothing baseline and 0 for the others."""
    return eps if eps > 0 else LABEL_SMOOTHING_BASELINE if method.label_smoothing else 0.0


def interpolations(method: Method, k: int) -> int:
    """How many mixed versions of each pair the method makes."""
    return k if method.multi else 1


def batch_size(method: Method, base: int, k: int) -> int:
    return base * k if method.large_batch else base


def _zero_weights(count: int):
    return fn.constant(fdata=[0.0] * count, shape=[count], dtype=types.FLOAT)


def make_mixer(method: Method, *, k: int, alpha: float, lambda_sampling: str, lambda_scope: str,
               cutout: int, sample_shape: tuple) -> Optional[Callable]:
    """The pipeline step after normalisation: (images, labels) -> the pipeline's outputs, or None
    when the pipeline only augments. sample_shape: (C, H, W) of one normalised image.
    Large-batch mixup is K = 1 with lambda_scope "batch" on a batch of K*B pairs."""
    steps = interpolations(method, k)
    if method.cutout:
        def erase(images, labels):  # centre anywhere, the hole clipped at the border
            h, w = sample_shape[1:]
            centre = fn.stack(fn.random.uniform(values=list(range(h))),
                              fn.random.uniform(values=list(range(w))))
            anchor = centre - float(cutout // 2)  # float, as fn.erase wants
            return fn.erase(images, anchor=anchor, shape=[cutout, cutout], axis_names="HW",
                            fill_value=0.0), labels
        return erase
    if method.augment_copies:
        if method.mode is None:
            return lambda images, labels: (images, labels, labels, _zero_weights(k))

        def mix_copies(images, labels):  # images: (K, C, H, W); each copy mixed with the partner's
            out = dali_multimix.multimix(fn.reshape(images, layout="FCHW"), labels, k=1, alpha=alpha,
                                         mode=method.mode, lambda_sampling=lambda_sampling,
                                         lambda_scope=lambda_scope)
            mixed = fn.reshape(out.images, shape=[k, *sample_shape], layout="FCHW")
            return mixed, labels, out.partner_labels, fn.cat(*[out.weights] * k)
        return mix_copies
    if method.mode is None:
        return None
    return partial(dali_multimix.add_multimix, k=steps, alpha=alpha, mode=method.mode,
                   lambda_sampling=lambda_sampling,
                   lambda_scope="batch" if method.batch_lambda else lambda_scope)
