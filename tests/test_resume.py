"""Nothing lost, nothing wrong accepted, in the harness: resume continues exactly the saved run or
names what differs; checkpoints carry a checksum and the previous one is kept; kills (during
checkpoint writes too) leave no orphans and a resumed run ends bit-identical; out_dir results are
not overwritten unasked; every option is typed, finite and in range before anything loads or is
written; errors name the file or key."""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_tiny_npz
from train import checkpoint
from train.checkpoint import CheckpointError
from train.config import TrainConfig, help_text, load_config

import dali_multimix as _dali_multimix
import train as _train_package

REPO = Path(__file__).resolve().parents[1]
# subprocesses import the same copies of dali_multimix and train (installed or source) as this
# process, from a neutral working directory
IMPORTED = [str(Path(m.__file__).parents[1]) for m in (_dali_multimix, _train_package)]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
    IMPORTED + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
CWD = "/"
ENV.pop("TRAIN_CHECKPOINT_KILL", None)
ARGS = ["dataset=npz", "model=small_cnn", "epochs=3", "batch_size=8", "train_subset=16", "k=2",
        "method=multimix", "progress=false", "num_threads=1", "schedule=cosine", "lr=0.05", "pad=2"]
FINAL_FILES = {"config.yaml", "metrics.csv", "results.json", "curves.png", "reliability.png",
               "tensorboard", "checkpoint_rank0.pt", "checkpoint_rank0.pt.prev"}


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """32 training / 8 test images, 8x8x3, 4 classes."""
    root = tmp_path_factory.mktemp("tiny_resume")
    return write_tiny_npz(root, 32, 8, 8)


