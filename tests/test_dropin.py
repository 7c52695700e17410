"""The drop-in, on the structure of NVIDIA's DALI ResNet-50 example
(docs/examples/use_cases/pytorch/resnet50/main.py): one create_dali_pipeline(..., is_training)
for train and validation, DALIClassificationIterator with reader_name and PARTIAL, and a loop that
reads data[0]["data"], data[0]["label"].squeeze(-1).long(), train_loader._size, len() and reset(),
criterion(output, target), the example's top-1/top-5 accuracy, --dali_cpu and channels-last.

EXAMPLE below is our own transcription of that structure (not NVIDIA's code), runnable on a CPU:
the mechanical CPU substitution is that the model and tensors stay on the CPU (`.to(args.device)`
instead of `.cuda()`; the criterion's `.cuda()` is kept: a loss without parameters needs no GPU),
`images.gpu()` / `labels.gpu()` apply only when not dali_cpu, and device_id is None for the CPU
path. The README's ```diff block (the drop-in change) is applied to it line by line, and the test
proves that it changes exactly the three lines (pipeline return, iterator construction, loss)
plus the one import line, then trains and validates with both versions.
"""
from __future__ import annotations

import difflib
import re
import types as pytypes
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import sample_photos

README = Path(__file__).resolve().parents[1] / "README.md"

EXAMPLE = '''\
import math
import torch
import torch.nn as nn
import torchvision.models as models
from nvidia.dali.plugin.pytorch import DALIClassificationIterator, LastBatchPolicy
from nvidia.dali.pipeline import pipeline_def
import nvidia.dali.types as types
import nvidia.dali.fn as fn


@pipeline_def
def create_dali_pipeline(data_dir, crop, size, shard_id, num_shards, dali_cpu=False, is_training=True):
    images, labels = fn.readers.file(file_root=data_dir, shard_id=shard_id, num_shards=num_shards,
                                     random_shuffle=is_training, pad_last_batch=True, name="Reader")
    dali_device = 'cpu' if dali_cpu else 'gpu'
    decoder_device = 'cpu' if dali_cpu else 'mixed'
    if is_training:
        images = fn.decoders.image_random_crop(images, device=decoder_device, output_type=types.RGB,
                                               random_aspect_ratio=[0.8, 1.25],
                                               random_area=[0.1, 1.0], num_attempts=100)
        images = fn.resize(images, device=dali_device, resize_x=crop, resize_y=crop,
                           interp_type=types.INTERP_TRIANGULAR)
        mirror = fn.random.coin_flip(probability=0.5)
    else:
        images = fn.decoders.image(images, device=decoder_device, output_type=types.RGB)
        images = fn.resize(images, device=dali_device, size=size, mode="not_smaller",
                           interp_type=types.INTERP_TRIANGULAR)
        mirror = False
    images = fn.crop_mirror_normalize(images if dali_cpu else images.gpu(), dtype=types.FLOAT,
                                      output_layout="CHW", crop=(crop, crop),
                                      mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                      std=[0.229 * 255, 0.224 * 255, 0.225 * 255], mirror=mirror)
    labels = labels if dali_cpu else labels.gpu()
    return images, labels


def accuracy(output, target, topk=(1,)):
    maxk = max(topk)
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / batch_size)
            for k in topk]


def train(train_loader, model, criterion, optimizer, args, log):
    model.train()
    for i, data in enumerate(train_loader):
        input = data[0]["data"]
        target = data[0]["label"].squeeze(-1).long()
        train_loader_len = int(math.ceil(train_loader._size / args.batch_size))
        output = model(input)
        loss = criterion(output, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        prec1, prec5 = accuracy(output.data, target, topk=(1, 5))
        log.append(("train", i, train_loader_len, tuple(input.shape), target, output.detach(),
                    loss.item(), prec1.item(), prec5.item()))


def validate(val_loader, model, criterion, args, log):
    model.eval()
    for i, data in enumerate(val_loader):
        input = data[0]["data"]
        target = data[0]["label"].squeeze(-1).long()
        val_loader_len = int(val_loader._size / args.batch_size)
        with torch.no_grad():
            output = model(input)
            loss = criterion(output, target)
        prec1, prec5 = accuracy(output.data, target, topk=(1, 5))
        log.append(("val", i, val_loader_len, tuple(input.shape), target, output, loss.item(),
                    prec1.item(), prec5.item()))


def main(args, log):
    torch.manual_seed(0)
    model = models.resnet18()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(args.device).to(memory_format=memory_format)
    args.lr = args.lr * float(args.batch_size * args.world_size) / 256.
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss().cuda()
    pipe = create_dali_pipeline(batch_size=args.batch_size, num_threads=2, device_id=args.device_id,
                                seed=12, data_dir=args.traindir, crop=args.crop, size=args.size,
                                dali_cpu=args.dali_cpu, shard_id=0, num_shards=1, is_training=True)
    pipe.build()
    train_loader = DALIClassificationIterator(pipe, reader_name="Reader", last_batch_policy=LastBatchPolicy.PARTIAL)
    pipe = create_dali_pipeline(batch_size=args.batch_size, num_threads=2, device_id=args.device_id,
                                seed=12, data_dir=args.valdir, crop=args.crop, size=args.size,
                                dali_cpu=args.dali_cpu, shard_id=0, num_shards=1, is_training=False)
    pipe.build()
    val_loader = DALIClassificationIterator(pipe, reader_name="Reader", last_batch_policy=LastBatchPolicy.PARTIAL)
    log.append(("lens", len(train_loader), len(val_loader)))
    for epoch in range(args.epochs):
        train(train_loader, model, criterion, optimizer, args, log)
        validate(val_loader, model, criterion, args, log)
        train_loader.reset()
        val_loader.reset()
    return model, criterion
'''

