"""What changes during a run: the learning rate (set before every step) and the training image
size (per epoch). Both are functions of the config and the (fractional) epoch only, so a resumed
run continues exactly."""
from __future__ import annotations

import bisect
import math

from .config import TrainConfig


def piecewise_linear(points: list, t: float) -> float:
    """Value at t of the polyline through [[epoch, value], ...] (epochs non-decreasing): linear
    between consecutive points, held before the first and after the last; a repeated epoch is a
    jump (from t = that epoch on, the last of its points holds)."""
    epochs = [e for e, _ in points]
    i = bisect.bisect_right(epochs, t) - 1
    if i < 0:
        return points[0][1]
    if i == len(points) - 1:
        return points[-1][1]
    (e0, v0), (e1, v1) = points[i], points[i + 1]
    return v0 + (v1 - v0) * (t - e0) / (e1 - e0)


def learning_rate(cfg: TrainConfig, t: float) -> float:
    """The learning rate at fractional epoch t = epoch + step / steps_per_epoch. "piecewise"
    follows cfg.lr_points at every step; the others change once per epoch."""
    if cfg.schedule == "piecewise":
        return piecewise_linear(cfg.lr_points, t)
    epoch = math.floor(t)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.schedule == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch >= int(m) for m in cfg.milestones)
    if cfg.schedule == "step":  # x gamma every milestones[0] epochs
        return cfg.lr * cfg.gamma ** (epoch // int(cfg.milestones[0]))
    return cfg.lr


def image_size(cfg: TrainConfig, epoch: int) -> int:
    """The training image size of an epoch: the last of cfg.image_size_stages that has started,
    else cfg.image_size."""
    size = cfg.image_size
    for start, stage_size in cfg.image_size_stages:
        if epoch >= start:
            size = stage_size
    return size
