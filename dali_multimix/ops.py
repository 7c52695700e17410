"""The multimix operator for use inside any DALI pipeline.

``multimix(images, labels, k=5)`` returns, per sample, K ordered interpolations with a partner
(Shen et al., "Mixup Augmentation with Multiple Interpolations", Sec. III), their label weights,
the partner's label and the partner's index. Arguments are validated here, at graph-build time;
what can only be known from the data (shapes, dtypes, per-sample overrides) is validated by the
operator at run time, with the argument's name and the sample index in the message.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple, Sequence, Union

from . import has_cuda, load_plugin

PLUGIN_PATH = load_plugin()  # ImportError that says how to fix a missing DALI or plugin

from nvidia.dali import fn  # noqa: E402
from nvidia.dali.data_node import DataNode  # noqa: E402

MODES = ("mixup", "cutmix", "fmix")
LAMBDA_SAMPLINGS = ("sorted", "stratified")
LAMBDA_SCOPES = ("batch", "sample")
MAX_K = 64


class MultimixOutputs(NamedTuple):
    """Per-sample outputs of :func:`multimix` (B samples in, B samples out).

    images:          (K, *input shape), layout "F" + input layout, the input dtype.
    weights:         (K,) float32, fraction taken from the partner at each step, non-decreasing.
    partner_labels:  the partner's label (same shape and dtype as ``labels``).
    partners:        () int32, the partner's index in the batch.
    """

    images: DataNode
    weights: DataNode
    partner_labels: DataNode
    partners: DataNode


INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _float32(name: str, value: object) -> float:
    """`value` as the float32 the operator stores, or a ValueError naming `name` and the value
    passed where it is not a real number or would overflow or underflow float32."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"multimix: `{name}` must be a number; got {value!r} "
                        f"({type(value).__name__})")
    number = float(value)
    if math.isfinite(number) and abs(number) > FLOAT32_MAX:
        raise ValueError(f"multimix: `{name}` is stored as float32, which {value!r} overflows "
                         f"(largest {FLOAT32_MAX:.7g})")
    if number != 0 and abs(number) < FLOAT32_TINY:
        raise ValueError(f"multimix: `{name}` is stored as float32, which {value!r} underflows "
                         f"(smallest normal {FLOAT32_TINY:.7g}); pass 0 or a larger value")
    return number


def _check_node(name: str, value: object) -> DataNode:
    if not isinstance(value, DataNode):
        raise TypeError(f"multimix: `{name}` must be a DALI DataNode (an output of another "
                        f"operator); got {type(value).__name__}")
    return value


def _check_arg_node(name: str, value: DataNode) -> DataNode:
    if value.device != "cpu":
        raise ValueError(f"multimix: argument `{name}` must be a CPU DataNode (DALI argument "
                         f"inputs live on the CPU); got a {value.device} DataNode")
    return value


def _check_lambdas(lambdas: Union[DataNode, Sequence[float]], k: int):
    if isinstance(lambdas, DataNode):
        return _check_arg_node("lambdas", lambdas)
    if isinstance(lambdas, (str, bytes)) or not hasattr(lambdas, "__iter__"):
        raise TypeError(f"multimix: `lambdas` must be a DataNode or a sequence of {k} floats; "
                        f"got {type(lambdas).__name__}")
    values = [_float32("lambdas", v) for v in lambdas]
    if len(values) != k:
        raise ValueError(f"multimix: `lambdas` must hold k={k} values; got {len(values)}")
    for i, v in enumerate(values):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"multimix: `lambdas` must lie in [0, 1]; value {i} is {v}")
        if i and v < values[i - 1]:
            raise ValueError(f"multimix: `lambdas` must be non-decreasing (the interpolations are "
                             f"ordered); value {i} ({v}) < value {i - 1} ({values[i - 1]})")
    return values


def _check_centers(centers: Union[DataNode, Sequence[int]]):
    if isinstance(centers, DataNode):
        return _check_arg_node("centers", centers)
    values = list(centers) if isinstance(centers, (list, tuple)) else None
    if values is None or len(values) != 2 or not all(_is_int(v) and v >= 0 for v in values):
        raise ValueError(f"multimix: `centers` must be a DataNode or (y, x), two integers >= 0; "
                         f"got {centers!r}")
    if any(v > INT32_MAX for v in values):
        raise ValueError(f"multimix: `centers` is stored as int32: each value must be at most "
                         f"{INT32_MAX}; got {centers!r}")
    return [int(v) for v in values]


