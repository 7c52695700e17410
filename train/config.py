"""Every default of the training harness, in one dataclass; YAML configs and key=value overrides
on top; the resolved config is saved next to the results."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import yaml


@dataclass
class TrainConfig:
    # data
    dataset: str = "fashion_mnist"     # fashion_mnist | cifar10 | cifar100 | npz | image_folder | speech
    data_path: str = ""                # folder / file of the data set (not needed for fashion_mnist)
    train_subset: int = 0              # use only the first N training samples (0 = all)
    test_subset: int = 0               # evaluate on the first N test samples (0 = all)
    label_noise: float = 0.0           # fraction of training labels replaced by another class
    pad: int = 4                       # random-crop padding (array data sets; image_folder with image_crop=pad)
    image_size: int = 224              # image_folder: training crop size and validation size
    image_size_stages: list = field(default_factory=list)  # image_folder: [[epoch, size], ...]: training size from that epoch on (empty: image_size)
    image_crop: str = "random_resized" # image_folder training crop: random_resized | pad (native size, padded random crop; validation unresized)
    mean: list = field(default_factory=list)  # per-channel normalisation, 0..255 scale (empty: the data set's own / ImageNet's)
    std: list = field(default_factory=list)
    # model
    model: str = "small_cnn"           # small_cnn | preact_resnet18 | wrn16_8 | resnext29_4_24 | resnet50 | vgg11 | spiral_mlp
    # method (see train/methods.py)
    method: str = "multimix"
    k: int = 5                         # interpolations per pair for the multi-mix methods
    alpha: float = 1.0                 # Beta(alpha, alpha) mixing ratios (methods not in alpha_by_method)
    alpha_by_method: dict = field(default_factory=dict)  # method -> alpha, over alpha (the originals' alpha per method)
    lambda_sampling: str = "sorted"    # sorted | stratified
    lambda_scope: str = "batch"        # batch (one set of ratios per batch, the paper's Eq. 7-9) | sample
    mix_method: str = "mixup"          # large_batch_mixup / batch_augmentation_mixup: their single mix: mixup | cutmix | fmix | puzzle_mix | saliencymix
    copy_rotation: float = 15.0        # batch augmentation: each copy rotated by U(-r, r) degrees (0 = off)
    manifold_layers: list = field(default_factory=lambda: ["", "layer1", "layer2"])
    label_smoothing: float = 0.0       # smoothing eps on every method's loss (method label_smoothing: 0.1 when 0)
    cutout: int = 8                    # hole side for method cutout
    puzzle_solver: str = "exact"       # exact (one s-t cut) | swap (gco, the original's)
    clean_lam: float = 0.0             # Puzzle Mix: weight of the clean loss of the saliency pass
    # optimisation
    epochs: int = 3
    batch_size: int = 100
    optimizer: str = "sgd"             # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "multistep"        # step | multistep | cosine | constant | piecewise
    lr_points: list = field(default_factory=list)  # piecewise: [[epoch, lr], ...], linear in between, per step; a repeated epoch is a jump
    milestones: list = field(default_factory=lambda: [100, 200])
    gamma: float = 0.1
    amp: bool = True                   # mixed precision when on a GPU
    # evaluation
    ece_bins: int = 10
    noise_std: float = 0.5             # Gaussian-noise corruption of the test inputs (normalised scale)
    # run
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda
    num_threads: int = 2
    out_dir: str = "outputs/train"
    resume: bool = False
    progress: bool = True


def _field_types() -> dict:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _coerce(name: str, value, kind):
    """Converts a YAML or command-line value to the field's type, naming the key on error."""
    origin = typing.get_origin(kind) or kind
    try:
        if origin is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            if isinstance(value, bool):
                return value
            raise ValueError
        if origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if origin is list:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else \
                    [v for v in value.split(",") if v != ""] if value else []
            if not isinstance(value, list):
                raise ValueError
            return list(value)
        if origin is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if origin is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (ValueError, TypeError, yaml.YAMLError):
        raise ValueError(f"config key {name!r}: expected {getattr(origin, '__name__', origin)}; "
                         f"got {value!r}") from None


def load_config(path: Optional[str] = None, overrides: tuple = ()) -> TrainConfig:
    """Defaults <- YAML file <- key=value overrides; unknown keys and bad values are rejected."""
    types = _field_types()
    values = {}
    if path:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config {path}: expected a mapping of keys to values")
        values.update(data)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        values[key.strip()] = value
    for key in values:
        if key not in types:
            close = [k for k in types if k.startswith(key[:3])]
            raise ValueError(f"unknown config key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    cfg = TrainConfig(**{k: _coerce(k, v, types[k]) for k, v in values.items()})
    cfg.lr_points = _pairs("lr_points", cfg.lr_points, float, float)
    cfg.image_size_stages = _pairs("image_size_stages", cfg.image_size_stages, int, int)
    cfg.alpha_by_method = {str(m): _number("alpha_by_method", a) for m, a in cfg.alpha_by_method.items()}
    cfg.mean, cfg.std = [_number("mean", v) for v in cfg.mean], [_number("std", v) for v in cfg.std]
    validate(cfg)
    return cfg


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"config key {name!r}: expected numbers; got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"config key {name!r}: expected numbers; got {value!r}") from None


def _pairs(name: str, value: list, first, second) -> list:
    """[[a, b], ...] with a non-decreasing, as (first(a), second(b)) lists; errors name the key."""
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"config key {name!r}: expected a list of [epoch, value] pairs; got {item!r}")
        a, b = _number(name, item[0]), _number(name, item[1])
        if first is int and not a.is_integer() or second is int and not b.is_integer():
            raise ValueError(f"config key {name!r}: expected integers; got {item!r}")
        out.append([first(a), second(b)])
    if any(later[0] < earlier[0] for earlier, later in zip(out, out[1:])):
        raise ValueError(f"config key {name!r}: epochs must not decrease; got {[p[0] for p in out]}")
    return out


