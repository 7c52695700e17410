"""A drop-in for DALI's ``DALIClassificationIterator`` over pipelines that may mix.

NVIDIA's ResNet-50 example reads ``data[0]["data"]``, ``data[0]["label"].squeeze(-1).long()``,
``train_loader._size``, ``len(...)`` and ``reset()``. :class:`MultimixClassificationIterator` takes
the same arguments and yields the same structure, for a pipeline ending in
``return dali_multimix.add_multimix(images, labels, k=K, enabled=is_training)``:

* 2 outputs (``enabled=False``, validation): exactly what ``DALIClassificationIterator`` yields.
* 4 outputs (multi-mix, Shen et al.): ``"data"`` holds B*K rows (row b*K + k is sample b mixed at
  step k, in the pipeline's layout, e.g. (B*K, C, H, W)), ``"label"`` a :class:`MixedLabels`
  (B*K, 1) int64 of each row's own label carrying partner labels and weights, plus
  ``"partner_label"`` (B*K, 1) int64 and ``"weight"`` (B*K,) float32. ``_size`` and ``len`` count
  input samples and steps, as before. The mixed output's layout is read from the pipeline
  ("F" + image layout); anything else is a ValueError, never a silently wrong shape.

Importing this module needs DALI (the rest of dali_multimix.torch does not).
"""
from __future__ import annotations

from typing import Dict, List

import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from .iterator import MixedLabels, layout_of_output

MIXED_OUTPUT_MAP = ["data", "label", "partner_label", "weight"]
PLAIN_OUTPUT_MAP = ["data", "label"]


class LayoutRecordingIterator(DALIGenericIterator):
    """A ``DALIGenericIterator`` that remembers the layouts of the outputs it last fetched
    (``multimix_layouts``), from the first (prefetched) batch on."""

    multimix_layouts: List[str] = []

    def _get_outputs(self):
        outputs = super()._get_outputs()
        self.multimix_layouts = [str(o.layout()) for o in outputs[0]]
        return outputs


def _labels_column(labels: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if labels.is_floating_point():
        raise TypeError(f"MultimixClassificationIterator: `{name}` must be integer class labels "
                        f"(the loop .long()s them); got {labels.dtype}. For soft labels use "
                        f"dali_multimix.torch.MultimixIterator")
    if labels.dim() == 1:
        labels = labels[:, None]
    if labels.shape != (batch, 1):
        raise ValueError(f"MultimixClassificationIterator: `{name}` must be one class per sample, "
                         f"({batch}, 1); got {tuple(labels.shape)}")
    return labels.long()


class MultimixClassificationIterator(LayoutRecordingIterator):
    """``DALIClassificationIterator(pipelines, reader_name=..., last_batch_policy=...)`` for
    pipelines returning ``(images, labels)`` or ``add_multimix``'s four outputs.

    Args: those of ``DALIClassificationIterator`` (size, reader_name, auto_reset,
    last_batch_policy, ...), passed through unchanged.
    """

    def __init__(self, pipelines, size: int = -1, reader_name=None, auto_reset=False,
                 last_batch_policy=LastBatchPolicy.FILL, **kwargs):
        pipes = pipelines if isinstance(pipelines, (list, tuple)) else [pipelines]
        outputs = {p.num_outputs for p in pipes}
        if outputs == {2}:
            output_map = PLAIN_OUTPUT_MAP
        elif outputs == {4}:
            output_map = MIXED_OUTPUT_MAP
        else:
            raise ValueError(f"MultimixClassificationIterator: the pipeline must return (images, "
                             f"labels) or add_multimix's (images, labels, partner_labels, weights); "
                             f"it returns {sorted(outputs)} outputs")
        self.mixed = output_map is MIXED_OUTPUT_MAP
        super().__init__(pipelines, output_map, size=size, reader_name=reader_name,
                         auto_reset=auto_reset, last_batch_policy=last_batch_policy, **kwargs)

    def __next__(self) -> List[Dict[str, torch.Tensor]]:
        batch = super().__next__()
        return [self._flatten(d) for d in batch] if self.mixed else batch

    def _flatten(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        images, weights = data["data"], data["weight"]
        if weights.dim() != 2 or images.shape[:2] != weights.shape:
            raise ValueError(f"MultimixClassificationIterator: expected images (B, K, ...) and "
                             f"weights (B, K); got {tuple(images.shape)} and "
                             f"{tuple(weights.shape)}")
        if layout_of_output(self, 0, images) is None:
            raise ValueError("MultimixClassificationIterator: the pipeline's mixed images carry no "
                             "layout; expected multimix's 'F' + image layout")
        batch, k = weights.shape
        own = _labels_column(data["label"], batch, "label").repeat_interleave(k, dim=0)
        partner = _labels_column(data["partner_label"], batch, "partner_label")
        partner = partner.repeat_interleave(k, dim=0)
        flat_weights = weights.reshape(-1).float()
        return {"data": images.flatten(0, 1), "label": MixedLabels(own, partner, flat_weights),
                "partner_label": partner, "weight": flat_weights}
