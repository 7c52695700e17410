"""The paper's evaluations of trained classifiers (Shen et al., "Mixup Augmentation with Multiple
Interpolations", Sec. IV-D to IV-F), one command per table:

    python -m train.evaluate wsol       --checkpoint RUN/checkpoint_rank0.pt --data IMAGENET   # Table IV
    python -m train.evaluate background --checkpoint RUN/checkpoint_rank0.pt --data IMAGENET   # Table V
    python -m train.evaluate transfer   --checkpoint RUN/checkpoint_rank0.pt --data CUB_200_2011  # Table VI

- wsol: CAM (Zhou et al. 2016: the last conv features weighted by the fc weights of the class,
  here the ground-truth class) upsampled to the image, the box around the largest connected
  component of CAM >= threshold x max, localisation accuracy = share of images whose box has
  IoU > 0.25 with one of the ground-truth boxes (Sec. IV-D).
- background: top-1 error on validation images whose background (outside the ground-truth boxes)
  is (i) replaced by the same region of another validation image, (ii) given additive Gaussian
  noise N(0, 0.1^2) on [0, 1] pixels, clipped to [0, 1] (Sec. IV-E), beside the clean error.
- transfer: fine-tune the last block (the last ``layerN`` and a final ``bn``) and a new classifier
  on CUB-200-2011's training split for up to 10 epochs (Adam, lr 1e-4), localisation accuracy on
  its test split after each epoch with threshold 0.75 (Sec. IV-F).

Images are resized to --image-size squares (boxes scaled alike) and normalised with the run's
mean/std (ImageNet's when the run had none). Data layouts: :mod:`pipelines.boxes`. Results go to
--out (JSON) and are printed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipelines.boxes import BoxedImage, box_mask, read_cub, read_imagenet_boxes, scale_boxes

from . import checkpoint
from .models import build_model

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
IOU_CORRECT = 0.25  # Sec. IV-D


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x_min, y_min, x_max, y_max) boxes (0 when disjoint)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_from_cam(cam: np.ndarray, threshold: float) -> tuple:
    """The box (x_min, y_min, x_max, y_max), pixels [x_min, x_max), around the largest
    4-connected component of cam >= threshold * max(cam); cam (H, W)."""
    from scipy import ndimage

    if not 0 <= threshold <= 1:
        raise ValueError(f"box_from_cam: `threshold` must be in [0, 1]; got {threshold}")
    cam = np.asarray(cam, np.float64)
    components, count = ndimage.label(cam >= threshold * cam.max())
    if count == 0:
        return (0.0, 0.0, float(cam.shape[1]), float(cam.shape[0]))
    sizes = np.bincount(components.ravel())[1:]
    ys, xs = np.nonzero(components == 1 + int(np.argmax(sizes)))
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def last_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (B, C, h, w) that the model global-average-pools before its fc, logits (B, K)):
    the input of ``model.avgpool`` (torchvision ResNets) or of the model's last
    ``F.adaptive_avg_pool2d`` call (the harness's models)."""
    seen = []
    if isinstance(getattr(model, "avgpool", None), torch.nn.Module):
        handle = model.avgpool.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        try:
            logits = model(x)
        finally:
            handle.remove()
    else:
        original = F.adaptive_avg_pool2d

        def recording(inp, *args, **kwargs):
            seen.append(inp)
            return original(inp, *args, **kwargs)
        F.adaptive_avg_pool2d = recording
        try:
            logits = model(x)
        finally:
            F.adaptive_avg_pool2d = original
    if not seen:
        raise ValueError(f"{type(model).__name__}: no global average pooling found (CAM needs one)")
    return seen[-1], logits