def method_alpha(cfg: "TrainConfig") -> float:
    """The Beta(alpha, alpha) of cfg.method: alpha_by_method[method] if given, else alpha."""
    return cfg.alpha_by_method.get(cfg.method, cfg.alpha)


def resolved(cfg: "TrainConfig") -> "TrainConfig":
    """The config a run uses (and saves): alpha made the method's own (method_alpha)."""
    return dataclasses.replace(cfg, alpha=method_alpha(cfg))


CHOICES = {
    "dataset": ("fashion_mnist", "cifar10", "cifar100", "npz", "image_folder", "speech"),
    "optimizer": ("sgd", "adam"),
    "schedule": ("step", "multistep", "cosine", "constant", "piecewise"),
    "lambda_sampling": ("sorted", "stratified"),
    "lambda_scope": ("batch", "sample"),
    "image_crop": ("random_resized", "pad"),
    "device": ("auto", "cpu", "cuda"),
    "puzzle_solver": ("exact", "swap"),
}


def validate(cfg: TrainConfig) -> None:
    from .methods import METHODS, SINGLE_MIXES
    from .models import MODELS

    choices = dict(CHOICES, method=tuple(METHODS), model=tuple(MODELS), mix_method=tuple(SINGLE_MIXES))
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"config key {key!r}: expected one of {list(allowed)}; got "
                             f"{getattr(cfg, key)!r}")
    positive = ("k", "epochs", "batch_size", "ece_bins", "num_threads")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ValueError(f"config key {key!r}: expected an integer >= 1; got {getattr(cfg, key)}")
    if not cfg.k <= 64:
        raise ValueError(f"config key 'k': expected at most 64; got {cfg.k}")
    if not cfg.alpha > 0:
        raise ValueError(f"config key 'alpha': expected > 0; got {cfg.alpha}")
    if not 0 <= cfg.label_noise < 1:
        raise ValueError(f"config key 'label_noise': expected a fraction in [0, 1); got {cfg.label_noise}")
    if cfg.lr <= 0:
        raise ValueError(f"config key 'lr': expected > 0; got {cfg.lr}")
    for name, alpha in cfg.alpha_by_method.items():
        if name not in METHODS:
            raise ValueError(f"config key 'alpha_by_method': {name!r} is not a method (one of "
                             f"{list(METHODS)})")
        if not alpha > 0:
            raise ValueError(f"config key 'alpha_by_method': alpha of {name!r} must be > 0; got {alpha}")
    if METHODS[cfg.method].batch_lambda and cfg.lambda_scope != "batch":
        raise ValueError(f"config key 'lambda_scope': method {cfg.method!r} draws one ratio for the "
                         f"whole batch by definition; got {cfg.lambda_scope!r}")
    if not 0 <= cfg.label_smoothing < 1:
        raise ValueError(f"config key 'label_smoothing': expected a fraction in [0, 1); got "
                         f"{cfg.label_smoothing}")
    if cfg.copy_rotation < 0:
        raise ValueError(f"config key 'copy_rotation': expected degrees >= 0; got {cfg.copy_rotation}")
    if cfg.schedule == "piecewise" and not cfg.lr_points:
        raise ValueError("config key 'lr_points': schedule 'piecewise' needs [[epoch, lr], ...]")
    if any(lr < 0 for _, lr in cfg.lr_points):
        raise ValueError(f"config key 'lr_points': learning rates must be >= 0; got {cfg.lr_points}")
    if any(size < 1 or epoch < 0 for epoch, size in cfg.image_size_stages):
        raise ValueError(f"config key 'image_size_stages': expected [[epoch >= 0, size >= 1], ...]; "
                         f"got {cfg.image_size_stages}")
    if len(cfg.mean) != len(cfg.std) or len(cfg.mean) not in (0, 1, 3):
        raise ValueError(f"config key 'mean'/'std': expected both empty or both of 1 or 3 values; got "
                         f"{cfg.mean} and {cfg.std}")
    if any(float(s) <= 0 for s in cfg.std):
        raise ValueError(f"config key 'std': expected values > 0; got {cfg.std}")


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def help_text() -> str:
    """Every option with its default and the comment beside it in TrainConfig, for --help."""
    import inspect
    import re

    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(TrainConfig), re.M))
    lines = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name:16s} {default!r:24s} {comments.get(f.name, '')}".rstrip())
    return "\n".join(lines)