def run(*args, kill: str = "", timeout: float = 300, after: float = None):
    """`python -m train args`; kill: TRAIN_CHECKPOINT_KILL; after: SIGKILL after that many
    seconds. Returns the CompletedProcess-like (returncode, stdout, stderr)."""
    env = dict(ENV, TRAIN_CHECKPOINT_KILL=kill) if kill else ENV
    proc = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=CWD, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if after is not None:
        try:
            proc.wait(after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def summary(path: Path) -> dict:
    state = checkpoint.load(path)
    return {"epoch": state["epoch"],
            "history": [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in state["history"]],
            "model": {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
                      for k, v in state["model"].items()},
            "optimizer": hashlib.sha256(repr(state["optimizer"]["state"]).encode()).hexdigest()}


@pytest.fixture(scope="module")
def whole(tiny_npz, tmp_path_factory):
    """An uninterrupted 3-epoch run: its out_dir."""
    out = tmp_path_factory.mktemp("whole")
    rc, _, err = run(f"data_path={tiny_npz}", f"out_dir={out}", *ARGS)
    assert rc == 0, err[-3000:]
    return out


def flip_bytes(path: Path, offset_fraction: float = 0.6) -> None:
    raw = bytearray(path.read_bytes())
    at = int(len(raw) * offset_fraction)
    raw[at:at + 8] = bytes(b ^ 0xFF for b in raw[at:at + 8])
    path.write_bytes(bytes(raw))


def test_kill_and_resume_at_many_points_is_bit_identical(tiny_npz, whole, tmp_path):
    """One run killed again and again: at each stage of a checkpoint write (injected with
    TRAIN_CHECKPOINT_KILL), with a corrupted newest checkpoint, and at seeded random times; each
    time resumed. The end: every tensor and metric as the uninterrupted run's, no temporary file."""
    out = tmp_path / "killed"
    base = [f"data_path={tiny_npz}", f"out_dir={out}", *ARGS]
    outcomes = []

    def orphans():
        return [p.name for p in out.glob(".*.tmp")] if out.exists() else []

    # (flags, kill point, expected: epoch of the newest usable checkpoint after the kill)
    plan = [([], "partial:1", None),                      # half-written first checkpoint
            (["--resume-if-exists"], "before_rename:1", None),   # written + fsynced, not renamed
            (["--resume-if-exists"], "between_renames:2", 1),    # epoch 1 kept as .prev only
            (["--resume"], "after_rename:1", 2),                 # resumes from .prev; epoch 2 saved
            ]
    for flags, kill, expected in plan:
        rc, _, err = run(*base, *flags, kill=kill)
        assert rc == -signal.SIGKILL, f"{kill}: exit {rc}, the kill point was never reached: {err[-2000:]}"
        if kill.startswith(("partial", "before_rename", "between_renames")):
            assert orphans(), f"{kill}: the injected kill left no temporary file (not mid-write?)"
        state, _, _ = checkpoint.load_latest(checkpoint.checkpoint_path(out, 0))
        assert (state["epoch"] if state else None) == expected, kill
        outcomes.append(kill)

    # the newest checkpoint (epoch 2) corrupted: named, the previous one (epoch 1) used
    flip_bytes(out / "checkpoint_rank0.pt")
    rc, stdout, err = run(*base, "--resume", kill="after_rename:1")
    assert rc == -signal.SIGKILL, err[-2000:]
    assert "checkpoint_rank0.pt is corrupt" in stdout and "resuming from" in stdout, stdout
    assert (out / "checkpoint_rank0.pt.corrupt").exists()
    assert checkpoint.load(out / "checkpoint_rank0.pt")["epoch"] == 2
    outcomes.append("corrupt newest")

    # SIGKILL at seeded random times (wherever they fall: import, training, evaluation, a save)
    rng = random.Random(12)
    for _ in range(2):
        run(*base, "--resume-if-exists", after=rng.uniform(2.0, 12.0))
        outcomes.append("random")

    rc, _, err = run(*base, "--resume-if-exists")
    assert rc == 0, err[-3000:]
    assert orphans() == []
    assert {p.name for p in out.iterdir()} == FINAL_FILES | {"checkpoint_rank0.pt.corrupt"}
    a, b = summary(whole / "checkpoint_rank0.pt"), summary(out / "checkpoint_rank0.pt")
    assert a["epoch"] == b["epoch"] == 3
    assert a["model"] == b["model"] and a["optimizer"] == b["optimizer"]  # bit-identical
    assert a["history"] == b["history"]
    assert (whole / "metrics.csv").read_text().count("\n") == (out / "metrics.csv").read_text().count("\n")
    assert len(outcomes) == 7


def test_uninterrupted_run_leaves_only_its_results_group_readable(whole):
    assert {p.name for p in whole.iterdir()} == FINAL_FILES  # the last two checkpoints, no temporaries
    for name in ("checkpoint_rank0.pt", "checkpoint_rank0.pt.prev", "metrics.csv", "results.json",
                 "config.yaml"):
        mode = stat.S_IMODE((whole / name).stat().st_mode)
        umask = os.umask(0)
        os.umask(umask)
        assert mode == 0o666 & ~umask, (name, oct(mode))  # as any file the user writes (0644 with 022)
    assert checkpoint.load(whole / "checkpoint_rank0.pt.prev")["epoch"] == 2


def api_config(tiny_npz, out, **changes) -> TrainConfig:
    values = dict(x.split("=", 1) for x in ARGS)
    values.update(data_path=str(tiny_npz), out_dir=str(out), **{k: str(v) for k, v in changes.items()})
    return load_config(None, tuple(f"{k}={v}" for k, v in values.items()))


def copy_run(whole: Path, to: Path) -> Path:
    import shutil
    shutil.copytree(whole, to)
    return to


@pytest.mark.parametrize("changes, named", [
    (dict(method="mixup"), ["'method' was 'multimix', now 'mixup'"]),
    (dict(k=3, seed=1), ["'k' was 2, now 3", "'seed' was 0, now 1"]),
    (dict(label_noise=0.25), ["'label_noise' was 0.0, now 0.25"]),
    (dict(num_threads=2), ["'num_threads' was 1, now 2"]),
])
def test_resume_with_another_config_names_every_differing_key(tiny_npz, whole, tmp_path, changes, named):
    from train.loop import train
    out = copy_run(whole, tmp_path / "run")
    with pytest.raises(ValueError, match="cannot resume from .*checkpoint_rank0.pt: it was saved by a "
                                         "run with another config") as info:
        train(api_config(tiny_npz, out, resume="true", **changes))
    for text in named:
        assert text in str(info.value)
    assert "Only epochs, progress, out_dir, log_every, non_blocking may change" in str(info.value)


def test_resume_may_add_epochs(tiny_npz, whole, tmp_path):
    """More epochs is a legitimate change; the checkpoint's epochs are kept."""
    out = copy_run(whole, tmp_path / "run")
    assert checkpoint.prepare(api_config(tiny_npz, out, resume="true", epochs=5))["epoch"] == 3


def test_epochs_below_the_checkpoint_is_an_error(tiny_npz, whole, tmp_path):
    from train.loop import train
    out = copy_run(whole, tmp_path / "run")
    with pytest.raises(ValueError, match=r"config key 'epochs': 1 is below the epoch of checkpoint "
                                         r".*checkpoint_rank0.pt \(3\); pass epochs >= 3"):
        train(api_config(tiny_npz, out, resume="true", epochs=1))


@pytest.mark.parametrize("damage, match", [
    ("flip", r"checkpoint .*checkpoint_rank0.pt is corrupt: its SHA-256 does not match"),
    ("truncate", r"checkpoint .*checkpoint_rank0.pt is truncated: \d+ of \d+ bytes"),
    ("empty", r"checkpoint .*checkpoint_rank0.pt is not a checkpoint of this harness or is truncated"),
])
def test_a_corrupt_checkpoint_is_named_and_the_previous_one_used(tiny_npz, whole, tmp_path, damage, match):
    out = copy_run(whole, tmp_path / "run")
    path = out / "checkpoint_rank0.pt"
    if damage == "flip":
        flip_bytes(path)
    else:
        path.write_bytes(path.read_bytes()[:200 if damage == "truncate" else 0])
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(path)
    state = checkpoint.prepare(api_config(tiny_npz, out, resume="true"))
    assert state["epoch"] == 2  # the previous one
    # both bad: an error naming both files, not an EOFError / UnpicklingError / KeyError
    flip_bytes(out / "checkpoint_rank0.pt.prev", 0.3)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint: .*checkpoint_rank0.pt .*"
                                              r"checkpoint_rank0.pt.prev is corrupt"):
        checkpoint.prepare(api_config(tiny_npz, out, resume="true"))


