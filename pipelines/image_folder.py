"""ImageNet-style pipelines over a folder of class sub-folders of JPEGs (or a file list), in the
structure of DALI's ResNet-50 example loader: file reader -> decode with a random crop ("mixed",
i.e. nvJPEG, on a GPU; "cpu" otherwise) -> resize -> crop-mirror-normalize -> multimix; and the
validation pipeline (resize the shorter side, centre crop).

For data sets stored at the model's size (Tiny-ImageNet's 64x64) ``crop="pad"`` trains on the
native image padded and randomly cropped back to its size, with a flip, and ``native=True``
validates on the decoded image as it is (Puzzle Mix's load_data.py: RandomCrop(64, padding=4) +
RandomHorizontalFlip for training, ToTensor + Normalize only for testing).
"""
from __future__ import annotations

from pathlib import Path
from functools import partial
from typing import Callable, Optional, Sequence, Union

from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import Pipeline

import dali_multimix

from .arrays import random_pad_crop
from .folders import FileList, list_class_folder
from .sharding import check_shard

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def verify_image(path: str) -> Optional[str]:
    """None if `path` decodes as an image, else why not."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
    except Exception as e:  # PIL raises many types for corrupt data
        return f"{type(e).__name__}: {e}"
    return None


def find_undecodable_images(files: Sequence[str], limit: int = 10) -> list:
    """[(path, reason)] of the first `limit` files that DALI's image decoder (the pipelines' own,
    on the CPU) cannot decode: for naming the file after a decode error mid-epoch, where DALI's
    message does not say which file failed. Decodes every file until `limit` are found."""
    from .folders import DaliVerifier

    verify = DaliVerifier(lambda encoded: fn.decoders.image(encoded, device="cpu"))
    bad = []
    for path in files:
        reason = verify(path)
        if reason is not None:
            bad.append((path, reason))
            if len(bad) >= limit:
                break
    return bad


def list_image_folder(root: Union[str, Path], *, verify: bool = True, skip_corrupt: bool = False,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS) -> FileList:
    """Files and labels of `root`/<class>/<image> (see folders.list_class_folder). verify decodes
    every file once (PIL), which costs a decode per file: turn it off for very large sets."""
    return list_class_folder(root, extensions, verify_image if verify else None,
                             skip_corrupt=skip_corrupt, kind="image")


def _reader(file_list: FileList, training: bool, shard_id: int, num_shards: int, seed: int):
    check_shard(shard_id, num_shards)
    return fn.readers.file(files=list(file_list.files), labels=list(file_list.labels),
                           shard_id=shard_id, num_shards=num_shards, pad_last_batch=True,
                           shuffle_after_epoch=training, seed=seed, name="Reader")


def _decoder_device(device: str) -> str:
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu'; got {device!r}")
    return "mixed" if device == "gpu" else "cpu"


CROPS = ("random_resized", "pad")


def image_folder_train_pipeline(file_list: FileList, *, batch_size: int, size: int = 224,
                                k: int = 5, alpha: float = 1.0, mode: str = "mixup",
                                mix: bool = True, shard_id: int = 0, num_shards: int = 1,
                                seed: int = 0, num_threads: int = 2, device: str = "cpu",
                                mean: Sequence[float] = IMAGENET_MEAN,
                                std: Sequence[float] = IMAGENET_STD, crop: str = "random_resized",
                                pad: int = 4, lambda_scope: str = "batch",
                                mixer: Optional[Callable] = None, enable_checkpointing: bool = False,
                                checkpoint: Optional[str] = None) -> Pipeline:
    """Training: a random crop to size x size, flip, normalise (CHW float32), multimix.
    crop="random_resized": random-resized crop (area 8-100%, aspect 3/4-4/3) resized to size;
    crop="pad": no resize: the decoded image padded by `pad` zeros on each side and cut to
    size x size at a random offset (for images stored at the model's size, e.g. Tiny-ImageNet).
    Outputs (images (B, K, 3, size, size), labels, partner_labels, weights), or (images, labels)
    with mix=False. `mixer(images, labels)` replaces the multimix step. Use reader_name="Reader"
    in the iterator. enable_checkpointing, checkpoint: DALI checkpointing (the reader, the random
    operators and multimix restore their state from ``checkpoint``)."""
    decoder = _decoder_device(device)
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}; got {crop!r}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0; got {pad}")
    if mixer is None and mix:
        mixer = partial(dali_multimix.add_multimix, k=k, alpha=alpha, mode=mode,
                        lambda_scope=lambda_scope)

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=seed,
                  device_id=0 if device == "gpu" else None,
                  enable_checkpointing=enable_checkpointing, checkpoint=checkpoint)
    def pipe():
        jpegs, labels = _reader(file_list, True, shard_id, num_shards, seed)
        if crop == "pad":
            images = random_pad_crop(fn.decoders.image(jpegs, device=decoder, output_type=types.RGB),
                                     h=size, w=size, pad=pad)
        else:
            images = fn.decoders.image_random_crop(jpegs, device=decoder, output_type=types.RGB,
                                                   random_aspect_ratio=[0.75, 4.0 / 3.0],
                                                   random_area=[0.08, 1.0], num_attempts=100)
            images = fn.resize(images, resize_x=size, resize_y=size,
                               interp_type=types.INTERP_TRIANGULAR, antialias=False)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          crop=(size, size), mean=list(mean), std=list(std),
                                          mirror=fn.random.coin_flip(probability=0.5))
        return (images, labels) if mixer is None else mixer(images, labels)

    return pipe()


def image_folder_val_pipeline(file_list: FileList, *, batch_size: int, size: int = 224,
                              resize: Optional[int] = None, shard_id: int = 0, num_shards: int = 1,
                              num_threads: int = 2, device: str = "cpu",
                              mean: Sequence[float] = IMAGENET_MEAN,
                              std: Sequence[float] = IMAGENET_STD,
                              native: bool = False) -> Pipeline:
    """Validation: resize the shorter side to `resize` (default size * 256 / 224), centre crop.
    native=True: decode and normalise only, no resize and no crop (images stored at the model's
    size; every image of a batch must then have the same size)."""
    decoder = _decoder_device(device)
    resize = resize or int(round(size * 256 / 224))
    if not native and resize < size:
        raise ValueError(f"resize ({resize}) must be >= the crop size ({size}): the centre crop is "
                         f"taken from the image resized to {resize} on its shorter side")

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=0,
                  device_id=0 if device == "gpu" else None)
    def pipe():
        jpegs, labels = _reader(file_list, False, shard_id, num_shards, 0)
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
        if native:
            return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                            mean=list(mean), std=list(std)), labels
        images = fn.resize(images, resize_shorter=resize, interp_type=types.INTERP_TRIANGULAR)
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          crop=(size, size), mean=list(mean), std=list(std))
        return images, labels

    return pipe()


def default_device() -> str:
    """"gpu" when a CUDA device is visible, else "cpu"."""
    try:
        from nvidia.dali.backend import GetCUDADeviceCount
        return "gpu" if GetCUDADeviceCount() > 0 else "cpu"
    except Exception:  # no driver
        return "cpu"


__all__ = ["FileList", "list_image_folder", "verify_image", "image_folder_train_pipeline",
           "image_folder_val_pipeline", "default_device", "IMAGENET_MEAN", "IMAGENET_STD"]