def multimix(
    images: DataNode,
    labels: DataNode,
    *,
    k: int = 5,
    alpha: float = 1.0,
    mode: str = "mixup",
    lambda_sampling: str = "sorted",
    lambda_scope: str = "batch",
    lambdas: Union[DataNode, Sequence[float], None] = None,
    partners: Union[DataNode, int, None] = None,
    centers: Union[DataNode, Sequence[int], None] = None,
    fmix_scores: Union[DataNode, None] = None,
    seed: Union[int, None] = None,
) -> MultimixOutputs:
    """K ordered interpolations of every sample with a partner, inside a DALI pipeline.

    Multi-mix (Shen et al., "Mixup Augmentation with Multiple Interpolations"): for a sample x and
    its partner x' (by default a fresh random permutation of the batch each iteration), draw
    lambda_1 <= ... <= lambda_K (K sorted Beta(alpha, alpha) draws) and emit, for k = 1..K,

    * ``mode="mixup"``:  (1 - lambda_k) x + lambda_k x'  (any layout and rank, e.g. spectrograms);
    * ``mode="cutmix"``: x with the partner's pixels inside box k; the K boxes share one random
      centre, box k measures H*sqrt(lambda_k) x W*sqrt(lambda_k), clipped (nested boxes);
    * ``mode="fmix"``:   x with the partner's pixels where the sample's FMix low-frequency noise map
      (decay power 3) is in its top lambda_k fraction (nested masks).

    With ``lambda_scope="batch"`` (the default) one set lambda_1..lambda_K, one cutmix centre and
    one fmix noise map serve every pair of the batch, as in the paper's analysis (Eq. 7-9,
    Prop. III.2: "a single lambda ... used on all sample pairs in the batch") and in the originals
    of mixup, CutMix and FMix; ``"sample"`` draws them afresh for each sample (a variance-reduction
    choice). The weights are each sample's exact area in both.

    ``k=1`` is plain mixup / cutmix / fmix. Works on CPU and GPU DataNodes (uint8, float16,
    float32; layouts such as HWC or CHW; cutmix and fmix need H and W in the layout).

    Args:
        images: batch of B samples of one shape (e.g. (H, W, C)).
        labels: B labels: an integer class or a float vector (soft/one-hot) per sample.
        k: number of interpolations per sample, 1 to 64 (the paper's default is 5).
        alpha: the mixing distribution is Beta(alpha, alpha).
        mode: "mixup", "cutmix" or "fmix".
        lambda_sampling: "sorted" (K sorted Beta draws, the paper) or "stratified" (one draw from
            each of K equal-probability strata of the Beta distribution).
        lambda_scope: "batch" (default: one set of K ratios, one cutmix centre, one fmix noise
            map for the whole batch) or "sample" (one per sample). The overrides below replace
            what either scope draws.
        lambdas: override of the ratios: K non-decreasing floats in [0, 1] for every sample, or a
            CPU DataNode with K float32/float64 per sample.
        partners: override of the pairing: one index for every sample, or a CPU DataNode with an
            int32/int64 index per sample.
        centers: cutmix only: override of the box centre, (y, x) in pixels, or a CPU DataNode
            of two int32/int64 per sample.
        fmix_scores: fmix only: a CPU DataNode of (H, W) float32 score maps replacing the noise.
        seed: random seed of the operator (default: DALI picks one from the pipeline seed).

    Returns:
        MultimixOutputs(images (K, *shape), weights (K,), partner_labels, partners ()): per sample.
        Flatten (B, K, ...) to (B*K, ...) for the model; the target of row (b, k) is
        (1 - weights[b, k]) * y_b + weights[b, k] * partner_labels[b].
    """
    _check_node("images", images)
    _check_node("labels", labels)
    if not _is_int(k) or not 1 <= k <= MAX_K:
        raise ValueError(f"multimix: `k` must be an integer from 1 to {MAX_K}; got {k!r}")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not (
        math.isfinite(alpha) and alpha > 0
    ):
        raise ValueError(f"multimix: `alpha` must be a finite number > 0; got {alpha!r}")
    _float32("alpha", alpha)
    if mode not in MODES:
        raise ValueError(f"multimix: `mode` must be one of {MODES}; got {mode!r}")
    if lambda_sampling not in LAMBDA_SAMPLINGS:
        raise ValueError(f"multimix: `lambda_sampling` must be one of {LAMBDA_SAMPLINGS}; "
                         f"got {lambda_sampling!r}")
    if lambda_scope not in LAMBDA_SCOPES:
        raise ValueError(f"multimix: `lambda_scope` must be one of {LAMBDA_SCOPES}; "
                         f"got {lambda_scope!r}")
    if images.device not in ("cpu", "gpu"):
        raise ValueError(f"multimix: `images` must be a CPU or GPU DataNode; got a "
                         f"{images.device} DataNode")
    if images.device == "gpu" and not has_cuda():
        raise ValueError(
            "multimix: `images` is a GPU DataNode but this dali_multimix plugin was built without "
            "its CUDA backend (CMake found no CUDA compiler). Rebuild with CUDA: install the CUDA "
            "toolkit (nvcc, e.g. /usr/local/cuda) matching your DALI, then `CUDACXX=/usr/local/"
            "cuda/bin/nvcc pip install --no-build-isolation --no-deps --force-reinstall .` in the "
            "checkout (or `make setup`); dali_multimix.has_cuda() tells which build you have. "
            "Or keep the pipeline on the CPU (device='cpu').")
    if images.device == "gpu" and labels.device == "cpu":
        labels = labels.gpu()
    elif images.device == "cpu" and labels.device != "cpu":
        raise ValueError(f"multimix: `labels` is a {labels.device} DataNode but `images` is on the "
                         f"CPU; keep both on the CPU or move `images` to the GPU")

    kwargs = dict(k=int(k), alpha=float(alpha), mode=mode, lambda_sampling=lambda_sampling,
                  lambda_scope=lambda_scope)
    if lambdas is not None:
        kwargs["lambdas"] = _check_lambdas(lambdas, k)
    if partners is not None:
        if isinstance(partners, DataNode):
            kwargs["partners"] = _check_arg_node("partners", partners)
        elif _is_int(partners) and 0 <= partners <= INT32_MAX:
            kwargs["partners"] = int(partners)
        elif _is_int(partners) and partners > INT32_MAX:
            raise ValueError(f"multimix: `partners` is stored as int32: an index must be at most "
                             f"{INT32_MAX}; got {partners!r}")
        else:
            raise ValueError(f"multimix: `partners` must be a DataNode or an index >= 0; "
                             f"got {partners!r}")
    if centers is not None:
        if mode != "cutmix":
            raise ValueError(f"multimix: `centers` applies to mode 'cutmix' only; mode is {mode!r}")
        kwargs["centers"] = _check_centers(centers)
    if fmix_scores is not None:
        if mode != "fmix":
            raise ValueError(f"multimix: `fmix_scores` applies to mode 'fmix' only; "
                             f"mode is {mode!r}")
        if not isinstance(fmix_scores, DataNode):
            raise TypeError(f"multimix: `fmix_scores` must be a CPU DataNode of (H, W) float32 "
                            f"maps; got {type(fmix_scores).__name__}")
        kwargs["fmix_scores"] = _check_arg_node("fmix_scores", fmix_scores)
    if seed is not None:
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"multimix: `seed` must be an integer >= 0 or None; got {seed!r}")
        if seed > 2**63 - 1:
            raise ValueError(f"multimix: `seed` is stored as int64: it must be at most 2**63 - 1; "
                             f"got {seed!r}")
        kwargs["seed"] = int(seed)

    outputs = fn.multimix(images, labels, device=images.device, **kwargs)
    return MultimixOutputs(*outputs)


