"""pipelines/boxes.py: the readers on generated files (VOC XML, CUB text files), their errors, and
the generated data set's boxes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.boxes import box_mask, make_box_dataset, read_cub, read_imagenet_boxes, read_voc_boxes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_box_dataset(tmp_path_factory.mktemp("boxes"), classes=3, per_class=4, size=32, seed=0)


def _object_box(path):
    """The box of the saturated object pasted on the grey background, from the pixels."""
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    ys, xs = np.nonzero(img.max(2) - img.min(2) > 100)
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_both_formats_give_the_pasted_boxes(data):
    classes, items = read_imagenet_boxes(data / "imagenet")
    cub = read_cub(data / "cub")
    assert classes == ["n00000000", "n00000001", "n00000002"] and len(items) == len(cub) == 12
    for voc, c in zip(items, cub):
        assert voc.label == c.label and voc.boxes == c.boxes
        assert voc.boxes[0] == _object_box(voc.path) == _object_box(c.path)
    assert [c.is_train for c in cub[:4]] == [True, True, False, False]


def test_voc_reader_converts_one_based_inclusive(tmp_path):
    f = tmp_path / "a.xml"
    f.write_text("<annotation><size><width>10</width><height>8</height></size>"
                 "<object><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>5</ymax></bndbox></object>"
                 "<object><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>3</xmax><ymax>3</ymax></bndbox></object>"
                 "</annotation>")
    assert read_voc_boxes(f) == ((10, 8), [(0, 1, 10, 5), (2, 2, 3, 3)])


@pytest.mark.parametrize("body, match", [
    ("<annotation><size><width>10</width><height>8</height></size><object><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>x</xmax><ymax>5</ymax></bndbox></object></annotation>", "xmax"),
    ("<annotation><size><width>10</width><height>8</height></size><object><bndbox><xmin>1</xmin>"
     "<ymin>1</ymin><xmax>11</xmax><ymax>5</ymax></bndbox></object></annotation>", "not inside"),
    ("<annotation><size><width>10</width><height>8</height></size></annotation>", "no <object>"),
    ("<annotation><object></annotation>", "not valid XML"),
])
def test_voc_reader_errors_name_the_file(tmp_path, body, match):
    f = tmp_path / "bad.xml"
    f.write_text(body)
    with pytest.raises(ValueError, match=match) as e:
        read_voc_boxes(f)
    assert str(f) in str(e.value)


@pytest.mark.parametrize("name, line, match", [
    ("bounding_boxes.txt", "2 1.0 2.0 3.0", "line 2: expected 5 fields"),
    ("bounding_boxes.txt", "2 1.0 2.0 x 4.0", "line 2: expected an image id"),
    ("image_class_labels.txt", "two 1", "line 2: expected an image id"),
    ("train_test_split.txt", "1 1", "line 2: image id 1 appears twice"),
    ("bounding_boxes.txt", "2 1.0 2.0 0.0 4.0", "width, height > 0"),
])
def test_cub_reader_errors_name_file_and_line(tmp_path, name, line, match):
    root = make_box_dataset(tmp_path, classes=1, per_class=3, size=16)
    f = root / "cub" / name
    rows = f.read_text().splitlines()
    rows[1] = line
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=match) as e:
        read_cub(root / "cub")
    assert name in str(e.value)


def test_cub_missing_file_and_missing_id(tmp_path):
    root = make_box_dataset(tmp_path, classes=1, per_class=3, size=16)
    f = root / "cub" / "bounding_boxes.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt: no line for image id 3"):
        read_cub(root / "cub")
    f.unlink()
    with pytest.raises(ValueError, match="bounding_boxes.txt does not exist"):
        read_cub(root / "cub")
    with pytest.raises(ValueError, match="boxes"):
        read_imagenet_boxes(tmp_path / "nowhere")


def test_box_mask_by_hand():
    m = box_mask([(1, 0, 3, 2), (0, 3, 1, 4)], 4, 4)
    expected = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(m, expected)
    # a pixel belongs to a box when its centre (k + 0.5) lies in [min, max)
    np.testing.assert_array_equal(box_mask([(0.5, 0, 2.5, 1)], 1, 4), [[True, True, False, False]])
