"""The image-folder pipelines over real JPEG files the test writes (scikit-image's photos and
Fashion-MNIST images), and their errors."""
from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali.plugin.pytorch import DALIGenericIterator
from PIL import Image

import pipelines
from conftest import sample_photos
from dali_multimix.torch import MultimixIterator
from nvidia.dali.plugin.pytorch import LastBatchPolicy
from pipelines.folders import FileList

SIZE = 64


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """4 photo classes x 3 crops, and 2 Fashion-MNIST classes x 3 images, as 64x64 JPEGs."""
    root = tmp_path_factory.mktemp("jpegs")
    names = ["cat", "coffee", "astronaut", "rocket"]
    for name, photo in zip(names, sample_photos(SIZE)):
        (root / name).mkdir()
        for j in range(3):
            img = np.roll(photo, 5 * j, axis=1)
            Image.fromarray(img).save(root / name / f"{j}.jpg", quality=95)
    fm = pipelines.fashion_mnist("test")
    for cls, name in ((0, "tshirt"), (9, "boot")):
        (root / name).mkdir()
        for j, idx in enumerate(np.flatnonzero(fm.labels == cls)[:3]):
            grey = Image.fromarray(fm.images[idx, :, :, 0]).resize((SIZE, SIZE)).convert("RGB")
            grey.save(root / name / f"{j}.jpg", quality=95)
    return root


def test_labels_follow_folder_names(jpeg_folder):
    fl = pipelines.list_image_folder(jpeg_folder)
    assert fl.classes == sorted(["cat", "coffee", "astronaut", "rocket", "tshirt", "boot"])
    assert len(fl.files) == 18 and not fl.skipped
    for path, label in zip(fl.files, fl.labels):
        assert path.split("/")[-2] == fl.classes[label]


def test_decode_matches_pil(jpeg_folder):
    fl = pipelines.list_image_folder(jpeg_folder)
    pipe = pipelines.image_folder_val_pipeline(fl, batch_size=6, size=SIZE, resize=SIZE,
                                               mean=[0, 0, 0], std=[1, 1, 1])
    pipe.build()
    seen = 0
    for batch in DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader",
                                     last_batch_policy=LastBatchPolicy.PARTIAL):
        for img in batch[0]["images"]:
            path = fl.files[seen]
            expected = np.asarray(Image.open(path).convert("RGB"), np.float32).transpose(2, 0, 1)
            assert np.abs(img.numpy() - expected).mean() < 2.0, path  # JPEG IDCTs differ slightly
            seen += 1
    assert seen == 18


def test_train_pipeline_outputs(jpeg_folder):
    fl = pipelines.list_image_folder(jpeg_folder)
    pipe = pipelines.image_folder_train_pipeline(fl, batch_size=5, size=32, k=4, mode="cutmix")
    pipe.build()
    it = MultimixIterator(DALIGenericIterator(pipe, ["images", "labels", "partner_labels", "weights"],
                                              reader_name="Reader",
                                              last_batch_policy=LastBatchPolicy.PARTIAL))
    batches = list(it)
    assert [b.images.shape for b in batches][0] == (20, 3, 32, 32)
    assert sum(b.images.shape[0] for b in batches) == 18 * 4  # partial last batch kept
    for b in batches:
        assert b.labels.max() < 6 and (b.weights.view(-1, 4).diff(dim=1) >= 0).all()


def test_two_shards_are_disjoint_and_cover(jpeg_folder):
    fl = pipelines.list_image_folder(jpeg_folder)
    by_index = FileList(fl.files, list(range(len(fl.files))), fl.classes, [])
    seen = []
    for shard in range(2):
        pipe = pipelines.image_folder_train_pipeline(by_index, batch_size=4, size=32, k=2,
                                                     shard_id=shard, num_shards=2)
        pipe.build()
        it = MultimixIterator.from_pipeline(pipe, reader_name="Reader")
        seen.append({int(v) for b in it for v in b.labels[::2]})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(18))


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist"):
        pipelines.list_image_folder(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"has no class sub-folders"):
        pipelines.list_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "ok.jpg")
    with pytest.raises(ValueError, match=r"class folder .*/b has no image files"):
        pipelines.list_image_folder(tmp_path)


def test_corrupt_jpeg_is_named_or_skipped(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / name / "good.jpg")
    good = (tmp_path / "b" / "good.jpg").read_bytes()
    (tmp_path / "b" / "broken.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match=r"image file .*/b/broken.jpg cannot be decoded .*skip_corrupt=True"):
        pipelines.list_image_folder(tmp_path)
    fl = pipelines.list_image_folder(tmp_path, skip_corrupt=True)
    assert len(fl.files) == 2 and len(fl.skipped) == 1 and fl.skipped[0][0].endswith("broken.jpg")


def test_crop_larger_than_resize_is_rejected(jpeg_folder):
    fl = pipelines.list_image_folder(jpeg_folder)
    with pytest.raises(ValueError, match=r"resize \(48\) must be >= the crop size \(64\)"):
        pipelines.image_folder_val_pipeline(fl, batch_size=2, size=64, resize=48)


def test_file_list_in_dali_format(jpeg_folder, tmp_path):
    fl = pipelines.list_image_folder(jpeg_folder)
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"{p} {l}\n" for p, l in zip(fl.files, fl.labels)))
    from_list = pipelines.read_file_list(listing, root="/")  # the listed paths are absolute
    assert from_list.files == fl.files
    assert from_list.labels == fl.labels
    pipe = pipelines.image_folder_train_pipeline(from_list, batch_size=6, size=32, k=2)
    pipe.build()
    assert sum(b.images.shape[0] for b in MultimixIterator.from_pipeline(pipe, reader_name="Reader")) == 36
    listing.write_text("a.jpg\n")
    with pytest.raises(ValueError, match=r"train.txt:1: expected '<path> <label >= 0>'; got 'a.jpg'"):
        pipelines.read_file_list(listing)
