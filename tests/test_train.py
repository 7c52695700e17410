"""The training harness: every method trains on tiny data, ECE, exact resume after a kill,
data-parallel over 2 CPU processes, the CLI; the paper's settings in train/configs, checked value
by value against the paper's lines, and what the harness needs to express them (alpha per method,
per-step piecewise-linear learning rates, image-size stages, native-size image folders, batch
augmentation with rotation, label smoothing on any method, validation-selected test error, seeds)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_tiny_npz
from train.config import TrainConfig, help_text, load_config, method_alpha, resolved
from train.data import eval_loader, load_data, train_loader
from train.loop import train
from train.methods import METHODS, batch_size, label_smoothing, resolve_method
from train.metrics import expected_calibration_error, summarise
from train.schedule import image_size, learning_rate

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """48 training / 16 test images, 16x16x3, 4 classes (labels: sample index mod 4)."""
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_npz(root, 48, 16, 16)


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
from train.checkpoint import load
state = load(sys.argv[1])
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
    assert (cfg.model, cfg.epochs, cfg.k, cfg.milestones, cfg.lr) == ("preact_resnet18", 7, 3, [2, 5], 0.2)


@pytest.mark.parametrize("override, match", [
    ("epochz=3", r"unknown config key 'epochz' \(did you mean 'epochs'\?\)"),
    ("epochs=three", r"config key 'epochs': expected int; got 'three'"),
    ("method=mixmix", r"config key 'method': expected one of \[.*'multimix'.*\]; got 'mixmix'"),
    ("k=0", r"config key 'k': expected an integer >= 1 and <= 64; got 0"),
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


# ---------------------------------------------------------------------------------------------
# The paper's settings (train/configs): every value the paper states, with its line in
# ../shared/paper/multi-mix-paper.txt, and the values the configs take from the original code.

CONFIGS = sorted(p.name for p in (REPO / "train/configs").glob("*.yaml"))
TABLE_I = ["cifar100_preactresnet18.yaml", "cifar100_wrn16_8.yaml", "cifar100_resnext29_4_24.yaml"]
CIFAR = TABLE_I + ["cifar100_table2_resnext29_4_24.yaml"]
TINY, IMAGENET, SPEECH = "tiny_imagenet_preactresnet18.yaml", "imagenet_resnet50.yaml", "speech_vgg11.yaml"
TABLE_II = "cifar100_table2_resnext29_4_24.yaml"

# (configs, key, value, the paper's line)
PAPER = [
    (TABLE_I, "method", "multimix_puzzle", "l.188: we apply the proposed multimix (with K = 5) on puzzle-mix"),
    (TABLE_I + [TINY, IMAGENET, SPEECH, TABLE_II], "k", 5, "l.188: (with K = 5); l.370: we set K to 5"),
    (["cifar100_preactresnet18.yaml", TINY], "model", "preact_resnet18", "l.186: PreActResNet18"),
    (["cifar100_wrn16_8.yaml"], "model", "wrn16_8", "l.186: WRN16-8"),
    (["cifar100_resnext29_4_24.yaml", TABLE_II], "model", "resnext29_4_24",
     "l.186: ResNeXt29-4-24; l.207 = l.178: Table II's multi-mix 18.23 is ResNeXt29-4-24's"),
    (CIFAR, "epochs", 300, "l.186: The total number of training epochs is 300."),
    (CIFAR + [TINY], "lr", 0.2, "l.186: an initial learning rate of 0.2"),
    (CIFAR, "milestones", [100, 200], "l.186: decayed by a factor of 0.1 at epochs 100 and 200"),
    (CIFAR + [TINY, SPEECH], "gamma", 0.1, "l.186: a factor of 0.1; l.314: decayed by a factor of 10"),
    (CIFAR + [TINY, IMAGENET, SPEECH], "optimizer", "sgd", "l.186: the SGD optimizer; l.215: SGD is used "
     "throughout; l.314: trained by SGD"),
    (CIFAR + [TINY], "batch_size", 100, "l.186: The batch size is 100; l.200: the original batch size of 100"),
    ([TINY], "epochs", 1200, "l.186: PreActResNet18 with 1,200 training epochs"),
    ([TINY], "milestones", [600, 900], "l.186: decayed by a factor of 0.1 at epochs 600 and 900"),
    ([TINY], "image_size", 64, "l.184: 200 classes of 64x64 images"),
    ([IMAGENET], "model", "resnet50", "l.215: We use the ResNet-50"),
    ([IMAGENET], "epochs", 100, "l.215: trained for a total of 100 epochs"),
    ([IMAGENET], "method", "multimix_puzzle", "l.227: Multi-mix (with Puzzle-mix)"),
    ([IMAGENET], "image_crop", "random_resized", "l.215: random crop and random horizon flip"),
    ([IMAGENET], "image_size_stages", [[0, 160], [16, 352]],
     "l.215: From epochs 0-15, ... 160x160. From epochs 16-40, ... 352x352 ... still 352x352"),
    ([IMAGENET], "schedule", "piecewise", "l.215: increased linearly ... decreased linearly"),
    ([IMAGENET], "ece_bins", 10, "l.324: we used M = 10"),
    ([SPEECH], "model", "vgg11", "l.314: We then use the VGG-11 network"),
    ([SPEECH], "epochs", 30, "l.314: trained by SGD for 30 epochs"),
    ([SPEECH], "lr", 0.003, "l.314: The initial learning rate is 0.003"),
    ([SPEECH], "schedule", "step", "l.314: decayed by a factor of 10 every 10 epochs"),
    ([SPEECH], "milestones", [10], "l.314: every 10 epochs"),
    ([TABLE_II], "method", "batch_augmentation_mixup", "l.198: (ii) its variant with mixup"),
    ([TABLE_II], "mix_method", "puzzle_mix", "l.198: using the same setup with puzzle-mix"),
]
# the ImageNet learning rate at the epochs the paper names (l.215), and half-way along two ramps
IMAGENET_LR = [(0, 0.5), (4, 0.75), (8, 1.0), (15, 0.125), (15.5, 0.125), (16, 0.2), (28, 0.11),
               (40, 0.02), (64.9, 0.02), (65, 0.002), (89.9, 0.002), (90, 0.0002), (99.9, 0.0002)]
# (configs, key, value, the original code the config follows where the paper is silent)
ORIGINALS = [
    (CIFAR, "pad", 2, "Puzzle Mix load_data.py: RandomCrop(32, padding=2)"),
    ([TINY], "pad", 4, "Puzzle Mix load_data.py: RandomCrop(64, padding=4)"),
    ([TINY], "image_crop", "pad", "Puzzle Mix load_data.py: no resize at train or test time"),
    ([TINY], "mean", [127.5] * 3, "Puzzle Mix load_data.py: mean = [x / 255 for x in [127.5] * 3]"),
    ([TINY], "std", [127.5] * 3, "Puzzle Mix load_data.py: std = [x / 255 for x in [127.5] * 3]"),
    ([TINY], "clean_lam", 1.0, "Puzzle Mix README (Tiny-ImageNet): --clean_lam 1"),
    ([TINY], "puzzle_t_size", -1, "Puzzle Mix README (Tiny-ImageNet): no --t_size; main.py default -1"),
    (CIFAR, "puzzle_t_size", 4, "Puzzle Mix README (CIFAR-100): --t_size 4"),
    (CIFAR + [TINY], "puzzle_beta", 1.2, "Puzzle Mix README: --beta 1.2"),
    (CIFAR + [TINY], "puzzle_neigh_size", 4, "Puzzle Mix README: --neigh_size 4"),
    ([IMAGENET], "puzzle_beta", 1.5, "Puzzle Mix imagenet_fast configs_fast_phase1.yml: beta: 1.5"),
    ([IMAGENET], "puzzle_neigh_size", 2, "Puzzle Mix imagenet_fast lib/utils.py: get_mask(neigh_size=2)"),
    ([IMAGENET], "puzzle_t_size", -1, "Puzzle Mix imagenet_fast: transport on the block grid"),
    ([IMAGENET], "clean_lam", 1.0, "Puzzle Mix imagenet_fast configs_fast_phase1.yml: clean_lam: 1"),
    (TABLE_I + [TABLE_II], "clean_lam", 0.0, "Puzzle Mix main.py: --clean_lam default=0.0"),
    (CIFAR + [TINY], "nesterov", True, "Puzzle Mix main.py: SGD(..., nesterov=True)"),
    (CIFAR + [TINY, IMAGENET], "weight_decay", 0.0001, "Puzzle Mix README: --decay 0.0001"),
    ([SPEECH], "batch_size", 100, "GCommandsPytorch run.py: --batch_size default=100"),
]
# (config, method, alpha): each method's alpha as the originals (ALGORITHMS.md, Puzzle Mix README)
ALPHAS = [(c, m, a) for c in TABLE_I for m, a in [("multimix_puzzle", 1.0), ("puzzle_mix", 1.0), ("mixup", 1.0),
                                                    ("cutmix", 1.0), ("manifold_mixup", 2.0)]] + \
    [(TINY, m, a) for m, a in [("multimix_puzzle", 1.0), ("puzzle_mix", 1.0), ("mixup", 0.2), ("cutmix", 0.2),
                               ("manifold_mixup", 0.2)]]


def config(name: str, *overrides):
    return load_config(str(REPO / "train/configs" / name), overrides)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_validates(name):
    cfg = config(name)
    assert cfg.lambda_scope == "batch"
    text = (REPO / "train/configs" / name).read_text()
    assert name == "fashion_mnist_demo.yaml" or "lambda_scope: batch" in text  # each says its scope


@pytest.mark.parametrize("names, key, value, source", PAPER + ORIGINALS,
                         ids=[f"{key}:{source[:24]}" for _, key, _, source in PAPER + ORIGINALS])
def test_config_values_match_the_paper(names, key, value, source):
    for name in names:
        got = getattr(config(name), key)
        if key == "milestones":
            got = [int(m) for m in got]
        assert got == value, f"{name}: {key} = {got!r}, but the paper / original says {value!r} ({source})"


@pytest.mark.parametrize("name, method, alpha", ALPHAS)
def test_alpha_follows_the_method(name, method, alpha):
    assert method_alpha(config(name, f"method={method}")) == alpha
    assert resolved(config(name, f"method={method}")).alpha == alpha


def test_alpha_by_method_from_the_command_line_and_its_errors():
    cfg = load_config(None, ("alpha=0.7", "alpha_by_method={mixup: 0.4}", "method=mixup"))
    assert method_alpha(cfg) == 0.4 and method_alpha(load_config(None, ("alpha=0.7",))) == 0.7
    with pytest.raises(ValueError, match=r"config key 'alpha_by_method': 'mixupp' is not a method"):
        load_config(None, ("alpha_by_method={mixupp: 0.4}",))
    with pytest.raises(ValueError, match=r"config key 'alpha_by_method': alpha of 'mixup' must be a finite number > 0; got 0.0"):
        load_config(None, ("alpha_by_method={mixup: 0}",))
    with pytest.raises(ValueError, match=r"config key 'alpha_by_method': expected dict"):
        load_config(None, ("alpha_by_method=[1, 2]",))


def test_the_run_uses_and_saves_the_methods_alpha(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path, method="manifold_mixup", alpha=1.0, train_subset=8,
                      alpha_by_method="{manifold_mixup: 2.0}")
    train(cfg)
    assert load_config(str(tmp_path / "config.yaml")).alpha == 2.0


@pytest.mark.parametrize("t, lr", IMAGENET_LR)
def test_imagenet_learning_rate_at_the_papers_epochs(t, lr):
    assert learning_rate(config(IMAGENET), t) == pytest.approx(lr, rel=1e-9)


def test_imagenet_learning_rate_moves_every_step():
    cfg = config(IMAGENET)
    steps = 1251  # ImageNet's 1.28M images in batches of 1024
    lrs = [learning_rate(cfg, 3 + s / steps) for s in range(steps)]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))  # rising within epoch 3, step by step
    assert lrs[1] - lrs[0] == pytest.approx(0.5 / 8 / steps)


def test_imagenet_image_size_changes_at_epoch_16():
    cfg = config(IMAGENET)
    assert [image_size(cfg, e) for e in (0, 15, 16, 40, 99)] == [160, 160, 352, 352, 352]


def test_the_loop_sets_the_learning_rate_every_step(tiny_npz, tmp_path):
    cfg = tiny_config(tiny_npz, tmp_path, method="none", train_subset=16, epochs=2, schedule="piecewise",
                      lr_points="[[0, 0.1], [2, 0.3]]")
    history = train(cfg)["history"]
    # two steps per epoch (t = epoch, epoch + 1/2); the row holds the lr of the epoch's first step
    assert [row["lr"] for row in history] == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize("override, match", [
    ("schedule=piecewise", r"config key 'lr_points': schedule 'piecewise' needs"),
    ("lr_points=[[2, 0.1], [1, 0.2]]", r"config key 'lr_points': epochs must not decrease"),
    ("lr_points=[[0, 0.1, 3]]", r"config key 'lr_points': expected a list of \[epoch, value\] pairs"),
    ("image_size_stages=[[0, 1.5]]", r"config key 'image_size_stages': expected integers"),
    ("lambda_scope=pairs", r"config key 'lambda_scope': expected one of \['batch', 'sample'\]"),
    ("mix_method=comix", r"config key 'mix_method': expected one of \['mixup', 'cutmix', 'fmix', "
                         r"'puzzle_mix', 'saliencymix'\]"),
    ("label_smoothing=1.5", r"config key 'label_smoothing': expected a number >= 0 and < 1; got 1.5"),
])
def test_bad_schedule_and_mixing_keys_are_rejected(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, (override,))


def test_large_batch_mixup_is_one_ratio_per_batch_by_definition():
    with pytest.raises(ValueError, match=r"config key 'lambda_scope': method 'large_batch_mixup' draws one ratio"):
        load_config(None, ("method=large_batch_mixup", "lambda_scope=sample"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """train/ and val/ of 4 classes x 4 PNGs of 20x24 pixels (height x width): sizes no resize
    keeps unless it is off."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for c in range(4):
            (root / split / f"c{c}").mkdir(parents=True)
            for j in range(4):
                img = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{j}.png")
    return root


