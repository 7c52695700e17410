"""Every default of the training harness, in one dataclass; YAML configs and key=value overrides
on top; the resolved config is saved next to the results."""
from __future__ import annotations

import dataclasses
import math
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
    puzzle_t_size: int = 4             # Puzzle Mix transport cell side in pixels; -1: the graph-cut block grid (the original's default)
    puzzle_beta: float = 1.2           # Puzzle Mix smoothness weight beta (CIFAR / Tiny-ImageNet 1.2, ImageNet 1.5)
    puzzle_neigh_size: int = 4         # Puzzle Mix neighbourhood (pixels) of the border statistics (ImageNet code: 2)
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
    amp_dtype: str = "float16"         # float16 (GPU only, with a GradScaler) | bfloat16 (no scaler; with amp, also autocasts on the CPU)
    channels_last: bool = False        # model and 4-D inputs in channels-last memory format (tensor-core convolutions)
    non_blocking: bool = True          # asynchronous host-to-device copies of the batches (CUDA only; no effect on the CPU)
    # evaluation
    ece_bins: int = 10
    noise_std: float = 0.5             # Gaussian-noise corruption of the test inputs (normalised scale)
    # run
    seed: int = 0
    device: str = "auto"               # auto | cpu | cuda
    num_threads: int = 2
    out_dir: str = "outputs/train"
    resume: bool = False               # continue out_dir's checkpoint (an error where there is none); only epochs, progress and out_dir may differ from the saved run
    resume_if_exists: bool = False     # resume where out_dir holds a checkpoint, else start afresh (for jobs that are restarted)
    overwrite: bool = False            # without resume: replace the results already in out_dir (refused otherwise)
    progress: bool = True
    log_every: int = 50                # steps between host reads of the running loss / accuracy (progress bar); epoch totals are read once at its end
    sync_every_step: bool = False      # benchmark only: the old per-step host reads (loss.item(), every gradient norm)


def _field_types() -> dict:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _coerce(name: str, value, kind):
    """Converts a YAML or command-line value to the field's type, naming the key on error."""
    origin = typing.get_origin(kind) or kind
    finite = ""
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
            number = float(value)
            if not math.isfinite(number):
                finite = "a finite "
                raise ValueError
            return number
        return str(value)
    except (ValueError, TypeError, yaml.YAMLError):
            raise ValueError(f"config key {name!r}: expected {finite}{getattr(origin, '__name__', origin)}; "
                         f"got {value!r}") from None


def load_config(path: Optional[str] = None, overrides: tuple = ()) -> TrainConfig:
    """Defaults <- YAML file <- key=value overrides; unknown keys and bad values are rejected."""
    types = _field_types()
    values = {}
    if path:
        values.update(read_yaml(path))
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
    return checked(cfg)


