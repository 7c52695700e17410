"""Shared fixtures: real photos, batches, and a helper that runs a real DALI pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from gpu.gpu_detect import gpu_present  # tests/gpu: DALI-free; DALI is imported where a test needs it


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip with "no GPU" where there is none. Where one is (seen without cupy),
    they run: a broken cupy, torch or DALI there is a failure, not a skip."""
    present, why = gpu_present()
    if present:
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def sample_photos(size: int = 64) -> np.ndarray:
    """Four real photos from scikit-image, centre-cropped and resized: (4, size, size, 3) uint8."""
    from PIL import Image
    from skimage import data

    out = []
    for img in (data.chelsea(), data.coffee(), data.astronaut(), data.rocket()):
        h, w = img.shape[:2]
        s = min(h, w)
        crop = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


@pytest.fixture(scope="session")
def photos() -> np.ndarray:
    return sample_photos()


def to_layout(batch_hwc: np.ndarray, layout: str) -> np.ndarray:
    """(B, H, W, C) -> the sample layout HWC, CHW or HW (grey)."""
    if layout == "HWC":
        return batch_hwc
    if layout == "CHW":
        return np.ascontiguousarray(batch_hwc.transpose(0, 3, 1, 2))
    if layout == "HW":
        return np.ascontiguousarray(batch_hwc[..., 0])
    raise ValueError(layout)


def given_parameters(rng: np.random.Generator, batch: int, k: int, h: int, w: int):
    """Ratios (end points included), partners, cutmix centres and fmix scores (with ties) to feed
    both the operator and a reference."""
    lambdas = np.sort(rng.beta(1.0, 1.0, size=(batch, k)), axis=1).astype(np.float32)
    lambdas[0] = np.linspace(0.0, 1.0, k) if k > 1 else [1.0]  # include the end points
    partners = rng.permutation(batch).astype(np.int32)
    centers = np.stack([rng.integers(0, h, batch), rng.integers(0, w, batch)], 1).astype(np.int32)
    scores = rng.normal(size=(batch, h, w)).astype(np.float32)
    scores[:, :2, :2] = 0.5  # ties, broken by pixel index
    return lambdas, partners, centers, scores


def overrides_for(mode: str, lambdas, partners, centers, scores) -> dict:
    """The operator's override arguments that apply to `mode`."""
    args = {"lambdas": lambdas, "partners": partners}
    if mode == "cutmix":
        args["centers"] = centers
    if mode == "fmix":
        args["fmix_scores"] = scores
    return args


def _batch_source(values):
    return lambda: list(values)


def run_multimix(images, labels, *, device="cpu", layout="HWC", num_threads=2, seed=1234,
                 iterations=1, arg_inputs=None, **kwargs):
    """Runs multimix in a real DALI pipeline over the given batch; returns per-iteration lists of
    numpy arrays (mixed (B, K, ...), weights (B, K), partner_labels, partners (B,)).

    `arg_inputs` maps argument names (lambdas, partners, centers, fmix_scores) to per-sample arrays
    fed through external_source, as a user would from a data source.
    """
    from nvidia.dali import fn, pipeline_def

    import dali_multimix

    arg_inputs = arg_inputs or {}
    batch = len(images)

    @pipeline_def(batch_size=batch, num_threads=num_threads, device_id=0 if device == "gpu" else None,
                  seed=seed, prefetch_queue_depth=1)
    def pipe():
        x = fn.external_source(source=_batch_source(images), batch=True, layout=layout or None)
        y = fn.external_source(source=_batch_source(labels), batch=True)
        if device == "gpu":
            x = x.gpu()
        extra = {name: fn.external_source(source=_batch_source(value), batch=True)
                 for name, value in arg_inputs.items()}
        return tuple(dali_multimix.multimix(x, y, **extra, **kwargs))

    p = pipe()
    p.build()
    results = []
    for _ in range(iterations):
        outs = p.run()
        arrays = []
        for o in outs:
            if device == "gpu":
                o = o.as_cpu()
            arrays.append(np.stack([np.array(o[i]) for i in range(batch)]))
        results.append(arrays)
    return results


@pytest.fixture
def int_labels():
    return lambda b: [np.array(i, dtype=np.int32) for i in range(b)]


def beta_pit(lam: np.ndarray, alpha: float, seed: int = 0) -> np.ndarray:
    """Probability integral transform F(lambda) of float32 ratios under Beta(alpha, alpha),
    randomised over each value's float32 rounding interval (so that values rounded to 0 or 1 do
    not pile up: with alpha < 1 a few percent of the draws round to exactly 1.0)."""
    from scipy import stats

    lam = lam.astype(np.float32)
    lo = (lam.astype(np.float64) + np.nextafter(lam, np.float32(-1)).astype(np.float64)) / 2
    hi = (lam.astype(np.float64) + np.nextafter(lam, np.float32(2)).astype(np.float64)) / 2
    cdf = stats.beta(alpha, alpha).cdf
    f_lo, f_hi = cdf(np.clip(lo, 0, 1)), cdf(np.clip(hi, 0, 1))
    return f_lo + np.random.default_rng(seed).random(lam.shape) * (f_hi - f_lo)


def write_tiny_npz(root, n_train: int, n_test: int, size: int):
    """train.npz / test.npz of size x size x 3 uint8 images in 4 classes (label: index mod 4), each
    class in its own brightness band so a small model learns them; returns `root`."""
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        labels = np.arange(n) % 4
        images = (rng.integers(0, 60, (n, size, size, 3)) + 60 * labels[:, None, None, None]).astype(np.uint8)
        np.savez(root / f"{name}.npz", images=images, labels=labels)
    return root