def test_tiny_imagenet_style_validation_keeps_the_native_size(tiny_folder, tmp_path):
    """image_crop=pad: validation decodes and normalises only (no resize to 73 and crop to 64):
    the output is the stored image, pixel for pixel."""
    cfg = tiny_config(tiny_folder, tmp_path, dataset="image_folder", image_size=20, image_crop="pad",
                      mean="127.5", std="127.5")
    data = load_data(cfg)
    batch = next(iter(eval_loader(cfg, data.test, data)))[0]
    assert tuple(batch["images"].shape[1:]) == (3, 20, 24)  # native, not image_size x image_size
    stored = np.asarray(Image.open(data.test.files[0]), np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(batch["images"][0].numpy(), (stored - 127.5) / 127.5, atol=1e-5)
    train_batch = next(iter(train_loader(cfg, METHODS["none"], data, epoch=0)))
    assert tuple(train_batch["images"].shape) == (8, 3, 20, 20)  # a padded random crop, no resize


def test_image_size_stages_change_the_training_size(tiny_folder, tmp_path):
    cfg = tiny_config(tiny_folder, tmp_path, dataset="image_folder", image_size=8,
                      image_size_stages="[[0, 12], [1, 16]]", k=2)
    data = load_data(cfg)
    shapes = [tuple(next(iter(train_loader(cfg, METHODS["multimix"], data, epoch=e))).images.shape)
              for e in (0, 1, 2)]
    assert shapes == [(16, 3, 12, 12), (16, 3, 16, 16), (16, 3, 16, 16)]


def test_batch_augmentation_copies_differ_by_rotation(tiny_npz, tmp_path):
    """pad=0: a copy differs from another only by flip and rotation; without rotation, any two
    copies would be equal or mirror images."""
    cfg = tiny_config(tiny_npz, tmp_path, k=3, pad=0, train_subset=48)
    data = load_data(cfg)
    copies = next(iter(train_loader(cfg, METHODS["batch_augmentation"], data, epoch=0))).images
    copies = copies.view(8, 3, *copies.shape[1:])
    for sample in copies:
        for i, j in ((0, 1), (0, 2), (1, 2)):
            a, b = sample[i], sample[j]
            assert not torch.allclose(a, b) and not torch.allclose(a, b.flip(-1))
    plain = tiny_config(tiny_npz, tmp_path, k=3, pad=0, train_subset=48, copy_rotation=0)
    copies = next(iter(train_loader(plain, METHODS["batch_augmentation"], data, epoch=0))).images
    for sample in copies.view(8, 3, *copies.shape[1:]):
        assert all(torch.equal(sample[0], c) or torch.equal(sample[0], c.flip(-1)) for c in sample)


@pytest.mark.parametrize("name, mix_method", [("large_batch_mixup", "cutmix"), ("batch_augmentation_mixup", "cutmix"),
                                               ("large_batch_mixup", "puzzle_mix"),
                                               ("batch_augmentation_mixup", "puzzle_mix")])
def test_mix_method_of_the_table_ii_baselines(tiny_npz, tmp_path, name, mix_method):
    method = resolve_method(name, mix_method)
    assert (method.mode, method.puzzle) == (("cutmix", False) if mix_method == "cutmix" else (None, True))
    cfg = tiny_config(tiny_npz, tmp_path, method=name, mix_method=mix_method, k=2, train_subset=32)
    if mix_method == "cutmix":  # one box for the whole batch: every sample takes the same area
        batch = next(iter(train_loader(cfg, method, load_data(cfg), epoch=0)))
        assert len(batch.weights) == 16 and torch.all(batch.weights == batch.weights[0])
    else:
        [row] = train(cfg)["history"]
        assert row["steps"] == 32 // batch_size(method, 8, 2) and np.isfinite(row["train_loss"])


def test_label_smoothing_applies_to_any_method():
    assert label_smoothing(METHODS["multimix"], 0.1) == 0.1
    assert label_smoothing(METHODS["multimix"], 0.0) == 0.0
    assert label_smoothing(METHODS["label_smoothing"], 0.0) == 0.1  # the baseline: none + 0.1
    assert label_smoothing(METHODS["label_smoothing"], 0.2) == 0.2


def test_label_smoothing_with_a_mixing_method_changes_the_loss_as_expected(tiny_npz, tmp_path):
    """One step of multi-mix from the same weights and batch: the loss is
    (1 - eps) * mixed cross-entropy + eps * cross-entropy to the uniform target, linear in eps."""
    losses = [train(tiny_config(tiny_npz, tmp_path / str(eps), method="multimix", train_subset=8,
                                label_smoothing=eps))["history"][0]["train_loss"] for eps in (0.0, 0.1, 0.2)]
    assert losses[1] != pytest.approx(losses[0], abs=1e-4)
    assert losses[2] - losses[1] == pytest.approx(losses[1] - losses[0], rel=1e-4, abs=1e-6)


def test_ece_bins_are_open_below_and_closed_above():
    """I_m = ((m-1)/M, m/M] (paper l.324): a confidence of exactly 0.5 is in bin (0.4, 0.5]."""
    probs = torch.tensor([[0.5, 0.5], [0.75, 0.25], [1.0, 0.0]], dtype=torch.float64)
    _, _, _, count = expected_calibration_error(probs, torch.tensor([0, 0, 0]), bins=10)
    assert count.tolist() == [0, 0, 0, 0, 1, 0, 0, 1, 0, 1]
    _, _, _, count = expected_calibration_error(probs, torch.tensor([0, 0, 0]), bins=4)
    assert count.tolist() == [0, 1, 1, 1]  # 0.5 in (0.25, 0.5], 0.75 in (0.5, 0.75], 1 in (0.75, 1]


def test_best_validation_epoch_selects_the_reported_test_error():
    history = [{"epoch": e + 1, "test_error": t, "ece": 0.1, "noisy_test_error": 0.5, "val_error": v}
               for e, (t, v) in enumerate([(0.6, 0.5), (0.45, 0.3), (0.2, 0.4), (0.3, 0.3)])]
    summary = summarise(history)
    assert summary["best_val_epoch"] == 2 and summary["test_error_at_best_val"] == 0.45
    assert summary["final"]["test_error"] == 0.3


@pytest.fixture(scope="module")
def tiny_speech(tmp_path_factory):
    """train/, valid/, test/ (GCommandsPytorch's layout) of 2 words x 4 one-second tones."""
    root = tmp_path_factory.mktemp("speech")
    for split in ("train", "valid", "test"):
        for w, word in enumerate(("no", "yes")):
            (root / split / word).mkdir(parents=True)
            for j in range(4):
                t = np.arange(16000) / 16000
                x = (8000 * np.sin(2 * np.pi * (300 + 500 * w + 40 * j) * t)).astype(np.int16)
                with wave.open(str(root / split / word / f"{j}.wav"), "wb") as f:
                    f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000), f.writeframes(x.tobytes())
    return root


