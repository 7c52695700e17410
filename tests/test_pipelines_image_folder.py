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


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    """2 classes x 3 lossless PNGs of 40x48 (height x width): decoded exactly, so the native
    pipelines can be compared pixel for pixel."""
    root = tmp_path_factory.mktemp("pngs")
    photos = sample_photos(48)
    for c in range(2):
        (root / f"c{c}").mkdir()
        for j in range(3):
            Image.fromarray(np.ascontiguousarray(photos[2 * c + j % 2, 4:44])).save(root / f"c{c}" / f"{j}.png")
    return root


def test_native_validation_decodes_and_normalises_only(png_folder):
    """native=True (Tiny-ImageNet): no resize, no crop: the output is the stored image, normalised."""
    fl = pipelines.list_image_folder(png_folder)
    pipe = pipelines.image_folder_val_pipeline(fl, batch_size=6, size=32, native=True,
                                               mean=[127.5] * 3, std=[127.5] * 3)
    pipe.build()
    images = np.array(pipe.run()[0].as_tensor())
    assert images.shape == (6, 3, 40, 48)  # the stored size, not 32 x 32
    for img, path in zip(images, fl.files):
        stored = np.asarray(Image.open(path), np.float32).transpose(2, 0, 1)
        np.testing.assert_allclose(img, (stored - 127.5) / 127.5, atol=1e-5)


def test_pad_crop_trains_on_shifted_native_images(png_folder):
    """crop="pad": each output is the stored image shifted by at most `pad` pixels (zeros come in),
    possibly mirrored: no resize."""
    fl = pipelines.list_image_folder(png_folder)
    one = FileList([fl.files[0]] * 32, [0] * 32, fl.classes, [])
    pipe = pipelines.image_folder_train_pipeline(one, batch_size=32, size=40, crop="pad", pad=4, mix=False,
                                                 mean=[0, 0, 0], std=[1, 1, 1], seed=5)
    pipe.build()
    out = np.array(pipe.run()[0].as_tensor())
    assert out.shape == (32, 3, 40, 40)
    src = np.asarray(Image.open(fl.files[0]), np.float32).transpose(2, 0, 1)
    padded = np.zeros((3, 48, 56), np.float32)
    padded[:, 4:44, 4:52] = src
    shifts = set()
    for crop in out:
        found = [(dy, dx) for dy in range(9) for dx in range(9) for flip in (False, True)
                 if np.array_equal(padded[:, dy:dy + 40, dx:dx + 40][..., ::-1] if flip else
                                   padded[:, dy:dy + 40, dx:dx + 40], crop)]
        assert found, "not a padded crop of the stored image"
        shifts |= set(found)
    assert len(shifts) > 5  # the offsets vary
    with pytest.raises(ValueError, match=r"crop must be one of \('random_resized', 'pad'\); got 'centre'"):
        pipelines.image_folder_train_pipeline(fl, batch_size=2, crop="centre")
