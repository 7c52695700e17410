"""Data for the harness: the training and evaluation sets and the DALI pipelines (the training
pipeline built once and reused across epochs: TrainLoader), sharded by data-parallel rank. Array data sets (Fashion-MNIST, CIFAR, .npz), image folders
(ImageNet / Tiny-ImageNet style, data_path/train and data_path/val) and speech (WAV folders, with
a train / validation / test split)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

import pipelines
from dali_multimix.torch import MultimixIterator

from .config import TrainConfig
from .methods import Method, batch_size as method_batch_size, make_mixer
from .schedule import image_size

ARRAY_DATASETS = ("fashion_mnist", "cifar10", "cifar100", "npz")
MIXED_NAMES = ["images", "labels", "partner_labels", "weights"]


@dataclass
class Data:
    train: Union[pipelines.ArrayDataset, pipelines.FileList]
    test: Union[pipelines.ArrayDataset, pipelines.FileList]
    num_classes: int
    sample_shape: tuple          # (C, H, W) of one training input (image folders: of the first epoch)
    mean: list = None            # per-channel normalisation, 0..255 scale (None: speech, normalised per clip)
    std: list = None
    val: Optional[pipelines.FileList] = None  # a validation set for model selection (speech)

    @property
    def arrays(self) -> bool:
        return isinstance(self.train, pipelines.ArrayDataset)

    @property
    def in_channels(self) -> int:
        return self.sample_shape[0]

    def train_size(self) -> int:
        return len(self.train.labels)


def flip_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Replaces `fraction` of the labels by another class, uniformly (symmetric label noise)."""
    rng = np.random.default_rng([seed, 7])
    noisy = labels.copy()
    chosen = rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, len(chosen))) % num_classes
    return noisy


def _load_arrays(cfg: TrainConfig):
    if cfg.dataset == "fashion_mnist":
        root = cfg.data_path or pipelines.datasets.FASHION_MNIST_DIR
        return pipelines.fashion_mnist("train", root), pipelines.fashion_mnist("test", root)
    if not cfg.data_path:
        raise ValueError(f"dataset {cfg.dataset!r} needs data_path= (CIFAR: the folder of the python "
                         f"pickles; npz: a folder with train.npz and test.npz)")
    if cfg.dataset in ("cifar10", "cifar100"):
        return pipelines.load_cifar(cfg.data_path, "train"), pipelines.load_cifar(cfg.data_path, "test")
    return (pipelines.load_npz(Path(cfg.data_path) / "train.npz"),
            pipelines.load_npz(Path(cfg.data_path) / "test.npz"))


def _subset(data, n: int):
    if not n:
        return data
    if isinstance(data, pipelines.ArrayDataset):
        return pipelines.ArrayDataset(data.images[:n], data.labels[:n])
    return pipelines.FileList(data.files[:n], data.labels[:n], data.classes, data.skipped)


def load_data(cfg: TrainConfig) -> Data:
    if cfg.dataset in ARRAY_DATASETS:
        train, test = _load_arrays(cfg)
        train, test = _subset(train, cfg.train_subset), _subset(test, cfg.test_subset)
        classes = max(train.num_classes, test.num_classes)
        if cfg.label_noise > 0:
            train = pipelines.ArrayDataset(train.images, flip_labels(train.labels, cfg.label_noise,
                                                                     classes, cfg.seed))
        mean, std = (cfg.mean, cfg.std) if cfg.mean else pipelines.channel_stats(train)
        shape = (train.images.shape[3],) + train.images.shape[1:3]
        return Data(train, test, classes, shape, _per_channel(mean, shape[0]), _per_channel(std, shape[0]))
    if cfg.label_noise > 0:
        raise ValueError("label_noise is available for the array data sets only")
    if cfg.dataset == "image_folder":
        if not cfg.data_path:
            raise ValueError("dataset 'image_folder' needs data_path= a folder with train/ and val/, "
                             "each holding <class>/<image> files")
        root = Path(cfg.data_path)
        train = pipelines.list_image_folder(root / "train", verify=False)
        test = pipelines.list_image_folder(root / "val", verify=False)
        size = image_size(cfg, 0)
        mean = _per_channel(cfg.mean or pipelines.image_folder.IMAGENET_MEAN, 3)
        std = _per_channel(cfg.std or pipelines.image_folder.IMAGENET_STD, 3)
        return Data(_subset(train, cfg.train_subset), _subset(test, cfg.test_subset), len(train.classes),
                    (3, size, size), mean, std)
    # speech: the standard train / validation / test split (a seeded 80/10/10 one where the folder
    # has none); the model is selected by validation error and its test error reported
    root = Path(cfg.data_path) if cfg.data_path else \
        pipelines.synthesize_speech_commands(Path(cfg.out_dir).parent / "speech_commands")
    train, val, test = pipelines.speech_commands_split(root, seed=0)
    return Data(_subset(train, cfg.train_subset), _subset(test, cfg.test_subset), len(train.classes),
                pipelines.feature_shape("stft"), val=_subset(val, cfg.test_subset))


