"""Reproducibility: the same seed gives the same outputs whatever num_threads; DALI checkpoints
restore the random stream."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types

import dali_multimix
from conftest import run_multimix


@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("mode", ["mixup", "cutmix", "fmix"])
def test_same_seed_same_output_whatever_num_threads(photos, mode, scope):
    images = np.concatenate([photos, 255 - photos, photos[::-1]])  # 12 samples
    labels = [np.array(i) for i in range(12)]
    runs = [run_multimix(images, labels, k=4, mode=mode, num_threads=n, seed=99, iterations=2,
                         lambda_scope=scope)
            for n in (1, 2, 4)]
    for other in runs[1:]:
        for it in range(2):
            for a, b in zip(runs[0][it], other[it]):
                np.testing.assert_array_equal(a, b)
    different_seed = run_multimix(images, labels, k=4, mode=mode, seed=100, lambda_scope=scope)
    assert not np.array_equal(different_seed[0][1], runs[0][0][1])


@pytest.mark.parametrize("mode", ["cutmix", "fmix"])
@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_checkpoint_restores_the_stream(mode, scope):
    """DALI checkpointing restores every stream: the per-sample ones and the batch one (ratios,
    centre, fmix map of lambda_scope="batch")."""
    batch = 6

    @pipeline_def(batch_size=batch, num_threads=2, device_id=None, seed=5,
                  enable_checkpointing=True)
    def pipe():
        x = fn.reshape(fn.random.uniform(range=(0, 255), shape=(8, 12, 3), seed=3), layout="HWC")
        y = fn.random.uniform(range=(0, 10), dtype=types.INT32, seed=4)
        out = dali_multimix.multimix(x, y, k=3, mode=mode, lambda_scope=scope)
        return out.images, out.weights, out.partners

    p = pipe()
    p.build()
    for _ in range(2):
        p.run()
    checkpoint = p.checkpoint()
    expected = [[np.array(t.as_tensor()) for t in p.run()] for _ in range(2)]
    assert not np.array_equal(expected[0][1], expected[1][1])  # the two iterations differ

    restored = pipe(checkpoint=checkpoint)
    restored.build()
    got = [[np.array(t.as_tensor()) for t in restored.run()] for _ in range(2)]
    for e, g in zip(expected, got):
        for a, b in zip(e, g):
            np.testing.assert_array_equal(a, b)


FMIX_PORTABLE_SCRIPT = """
import sys, zlib, numpy as np
sys.path.insert(0, {tests!r})
from conftest import run_multimix
for h, w in {shapes!r}:
    images = np.random.default_rng(h * 1000 + w).integers(0, 256, (4, h, w, 3)).astype(np.uint8)
    labels = [np.array(i) for i in range(4)]
    crc = 0
    for scope in ("batch", "sample"):
        for outputs in run_multimix(images, labels, k=5, mode="fmix", seed=21, iterations=2,
                                    lambda_scope=scope):
            crc = zlib.crc32(np.ascontiguousarray(outputs[0]).tobytes(), crc)
    print(crc)
"""


def test_fmix_masks_are_the_same_in_the_portable_build():
    """The FMix noise map and level selection are compiled twice (AVX2 where the CPU has it, and
    portable) with the same operations in the same order: the masks must agree bit for bit, for
    even and odd sides and sides too small for vector blocks (each takes other paths). (Masks
    are ranks of the map: tests/test_fmix_noise.py compares the maps themselves bit for bit.)"""
    shapes = [(224, 224), (64, 48), (33, 65), (40, 13), (12, 10), (6, 4), (2, 2), (1, 6)]
    script = FMIX_PORTABLE_SCRIPT.format(tests=os.path.dirname(__file__), shapes=shapes)
    runs = {}
    for avx2 in ("0", "1"):
        env = dict(os.environ, DALI_MULTIMIX_NO_AVX2="1" if avx2 == "0" else "0")
        result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[avx2] = result.stdout.split()
    assert len(runs["1"]) == len(shapes)
    assert runs["0"] == runs["1"]