N_CLASSES, PER_CLASS, BATCH, K = 4, 3, 4, 5  # 12 images: 3 steps per epoch; K as the README


def readme_diff() -> tuple[list[str], list[str]]:
    """The README's drop-in change: the first ```diff block of its drop-in section."""
    text = README.read_text()
    section = text[text.index("## Drop-in for NVIDIA's ResNet-50 example"):]
    block = re.search(r"```diff\n(.*?)```", section, re.S).group(1)
    removed = [line[1:] for line in block.splitlines() if line.startswith("-")]
    added = [line[1:] for line in block.splitlines() if line.startswith("+")]
    return removed, added


def apply_readme_change(source: str) -> str:
    """Replaces each README '-' line (found by its stripped text, indentation kept) by its '+'
    line; the '+' lines without a '-' partner (the import) go after the last import."""
    removed, added = readme_diff()
    lines = source.splitlines()
    replacements = [a for a in added if not a.startswith("import ")]
    imports = [a for a in added if a.startswith("import ")]
    assert len(removed) == len(replacements) == 3 and len(imports) == 1
    for old, new in zip(removed, replacements):
        hits = [i for i, line in enumerate(lines) if line.strip() == old.strip()]
        assert len(hits) == 1, f"README '-' line {old!r} found {len(hits)} times in the example"
        indent = lines[hits[0]][:len(lines[hits[0]]) - len(lines[hits[0]].lstrip())]
        lines[hits[0]] = indent + new.strip()
    last_import = max(i for i, line in enumerate(lines) if line.startswith(("import ", "from ")))
    lines.insert(last_import + 1, imports[0].strip())
    return "\n".join(lines) + "\n"


def load(source: str, name: str) -> pytypes.ModuleType:
    module = pytypes.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def imagenet_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    photos = sample_photos(64)
    for split in ("train", "val"):
        for label in range(N_CLASSES):
            folder = root / split / f"n{label:08d}"
            folder.mkdir(parents=True)
            for j in range(PER_CLASS):
                img = np.roll(photos[label], 5 * j + (split == "val"), axis=1)
                Image.fromarray(img).save(folder / f"{j}.JPEG", quality=90)
    return root


def run(module, root, *, dali_cpu=True, channels_last=False):
    args = pytypes.SimpleNamespace(
        batch_size=BATCH, world_size=1, lr=0.1, epochs=2, crop=32, size=40, dali_cpu=dali_cpu,
        channels_last=channels_last, traindir=str(root / "train"), valdir=str(root / "val"),
        device="cpu" if dali_cpu else "cuda", device_id=None if dali_cpu else 0)
    log = []
    model, criterion = module.main(args, log)
    return log, model, criterion