def class_activation_maps(model: torch.nn.Module, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """CAM (Zhou et al. 2016): (B, h, w) sum_c fc.weight[class, c] * features[:, c], features the
    last conv features before global pooling (:func:`last_features`); x (B, C, H, W), classes (B,)."""
    features, _ = last_features(model, x)
    weights = model.fc.weight[classes]
    return torch.einsum("bchw,bc->bhw", features.float(), weights.float())


def load_image(path: Path, size: int) -> tuple[torch.Tensor, float, float]:
    """(3, size, size) [0, 1] pixels of an image resized to a square, and its x / y scales."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            w, h = img.size
            img = img.resize((size, size), Image.BILINEAR)
            pixels = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1).contiguous()
    except OSError as e:
        raise ValueError(f"image {path} cannot be read: {e}") from None
    return pixels, size / w, size / h


def batches(items: Sequence[BoxedImage], size: int, batch: int, desc: str, progress: bool = True):
    """(pixels (B, 3, S, S) on [0, 1], labels (B,), boxes scaled to S) per batch, with a progress bar."""
    for start in tqdm(range(0, len(items), batch), desc=desc, disable=not progress, leave=False):
        chunk = items[start:start + batch]
        loaded = [load_image(it.path, size) for it in chunk]
        yield (torch.stack([p for p, _, _ in loaded]), torch.tensor([it.label for it in chunk]),
               [scale_boxes(it.boxes, sx, sy) for it, (_, sx, sy) in zip(chunk, loaded)])


class Normalise:
    """[0, 1] pixels -> the network's input: (p * 255 - mean) / std, mean / std on 0..255."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels * 255 - self.mean.to(pixels.device)) / self.std.to(pixels.device)


@torch.no_grad()
def localisation_accuracy(model, items, normalise: Normalise, *, size: int, threshold: float,
                          batch: int = 32, device: str = "cpu", progress: bool = True) -> float:
    """Share of `items` whose CAM box (ground-truth class) has IoU > 0.25 with one of their boxes."""
    model.eval()
    correct = 0
    for pixels, labels, boxes in batches(items, size, batch, "localisation", progress):
        cams = class_activation_maps(model, normalise(pixels.to(device)), labels.to(device))
        cams = F.interpolate(cams[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        for cam, truth in zip(cams.cpu().numpy(), boxes):
            box = box_from_cam(cam, threshold)
            correct += any(iou(box, t) > IOU_CORRECT for t in truth)
    return correct / len(items)


def replace_background(pixels: torch.Tensor, other: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Background replacement (Sec. IV-E (i)): pixels inside the boxes kept, the rest taken from
    `other`. pixels, other (B, C, H, W); inside (B, H, W) bool."""
    keep = inside[:, None].to(pixels.dtype)
    return keep * pixels + (1 - keep) * other


def noise_background(pixels: torch.Tensor, inside: torch.Tensor, std: float = 0.1,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Background noise (Sec. IV-E (ii)): + N(0, std^2) outside the boxes on [0, 1] pixels, then
    clipped to [0, 1]; inside pixels unchanged. pixels (B, C, H, W); inside (B, H, W) bool."""
    noise = torch.randn(pixels.shape, generator=generator) * std
    return torch.where(inside[:, None], pixels, (pixels + noise.to(pixels.device)).clamp(0, 1))


@torch.no_grad()
def background_errors(model, items, normalise: Normalise, *, size: int, batch: int = 32, seed: int = 0,
                      device: str = "cpu", progress: bool = True) -> dict:
    """Top-1 errors on clean, background-replaced and background-noised images (Table V). The
    replacing image of item i is item perm[i], perm a seeded derangement-free random permutation
    shifted so that no image replaces itself."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n = len(items)
    order = torch.randperm(n, generator=gen)
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(1)  # a cycle through a random order: never itself when n > 1
    wrong = {"clean_error": 0, "replaced_background_error": 0, "noisy_background_error": 0}
    for start, (pixels, labels, boxes) in zip(range(0, n, batch), batches(items, size, batch, "background", progress)):
        inside = torch.from_numpy(np.stack([box_mask(b, size, size) for b in boxes]))
        others = torch.stack([load_image(items[int(j)].path, size)[0]
                              for j in partner[start:start + len(labels)]])
        for key, x in (("clean_error", pixels),
                       ("replaced_background_error", replace_background(pixels, others, inside)),
                       ("noisy_background_error", noise_background(pixels, inside, 0.1, gen))):
            wrong[key] += int((model(normalise(x.to(device))).argmax(1).cpu() != labels).sum())
    return {k: v / n for k, v in wrong.items()}


def trainable_tail(model: torch.nn.Module) -> list:
    """The parameters fine-tuned in transfer (Sec. IV-F): the last ``layerN`` block, a ``bn``
    after it (pre-activation ResNets) and ``fc``."""
    blocks = [name for name in ("layer5", "layer4", "layer3", "layer2", "layer1") if hasattr(model, name)]
    if not blocks or not hasattr(model, "fc"):
        raise ValueError(f"{type(model).__name__}: transfer needs `layerN` blocks and an `fc` classifier")
    modules = [getattr(model, blocks[0]), model.fc] + ([model.bn] if hasattr(model, "bn") else [])
    return [p for m in modules for p in m.parameters()]


def transfer(model, train_items, test_items, normalise: Normalise, *, num_classes: int, size: int,
             epochs: int = 10, lr: float = 1e-4, threshold: float = 0.75, batch: int = 32, seed: int = 0,
             device: str = "cpu", progress: bool = True) -> list:
    """Fine-tunes the last block and a new fc (Adam, lr) for `epochs` epochs on `train_items`;
    localisation accuracy on `test_items` after each epoch (Table VI)."""
    torch.manual_seed(seed)
    model.fc = torch.nn.Linear(model.fc.in_features, num_classes).to(device)
    tail = trainable_tail(model)
    tail_ids = {id(p) for p in tail}
    for p in model.parameters():
        p.requires_grad_(id(p) in tail_ids)
    optimizer = torch.optim.Adam(tail, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    accuracies = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_items), generator=gen).tolist()
        shuffled = [train_items[i] for i in order]
        for pixels, labels, _ in batches(shuffled, size, batch, f"fine-tune {epoch + 1}/{epochs}", progress):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(normalise(pixels.to(device))), labels.to(device))
            loss.backward()
            optimizer.step()
        accuracies.append(localisation_accuracy(model, test_items, normalise, size=size, threshold=threshold,
                                                batch=batch, device=device, progress=progress))
    return accuracies


def load_model(path, device: str = "cpu") -> tuple[torch.nn.Module, Normalise, dict]:
    """The model of a harness checkpoint (train/checkpoint.py), its normalisation and config."""
    state = checkpoint.load(Path(path))
    cfg, weights = state["config"], state["model"]
    if "fc.weight" not in weights:
        raise ValueError(f"checkpoint {path}: the model has no `fc` layer (CAM and transfer need one)")
    num_classes, in_channels = weights["fc.weight"].shape[0], 3
    model = build_model(cfg["model"], num_classes, in_channels)
    model.load_state_dict(weights)
    mean = cfg.get("mean") or IMAGENET_MEAN
    std = cfg.get("std") or IMAGENET_STD
    return model.to(device), Normalise(mean, std), cfg


PAPER = {
    "wsol": "Table IV (localisation accuracy %, ResNet-50 on ImageNet): no mixup 54.36, co-mixup 55.32, "
            "puzzle-mix 55.22, multi-mix (puzzle) 55.43",
    "background": "Table V (validation error %, replaced / noise): no mixup 41.63 / 29.22, co-mixup "
                  "38.77 / 25.89, puzzle-mix 39.23 / 26.11, multi-mix (puzzle) 39.01 / 25.53",
    "transfer": "Table VI (CUB localisation accuracy % after 1 / 5 / 10 epochs): no mixup 28.22 / 90.81 / "
                "94.43, puzzle-mix 39.37 / 93.39 / 95.82, multi-mix (puzzle) 45.14 / 94.10 / 96.49",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m train.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("table", choices=("wsol", "background", "transfer"),
                        help="wsol: Table IV; background: Table V; transfer: Table VI")
    parser.add_argument("--checkpoint", required=True, help="a harness checkpoint (RUN/checkpoint_rank0.pt)")
    parser.add_argument("--data", required=True, help="wsol/background: folder with val/<class>/ and "
                        "boxes/<name>.xml; transfer: the CUB_200_2011 folder")
    parser.add_argument("--image-size", type=int, default=224, help="square input size (default 224)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="CAM binarisation, share of the max (default 0.2 for wsol, 0.75 for transfer)")
    parser.add_argument("--epochs", type=int, default=10, help="transfer: fine-tuning epochs (default 10)")
    parser.add_argument("--lr", type=float, default=1e-4, help="transfer: Adam learning rate (default 1e-4)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", default=None, help="results file (default: <checkpoint folder>/<table>.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.image_size < 1 or args.batch_size < 1 or args.epochs < 1:
        parser.error("--image-size, --batch-size and --epochs must be >= 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    progress = not args.no_progress
    model, normalise, _ = load_model(args.checkpoint, args.device)
    if args.table in ("wsol", "background"):
        _, items = read_imagenet_boxes(args.data)
        if args.table == "wsol":
            threshold = 0.2 if args.threshold is None else args.threshold
            result = {"localisation_accuracy": localisation_accuracy(
                model, items, normalise, size=args.image_size, threshold=threshold, batch=args.batch_size,
                device=args.device, progress=progress), "threshold": threshold}
        else:
            result = background_errors(model, items, normalise, size=args.image_size, batch=args.batch_size,
                                       seed=args.seed, device=args.device, progress=progress)
    else:
        items = read_cub(args.data)
        train_items = [it for it in items if it.is_train]
        test_items = [it for it in items if not it.is_train]
        if not train_items or not test_items:
            raise ValueError(f"CUB data {args.data}: train_test_split.txt gives {len(train_items)} training and "
                             f"{len(test_items)} test images; both are needed")
        threshold = 0.75 if args.threshold is None else args.threshold
        accuracies = transfer(model, train_items, test_items, normalise,
                              num_classes=1 + max(it.label for it in items), size=args.image_size,
                              epochs=args.epochs, lr=args.lr, threshold=threshold, batch=args.batch_size,
                              seed=args.seed, device=args.device, progress=progress)
        result = {"localisation_accuracy_by_epoch": accuracies, "threshold": threshold}
    result.update(table=args.table, images=len(items), checkpoint=str(args.checkpoint), paper=PAPER[args.table])
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"{args.table}.json"
    out.write_text(json.dumps(result, indent=1))
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"results: {out}")
    return result


if __name__ == "__main__":
    main()