def test_speech_reports_the_test_error_at_the_best_validation_epoch(tiny_speech, tmp_path):
    cfg = tiny_config(tiny_speech, tmp_path, dataset="speech", model="vgg11", batch_size=4,
                      train_subset=8, epochs=2, method="multimix")
    data = load_data(cfg)
    assert data.sample_shape == (1, 161, 101) and len(data.val.files) == len(data.test.files) == 8
    result = train(cfg)
    assert all("val_error" in row for row in result["history"])
    saved = json.loads((tmp_path / "results.json").read_text())
    best = min(result["history"], key=lambda r: (r["val_error"], r["epoch"]))
    assert saved["best_val_epoch"] == best["epoch"] and saved["test_error_at_best_val"] == best["test_error"]


def test_seeds_command_reports_mean_and_std(tiny_npz, tmp_path, capsys):
    from train.seeds import main as seeds_main

    args = [f"data_path={tiny_npz}", "dataset=npz", "model=small_cnn", "epochs=1", "batch_size=8",
            "train_subset=8", "k=2", "method=multimix", "progress=false", "num_threads=1", f"out_dir={tmp_path}"]
    assert seeds_main(["--seeds", "0", "1", "--", *args]) == 0
    summary = json.loads((tmp_path / "seeds_summary.json").read_text())
    errors = [json.loads((tmp_path / f"seed{s}" / "results.json").read_text())["final"]["test_error"]
              for s in (0, 1)]
    assert summary["metrics"]["test_error"]["values"] == errors
    assert set(summary["metrics"]) == {"test_error", "ece", "noisy_test_error"}
    for m in summary["metrics"].values():  # mean and sample standard deviation over the seeds
        assert m["mean"] == pytest.approx(np.mean(m["values"]))
        assert m["std"] == pytest.approx(np.std(m["values"], ddof=1))
    assert summary["metrics"]["ece"]["values"][0] != summary["metrics"]["ece"]["values"][1]
    assert load_config(str(tmp_path / "seed1" / "config.yaml")).seed == 1
    assert "test_error" in capsys.readouterr().out


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_lambda_scope_reaches_the_pipeline(tiny_npz, tmp_path, scope):
    cfg = tiny_config(tiny_npz, tmp_path, k=3, train_subset=48, lambda_scope=scope)
    batch = next(iter(train_loader(cfg, METHODS["multimix"], load_data(cfg), epoch=0)))
    rows = batch.weights.view(8, 3)
    assert bool(torch.all(rows == rows[0])) == (scope == "batch")  # one set of ratios per batch


