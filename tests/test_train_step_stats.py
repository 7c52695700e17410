"""The training loop's statistics stay on the device and are read once per interval: they equal
the old per-step host reads; the GPU options (channels_last, bf16 autocast) train."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from test_train import tiny_config, tiny_npz  # noqa: F401  (fixture)
from train.loop import train
from train.step_stats import StepStats, mixed_accuracy, squared_grad_norm


def test_squared_grad_norm_is_the_sum_of_every_gradients_squares():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3, bias=False))
    model(torch.randn(7, 5)).pow(2).sum().backward()
    by_hand = sum(float(p.grad.pow(2).sum()) for p in model.parameters())
    got = squared_grad_norm(model.parameters())
    assert got.dtype == torch.float64 and math.isclose(float(got), by_hand, rel_tol=1e-6)
    without_first = by_hand - float(model[0].weight.grad.pow(2).sum())
    model[0].weight.grad = None  # a parameter without a gradient counts nothing
    assert math.isclose(float(squared_grad_norm(model.parameters())), without_first, rel_tol=1e-6)


def test_accuracy_scores_the_label_of_the_larger_share():
    logits = torch.eye(3)[[0, 1, 2, 2]]  # predictions 0, 1, 2, 2
    y, y2 = torch.tensor([0, 0, 2, 1]), torch.tensor([1, 1, 0, 2])
    w = torch.tensor([0.2, 0.9, 0.5, 0.7])  # partner's share: targets 0, 1, 2 (tie: own), 2
    assert float(mixed_accuracy(logits, y, y2, w)) == 1.0
    assert float(mixed_accuracy(logits, y, y2, 1 - w)) == 0.25  # targets 1, 0, 2 (tie: own), 1


def test_accuracy_of_soft_labels_scores_the_largest_mixed_share():
    logits = torch.eye(3)[[0, 1, 2]]  # predictions 0, 1, 2
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 0.3, 0.7], [0.1, 0.2, 0.7]])  # argmax 0, 2, 2
    zeros = torch.zeros(3)  # Co-Mixup: the soft labels as both label tensors, weight 0
    assert float(mixed_accuracy(logits, soft, soft, zeros)) == 2 / 3
    other = torch.eye(3)[[1, 1, 2]]
    w = torch.tensor([0.5, 0.9, 0.0])  # mixed rows: [.3 .7 0] -> 1, [0 .93 .07] -> 1, row 2 -> 2
    assert float(mixed_accuracy(logits, soft, other, w)) == 2 / 3


def test_step_stats_are_means_over_the_steps():
    stats = StepStats(torch.device("cpu"))
    for loss, acc, g in ((1.0, 0.5, 4.0), (3.0, 1.0, 2.0)):
        stats.add(torch.tensor(loss), torch.tensor(acc, dtype=torch.float64), torch.tensor(g, dtype=torch.float64))
    assert stats.read() == {"loss": 2.0, "accuracy": 0.75, "sq_grad_norm": 3.0} and stats.steps == 2


def test_device_statistics_equal_the_old_per_step_host_reads(tiny_npz, tmp_path):  # noqa: F811
    """Same run, statistics kept on the device (read once per epoch) or read every step."""
    rows = []
    for sync in (False, True):
        cfg = tiny_config(tiny_npz, tmp_path / str(sync), method="multimix", epochs=2, log_every=3,
                          sync_every_step=sync)
        rows.append(train(cfg)["history"])
    for fast, slow in zip(*rows):
        assert fast["steps"] == slow["steps"] == 2
        for key in ("train_loss", "train_accuracy", "mean_sq_grad_norm", "test_error"):
            assert math.isclose(fast[key], slow[key], rel_tol=1e-9, abs_tol=1e-12), key
        assert 0 <= fast["train_accuracy"] <= 1 and fast["mean_sq_grad_norm"] > 0


@pytest.mark.parametrize("method", ["multimix", "multimix_manifold", "multimix_puzzle"])
def test_channels_last_and_bf16_autocast_train(tiny_npz, tmp_path, monkeypatch, method):  # noqa: F811
    """bf16 autocast runs on the CPU too (no scaler); channels_last model and inputs."""
    autocasts = []
    real = torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: autocasts.append((a, k)) or real(*a, **k))
    cfg = tiny_config(tiny_npz, tmp_path, method=method, channels_last=True, amp_dtype="bfloat16",
                      log_every=1)
    out = train(cfg)
    row = out["history"][0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["mean_sq_grad_norm"])
    conv = next(m for m in out["model"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert (("cpu",), {"dtype": torch.bfloat16, "enabled": True}) in autocasts


def test_amp_dtype_is_checked(tiny_npz, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="amp_dtype"):
        tiny_config(tiny_npz, tmp_path, amp_dtype="float8")