def read_yaml(path) -> dict:
    """The mapping in YAML file `path`; a ValueError naming the file (and line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config {path}: " + ("is a folder; expected a YAML file" if path.is_dir()
                                               else "no such file"))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"config {path}:{where} is not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config {path} cannot be read ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path}: expected a mapping of keys to values; got a "
                         f"{type(data).__name__}")
    return data


def checked(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with its lists and mappings typed (pairs as [epoch, value], milestones as integers,
    layer names as strings), validated (:func:`validate`); ValueError/TypeError naming the key.
    What the command line and the Python API (train.loop.train) both go through."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"expected a TrainConfig; got {type(cfg).__name__}")
    for f in fields(TrainConfig):  # containers first: the element checks below iterate them
        kind = typing.get_origin(_field_types()[f.name]) or _field_types()[f.name]
        if kind in (list, dict) and not isinstance(getattr(cfg, f.name), (list, tuple) if kind is list else dict):
            raise TypeError(f"config key {f.name!r}: expected a {kind.__name__}; got "
                            f"{getattr(cfg, f.name)!r}")
    cfg = dataclasses.replace(
        cfg,
        lr_points=_pairs("lr_points", cfg.lr_points, float, float),
        image_size_stages=_pairs("image_size_stages", cfg.image_size_stages, int, int),
        alpha_by_method={str(m): _number("alpha_by_method", a) for m, a in cfg.alpha_by_method.items()},
        mean=[_number("mean", v) for v in cfg.mean], std=[_number("std", v) for v in cfg.std],
        milestones=[_integer("milestones", v) for v in cfg.milestones],
        manifold_layers=[_string("manifold_layers", v) for v in cfg.manifold_layers])
    validate(cfg)
    return cfg


def _number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"config key {name!r}: expected numbers; got {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"config key {name!r}: expected numbers; got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"config key {name!r}: expected finite numbers; got {value!r}")
    return number


def _integer(name: str, value) -> int:
    number = _number(name, value)
    if not number.is_integer():
        raise ValueError(f"config key {name!r}: expected integers; got {value!r}")
    return int(number)


def _string(name: str, value) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise ValueError(f"config key {name!r}: expected names (strings); got {value!r}")
    return "" if value is None else str(value)


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
    "amp_dtype": ("float16", "bfloat16"),
}


# (low, high) of every numeric key, both inclusive (None: unbounded); floats must also be finite
RANGES = {
    "train_subset": (0, None), "test_subset": (0, None), "pad": (0, 4096), "image_size": (1, 65536),
    "k": (1, 64), "alpha": (0, None), "copy_rotation": (0, 180), "label_smoothing": (0, 1),
    "label_noise": (0, 1), "cutout": (0, 65536), "clean_lam": (0, None), "puzzle_beta": (0, None),
    "puzzle_neigh_size": (1, 4096), "epochs": (1, 10**6),
    "batch_size": (1, 2**24), "lr": (0, None), "momentum": (0, 1), "weight_decay": (0, None),
    "gamma": (0, None), "ece_bins": (1, 10**6), "noise_std": (0, None), "seed": (0, 2**32 - 1),
    "num_threads": (1, 1024), "log_every": (1, 10**9),
}
EXCLUSIVE_LOW = ("alpha", "lr", "gamma")  # must be > low
EXCLUSIVE_HIGH = ("label_smoothing", "label_noise", "momentum")  # must be < high


def _check_types(cfg: TrainConfig) -> None:
    for name, kind in _field_types().items():
        value, origin = getattr(cfg, name), typing.get_origin(kind) or kind
        ok = {bool: lambda v: isinstance(v, bool),
              int: lambda v: isinstance(v, int) and not isinstance(v, bool),
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              str: lambda v: isinstance(v, str), list: lambda v: isinstance(v, list),
              dict: lambda v: isinstance(v, dict)}[origin](value)
        if not ok:
            raise TypeError(f"config key {name!r}: expected {origin.__name__}; got {value!r}")
        if origin is float and not math.isfinite(value):
            raise ValueError(f"config key {name!r}: expected a finite number; got {value!r}")


def _check_ranges(cfg: TrainConfig) -> None:
    for name, (low, high) in RANGES.items():
        value = getattr(cfg, name)
        below = value <= low if name in EXCLUSIVE_LOW else value < low
        above = high is not None and (value >= high if name in EXCLUSIVE_HIGH else value > high)
        if below or above:
            lo = f"> {low}" if name in EXCLUSIVE_LOW else f">= {low}"
            hi = "" if high is None else f" and {'<' if name in EXCLUSIVE_HIGH else '<='} {high}"
            kind = "an integer" if isinstance(value, int) else "a number"
            raise ValueError(f"config key {name!r}: expected {kind} {lo}{hi}; got {value}")


def validate(cfg: TrainConfig) -> None:
    """Every key of `cfg` of its type, finite, in its range and consistent with the others;
    TypeError/ValueError naming the key, what was expected and what arrived."""
    from .methods import METHODS, SINGLE_MIXES
    from .models import MODELS

    _check_types(cfg)
    choices = dict(CHOICES, method=tuple(METHODS), model=tuple(MODELS), mix_method=tuple(SINGLE_MIXES))
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ValueError(f"config key {key!r}: expected one of {list(allowed)}; got "
                             f"{getattr(cfg, key)!r}")
    _check_ranges(cfg)
    if not cfg.out_dir.strip():
        raise ValueError("config key 'out_dir': expected a folder; got ''")
    for name, alpha in cfg.alpha_by_method.items():
        if name not in METHODS:
            raise ValueError(f"config key 'alpha_by_method': {name!r} is not a method (one of "
                             f"{list(METHODS)})")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"config key 'alpha_by_method': alpha of {name!r} must be a finite number "
                             f"> 0; got {alpha!r}")
    if METHODS[cfg.method].batch_lambda and cfg.lambda_scope != "batch":
        raise ValueError(f"config key 'lambda_scope': method {cfg.method!r} draws one ratio for the "
                         f"whole batch by definition; got {cfg.lambda_scope!r}")
    if cfg.puzzle_t_size == 0 or cfg.puzzle_t_size < -1:
        raise ValueError(f"config key 'puzzle_t_size': expected a cell side >= 1 or -1 (the block grid); "
                         f"got {cfg.puzzle_t_size}")
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in cfg.milestones):
        raise ValueError(f"config key 'milestones': expected integers >= 0; got {cfg.milestones}")
    if cfg.schedule == "step" and (not cfg.milestones or cfg.milestones[0] < 1):
        raise ValueError(f"config key 'milestones': schedule 'step' needs milestones[0] >= 1 (the step "
                         f"length in epochs); got {cfg.milestones}")
    if cfg.schedule == "piecewise" and not cfg.lr_points:
        raise ValueError("config key 'lr_points': schedule 'piecewise' needs [[epoch, lr], ...]")
    if any(lr < 0 or epoch < 0 for epoch, lr in cfg.lr_points):
        raise ValueError(f"config key 'lr_points': epochs and learning rates must be >= 0; got "
                         f"{cfg.lr_points}")
    if any(size < 1 or epoch < 0 for epoch, size in cfg.image_size_stages):
        raise ValueError(f"config key 'image_size_stages': expected [[epoch >= 0, size >= 1], ...]; "
                         f"got {cfg.image_size_stages}")
    if any(not isinstance(v, str) for v in cfg.manifold_layers):
        raise ValueError(f"config key 'manifold_layers': expected layer names; got {cfg.manifold_layers}")
    if len(cfg.mean) != len(cfg.std) or len(cfg.mean) not in (0, 1, 3):
        raise ValueError(f"config key 'mean'/'std': expected both empty or both of 1 or 3 values; got "
                         f"{cfg.mean} and {cfg.std}")
    if any(not math.isfinite(float(v)) for v in cfg.mean + cfg.std):
        raise ValueError(f"config key 'mean'/'std': expected finite numbers; got {cfg.mean} and {cfg.std}")
    if any(float(s) <= 0 for s in cfg.std):
        raise ValueError(f"config key 'std': expected values > 0; got {cfg.std}")


# Keys a resumed run may change: how long it runs and how it reports, nothing that changes what
# the finished epochs computed. (num_threads is not among them: torch's CPU reductions and Puzzle
# Mix's workers follow it, so the continued run would not be bit-identical to the saved one.)
RESUMABLE_CHANGES = ("epochs", "progress", "out_dir", "log_every", "non_blocking", "resume",
                     "resume_if_exists", "overwrite")


def config_differences(saved: dict, cfg: TrainConfig) -> list:
    """[(key, saved value, value now)] of every key that differs between a checkpoint's config and
    `cfg`, except RESUMABLE_CHANGES. A key the saved config lacks (added to the harness since) is
    no difference where `cfg` holds its default; a key unknown now is."""
    now = dataclasses.asdict(cfg)
    defaults = dataclasses.asdict(TrainConfig())
    keys = [k for k in dict.fromkeys(list(saved) + list(now)) if k not in RESUMABLE_CHANGES]
    missing = "<absent>"
    return [(k, saved.get(k, missing), now.get(k, missing)) for k in keys
            if saved.get(k, missing) != now.get(k, missing)
            and not (k not in saved and k in defaults and now[k] == defaults[k])]


def save_config(cfg: TrainConfig, path: Path) -> None:
    """Writes the resolved config as YAML, atomically."""
    from .checkpoint import write_atomic

    write_atomic(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False).encode(), Path(path))


def help_text() -> str:
    """Every option with its default and the comment beside it in TrainConfig, for --help."""
    import inspect
    import re

    from .methods import METHODS, SINGLE_MIXES
    from .models import MODELS

    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.*)$", inspect.getsource(TrainConfig), re.M))
    choices = dict(CHOICES, method=tuple(METHODS), model=tuple(MODELS), mix_method=tuple(SINGLE_MIXES))
    lines = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = comments.get(f.name, "")
        if f.name in choices:
            text += f" [choices: {', '.join(choices[f.name])}]"
        if f.name in RANGES:
            low, high = RANGES[f.name]
            text += f" [range: {'>' if f.name in EXCLUSIVE_LOW else '>='} {low}" + (
                "" if high is None else f", {'<' if f.name in EXCLUSIVE_HIGH else '<='} {high}") + "]"
        lines.append(f"  {f.name:16s} {default!r:24s} {text.strip()}".rstrip())
    return "\n".join(lines)
