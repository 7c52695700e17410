"""The array pipeline over the real Fashion-MNIST files (installed by `make setup` from the Debian
package dataset-fashion-mnist), and the array loaders' errors."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator

import pipelines
from dali_multimix.torch import MultimixIterator

K = 3


@pytest.fixture(scope="module")
def fmnist():
    return pipelines.fashion_mnist("train")


def mixed_loader(pipe):
    pipe.build()
    return MultimixIterator(DALIGenericIterator(pipe, ["images", "labels", "partner_labels", "weights"]))


def test_fashion_mnist_files_load(fmnist):
    assert fmnist.images.shape == (60000, 28, 28, 1) and fmnist.images.dtype == np.uint8
    assert fmnist.labels.min() == 0 and fmnist.labels.max() == 9
    assert np.bincount(fmnist.labels).tolist() == [6000] * 10  # the published class balance
    test = pipelines.fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28, 1)


def test_train_pipeline_shapes_dtype_labels(fmnist):
    loader = mixed_loader(pipelines.array_train_pipeline(fmnist, batch_size=500, k=K, seed=1))
    batch = next(iter(loader))
    assert batch.images.shape == (500 * K, 1, 28, 28) and batch.images.dtype == torch.float32
    assert batch.labels.min() >= 0 and batch.labels.max() <= 9
    assert batch.partner_labels.min() >= 0 and batch.partner_labels.max() <= 9
    assert ((batch.weights >= 0) & (batch.weights <= 1)).all()
    assert abs(batch.images.mean().item()) < 0.2  # normalised with the data set's statistics


def test_every_sample_exactly_once_per_epoch(fmnist):
    """Real Fashion-MNIST images, labels replaced by sample indices: each epoch sees every index
    once (60000 = 117 batches of 512 + a partial one), in a new order."""
    indexed = pipelines.ArrayDataset(fmnist.images, np.arange(60000))
    loader = mixed_loader(pipelines.array_train_pipeline(indexed, batch_size=512, k=K, seed=2))
    orders = []
    for _ in range(2):
        seen = torch.cat([b.labels[::K] for b in loader]).numpy()
        assert len(seen) == 60000 and len(np.unique(seen)) == 60000
        orders.append(seen)
        loader.reset()
    assert not np.array_equal(orders[0], orders[1])


def test_two_shards_are_disjoint_and_cover(fmnist):
    indexed = pipelines.ArrayDataset(fmnist.images[:1000], np.arange(1000))
    seen = []
    for shard in range(2):
        loader = mixed_loader(pipelines.array_train_pipeline(indexed, batch_size=64, k=1, seed=3,
                                                             shard_id=shard, num_shards=2))
        seen.append(set(torch.cat([b.labels for b in loader]).tolist()))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(1000))


def test_eval_pipeline_is_deterministic(fmnist):
    small = pipelines.ArrayDataset(fmnist.images[:300], fmnist.labels[:300])
    runs = []
    for _ in range(2):
        pipe = pipelines.array_eval_pipeline(small, batch_size=128)
        pipe.build()
        runs.append([(b[0]["images"].clone(), b[0]["labels"].clone())
                     for b in DALIGenericIterator(pipe, ["images", "labels"])])
    assert [len(x[1]) for x in runs[0]] == [128, 128, 44]
    for (a, la), (b, lb) in zip(*runs):
        assert torch.equal(a, b) and torch.equal(la.flatten(), lb.flatten())
    assert torch.equal(torch.cat([x[1] for x in runs[0]]).flatten(), torch.from_numpy(small.labels))


def test_random_crop_with_padding_and_flip(fmnist):
    """mix=False: crops are shifted by at most `pad` pixels (zeros come in) and may be mirrored."""
    img = fmnist.images[:1]
    ds = pipelines.ArrayDataset(np.repeat(img, 64, axis=0), np.zeros(64, np.int64))
    pipe = pipelines.array_train_pipeline(ds, batch_size=64, mix=False, pad=4, mean=[0.0], std=[1.0])
    pipe.build()
    out = np.array(pipe.run()[0].as_tensor())[:, 0]  # (64, 28, 28), 0..255 scale
    shifts = []
    src = img[0, :, :, 0].astype(np.float32)
    matched = 0
    for crop in out:
        for flip in (False, True):
            s = src[:, ::-1] if flip else src
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    padded = np.zeros((36, 36), np.float32)
                    padded[4:32, 4:32] = s
                    if np.array_equal(padded[4 + dy:32 + dy, 4 + dx:32 + dx], crop):
                        matched += 1
                        shifts.append(dy)
                        break
                else:
                    continue
                break
            else:
                continue
            break
    assert matched == 64
    assert len({c.tobytes() for c in out}) > 10  # the crops vary
    assert {-4, 4} <= set(shifts)  # the extreme shifts occur


def test_npz_and_cifar_and_idx_loaders(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 12)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    ds = pipelines.load_npz(tmp_path / "d.npz")
    assert np.array_equal(ds.images, images) and np.array_equal(ds.labels, labels)

    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    chw = images.transpose(0, 3, 1, 2).reshape(12, -1)
    for i in range(1, 6):
        with open(cifar / f"data_batch_{i}", "wb") as f:
            pickle.dump({b"data": chw, b"labels": labels.tolist()}, f)
    ds = pipelines.load_cifar(cifar, "train")
    assert ds.images.shape == (60, 32, 32, 3) and np.array_equal(ds.images[:12], images)

    idx = tmp_path / "imgs-idx3-ubyte.gz"
    with gzip.open(idx, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + np.array([12, 32, 32], ">u4").tobytes() + images[..., 0].tobytes())
    lab = tmp_path / "labels-idx1-ubyte"
    lab.write_bytes(bytes([0, 0, 8, 1]) + np.array([12], ">u4").tobytes() + labels.astype(np.uint8).tobytes())
    ds = pipelines.load_idx(idx, lab)
    assert np.array_equal(ds.images[..., 0], images[..., 0]) and np.array_equal(ds.labels, labels)


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Fashion-MNIST not found at .*apt-get install dataset-fashion-mnist"):
        pipelines.fashion_mnist("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no CIFAR pickles in .*nothing is downloaded"):
        pipelines.load_cifar(tmp_path)
    with pytest.raises(ValueError, match=r"labels must be one integer per image: 3 images but labels of shape \(2,\)"):
        pipelines.as_dataset(np.zeros((3, 4, 4), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match=r"images must be uint8; got float32"):
        pipelines.as_dataset(np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int64))
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x08\x01" + np.array([10], ">u4").tobytes() + b"\x01\x02")
    with pytest.raises(ValueError, match=r"is truncated: header says \(10,\), 2 bytes follow"):
        pipelines.read_idx(bad)
    with pytest.raises(ValueError, match=r"shard_id must be in \[0, num_shards\)"):
        pipelines.array_train_pipeline(pipelines.as_dataset(np.zeros((3, 4, 4), np.uint8),
                                                            np.zeros(3, np.int64)),
                                       batch_size=2, shard_id=2, num_shards=2)


def test_augmented_copies_differ_by_rotation(fmnist):
    """Batch augmentation's copies (augment_copies=3, no crop shift, no flip): identical without
    rotation; with rotate=30 each copy is the image turned by its own angle about the centre."""
    ds = pipelines.ArrayDataset(fmnist.images[:16], fmnist.labels[:16])

    def copies(rotate):
        pipe = pipelines.array_train_pipeline(ds, batch_size=16, mix=False, pad=0, flip=False, rotate=rotate,
                                              augment_copies=3, mean=[0.0], std=[1.0], seed=2)
        pipe.build()
        return np.array(pipe.run()[0].as_tensor())  # (16, 3, 1, 28, 28)

    plain = copies(0.0)
    assert all(np.array_equal(s[0], s[1]) and np.array_equal(s[0], s[2]) for s in plain)
    turned = copies(30.0)
    assert turned.shape == plain.shape
    differ = [not np.array_equal(s[i], s[j]) for s in turned for i, j in ((0, 1), (0, 2), (1, 2))]
    assert all(differ)
    # a rotation about the centre keeps the centre pixel and the total ink roughly
    np.testing.assert_allclose(turned[..., 14, 14], plain[..., 14, 14], atol=60)
    assert np.abs(turned.sum(axis=(-1, -2)) / plain.sum(axis=(-1, -2)) - 1).max() < 0.3
    with pytest.raises(ValueError, match=r"rotate must be >= 0 degrees; got -1"):
        pipelines.array_train_pipeline(ds, batch_size=4, rotate=-1)
