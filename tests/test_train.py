"""The training harness: every method trains on tiny data, ECE, exact resume after a kill,
data-parallel over 2 CPU processes, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import TrainConfig, help_text, load_config
from train.data import load_data, train_loader
from train.loop import train
from train.methods import METHODS, batch_size
from train.metrics import expected_calibration_error

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """48 training / 16 test images, 16x16x3, 4 classes (labels: sample index mod 4)."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    for name, n in (("train", 48), ("test", 16)):
        labels = np.arange(n) % 4
        images = (rng.integers(0, 60, (n, 16, 16, 3)) + 60 * labels[:, None, None, None]).astype(np.uint8)
        np.savez(root / f"{name}.npz", images=images, labels=labels)
    return root


def tiny_config(root, out, **changes) -> TrainConfig:
    values = dict(dataset="npz", data_path=str(root), model="small_cnn", epochs=1, batch_size=8,
                  train_subset=16, k=2, lr=0.05, schedule="cosine", out_dir=str(out), progress=False,
                  num_threads=1, pad=2, cutout=4, manifold_layers=["", "layer1"])
    values.update(changes)
    return load_config(None, tuple(f"{k}={v}" if not isinstance(v, list) else f"{k}={','.join(v)}"
                                   for k, v in values.items()))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains(tiny_npz, tmp_path, method):
    """Two training steps of every method (and an evaluation) on tiny data."""
    cfg = tiny_config(tiny_npz, tmp_path, method=method,
                      train_subset=2 * batch_size(METHODS[method], 8, 2))
    result = train(cfg)
    [row] = result["history"]
    assert row["steps"] == 2
    assert np.isfinite(row["train_loss"]) and row["train_loss"] > 0
    assert 0 <= row["test_error"] <= 1 and 0 <= row["ece"] <= 1
    assert row["mean_sq_grad_norm"] > 0
    for name in ("config.yaml", "metrics.csv", "curves.png", "reliability.png", "checkpoint_rank0.pt"):
        assert (tmp_path / name).exists(), name


def test_methods_feed_what_they_promise(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path, k=3, train_subset=48)
    data = load_data(cfg)
    shapes = {}
    for name in ("none", "multimix", "large_batch", "batch_augmentation", "large_batch_mixup", "cutout"):
        batch = next(iter(train_loader(cfg, METHODS[name], data, epoch=0)))
        if isinstance(batch, dict):
            shapes[name] = tuple(batch["images"].shape)
        else:
            shapes[name] = tuple(batch.images.shape)
            if name == "large_batch_mixup":  # one ratio for the whole batch
                assert torch.all(batch.weights == batch.weights[0])
            if name == "multimix":
                assert torch.all(batch.weights.view(-1, 3).diff(dim=1) >= 0)
    assert shapes["none"] == (8, 3, 16, 16)
    assert shapes["multimix"] == (24, 3, 16, 16)          # B*K rows
    assert shapes["large_batch"] == (24, 3, 16, 16)       # K*B samples, unmixed
    assert shapes["batch_augmentation"] == (24, 3, 16, 16)
    assert shapes["cutout"] == (8, 3, 16, 16)


def test_ece_against_a_hand_computed_example():
    # confidences 0.95, 0.85, 0.65, 0.55 (bins 9, 8, 6, 5); the first and third are right
    probs = torch.tensor([[0.95, 0.05], [0.15, 0.85], [0.65, 0.35], [0.45, 0.55]])
    labels = torch.tensor([0, 0, 0, 0])
    ece, acc, conf, count = expected_calibration_error(probs, labels, bins=10)
    # |1-.95| + |0-.85| + |1-.65| + |0-.55| over 4 = (0.05 + 0.85 + 0.35 + 0.55) / 4
    assert ece == pytest.approx(0.45)
    assert count.tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert acc[9] == 1 and acc[8] == 0 and conf[6] == pytest.approx(0.65)


def cli(*args, env=None):
    return [sys.executable, "-m", "train", *args]


SUMMARISE = r"""
import hashlib, json, sys, torch
state = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
print(json.dumps({"epoch": state["epoch"],
                  "history": [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in state["history"]],
                  "model": {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
                            for k, v in state["model"].items()}}))
"""


