"""CIFAR-style pipelines over in-memory uint8 arrays: random crop with padding, horizontal flip,
normalisation, then multimix; and the matching evaluation pipeline.

Epochs are exact: an external source hands out every sample of the shard once per epoch, in a
fresh seeded permutation, with a partial last batch, and ends the epoch with StopIteration (so a
DALIGenericIterator needs neither `size` nor `reader_name`). The permutation depends only on the
seed and the epoch index, so a resumed run sees the same order.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import numpy as np
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

import dali_multimix

from .datasets import ArrayDataset
from .sharding import shard_indices


class EpochSource:
    """Batch callback of ``fn.external_source(batch_info=True, num_outputs=2)``."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool, seed: int,
                 shard_id: int = 0, num_shards: int = 1, first_epoch: int = 0,
                 drop_last: bool = False):
        self.images, self.labels = dataset.images, dataset.labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.first_epoch, self.drop_last = first_epoch, drop_last
        self.indices = shard_indices(len(dataset.labels), shard_id, num_shards)

    def __len__(self) -> int:
        return len(self.indices)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return self.indices
        return np.random.default_rng([self.seed, epoch]).permutation(self.indices)

    def __call__(self, info):
        order = self.epoch_order(self.first_epoch + info.epoch_idx)
        start = info.iteration * self.batch_size
        end = start + (self.batch_size if self.drop_last else 1)
        if end > len(order):
            raise StopIteration
        chosen = order[start:start + self.batch_size]
        return ([self.images[i] for i in chosen],
                [np.array(self.labels[i], np.int64) for i in chosen])


def channel_stats(dataset: ArrayDataset) -> tuple[list, list]:
    """Per-channel mean and std of the images, on the 0..255 scale."""
    x = dataset.images.reshape(-1, dataset.images.shape[-1]).astype(np.float64)
    return x.mean(0).tolist(), x.std(0).tolist()


def _source(dataset, batch_size, shuffle, seed, shard_id, num_shards, first_epoch=0,
            drop_last=False):
    src = EpochSource(dataset, batch_size, shuffle=shuffle, seed=seed, shard_id=shard_id,
                      num_shards=num_shards, first_epoch=first_epoch, drop_last=drop_last)
    images, labels = fn.external_source(source=src, batch_info=True, num_outputs=2, batch=True,
                                        layout=["HWC", ""], dtype=[types.UINT8, types.INT64])
    return images, labels


def random_pad_crop(images, *, h: int, w: int, pad: int):
    """A random h x w window of HWC images padded by `pad` zeros on each side (torchvision's
    RandomCrop(size, padding=pad)); pad=0 cuts the top-left h x w."""
    # `values`: uniform over the integers (an integer `range` rounds, halving the ends)
    anchor = fn.cast(fn.random.uniform(values=list(range(-pad, pad + 1)), shape=2), dtype=types.INT32) \
        if pad > 0 else fn.constant(idata=[0, 0], dtype=types.INT32)
    return fn.slice(images, start=anchor, shape=(h, w), axis_names="HW", out_of_bounds_policy="pad",
                    fill_values=0)


def augment(images, *, h: int, w: int, pad: int, flip: bool, mean: Sequence[float],
            std: Sequence[float], rotate: float = 0.0):
    """CIFAR-style augmentation of uint8 HWC images: a random rotation by U(-rotate, rotate)
    degrees (rotate > 0; same size, zero fill), a random H x W window of the image padded by `pad`
    zeros on each side, a random horizontal flip, normalisation to CHW float32."""
    if rotate > 0:
        images = fn.rotate(images, angle=fn.random.uniform(range=[-rotate, rotate]), keep_size=True,
                           fill_value=0, interp_type=types.INTERP_LINEAR)
    if pad > 0:
        images = random_pad_crop(images, h=h, w=w, pad=pad)
    mirror = fn.random.coin_flip() if flip else 0
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                    mean=list(mean), std=list(std), mirror=mirror)


