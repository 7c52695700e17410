"""train/evaluate.py: IoU, box from CAM, CAM, background corruption, and the three commands end to
end on a generated data set with known boxes (pipelines.boxes.make_box_dataset)."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from pipelines.boxes import make_box_dataset
from train import checkpoint
from train.config import TrainConfig
from train.evaluate import (box_from_cam, class_activation_maps, iou, main, noise_background,
                            replace_background)
from train.models import build_model


def test_iou_by_hand():
    assert iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)
    assert iou((0, 0, 4, 4), (1, 1, 3, 3)) == pytest.approx(4 / 16)
    assert iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0
    assert iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges


def test_box_from_cam_largest_component():
    cam = np.zeros((6, 8))
    cam[0, 0] = 10.0                 # the peak, a component of one pixel
    cam[2:5, 3:7] = 6.0              # the largest component above 0.5 * max
    cam[5, 0] = 4.0                  # below the threshold
    assert box_from_cam(cam, 0.5) == (3.0, 2.0, 7.0, 5.0)
    assert box_from_cam(cam, 0.7) == (0.0, 0.0, 1.0, 1.0)  # only the peak is left
    assert box_from_cam(cam, 0.3) == (3.0, 2.0, 7.0, 5.0)  # (5, 0) alone: smaller
    diagonal = np.zeros((3, 3))
    diagonal[0, 0] = diagonal[1, 1] = diagonal[2, 2] = 1.0  # 4-connectivity: three components
    assert box_from_cam(diagonal, 0.5) == (0.0, 0.0, 1.0, 1.0)


class _Tiny(torch.nn.Module):  # torchvision-style: an avgpool module before fc
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(torch.relu(self.conv(x))), 1))


@pytest.mark.parametrize("which", ["avgpool_module", "harness_small_cnn"])
def test_cam_is_the_definition(which):
    torch.manual_seed(0)
    model = _Tiny() if which == "avgpool_module" else build_model("small_cnn", 4, 3)
    model.eval()
    x, classes = torch.randn(3, 3, 16, 16), torch.tensor([2, 0, 3])
    if which == "avgpool_module":
        features = torch.relu(model.conv(x))
    else:
        features = model.layer3(model.layer2(model.layer1(x)))
    expected = torch.stack([(model.fc.weight[c][:, None, None] * f).sum(0) for f, c in zip(features, classes)])
    cam = class_activation_maps(model, x, classes)
    torch.testing.assert_close(cam, expected)
    # its mean plus the bias is the class's logit
    logits = model(x)
    torch.testing.assert_close(cam.mean((1, 2)) + model.fc.bias[classes], logits[torch.arange(3), classes])


def test_background_corruption_touches_only_the_background():
    g = torch.Generator().manual_seed(0)
    pixels, other = torch.rand(2, 3, 20, 20, generator=g), torch.rand(2, 3, 20, 20, generator=g)
    inside = torch.zeros(2, 20, 20, dtype=torch.bool)
    inside[0, 2:9, 3:15] = True
    inside[1, 10:20, 0:5] = True
    for out, source in ((replace_background(pixels, other, inside), other),
                        (noise_background(pixels, inside, 0.1, g), None)):
        keep = inside[:, None].expand_as(pixels)
        assert torch.equal(out[keep], pixels[keep])                     # inside identical
        if source is not None:
            assert torch.equal(out[~keep], source[~keep])
        else:
            assert bool((out[~keep] != pixels[~keep]).all())


def test_noise_has_the_stated_std_on_unit_pixels():
    pixels = torch.full((1, 3, 300, 300), 0.5)
    inside = torch.zeros(1, 300, 300, dtype=torch.bool)
    inside[0, :30, :30] = True
    out = noise_background(pixels, inside, 0.1, torch.Generator().manual_seed(1))
    diff = (out - pixels)[:, :, ~inside[0]]
    assert float(diff.std()) == pytest.approx(0.1, abs=0.002)
    assert float(diff.mean()) == pytest.approx(0.0, abs=0.002)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Generated boxes data and a checkpoint of the harness's small CNN trained a few steps on it."""
    root = tmp_path_factory.mktemp("evaluate")
    make_box_dataset(root / "data", classes=3, per_class=4, size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, 3)
    cfg = asdict(TrainConfig(model="small_cnn"))
    checkpoint.save_atomic({"model": model.state_dict(), "optimizer": {}, "scaler": {}, "mix_generator": None,
                            "torch_rng": None, "history": [], "epoch": 0, "config": cfg},
                           root / "checkpoint_rank0.pt")
    return root


@pytest.mark.parametrize("table, extra, keys", [
    ("wsol", [], ["localisation_accuracy"]),
    ("background", [], ["clean_error", "replaced_background_error", "noisy_background_error"]),
    ("transfer", ["--epochs", "2"], ["localisation_accuracy_by_epoch"]),
])
def test_commands_end_to_end(run, table, extra, keys, capsys):
    data = run / "data" / ("cub" if table == "transfer" else "imagenet")
    out = run / f"{table}.json"
    result = main([table, "--checkpoint", str(run / "checkpoint_rank0.pt"), "--data", str(data),
                   "--image-size", "32", "--batch-size", "4", "--out", str(out), "--no-progress", *extra])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result)) and saved["images"] == 12
    for key in keys:
        values = saved[key] if isinstance(saved[key], list) else [saved[key]]
        assert all(0.0 <= v <= 1.0 for v in values)
    if table == "transfer":
        assert len(saved["localisation_accuracy_by_epoch"]) == 2 and saved["threshold"] == 0.75
    assert "Table" in saved["paper"] and "results:" in capsys.readouterr().out


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "Table IV" in text and "Table V" in text and "Table VI" in text


def test_missing_data_is_a_clear_error(run):
    with pytest.raises(ValueError, match="nothing is downloaded"):
        main(["wsol", "--checkpoint", str(run / "checkpoint_rank0.pt"), "--data", str(run / "nowhere"),
              "--no-progress"])


class _ColourModel(torch.nn.Module):
    """Feature c = how close a pixel is to class c's object colour: its CAM is the object."""

    def __init__(self, colours):
        super().__init__()
        self.colours = torch.tensor(colours, dtype=torch.float32) / 255
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(len(colours), len(colours))
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(len(colours)))
            self.fc.bias.zero_()

    def forward(self, x):
        dist = (x[:, None] - self.colours[None, :, :, None, None]).abs().sum(2)
        return self.fc(torch.flatten(self.avgpool(torch.relu(1 - dist / 0.3)), 1))


@pytest.mark.parametrize("sign, expected", [(1.0, 1.0), (-1.0, 0.0)])
def test_localisation_accuracy_finds_the_objects(run, sign, expected):
    from pipelines.boxes import read_imagenet_boxes
    from train.evaluate import Normalise, localisation_accuracy

    _, items = read_imagenet_boxes(run / "data" / "imagenet")
    model = _ColourModel([[230, 40, 40], [40, 200, 40], [40, 60, 230]])
    with torch.no_grad():
        model.fc.weight.mul_(sign)  # sign -1: the CAM peaks on the background
    acc = localisation_accuracy(model, items, Normalise((0, 0, 0), (255, 255, 255)), size=64,
                                threshold=0.5, batch=5, progress=False)
    assert acc == expected