def test_readme_change_is_exactly_three_lines_plus_the_import():
    changed = apply_readme_change(EXAMPLE)
    diff = [d for d in difflib.unified_diff(EXAMPLE.splitlines(), changed.splitlines(), lineterm="",
                                            n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    minus = [d[1:].strip() for d in diff if d.startswith("-")]
    plus = [d[1:].strip() for d in diff if d.startswith("+")]
    assert len(minus) == 3 and len(plus) == 4
    assert sorted(minus) == sorted([
        "return images, labels",
        'train_loader = DALIClassificationIterator(pipe, reader_name="Reader", '
        'last_batch_policy=LastBatchPolicy.PARTIAL)',
        "criterion = nn.CrossEntropyLoss().cuda()"])
    assert any(p.startswith("import dali_multimix") for p in plus)
    assert any("add_multimix(images, labels" in p and "enabled=is_training" in p for p in plus)
    # the validation iterator's line is not touched: it stays DALIClassificationIterator
    assert changed.count("val_loader = DALIClassificationIterator(") == 1


def test_original_example_structure_runs(imagenet_dirs):
    log, _, _ = run(load(EXAMPLE, "example_original"), imagenet_dirs)
    train_rows = [e for e in log if e[0] == "train"]
    assert [e[3][0] for e in train_rows] == [BATCH] * 6  # 3 steps, 2 epochs


@pytest.mark.parametrize("channels_last", [False, True])
def test_example_with_readme_change_trains_mixed_and_validates_clean(imagenet_dirs, channels_last):
    from dali_multimix.torch import MixedLabels, mixed_cross_entropy

    log, model, criterion = run(load(apply_readme_change(EXAMPLE), "example_multimix"),
                                imagenet_dirs, channels_last=channels_last)
    assert log[0] == ("lens", 3, 3)  # len() counts steps of B input samples
    train_rows = [e for e in log if e[0] == "train"]
    val_rows = [e for e in log if e[0] == "val"]
    assert len(train_rows) == len(val_rows) == 6
    for _, i, loader_len, shape, target, output, loss, prec1, prec5 in train_rows:
        assert loader_len == 3  # ceil(_size / batch_size): _size counts input samples
        assert shape == (BATCH * K, 3, 32, 32)  # B*K mixed rows, CHW as the pipeline made them
        assert isinstance(target, MixedLabels) and target.shape == (BATCH * K,)
        assert target.dtype == torch.int64 and target.partner_labels.shape == (BATCH * K,)
        w = target.weights.view(BATCH, K)
        assert torch.all(w.diff(dim=1) >= 0) and torch.all((w >= 0) & (w <= 1))
        assert torch.all(target.view(BATCH, K) == target.view(BATCH, K)[:, :1])
        # the loss the loop computed is the multi-mix loss of those rows, not plain CE
        assert loss == pytest.approx(mixed_cross_entropy(
            output, target.plain(), target.partner_labels, target.weights).item(), rel=1e-5)
        assert 0 <= prec1 <= prec5 <= 100  # agreement with each row's own label
    # it is not plain CE on the own labels (weights are not all 0)
    _, _, _, _, target, output, loss, _, _ = train_rows[-1]
    assert loss != pytest.approx(torch.nn.functional.cross_entropy(output, target.plain()).item())
    for _, i, loader_len, shape, target, output, loss, _, _ in val_rows:
        assert shape == (BATCH, 3, 32, 32)  # validation untouched
        assert type(target) is torch.Tensor and target.dtype == torch.int64
        assert loss == pytest.approx(torch.nn.functional.cross_entropy(output, target).item(),
                                     rel=1e-6)
    val_labels = sorted(int(v) for e in val_rows[:3] for v in e[4])
    assert val_labels == sorted(list(range(N_CLASSES)) * PER_CLASS)  # every val sample once
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_validation_iterator_is_exactly_dali_classification_iterator(imagenet_dirs):
    from nvidia.dali.plugin.pytorch import DALIClassificationIterator, LastBatchPolicy

    from dali_multimix.torch import MultimixClassificationIterator

    module = load(apply_readme_change(EXAMPLE), "example_val")
    batches = []
    for cls in (DALIClassificationIterator, MultimixClassificationIterator):
        pipe = module.create_dali_pipeline(batch_size=BATCH, num_threads=2, device_id=None,
                                           seed=12, data_dir=str(imagenet_dirs / "val"), crop=32,
                                           size=40, dali_cpu=True, shard_id=0, num_shards=1,
                                           is_training=False)
        pipe.build()
        it = cls(pipe, reader_name="Reader", last_batch_policy=LastBatchPolicy.PARTIAL)
        batches.append([d[0] for d in it])
        assert it._size == N_CLASSES * PER_CLASS
    for a, b in zip(*batches):
        assert a.keys() == b.keys() == {"data", "label"}
        assert torch.equal(a["data"], b["data"]) and torch.equal(a["label"], b["label"])
        assert a["label"].dtype == b["label"].dtype


@pytest.mark.gpu
def test_example_gpu_path(imagenet_dirs):
    import dali_multimix
    if not dali_multimix.has_cuda():
        pytest.skip("CPU-only build of the plugin")
    log, _, _ = run(load(apply_readme_change(EXAMPLE), "example_gpu"), imagenet_dirs,
                    dali_cpu=False, channels_last=True)
    assert [e[3][0] for e in log if e[0] == "train"] == [BATCH * K] * 6