def record_keywords(monkeypatch, part: str) -> dict:
    """Wraps train.loop's `part` (a class the loop constructs) so that the keyword arguments the
    loop passes it land in the returned dict."""
    import train.loop as loop

    seen, original = {}, getattr(loop, part)

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, part, recording)
    return seen


@pytest.mark.parametrize("method, part", [("multimix_manifold", "ManifoldMultiMix"),
                                          ("multimix_puzzle", "PuzzleMix"), ("saliencymix", "SaliencyMix")])
def test_lambda_scope_reaches_the_torch_parts(tiny_npz, tmp_path, monkeypatch, method, part):
    seen = record_keywords(monkeypatch, part)
    train(tiny_config(tiny_npz, tmp_path, method=method, train_subset=8, lambda_scope="sample"))
    assert seen["lambda_scope"] == "sample"


def test_puzzle_options_reach_puzzle_mix(tiny_npz, tmp_path, monkeypatch):
    seen = record_keywords(monkeypatch, "PuzzleMix")
    train(tiny_config(tiny_npz, tmp_path, method="puzzle_mix", train_subset=8, puzzle_t_size=-1,
                      puzzle_beta=1.5, puzzle_neigh_size=2))
    assert (seen["t_size"], seen["beta"], seen["neigh_size"]) == (-1, 1.5, 2)
    with pytest.raises(ValueError, match=r"config key 'puzzle_t_size': expected a cell side >= 1 or -1"):
        load_config(None, ("puzzle_t_size=0",))