def add_multimix(images: DataNode, labels: DataNode, *, enabled: bool = True, **kwargs) -> tuple:
    """The one line that adds multi-mix to an existing pipeline: replace ``return images, labels``
    by ``return add_multimix(images, labels, k=5, enabled=is_training)``.

    With ``enabled=True`` returns (mixed images (K, *shape) per sample, labels, partner_labels,
    weights (K,) per sample), the order ``dali_multimix.torch.MultimixClassificationIterator`` and
    ``MultimixIterator`` read (output_map ["data", "label", "partner_label", "weight"], or
    ["images", "labels", "partner_labels", "weights"]); with ``enabled=False`` (validation)
    returns exactly ``(images, labels)``, untouched. Keyword arguments are those of
    :func:`multimix` (Shen et al., multi-mix, Eq. 7-9), e.g. ``lambda_scope="batch"`` (the
    default: one set of K ratios per batch) or ``"sample"``; shapes as :class:`MultimixOutputs`.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"add_multimix: `enabled` must be a bool (e.g. is_training); "
                        f"got {type(enabled).__name__}")
    if not enabled:
        return images, labels
    out = multimix(images, labels, **kwargs)
    if out.partner_labels.device != labels.device:
        labels = labels.gpu()
    return out.images, labels, out.partner_labels, out.weights