def summarise_checkpoint(path) -> dict:
    """Epoch, history and a hash per tensor of a checkpoint, read in a fresh process (a library
    loaded into this one, such as NVRTC by the GPU tests, can break torch.load here)."""
    out = subprocess.run([sys.executable, "-c", SUMMARISE, str(path)], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out)


def test_resume_after_a_kill_is_bit_identical(tiny_npz, tmp_path):
    args = [f"data_path={tiny_npz}", "dataset=npz", "model=small_cnn", "epochs=3", "batch_size=8",
            "train_subset=48", "k=3", "method=multimix_manifold", "manifold_layers=,layer1",
            "progress=false", "num_threads=1", "schedule=cosine", "lr=0.05"]
    whole = tmp_path / "whole"
    subprocess.run(cli(*args, f"out_dir={whole}"), cwd=REPO, check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(*args, f"out_dir={killed}"), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = killed / "checkpoint_rank0.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert summarise_checkpoint(ckpt)["epoch"] < 3, "the run finished before it could be killed"
    subprocess.run(cli(*args, f"out_dir={killed}", "--resume"), cwd=REPO, check=True,
                   capture_output=True, timeout=600)

    a, b = summarise_checkpoint(whole / "checkpoint_rank0.pt"), summarise_checkpoint(ckpt)
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"] == b["model"]  # every tensor bit-identical
    assert a["history"] == b["history"]


def test_data_parallel_two_processes(tiny_npz, tmp_path):
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m", "train",
         f"data_path={tiny_npz}", "dataset=npz", "model=small_cnn", "epochs=1", "batch_size=8",
         "train_subset=32", "k=2", "method=multimix", "progress=false", "num_threads=1",
         f"out_dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ranks = [summarise_checkpoint(out / f"checkpoint_rank{r}.pt")["model"] for r in (0, 1)]
    weights = [k for k in ranks[0] if "running_" not in k and "num_batches" not in k]
    assert len(weights) > 10
    for key in weights:  # DDP keeps the weights identical (batch-norm statistics stay per rank)
        assert ranks[0][key] == ranks[1][key], key


def test_shards_are_disjoint(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path, train_subset=48, method="multimix", k=1)
    data = load_data(cfg)
    data.train = type(data.train)(data.train.images, np.arange(48))  # labels = sample index
    seen = [{int(v) for b in train_loader(cfg, METHODS["multimix"], data, 0, rank, 2) for v in b.labels}
            for rank in (0, 1)]
    assert seen[0].isdisjoint(seen[1]) and len(seen[0]) == len(seen[1]) == 24


def test_help_lists_every_option():
    out = subprocess.run(cli("--help"), cwd=REPO, capture_output=True, text=True, timeout=120).stdout
    for field in TrainConfig.__dataclass_fields__:
        assert f"  {field} " in out, field
    assert "Beta(alpha, alpha)" in help_text()


def test_config_file_and_overrides(tmp_path):
    cfg = load_config(str(REPO / "train/configs/cifar100_preactresnet18.yaml"), ("epochs=7", "k=3",
                                                                                   "milestones=2,5"))
    assert (cfg.model, cfg.epochs, cfg.k, cfg.milestones, cfg.lr) == ("preact_resnet18", 7, 3, ["2", "5"], 0.2)


@pytest.mark.parametrize("override, match", [
    ("epochz=3", r"unknown config key 'epochz' \(did you mean 'epochs'\?\)"),
    ("epochs=three", r"config key 'epochs': expected int; got 'three'"),
    ("method=mixmix", r"config key 'method': expected one of \[.*'multimix'.*\]; got 'mixmix'"),
    ("k=0", r"config key 'k': expected an integer >= 1; got 0"),
    ("nesterov=maybe", r"config key 'nesterov': expected bool; got 'maybe'"),
    ("epochs", r"override 'epochs': expected key=value"),
])
def test_bad_config_is_rejected_with_its_name(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, (override,))


def test_cli_reports_a_bad_key():
    result = subprocess.run(cli("lr=fast"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "config key 'lr': expected float; got 'fast'" in result.stderr


def test_a_training_set_smaller_than_a_batch_is_reported(tiny_npz, tmp_path):
    with pytest.raises(ValueError, match=r"8 training samples per process are fewer than one batch of 16"):
        train(tiny_config(tiny_npz, tmp_path, train_subset=8, batch_size=16))