def test_puzzle_mix_trains_on_an_image_folder(tiny_folder, tmp_path):
    """The file reader's int32 labels reach the saliency pass's cross-entropy as class indices."""
    cfg = tiny_config(tiny_folder, tmp_path, dataset="image_folder", image_size=16, image_crop="pad",
                      method="multimix_puzzle", clean_lam=1.0, mean="127.5", std="127.5")
    [row] = train(cfg)["history"]
    assert row["steps"] == 2 and np.isfinite(row["train_loss"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_corrupt_image_mid_epoch_is_named(tiny_folder, tmp_path, split):
    """The harness lists image folders without decoding every file; a corrupt one fails the
    epoch, and the error names it (not DALI's bare "nvImageCodec failure")."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_folder, root)
    bad = root / split / "c2" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)  # a PNG header, then garbage
    cfg = tiny_config(root, tmp_path / "out", dataset="image_folder", image_size=16, image_crop="pad",
                      method="none", mean="127.5", std="127.5", train_subset=0)
    with pytest.raises(ValueError, match=r"images that DALI cannot decode \(1\): .*c2/1\.png"):
        train(cfg)


def epoch_batches(loader) -> list:
    """The batches of one epoch of a training loader, as tuples of tensors."""
    return [tuple(b.values()) if isinstance(b, dict) else tuple(b) for b in loader]


def same_batches(a: list, b: list) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(torch.equal(s, t) for s, t in zip(x, y))
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("dataset", ["npz", "image_folder", "speech"])
def test_a_restored_pipeline_yields_the_batches_of_the_uninterrupted_one(tiny_npz, tiny_folder, tiny_speech,
                                                                         tmp_path, dataset):
    """One pipeline for all epochs: each epoch is exact (every usable sample once, no partial
    batch) and new; a pipeline restored from the state saved after epoch e yields epochs e, e+1
    bit for bit as the uninterrupted one; a state of another epoch is refused."""
    from train.data import TrainLoader
    root = {"npz": tiny_npz, "image_folder": tiny_folder, "speech": tiny_speech}[dataset]
    extra = dict(image_size=16, image_crop="pad", mean="127.5", std="127.5") \
        if dataset == "image_folder" else {}
    cfg = tiny_config(root, tmp_path, dataset=dataset, train_subset=12 if dataset == "npz" else 0,
                      batch_size=2, k=2, method="multimix", **extra)
    data = load_data(cfg)
    n = data.train_size()
    data.train = (type(data.train)(data.train.images, np.arange(n)) if data.arrays else
                  type(data.train)(data.train.files, list(range(n)), data.train.classes, data.train.skipped))
    method = METHODS["multimix"]
    builds = TrainLoader.builds
    loader = train_loader(cfg, method, data, 0)
    epochs, states = [], []
    for epoch in range(3):
        assert train_loader(cfg, method, data, epoch, reuse=loader) is loader
        epochs.append(epoch_batches(loader))
        states.append(loader.state())
    assert TrainLoader.builds - builds == 1  # built once, reused for three epochs
    samples = batch_size(method, 2, 2)  # per batch; the mixed batch repeats each label k times
    orders = []
    for batches in epochs:
        labels = [i for b in batches for i in sorted(set(b[1].reshape(-1).tolist()))]
        assert len(batches) == n // samples and len(labels) == len(set(labels)) == n // samples * samples
        orders.append(labels)
    assert orders[0] != orders[1] and orders[1] != orders[2]  # a new sample order every epoch
    assert not same_batches(epochs[0], epochs[1]) and not same_batches(epochs[1], epochs[2])
    assert [s["next_epoch"] for s in states] == [1, 2, 3]
    restored = train_loader(cfg, method, data, 1, state=states[0])
    assert same_batches(epoch_batches(restored), epochs[1])
    assert same_batches(epoch_batches(restored), epochs[2])
    assert same_batches(epoch_batches(train_loader(cfg, method, data, 2, state=states[1])), epochs[2])
    with pytest.raises(ValueError, match="pipeline state: saved to continue at epoch 1, but the run "
                                         "continues at epoch 2"):
        train_loader(cfg, method, data, 2, state=states[0])


def test_the_training_pipeline_is_built_once_per_run_and_per_image_size(tiny_npz, tiny_folder, tmp_path):
    from train.data import TrainLoader
    builds = TrainLoader.builds
    train(tiny_config(tiny_npz, tmp_path / "npz", epochs=3, method="multimix"))
    assert TrainLoader.builds - builds == 1
    builds = TrainLoader.builds  # image sizes 12, 16, 16: a new pipeline where the size changes
    train(tiny_config(tiny_folder, tmp_path / "folder", dataset="image_folder", image_size=8, epochs=3,
                      image_size_stages="[[0, 12], [1, 16]]", image_crop="pad", mean="127.5", std="127.5"))
    assert TrainLoader.builds - builds == 2