def test_a_checkpoint_without_the_keys_of_a_run_is_named(tmp_path):
    checkpoint.save_atomic({"model": {}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c.pt lacks \['optimizer'"):
        checkpoint.load(tmp_path / "c.pt")


def test_resume_without_a_checkpoint_is_an_error_unless_asked(tiny_npz, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"resume: out_dir .* holds no checkpoint"):
        checkpoint.prepare(api_config(tiny_npz, tmp_path / "none", resume="true"))
    assert checkpoint.prepare(api_config(tiny_npz, tmp_path / "none", resume_if_exists="true")) is None


def test_an_out_dir_with_results_is_not_overwritten_unasked(tiny_npz, whole, tmp_path):
    out = copy_run(whole, tmp_path / "run")
    before = (out / "checkpoint_rank0.pt").read_bytes()
    with pytest.raises(FileExistsError, match=r"out_dir .* holds the results of an earlier run .*"
                                              r"--resume.*--overwrite"):
        checkpoint.prepare(api_config(tiny_npz, out))
    assert (out / "checkpoint_rank0.pt").read_bytes() == before
    assert checkpoint.prepare(api_config(tiny_npz, out, overwrite="true")) is None
    checkpoint.clear_for_fresh_run(out, 0)
    assert not checkpoint.results_in(out)


def test_orphans_of_killed_saves_are_removed_at_start(tiny_npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / ".checkpoint_rank0.pt.4242.tmp", out / ".metrics.csv.17.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    keep = out / "notes.tmp"  # not ours
    keep.write_text("x")
    checkpoint.prepare(api_config(tiny_npz, out))
    assert not any(p.exists() for p in stale) and keep.exists()


def test_a_missing_dataset_is_named_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    rc, _, err = run("dataset=npz", f"data_path={tmp_path / 'nowhere'}", f"out_dir={out}", "progress=false")
    assert rc == 2 and "Traceback" not in err and "nowhere" in err, err[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_text("epochs: [1\nk: 2\n"), r"config .*bad.yaml: line \d+, column \d+ is not valid YAML"),
    (lambda p: p.mkdir(), r"config .*bad.yaml: is a folder; expected a YAML file"),
    (lambda p: p.write_text("- 1\n- 2\n"), r"config .*bad.yaml: expected a mapping of keys to values"),
])
def test_a_bad_config_file_is_named_without_a_traceback(tmp_path, make, match):
    import re
    path = tmp_path / "bad.yaml"
    make(path)
    result = subprocess.run([sys.executable, "-m", "train", "--config", str(path)], cwd=CWD,
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(match, result.stderr), result.stderr


BAD_VALUES = [
    ("lr", "nan", r"config key 'lr': expected a finite float; got 'nan'"),
    ("alpha", "inf", r"config key 'alpha': expected a finite float"),
    ("batch_size", "-4", r"config key 'batch_size': expected an integer >= 1"),
    ("train_subset", "-1", r"config key 'train_subset': expected an integer >= 0; got -1"),
    ("pad", "-2", r"config key 'pad': expected an integer >= 0"),
    ("momentum", "1.5", r"config key 'momentum': expected a number >= 0 and < 1; got 1.5"),
    ("weight_decay", "-1e-4", r"config key 'weight_decay': expected a number >= 0"),
    ("gamma", "0", r"config key 'gamma': expected a number > 0"),
    ("noise_std", "-0.5", r"config key 'noise_std': expected a number >= 0"),
    ("seed", "-1", r"config key 'seed': expected an integer >= 0"),
    ("num_threads", "0", r"config key 'num_threads': expected an integer >= 1"),
    ("copy_rotation", "400", r"config key 'copy_rotation': expected a number >= 0 and <= 180"),
    ("milestones", "a,b", r"config key 'milestones': expected numbers; got 'a'"),
    ("milestones", "1.5", r"config key 'milestones': expected integers; got '1.5'"),
    ("mean", "nan", r"config key 'mean': expected finite numbers"),
    ("lr_points", "[[0, .inf]]", r"config key 'lr_points': expected finite numbers"),
    ("image_size", "0", r"config key 'image_size': expected an integer >= 1"),
]


@pytest.mark.parametrize("key, value, match", BAD_VALUES)
def test_every_numeric_option_is_finite_and_in_range(key, value, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, (f"{key}={value}",))


@pytest.mark.parametrize("changes, error, match", [
    (dict(lr=float("nan")), ValueError, r"config key 'lr': expected a finite number; got nan"),
    (dict(epochs="3"), TypeError, r"config key 'epochs': expected int; got '3'"),
    (dict(batch_size=-8), ValueError, r"config key 'batch_size': expected an integer >= 1"),
    (dict(milestones=["x"]), ValueError, r"config key 'milestones': expected numbers; got 'x'"),
    (dict(manifold_layers="layer1"), TypeError, r"config key 'manifold_layers': expected a list"),
    (dict(method="mixmix"), ValueError, r"config key 'method': expected one of"),
])
def test_the_python_api_validates_before_anything_is_written(tiny_npz, tmp_path, changes, error, match):
    from train.loop import train
    out = tmp_path / "api"
    cfg = TrainConfig(dataset="npz", data_path=str(tiny_npz), out_dir=str(out), **changes)
    with pytest.raises(error, match=match):
        train(cfg)
    assert not out.exists()


def test_help_lists_the_choices_and_ranges():
    text = help_text()
    for needle in ("multimix_manifold", "small_cnn", "preact_resnet18", "cosine", "piecewise",
                   "[choices: sgd, adam]", "[range: >= 1, <= 64]", "resume_if_exists", "overwrite"):
        assert needle in text, needle
    result = subprocess.run([sys.executable, "-m", "train", "--help"], cwd=CWD, capture_output=True,
                            text=True, timeout=120, env=ENV)
    assert "--resume-if-exists" in result.stdout and "--overwrite" in result.stdout
    assert "multimix_manifold" in result.stdout


def test_the_logged_lr_is_the_one_of_the_epochs_first_step(whole):
    """schedule cosine over 3 epochs at lr 0.05: epoch e trains at 0.05 * (1 + cos(pi e / 3)) / 2."""
    import math
    rows = json.loads(json.dumps(checkpoint.load(whole / "checkpoint_rank0.pt")["history"]))
    assert [r["lr"] for r in rows] == pytest.approx([0.05 * (1 + math.cos(math.pi * e / 3)) / 2
                                                     for e in range(3)])


def test_the_checkpoint_carries_the_pipeline_state_of_its_epoch(whole):
    """What lets the one pipeline of a run be restored on resume (train.data.TrainLoader)."""
    for name, epoch in (("checkpoint_rank0.pt", 3), ("checkpoint_rank0.pt.prev", 2)):
        state = checkpoint.load(whole / name)["pipeline"]
        assert state["first_epoch"] == 0 and state["next_epoch"] == epoch, name
        assert isinstance(state["dali"], (str, bytes)) and len(state["dali"]) > 0, name
