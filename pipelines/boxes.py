"""Ground-truth boxes for the paper's localisation and corruption evaluations (Shen et al., "Mixup
Augmentation with Multiple Interpolations", Sec. IV-D to IV-F): readers for ImageNet's validation
boxes (Pascal-VOC XML, one file per image) and CUB-200-2011's text files, and a generator of small
data sets with known boxes in both formats (objects pasted on backgrounds) for the tests.

Boxes are (x_min, y_min, x_max, y_max) floats in pixels of the original image, the box covering
[x_min, x_max) x [y_min, y_max): VOC's 1-based inclusive <xmin>..<xmax> becomes (xmin - 1, xmax);
CUB's (x, y, width, height) becomes (x, y, x + width, y + height).

ImageNet layout read here: ``root/val/<class>/<name>.<ext>`` (the class folders of the training
run, labels by sorted class name) and ``root/boxes/<name>.xml`` (ILSVRC's LOC_val XML files, e.g.
``ILSVRC2012_val_00000001.xml``). CUB layout: ``root/images.txt``, ``image_class_labels.txt``,
``train_test_split.txt``, ``bounding_boxes.txt`` and ``root/images/<relative path>``, as in
CUB_200_2011.tgz. Nothing is downloaded: a missing file raises ValueError naming it.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

Box = tuple  # (x_min, y_min, x_max, y_max)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class BoxedImage:
    """One evaluation image: its file, class index, ground-truth boxes and (CUB) split."""

    path: Path
    label: int
    boxes: tuple
    is_train: bool = False


def read_voc_boxes(path) -> tuple[tuple[int, int], list]:
    """((width, height), boxes) of one Pascal-VOC XML file (ImageNet's validation boxes)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"box file {path} does not exist (ImageNet validation boxes: the LOC_val XML "
                         f"files, one per image, under <data>/boxes/)")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"box file {path}: not valid XML ({e})") from None

    def number(node, tag, where):
        text = node.findtext(tag)
        try:
            return float(text)
        except (TypeError, ValueError):
            raise ValueError(f"box file {path}: {where} <{tag}> must be a number; got {text!r}") from None

    size = root.find("size")
    if size is None:
        raise ValueError(f"box file {path}: no <size> element")
    width, height = int(number(size, "width", "<size>")), int(number(size, "height", "<size>"))
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"box file {path}: <object> {i} has no <bndbox>")
        x0, y0, x1, y1 = (number(box, t, f"<object> {i}") for t in ("xmin", "ymin", "xmax", "ymax"))
        if not (1 <= x0 <= x1 <= width and 1 <= y0 <= y1 <= height):
            raise ValueError(f"box file {path}: <object> {i} box {(x0, y0, x1, y1)} is not inside the "
                             f"1-based image {width}x{height} with min <= max")
        boxes.append((x0 - 1, y0 - 1, x1, y1))
    if not boxes:
        raise ValueError(f"box file {path}: no <object> with a <bndbox>")
    return (width, height), boxes


def read_imagenet_boxes(root) -> tuple[list, list]:
    """(class names, [BoxedImage]) of ``root/val/<class>/<name>.*`` with ``root/boxes/<name>.xml``.
    Boxes are scaled to the image if the XML's size differs from it (they never do in ILSVRC)."""
    root = Path(root)
    val, boxes = root / "val", root / "boxes"
    for folder in (val, boxes):
        if not folder.is_dir():
            raise ValueError(f"ImageNet data: folder {folder} does not exist (expected <data>/val/<class>/"
                             f"images and <data>/boxes/<image name>.xml; nothing is downloaded)")
    classes = sorted(d.name for d in val.iterdir() if d.is_dir())
    items = []
    for label, name in enumerate(classes):
        for image in sorted(p for p in (val / name).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            _, found = read_voc_boxes(boxes / f"{image.stem}.xml")
            items.append(BoxedImage(image, label, tuple(found)))
    if not items:
        raise ValueError(f"ImageNet data: no images under {val}/<class>/")
    return classes, items


def _read_table(path: Path, columns: int, kinds: Sequence[type]) -> dict:
    """{first column (int): rest} of a CUB text file; errors name the file and line."""
    if not path.is_file():
        raise ValueError(f"CUB file {path} does not exist (CUB_200_2011 layout expected; nothing is "
                         f"downloaded)")
    table = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=columns - 1) if kinds[-1] is str else line.split()
        if len(parts) != columns:
            raise ValueError(f"{path} line {number}: expected {columns} fields; got {len(parts)}: {line!r}")
        try:
            key = int(parts[0])
            values = [kind(p) for kind, p in zip(kinds, parts[1:])]
        except ValueError:
            raise ValueError(f"{path} line {number}: expected an image id then "
                             f"{', '.join(k.__name__ for k in kinds)}; got {line!r}") from None
        if key in table:
            raise ValueError(f"{path} line {number}: image id {key} appears twice")
        table[key] = values
    return table


