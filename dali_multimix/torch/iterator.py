"""Iterator adapter: from a DALI pipeline that uses ``multimix`` to flat training batches.

The operator emits per sample (K, *shape) images, K weights, the partner's label; this adapter
flattens them to B*K rows (row b*K + k is sample b at step k) in the layout the model wants, next to
the own labels, partner labels and weights of every row, on the device where the pipeline put
them. Epochs, ``reader_name``, ``last_batch_policy`` and sharding are the wrapped iterator's.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import torch

OUTPUT_MAP = ("images", "labels", "partner_labels", "weights")


class MixedBatch(NamedTuple):
    """One training step: N = B*K rows.

    images: (N, C, H, W) (or (N, *shape) for other ranks); labels, partner_labels: (N,) class
    indices or (N, C) soft labels; weights: (N,) float32, the fraction taken from the partner.
    """

    images: torch.Tensor
    labels: torch.Tensor
    partner_labels: torch.Tensor
    weights: torch.Tensor


def _labels_rows(labels: torch.Tensor, batch: int) -> torch.Tensor:
    if labels.dim() == 2 and labels.shape[1] == 1 and not labels.is_floating_point():
        labels = labels[:, 0]  # DALI readers give (B, 1) integer labels
    if labels.shape[0] != batch:
        raise ValueError(f"MultimixIterator: labels have {labels.shape[0]} rows for {batch} samples")
    return labels


def flatten_multimix(images: torch.Tensor, labels: torch.Tensor, partner_labels: torch.Tensor,
                     weights: torch.Tensor, *, image_layout: str = "CHW",
                     output_layout: str = "CHW") -> MixedBatch:
    """(B, K, *shape) operator outputs -> a MixedBatch of B*K rows.

    `image_layout` is the layout of one mixed image (the operator's output layout without its
    leading "F"); with "HWC" in and "CHW" out the images come back as a (N, C, H, W) view in
    channels-last memory (no copy).
    """
    if weights.dim() != 2 or images.shape[:2] != weights.shape:
        raise ValueError(f"MultimixIterator: expected images (B, K, ...) and weights (B, K); got "
                         f"{tuple(images.shape)} and {tuple(weights.shape)}")
    batch, k = weights.shape
    if len(image_layout) != images.dim() - 2:
        raise ValueError(f"MultimixIterator: `image_layout` {image_layout!r} does not match images of "
                         f"shape {tuple(images.shape[2:])} per step")
    flat = images.flatten(0, 1)
    if image_layout != output_layout:
        if sorted(image_layout) != sorted(output_layout):
            raise ValueError(f"MultimixIterator: cannot turn layout {image_layout!r} into "
                             f"{output_layout!r}")
        flat = flat.permute(0, *[1 + image_layout.index(c) for c in output_layout])
    own = _labels_rows(labels, batch).repeat_interleave(k, dim=0)
    partner = _labels_rows(partner_labels, batch).repeat_interleave(k, dim=0)
    return MixedBatch(flat, own, partner, weights.reshape(-1).float())


class MultimixIterator:
    """Wraps a ``DALIGenericIterator`` (or any iterable of dicts of tensors) over a pipeline that
    returns multimix outputs; yields :class:`MixedBatch` es.

    Dicts without a ``weights`` entry (a plain pipeline) pass through unchanged. For exact epochs
    (every sample once) give the reader ``pad_last_batch=True`` and ``shuffle_after_epoch=True``
    (``random_shuffle``'s buffer lets samples cross epoch boundaries), and the iterator
    ``reader_name`` with ``LastBatchPolicy.PARTIAL`` (the default of :meth:`from_pipeline`).

    Args:
        iterator: e.g. ``DALIGenericIterator(pipe, ["images", "labels", "partner_labels",
            "weights"], reader_name="Reader")``.
        image_layout: layout of one mixed image as the pipeline emits it ("CHW" after
            crop_mirror_normalize(output_layout="CHW"), "HWC" for decoded images).
        output_layout: layout the model wants (channels-first by default).
        keys: names of the images, labels, partner labels and weights in the dicts.
    """

    def __init__(self, iterator: Iterable, *, image_layout: str = "CHW", output_layout: str = "CHW",
                 keys: Sequence[str] = OUTPUT_MAP):
        if len(keys) != 4:
            raise ValueError(f"MultimixIterator: `keys` must name images, labels, partner labels and "
                             f"weights; got {keys!r}")
        self.iterator = iterator
        self.image_layout, self.output_layout, self.keys = image_layout, output_layout, tuple(keys)

    @classmethod
    def from_pipeline(cls, pipelines, *, reader_name: Optional[str] = None, size: int = -1,
                      last_batch_policy=None, auto_reset: bool = False, image_layout: str = "CHW",
                      output_layout: str = "CHW") -> "MultimixIterator":
        """Builds the DALIGenericIterator over pipelines returning (images, labels,
        partner_labels, weights) in that order."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        policy = LastBatchPolicy.PARTIAL if last_batch_policy is None else last_batch_policy
        it = DALIGenericIterator(pipelines, list(OUTPUT_MAP), reader_name=reader_name, size=size,
                                 last_batch_policy=policy, auto_reset=auto_reset)
        return cls(it, image_layout=image_layout, output_layout=output_layout)

    def __iter__(self) -> Iterator[Union[MixedBatch, Mapping]]:
        for data in self.iterator:
            if isinstance(data, list):  # DALIGenericIterator: one dict per pipeline
                if len(data) != 1:
                    raise ValueError(f"MultimixIterator: expected one pipeline per process; got "
                                     f"{len(data)} (use one iterator per device)")
                data = data[0]
            images, labels, partner_labels, weights = self.keys
            if weights not in data:
                yield data
                continue
            yield flatten_multimix(data[images], data[labels], data[partner_labels], data[weights],
                                   image_layout=self.image_layout, output_layout=self.output_layout)

    def __len__(self) -> int:
        return len(self.iterator)

    def reset(self) -> None:
        if hasattr(self.iterator, "reset"):
            self.iterator.reset()