def _per_channel(values, channels: int) -> list:
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, epoch, rank]).generate_state(1)[0] % 2**31)


def steps_per_epoch(cfg: TrainConfig, method: Method, data: Data, world: int) -> int:
    return data.train_size() // world // method_batch_size(method, cfg.batch_size, cfg.k)


class TrainLoader:
    """The DALI training pipeline, built once and reused across epochs: iterating it yields the
    batches of one epoch (iterate whole epochs: the pipeline is reset at the end of each), and
    :meth:`state` is what a checkpoint saves to continue it exactly.

    The pipeline is seeded from (seed, first_epoch, rank), where `first_epoch` is the epoch it was
    built at (0 in a run that does not change the image size), and built with DALI checkpointing:
    the reader or the array source (a function of (epoch, iteration)), the random operators and
    multimix's stream are restored from ``state["dali"]``, so a resumed run goes on with the very
    batches the uninterrupted one had. A new pipeline is built only where the training image size
    changes (cfg.image_size_stages, image folders): DALI pipelines have a fixed output size.
    """

    builds = 0  # pipelines built by this process (tests count them)

    def __init__(self, cfg: TrainConfig, method: Method, data: Data, epoch: int, rank: int = 0,
                 world: int = 1, device: str = "cpu", state: Optional[dict] = None):
        """A pipeline whose next epoch is `epoch`: new, or restored from `state` (see state())."""
        batch = method_batch_size(method, cfg.batch_size, cfg.k)
        self.size = image_size(cfg, epoch)
        self.first_epoch = state["first_epoch"] if state else epoch
        self.next_epoch = epoch
        shape = data.sample_shape if data.arrays or cfg.dataset == "speech" else (3, self.size, self.size)
        mixer = make_mixer(method, k=cfg.k, alpha=cfg.alpha, lambda_sampling=cfg.lambda_sampling,
                           lambda_scope=cfg.lambda_scope, cutout=cfg.cutout, sample_shape=shape)
        common = dict(batch_size=batch, shard_id=rank, num_shards=world,
                      seed=epoch_seed(cfg, self.first_epoch, rank), num_threads=cfg.num_threads,
                      mixer=mixer, mix=mixer is not None, enable_checkpointing=True,
                      checkpoint=state["dali"] if state else None)
        names = MIXED_NAMES if mixer is not None and not method.cutout else ["images", "labels"]
        if data.arrays:
            usable = data.train_size() // world * world
            train = pipelines.ArrayDataset(data.train.images[:usable], data.train.labels[:usable])
            pipe = pipelines.array_train_pipeline(
                train, pad=cfg.pad, mean=data.mean, std=data.std, first_epoch=self.first_epoch,
                device=device, augment_copies=cfg.k if method.augment_copies else 1,
                rotate=cfg.copy_rotation if method.augment_copies else 0.0, drop_last=True, **common)
            reader = {}
        elif method.augment_copies:
            raise ValueError(f"method {method.name!r} (K augmented copies) is available for the array "
                             f"data sets only")
        elif cfg.dataset == "image_folder":
            pipe = pipelines.image_folder_train_pipeline(data.train, size=self.size, device=device,
                                                         mean=data.mean, std=data.std,
                                                         crop=cfg.image_crop, pad=cfg.pad, **common)
            reader = dict(reader_name="Reader", last_batch_policy=LastBatchPolicy.DROP)
        else:
            pipe = pipelines.speech_train_pipeline(data.train, **common)
            reader = dict(reader_name="Reader", last_batch_policy=LastBatchPolicy.DROP)
        pipe.build()
        TrainLoader.builds += 1
        self.files = data.train.files if cfg.dataset == "image_folder" else None
        self.dali = dali_iterator(pipe, names, self.files, **reader)
        self.batches = MultimixIterator(self.dali)

    def serves(self, cfg: TrainConfig, epoch: int) -> bool:
        """True where this pipeline goes on with `epoch` (its next epoch, at the same image size)."""
        return epoch == self.next_epoch and image_size(cfg, epoch) == self.size

    def __iter__(self):
        yield from named_decode_errors(self.batches, self.files)
        self.dali.reset()
        self.next_epoch += 1

    def state(self) -> dict:
        """The pipeline's state between two epochs, for a checkpoint: {"first_epoch",
        "next_epoch", "dali": DALI's serialized checkpoint}."""
        return {"first_epoch": self.first_epoch, "next_epoch": self.next_epoch,
                "dali": self.dali.checkpoints()[0]}