def read_cub(root) -> list:
    """[BoxedImage] of CUB-200-2011 at `root` (labels 0-based from image_class_labels.txt's 1-based
    ids; one box per image from bounding_boxes.txt, x y width height)."""
    root = Path(root)
    images = _read_table(root / "images.txt", 2, (str,))
    labels = _read_table(root / "image_class_labels.txt", 2, (int,))
    split = _read_table(root / "train_test_split.txt", 2, (int,))
    boxes = _read_table(root / "bounding_boxes.txt", 5, (float, float, float, float))
    items = []
    for key, (rel,) in sorted(images.items()):
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split),
                            ("bounding_boxes.txt", boxes)):
            if key not in table:
                raise ValueError(f"{root / name}: no line for image id {key} ({rel}) of images.txt")
        x, y, w, h = boxes[key]
        if w <= 0 or h <= 0 or x < 0 or y < 0:
            raise ValueError(f"{root / 'bounding_boxes.txt'}: image id {key} has box {boxes[key]}: "
                             f"x, y >= 0 and width, height > 0 expected")
        if labels[key][0] < 1 or split[key][0] not in (0, 1):
            raise ValueError(f"{root}: image id {key}: class ids are 1-based and is_training is 0 or 1; "
                             f"got {labels[key][0]} and {split[key][0]}")
        items.append(BoxedImage(root / "images" / rel, labels[key][0] - 1, ((x, y, x + w, y + h),),
                                bool(split[key][0])))
    return items


def box_mask(boxes: Sequence[Box], height: int, width: int) -> np.ndarray:
    """(height, width) bool: True on the pixels whose centres lie in any box."""
    ys, xs = np.arange(height)[:, None] + 0.5, np.arange(width)[None] + 0.5
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    return mask


def scale_boxes(boxes: Sequence[Box], sx: float, sy: float) -> list:
    """Boxes of an image resized by sx (width) and sy (height)."""
    return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in boxes]


def make_box_dataset(root, *, classes: int = 3, per_class: int = 4, size: int = 32, seed: int = 0,
                     cub_train: Optional[int] = None) -> Path:
    """A tiny data set with known boxes in both formats (for the tests): per class, images of a
    class-coloured square object pasted on a noisy grey background. Writes
    ``root/imagenet/{val/<class>/<name>.JPEG, boxes/<name>.xml}`` (VOC XML) and
    ``root/cub/{images/<class>/<name>.jpg, images.txt, image_class_labels.txt, train_test_split.txt,
    bounding_boxes.txt}``; the first `cub_train` images of each class (default half) are training
    images. Returns root."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    colours = [np.array(c) for c in ([230, 40, 40], [40, 200, 40], [40, 60, 230], [230, 200, 30],
                                     [200, 40, 200], [30, 200, 200])]
    if not 1 <= classes <= len(colours):
        raise ValueError(f"make_box_dataset: `classes` must be 1..{len(colours)}; got {classes}")
    cub_train = per_class // 2 if cub_train is None else cub_train
    cub = root / "cub"
    (cub / "images").mkdir(parents=True, exist_ok=True)
    (root / "imagenet" / "boxes").mkdir(parents=True, exist_ok=True)
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [], "bounding_boxes.txt": []}
    key = 0
    for c in range(classes):
        name = f"n{c:08d}"
        (root / "imagenet" / "val" / name).mkdir(parents=True, exist_ok=True)
        (cub / "images" / f"{c + 1:03d}.class{c}").mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            key += 1
            image = rng.normal(128, 10, (size, size, 3)).clip(0, 255)
            side = int(rng.integers(size // 3, size // 2 + 1))
            x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
            image[y0:y0 + side, x0:x0 + side] = colours[c]
            pixels = Image.fromarray(image.astype(np.uint8))
            stem = f"val_{key:05d}"
            pixels.save(root / "imagenet" / "val" / name / f"{stem}.JPEG", quality=95, subsampling=0)
            (root / "imagenet" / "boxes" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}</filename><size><width>{size}</width><height>{size}"
                f"</height><depth>3</depth></size><object><name>{name}</name><bndbox><xmin>{x0 + 1}</xmin>"
                f"<ymin>{y0 + 1}</ymin><xmax>{x0 + side}</xmax><ymax>{y0 + side}</ymax></bndbox></object>"
                f"</annotation>\n")
            rel = f"{c + 1:03d}.class{c}/{stem}.jpg"
            pixels.save(cub / "images" / rel, quality=95, subsampling=0)
            lines["images.txt"].append(f"{key} {rel}")
            lines["image_class_labels.txt"].append(f"{key} {c + 1}")
            lines["train_test_split.txt"].append(f"{key} {int(j < cub_train)}")
            lines["bounding_boxes.txt"].append(f"{key} {x0}.0 {y0}.0 {side}.0 {side}.0")
    for name, rows in lines.items():
        (cub / name).write_text("\n".join(rows) + "\n")
    return root
