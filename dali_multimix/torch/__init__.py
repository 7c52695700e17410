"""The PyTorch side of dali-multimix: iterator adapter, mixed loss, multi-mix of tensors, and
manifold multi-mix through forward hooks (Shen et al., "Mixup Augmentation with Multiple
Interpolations")."""
from .iterator import MixedBatch, MultimixIterator, flatten_multimix
from .loss import mixed_cross_entropy, mixed_soft_targets
from .manifold import ManifoldMix, ManifoldMultiMix, mix_activations
from .mixing import MultimixResult, multimix_batch

__all__ = [
    "MixedBatch", "MultimixIterator", "flatten_multimix", "mixed_cross_entropy",
    "mixed_soft_targets", "ManifoldMix", "ManifoldMultiMix", "mix_activations", "MultimixResult",
    "multimix_batch",
]
