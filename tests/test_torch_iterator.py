"""The iterator adapter over real CPU DALI pipelines (PNG files -> reader -> decoder -> multimix):
B*K rows with the right labels and weights, every sample once per epoch, disjoint shards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy
from PIL import Image

import dali_multimix
from dali_multimix.torch import MixedBatch, MultimixIterator

N_FILES, SIDE, K = 10, 8, 3


def pixel_value(i: int) -> int:
    return 20 * i + 15  # image i is constant: every mixed pixel tells its ratio


@pytest.fixture(scope="module")
def png_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pngs")
    files = []
    for i in range(N_FILES):
        path = root / f"img_{i:02d}.png"
        Image.fromarray(np.full((SIDE, SIDE, 3), pixel_value(i), np.uint8)).save(path)
        files.append(str(path))
    return files


def mixing_pipeline(files, *, batch, shard_id=0, num_shards=1, mode="mixup", with_mix=True):
    @pipeline_def(batch_size=batch, num_threads=2, device_id=None, seed=3)
    def pipe():
        # exact epochs: a permutation per epoch (random_shuffle's buffer lets samples drift
        # across epoch boundaries) and a padded last batch (else it borrows next epoch's samples)
        jpegs, labels = fn.readers.file(files=files, labels=list(range(len(files))), name="Reader",
                                        shuffle_after_epoch=True, pad_last_batch=True,
                                        shard_id=shard_id, num_shards=num_shards)
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        if not with_mix:
            return images, labels
        out = dali_multimix.multimix(images, labels, k=K, mode=mode)
        return out.images, labels, out.partner_labels, out.weights
    p = pipe()
    p.build()
    return p


def check_rows(batch: MixedBatch):
    n = batch.images.shape[0]
    assert batch.images.shape == (n, 3, SIDE, SIDE)  # channels-first from HWC
    assert batch.labels.shape == batch.partner_labels.shape == batch.weights.shape == (n,)
    own = 20 * batch.labels.double() + 15  # pixel_value
    partner = 20 * batch.partner_labels.double() + 15
    w = batch.weights.double()
    expected = torch.round((1 - w) * own + w * partner)
    assert torch.all(batch.images[:, 0, 0, 0].double() == expected)
    assert torch.all(batch.images == batch.images[:, :1, :1, :1])  # constant images stay constant
    # K consecutive rows per sample, ordered ratios
    assert torch.all(batch.labels.view(-1, K) == batch.labels.view(-1, K)[:, :1])
    assert torch.all(batch.weights.view(-1, K).diff(dim=1) >= 0)


def test_rows_labels_and_weights_line_up(png_files):
    it = MultimixIterator.from_pipeline(mixing_pipeline(png_files, batch=4), reader_name="Reader",
                                        image_layout="HWC")
    batches = list(it)
    assert [b.images.shape[0] for b in batches] == [4 * K, 4 * K, 2 * K]  # partial last batch
    for b in batches:
        check_rows(b)


def test_every_sample_once_per_epoch(png_files):
    it = MultimixIterator.from_pipeline(mixing_pipeline(png_files, batch=3), reader_name="Reader",
                                        image_layout="HWC")
    orders = []
    for _epoch in range(3):
        seen = torch.cat([b.labels[::K] for b in it]).tolist()
        assert sorted(seen) == list(range(N_FILES))
        orders.append(seen)
        it.reset()
    assert orders[0] != orders[1] or orders[1] != orders[2]  # reshuffled between epochs


def test_two_shards_are_disjoint_and_cover_everything(png_files):
    seen = []
    for shard in range(2):
        pipe = mixing_pipeline(png_files, batch=2, shard_id=shard, num_shards=2)
        it = MultimixIterator.from_pipeline(pipe, reader_name="Reader", image_layout="HWC")
        seen.append({int(v) for b in it for v in b.labels[::K]})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == set(range(N_FILES))


def test_drop_policy_is_honoured(png_files):
    it = MultimixIterator.from_pipeline(mixing_pipeline(png_files, batch=4), reader_name="Reader",
                                        image_layout="HWC", last_batch_policy=LastBatchPolicy.DROP)
    assert [b.images.shape[0] for b in it] == [4 * K, 4 * K]


def test_plain_pipeline_passes_through(png_files):
    pipe = mixing_pipeline(png_files, batch=5, with_mix=False)
    base = DALIGenericIterator(pipe, ["images", "labels"], reader_name="Reader")
    batches = list(MultimixIterator(base))
    assert len(batches) == 2 and set(batches[0].keys()) == {"images", "labels"}
    assert batches[0]["images"].shape == (5, SIDE, SIDE, 3)


def test_generic_iterable_of_dicts_and_layout_errors():
    data = [{"images": torch.zeros(2, 3, 4, 5, 1), "labels": torch.tensor([[1], [2]]),
             "partner_labels": torch.tensor([[2], [1]]), "weights": torch.rand(2, 3)}]
    [batch] = list(MultimixIterator(data, image_layout="HWC"))
    assert batch.images.shape == (6, 1, 4, 5)
    assert batch.labels.tolist() == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match=r"`image_layout` 'CHWX' does not match images"):
        list(MultimixIterator(data, image_layout="CHWX"))