def train_loader(cfg: TrainConfig, method: Method, data: Data, epoch: int, rank: int = 0,
                 world: int = 1, device: str = "cpu", *, reuse: Optional[TrainLoader] = None,
                 state: Optional[dict] = None) -> TrainLoader:
    """The training loader of `epoch`: `reuse` (the previous epoch's loader) where it serves
    `epoch`; else the pipeline restored from `state` (a checkpoint's TrainLoader.state()) where
    it was saved at `epoch` with the same image size; else a new pipeline starting at `epoch`.
    Partial last batches are dropped and the shards are equal, so that every rank takes the same
    number of steps. ValueError where `state` was saved at another epoch."""
    if reuse is not None and reuse.serves(cfg, epoch):
        return reuse
    if state is not None:
        if state.get("next_epoch") != epoch:
            raise ValueError(f"pipeline state: saved to continue at epoch {state.get('next_epoch')!r}, "
                             f"but the run continues at epoch {epoch}")
        if image_size(cfg, state["first_epoch"]) == image_size(cfg, epoch):
            return TrainLoader(cfg, method, data, epoch, rank, world, device, state=state)
    return TrainLoader(cfg, method, data, epoch, rank, world, device)


def decode_error_naming_files(err: RuntimeError, files: Optional[list]) -> Optional[ValueError]:
    """Where DALI failed on an image (its message names no file, e.g. "nvImageCodec failure:
    '#4'"), a ValueError naming the files of `files` that DALI cannot decode; None where there are
    none (another error). The harness lists image folders without decoding every file up front
    (too slow for ImageNet), so this is where a corrupt image is named."""
    if not files:
        return None
    print(f"DALI failed while reading images; looking for undecodable files among {len(files)} ...",
          flush=True)
    bad = pipelines.find_undecodable_images(files)
    if not bad:
        return None
    listed = "; ".join(f"{path}: {reason}" for path, reason in bad)
    return ValueError(f"images that DALI cannot decode ({len(bad)}{'+' if len(bad) >= 10 else ''}): "
                      f"{listed}. Remove them, or list the folder with "
                      f"pipelines.list_image_folder(..., verify=True, skip_corrupt=True)")


def named_decode_errors(batches, files: Optional[list]):
    """Yields from `batches`, turning a DALI decode failure into decode_error_naming_files's."""
    try:
        yield from batches
    except RuntimeError as err:
        named = decode_error_naming_files(err, files)
        if named is None:
            raise
        raise named from err


def dali_iterator(pipe, names: list, files: Optional[list], **kwargs) -> DALIGenericIterator:
    """DALIGenericIterator(pipe, names, **kwargs), whose first batch (read when it is made) may
    already hit a corrupt image: named as in decode_error_naming_files."""
    try:
        return DALIGenericIterator(pipe, names, **kwargs)
    except RuntimeError as err:
        named = decode_error_naming_files(err, files)
        if named is None:
            raise
        raise named from err


class _NamedEvalLoader:
    """An evaluation iterator whose decode errors name the file (see named_decode_errors)."""

    def __init__(self, loader, files: list):
        self.loader, self.files = loader, files

    def __iter__(self):
        return named_decode_errors(self.loader, self.files)

    def reset(self):
        self.loader.reset()


def eval_loader(cfg: TrainConfig, files, data: Data, device: str = "cpu"):
    """The pipeline over an evaluation set (`files`: data.test or data.val), in order, unmixed.
    Batches of at most the set's size: a file reader wraps around to fill a larger batch, and
    DALI 2.4's CPU image decoder segfaults when a corrupt file appears more than once in a batch
    (reproduced: 8 files, batch 64, one corrupt PNG), instead of raising its decode error."""
    batch = max(1, min(max(cfg.batch_size, 256), len(files.labels)))
    if data.arrays:
        pipe = pipelines.array_eval_pipeline(files, batch_size=batch, mean=data.mean, std=data.std,
                                             num_threads=cfg.num_threads, device=device)
        pipe.build()
        return DALIGenericIterator(pipe, ["images", "labels"])
    if cfg.dataset == "image_folder":  # image_crop "pad": the images as stored, no resize
        pipe = pipelines.image_folder_val_pipeline(files, batch_size=batch, size=cfg.image_size,
                                                   num_threads=cfg.num_threads, device=device,
                                                   mean=data.mean, std=data.std,
                                                   native=cfg.image_crop == "pad")
    else:
        pipe = pipelines.speech_train_pipeline(files, batch_size=batch, mix=False, training=False,
                                               num_threads=cfg.num_threads)
    pipe.build()
    if cfg.dataset != "image_folder":
        return DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                   last_batch_policy=LastBatchPolicy.PARTIAL)
    names = list(files.files)
    return _NamedEvalLoader(dali_iterator(pipe, ["images", "labels"], names, reader_name="Reader",
                                          last_batch_policy=LastBatchPolicy.PARTIAL), names)