def array_train_pipeline(dataset: ArrayDataset, *, batch_size: int, k: int = 5,
                         alpha: float = 1.0, mode: str = "mixup", mix: bool = True, pad: int = 4,
                         flip: bool = True, mean: Optional[Sequence[float]] = None,
                         std: Optional[Sequence[float]] = None, shard_id: int = 0,
                         num_shards: int = 1, seed: int = 0, first_epoch: int = 0,
                         num_threads: int = 2, device: str = "cpu",
                         augment_copies: int = 1, rotate: float = 0.0,
                         lambda_scope: str = "batch", mixer: Optional[Callable] = None,
                         drop_last: bool = False, enable_checkpointing: bool = False,
                         checkpoint: Optional[str] = None) -> Pipeline:
    """Training pipeline: random crop (zero padding `pad`), flip, normalise (CHW float32), then
    multimix (Shen et al.). Outputs (images (B, K, C, H, W), labels, partner_labels, weights), or
    (images (B, C, H, W), labels) with mix=False.

    augment_copies: n > 1 stacks n independently augmented copies of each sample, (B, n, C, H, W)
        (batch augmentation).
    rotate: > 0 rotates every augmented image by U(-rotate, rotate) degrees first (batch
        augmentation's copies: "random crop, flipping, and rotation", multi-mix paper Sec. IV-B2).
    lambda_scope: of the default multimix step ("batch": one set of ratios per batch).
    mixer: replaces the multimix step: mixer(images, labels) -> the pipeline's outputs.
    first_epoch: the epoch the pipeline starts at (the sample order is a function of seed and
        epoch, so a resumed run continues the same sequence).
    drop_last: leave out the last partial batch of each epoch (every batch then has batch_size).
    enable_checkpointing, checkpoint: DALI checkpointing (``pipe.checkpoint()`` or the iterator's
        ``checkpoints()``; a pipeline built with ``checkpoint=`` continues from the saved epoch and
        iteration). The source is a function of (epoch, iteration) (``batch_info``), which DALI
        restores; the augmentation's random operators and multimix restore their streams.
    """
    _check_shapes(dataset, batch_size, pad)
    if mean is None or std is None:
        mean, std = channel_stats(dataset)
    h, w = dataset.images.shape[1:3]
    if mixer is None and mix:
        mixer = partial(dali_multimix.add_multimix, k=k, alpha=alpha, mode=mode,
                        lambda_scope=lambda_scope)
    if rotate < 0:
        raise ValueError(f"rotate must be >= 0 degrees; got {rotate}")

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=seed,
                  device_id=0 if device == "gpu" else None, exec_dynamic=True,
                  enable_checkpointing=enable_checkpointing, checkpoint=checkpoint)
    def pipe():
        images, labels = _source(dataset, batch_size, True, seed, shard_id, num_shards,
                                 first_epoch, drop_last)
        if device == "gpu":
            images = images.gpu()
        copies = [augment(images, h=h, w=w, pad=pad, flip=flip, mean=mean, std=std, rotate=rotate)
                  for _ in range(augment_copies)]
        images = copies[0] if augment_copies == 1 else fn.stack(*copies)
        if mixer is None:
            return images, labels
        return mixer(images, labels)

    return pipe()


def array_eval_pipeline(dataset: ArrayDataset, *, batch_size: int,
                        mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                        shard_id: int = 0, num_shards: int = 1, num_threads: int = 2,
                        device: str = "cpu") -> Pipeline:
    """Evaluation pipeline: the samples in order, normalised, no augmentation, no mixing."""
    _check_shapes(dataset, batch_size, 0)
    if mean is None or std is None:
        mean, std = channel_stats(dataset)

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=0,
                  device_id=0 if device == "gpu" else None, exec_dynamic=True)
    def pipe():
        images, labels = _source(dataset, batch_size, False, 0, shard_id, num_shards)
        if device == "gpu":
            images = images.gpu()
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=list(mean), std=list(std))
        return images, labels

    return pipe()


def _check_shapes(dataset: ArrayDataset, batch_size: int, pad: int) -> None:
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"dataset must be an ArrayDataset (see pipelines.datasets); got "
                        f"{type(dataset).__name__}")
    if len(dataset.labels) == 0:
        raise ValueError("dataset is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0; got {pad}")
