"""The harness's cutout (train/methods.py, method "cutout"): one square hole of side cfg.cutout per
image, centre anywhere in the image, clipped at the border, filled with 0 (the mean, after
normalisation), everything else untouched (DeVries & Taylor). Run as the harness runs it: the
method's pipeline step after the harness's normalisation, on real photos, non-square (24 x 40) so
that rows and columns cannot be confused.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def
from scipy import stats

from conftest import sample_photos
from pipelines.arrays import augment
from train.methods import METHODS, make_mixer

H, W = 24, 40
MEAN = [120.5, 115.5, 104.5]   # half-integers: no normalised pixel of a uint8 image is exactly 0
STD = [60.0, 61.0, 62.0]


def cutout_runs(cutout: int, batch: int, iterations: int, seed: int):
    """(normalised images, after the cutout step) per iteration, each (B, 3, H, W) float32."""
    photos = sample_photos(64)[:, 8:8 + H, 12:12 + W]
    source = np.ascontiguousarray(photos[np.arange(batch) % len(photos)])
    # the harness's arguments (the signature grows: pass those it takes)
    known = dict(k=5, alpha=1.0, lambda_sampling="sorted", lambda_scope="batch", cutout=cutout,
                 batch=batch, sample_shape=(3, H, W))
    takes = inspect.signature(make_mixer).parameters
    mixer = make_mixer(METHODS["cutout"], **{n: v for n, v in known.items() if n in takes})
    assert mixer is not None

    @pipeline_def(batch_size=batch, num_threads=2, device_id=None, seed=seed, prefetch_queue_depth=1)
    def pipe():
        images = fn.external_source(source=lambda: list(source), batch=True, layout="HWC")
        labels = fn.external_source(source=lambda: [np.array(i, np.int64) for i in range(batch)],
                                    batch=True)
        normalised = augment(images, h=H, w=W, pad=0, flip=False, mean=MEAN, std=STD)
        erased, out_labels = mixer(normalised, labels)
        return normalised, erased, out_labels

    p = pipe()
    p.build()
    runs = []
    for _ in range(iterations):
        normalised, erased, labels = p.run()
        runs.append((np.stack([np.array(normalised[i]) for i in range(batch)]),
                     np.stack([np.array(erased[i]) for i in range(batch)]),
                     np.stack([np.array(labels[i]) for i in range(batch)])))
    return runs


def hole_centre(hole: np.ndarray, cutout: int):
    """The centre (y, x) of the hole (H, W bool), which must be the box
    [c - cutout//2, c - cutout//2 + cutout) per axis clipped to the image, for a c in the image."""
    ys, xs = np.nonzero(hole)
    assert len(ys), "nothing was erased"
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    assert hole[y0:y1, x0:x1].all() and hole.sum() == (y1 - y0) * (x1 - x0), "not one rectangle"
    centre = []
    for lo, hi, n in ((y0, y1, H), (x0, x1, W)):
        c = lo + cutout // 2 if lo > 0 else hi - (cutout - cutout // 2)
        start = c - cutout // 2
        assert 0 <= c < n, (lo, hi)
        assert (max(start, 0), min(start + cutout, n)) == (lo, hi), \
            f"hole [{lo}, {hi}) is not a side-{cutout} square around {c} clipped to [0, {n})"
        centre.append(int(c))
    return tuple(centre)


@pytest.mark.parametrize("cutout", [8, 5])
def test_cutout_erases_one_clipped_square_and_nothing_else(cutout):
    batch = 16
    runs = cutout_runs(cutout, batch, iterations=30, seed=17)
    ys, xs, full = [], [], 0
    for normalised, erased, labels in runs:
        assert erased.shape == normalised.shape == (batch, 3, H, W)
        assert erased.dtype == np.float32
        np.testing.assert_array_equal(labels, np.arange(batch))
        assert (normalised != 0).all()  # so that exact zeros in the output are the hole
        for i in range(batch):
            hole = erased[i] == 0                                         # (3, H, W)
            assert (hole == hole[:1]).all(), "the hole must span every channel"
            np.testing.assert_array_equal(erased[i][~hole], normalised[i][~hole])  # untouched
            cy, cx = hole_centre(hole[0], cutout)
            ys.append(cy)
            xs.append(cx)
            full += int(hole[0].sum() == cutout * cutout)
    # a square of exactly cutout x cutout whenever it is not clipped (most of the time)
    assert full > 0.4 * len(ys)
    # the centre covers the image: every row and column, uniformly
    y_counts, x_counts = np.bincount(ys, minlength=H), np.bincount(xs, minlength=W)
    assert (y_counts > 0).all() and (x_counts > 0).all(), (y_counts, x_counts)
    assert len(y_counts) == H and len(x_counts) == W
    assert stats.chisquare(y_counts).pvalue > 1e-4, y_counts
    assert stats.chisquare(x_counts).pvalue > 1e-4, x_counts
