"""The PyTorch side of dali-multimix: iterator adapter, mixed loss, multi-mix of tensors, and
manifold multi-mix through forward hooks (Shen et al., "Mixup Augmentation with Multiple
Interpolations")."""
from .comixup import CoMixup, CoMixupResult
from .iterator import MixedBatch, MixedLabels, MultimixIterator, flatten_multimix
from .loss import MultimixCrossEntropy, mixed_cross_entropy, mixed_soft_targets
from .manifold import ManifoldMix, ManifoldMultiMix, mix_activations
from .mixing import MultimixResult, multimix_batch

__all__ = [
    "CoMixup", "CoMixupResult",
    "MixedBatch", "MixedLabels", "MultimixIterator", "MultimixClassificationIterator",
    "MultimixCrossEntropy", "flatten_multimix", "mixed_cross_entropy",
    "mixed_soft_targets", "ManifoldMix", "ManifoldMultiMix", "mix_activations", "MultimixResult",
    "multimix_batch",
]


def __getattr__(name: str):
    """``MultimixClassificationIterator`` imports DALI on first access; the rest needs only torch."""
    if name == "MultimixClassificationIterator":
        from .classification import MultimixClassificationIterator
        return MultimixClassificationIterator
    raise AttributeError(f"module 'dali_multimix.torch' has no attribute {name!r}")
