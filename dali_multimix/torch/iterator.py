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
CHANNEL_SIZES = (1, 2, 3, 4)


class MixedLabels(torch.Tensor):
    """The target of mixed rows: each row's own class label (what a loop reads as its target and
    what accuracy code compares with), carrying the partner label and weight of every row, so that
    ``MultimixCrossEntropy()(output, target)`` computes the paper's multi-mix loss (Shen et al.,
    Eq. 7: cross-entropy against (1 - w) * y + w * y', averaged over the B*K rows).

    Shapes: the own labels (N,) or (N, 1) int64; ``partner_labels`` the same shape; ``weights``
    (N,) float32. The row-preserving methods a loop applies to its target keep the partner labels
    and weights (``squeeze``, ``flatten``, ``view``/``reshape`` to N rows, ``long``, ``int``,
    ``to``, ``cuda``, ``cpu``, ``contiguous``, ``detach``, ``clone``, ``pin_memory``, applied to
    the partner labels too); every other operation returns a plain tensor of the own labels.
    """

    CARRY = frozenset({"squeeze", "flatten", "view", "reshape", "long", "int", "to", "cuda", "cpu",
                       "contiguous", "detach", "clone", "pin_memory"})

    @staticmethod
    def __new__(cls, labels: torch.Tensor, partner_labels: torch.Tensor, weights: torch.Tensor):
        for name, t in (("labels", labels), ("partner_labels", partner_labels),
                        ("weights", weights)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"MixedLabels: `{name}` must be a tensor; got {type(t).__name__}")
        if labels.is_floating_point() or partner_labels.is_floating_point():
            raise TypeError(f"MixedLabels: `labels` and `partner_labels` must be integer class "
                            f"indices; got {labels.dtype} and {partner_labels.dtype}")
        if labels.shape != partner_labels.shape or labels.dim() not in (1, 2) or (
                labels.dim() == 2 and labels.shape[1] != 1):
            raise ValueError(f"MixedLabels: `labels` and `partner_labels` must both be (N,) or "
                             f"(N, 1); got {tuple(labels.shape)} and {tuple(partner_labels.shape)}")
        if weights.shape != (labels.shape[0],):
            raise ValueError(f"MixedLabels: `weights` must be (N,) = ({labels.shape[0]},); got "
                             f"{tuple(weights.shape)}")
        with torch._C.DisableTorchFunctionSubclass():
            out = labels.as_subclass(cls)
        out.partner_labels, out.weights = partner_labels, weights
        return out

    def plain(self) -> torch.Tensor:
        """The own labels as a plain tensor (same storage)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.as_subclass(torch.Tensor)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
            this = args[0] if args else None
            rows = this.shape[0] if isinstance(this, MixedLabels) and this.dim() else None
            if (rows is not None and getattr(func, "__name__", "") in cls.CARRY
                    and isinstance(out, torch.Tensor) and out.dim() in (1, 2)
                    and out.shape[0] == rows and out.numel() == rows):
                if out is this:
                    return this
                partner = func(this.partner_labels, *args[1:], **kwargs)
                weights = this.weights.to(out.device)
                return MixedLabels(out.as_subclass(torch.Tensor), partner, weights)
            return _plain(out)


def _plain(value):
    if isinstance(value, MixedLabels):
        return value.as_subclass(torch.Tensor)
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value


def guess_layout(images: torch.Tensor) -> Optional[str]:
    """Layout of one mixed image of (B, K, a, b, c) images when the channel axis is unambiguous
    (exactly one of a, c is a channel count 1-4): "CHW" or "HWC"; else None."""
    if images.dim() != 5:
        return None
    first, last = images.shape[2] in CHANNEL_SIZES, images.shape[4] in CHANNEL_SIZES
    if first != last:
        return "CHW" if first else "HWC"
    return None


def record_layouts(iterator) -> bool:
    """Makes a DALI iterator remember its outputs' layouts (``iterator.multimix_layouts``) at
    every batch it fetches; False when `iterator` is not a DALI iterator."""
    fetch = getattr(iterator, "_get_outputs", None)
    if fetch is None or not hasattr(iterator, "_pipes"):
        return False
    if getattr(fetch, "_records_layouts", False):
        return True

    def recording():
        outputs = fetch()
        iterator.multimix_layouts = [str(o.layout()) for o in outputs[0]]
        return outputs

    recording._records_layouts = True
    iterator._get_outputs = recording
    return True


def layout_of_output(iterator, index: int, images: torch.Tensor) -> Optional[str]:
    """The layout of one mixed image, from the DALI output's layout "F" + layout, or None when
    the iterator has not recorded it. Raises ValueError when the output is not multimix's."""
    layouts = getattr(iterator, "multimix_layouts", None)
    if not layouts or not layouts[index]:
        return None
    layout = layouts[index]
    if not layout.startswith("F") or len(layout) != images.dim() - 1:
        raise ValueError(f"multimix iterator: the images output has layout {layout!r} and shape "
                         f"{tuple(images.shape)}; expected multimix's output: layout 'F' + the "
                         f"image layout and shape (B, K, ...)")
    return layout[1:]


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
                     weights: torch.Tensor, *, image_layout: Optional[str] = None,
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
    if image_layout is None:
        image_layout = guess_layout(images)
        if image_layout is None:
            raise ValueError(f"MultimixIterator: cannot tell the layout of images of shape "
                             f"{tuple(images.shape[2:])} per step: pass `image_layout` (e.g. "
                             f"'CHW' or 'HWC'), or build the iterator with from_pipeline / over a "
                             f"DALI iterator so that it reads the pipeline's output layout")
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
        image_layout: layout of one mixed image as the pipeline emits it. Default None: read from
            the pipeline's output layout ("F" + layout) when the iterator is a DALI iterator (from
            its second batch on when it was built outside; :meth:`from_pipeline` records it from
            the first), else from the shape when exactly one end axis is a channel count (1-4);
            otherwise a ValueError asks for it. A given layout that contradicts the pipeline's is
            a ValueError too: never silently wrong shapes.
        output_layout: layout the model wants (channels-first by default).
        keys: names of the images, labels, partner labels and weights in the dicts.
    """

    def __init__(self, iterator: Iterable, *, image_layout: Optional[str] = None,
                 output_layout: str = "CHW", keys: Sequence[str] = OUTPUT_MAP):
        if len(keys) != 4:
            raise ValueError(f"MultimixIterator: `keys` must name images, labels, partner labels and "
                             f"weights; got {keys!r}")
        record_layouts(iterator)
        self.iterator = iterator
        self.image_layout, self.output_layout, self.keys = image_layout, output_layout, tuple(keys)

    @classmethod
    def from_pipeline(cls, pipelines, *, reader_name: Optional[str] = None, size: int = -1,
                      last_batch_policy=None, auto_reset: bool = False,
                      image_layout: Optional[str] = None,
                      output_layout: str = "CHW") -> "MultimixIterator":
        """Builds the DALIGenericIterator over pipelines returning (images, labels,
        partner_labels, weights) in that order, recording the layout from the first batch."""
        from nvidia.dali.plugin.pytorch import LastBatchPolicy

        from .classification import LayoutRecordingIterator

        policy = LastBatchPolicy.PARTIAL if last_batch_policy is None else last_batch_policy
        it = LayoutRecordingIterator(pipelines, list(OUTPUT_MAP), reader_name=reader_name,
                                     size=size, last_batch_policy=policy, auto_reset=auto_reset)
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
                                   image_layout=self._layout(data[images]),
                                   output_layout=self.output_layout)

    def _layout(self, images: torch.Tensor) -> Optional[str]:
        output_map = list(getattr(self.iterator, "output_map", []))
        detected = (layout_of_output(self.iterator, output_map.index(self.keys[0]), images)
                    if self.keys[0] in output_map else None)
        if detected is not None and self.image_layout is not None and detected != self.image_layout:
            raise ValueError(f"MultimixIterator: `image_layout` is {self.image_layout!r} but the "
                             f"pipeline's images have layout {detected!r}")
        return detected or self.image_layout

    def __len__(self) -> int:
        return len(self.iterator)

    def reset(self) -> None:
        if hasattr(self.iterator, "reset"):
            self.iterator.reset()
