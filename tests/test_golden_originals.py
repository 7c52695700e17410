"""Ours against the authors' code: golden fixtures of the original FMix (ecs-vlc/FMix, fmix.py) and
CutMix (clovaai/CutMix-PyTorch, train.py rand_bbox and its label correction), made once from their
code on small fixed inputs (tests/golden/README.md says how).

Conventions, mapped explicitly:

* CutMix. The original pastes the partner's pixels into a box of side int(n * sqrt(1 - lam))
  per axis and weights the own label by lam_corrected = 1 - area / (H W). Our multi-mix fills the
  partner's box of side round(n * sqrt(lam_k)) and weights the partner by area / (H W): so our
  ratio is 1 - lam (the original's), our weight is 1 - lam_corrected, and our centre (y, x) is the
  original's (cx, cy) (rand_bbox calls the first axis of size[2:] "W" and indexes rows with bbx*).
  Deliberate difference, the side: the original spans [c - t//2, c + t//2) with t = int(n r),
  an even side 2 (t // 2) that truncates; ours spans [c - s//2, c - s//2 + s) with s = round(n r)
  (any parity, the nearest side to n r, so that the area fraction is closest to the drawn ratio;
  nested boxes around one centre). Both are clipped the same way. Where s == 2 (t // 2) the boxes
  are identical; otherwise ours is 1 or 2 pixels longer on that axis.
* FMix noise. Ours is the formula the FMix paper and fmix.py's get_spectrum describe: spectrum
  (N(0,1) + i N(0,1)) / max(f, 1/max(H, W))^3 over the rfft grid, irfftn to (H, W). The released
  make_low_freq_image builds the complex spectrum from the frequency *rows* 0 and 1
  (``spectrum[:, 0] + 1j * spectrum[:, 1]``) instead of the last axis, which keeps only the
  horizontal frequencies 0 and 1; we implement the formula, not that indexing. Given the same
  Gaussian parts, our map equals the original's formula with the parts taken from the last axis
  (intended_map), after the original's min-max normalisation (which changes no threshold).
* FMix threshold. The original gives 1 to the top ceil(lam H W) or floor(lam H W) values, 50/50 by
  Python's ``random``; ours takes round(lam H W) (one of the two, the nearer), ties to the lower
  pixel index (the maps here have none), and weights the partner by that count / (H W), where the
  original weights the loss by lam itself (at most 1/(H W) apart).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_multimix
from dali_multimix import sampling
from dali_multimix.torch.mixing import cutmix_masks, fmix_masks, multimix_batch

GOLDEN = Path(__file__).parent / "golden"
FMIX_FILES = sorted(GOLDEN.glob("fmix_*.npz"))


def load(name_or_path) -> dict:
    with np.load(GOLDEN / name_or_path if isinstance(name_or_path, str) else name_or_path) as z:
        return {k: z[k] for k in z.files}


def test_fixtures_are_present():
    assert (GOLDEN / "cutmix_rand_bbox.npz").exists()
    assert len(FMIX_FILES) >= 3


# ---------------------------------------------------------------------------------------------
# CutMix

def cutmix_cases():
    g = load("cutmix_rand_bbox.npz")
    cases = []
    for i in range(len(g["seed"])):
        _, _, h, w = (int(v) for v in g["size"][i])
        lam_orig = float(g["lam"][i])
        ours = np.float32(1.0 - lam_orig)                   # our ratio: the partner's fraction
        r_orig = math.sqrt(1.0 - lam_orig)                   # as rand_bbox: np.sqrt(1. - lam)
        t = (int(h * r_orig), int(w * r_orig))
        orig_side = (2 * (t[0] // 2), 2 * (t[1] // 2))       # [c - t//2, c + t//2)
        our_side = (int(math.floor(h * math.sqrt(float(ours)) + 0.5)),
                    int(math.floor(w * math.sqrt(float(ours)) + 0.5)))
        cases.append(dict(
            h=h, w=w, lam_orig=lam_orig, lam=ours, center=(int(g["cx"][i]), int(g["cy"][i])),
            box=(int(g["bbx1"][i]), int(g["bbx2"][i]), int(g["bby1"][i]), int(g["bby2"][i])),
            weight=1.0 - float(g["lam_corrected"][i]), orig_side=orig_side, our_side=our_side))
    return cases


def box_of(mask: np.ndarray):
    """(y0, y1, x0, x1) of a boolean mask that must be one filled rectangle (or empty)."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    assert mask[y0:y1, x0:x1].all() and mask.sum() == (y1 - y0) * (x1 - x0)
    return int(y0), int(y1), int(x0), int(x1)


def as_box(box):
    y0, y1, x0, x1 = box
    return None if y1 <= y0 or x1 <= x0 else box


def placed(c: int, side: int, n: int):
    start = c - side // 2
    return min(max(start, 0), n), min(max(start + side, 0), n)


def test_cutmix_fixture_is_our_placement_with_the_originals_side():
    """The mapping of the module docstring, on every recorded case: the original's box is our
    placement rule with side 2 (t // 2); ours uses round(n r), 0 to 2 pixels longer."""
    cases = cutmix_cases()
    for c in cases:
        (cy, cx), (sy, sx) = c["center"], c["orig_side"]
        assert 0 <= cy < c["h"] and 0 <= cx < c["w"]
        assert (*placed(cy, sy, c["h"]), *placed(cx, sx, c["w"])) == c["box"]
        for o, s in zip(c["our_side"], c["orig_side"]):
            assert 0 <= o - s <= 2
    # the centres of the fixture reach the borders, so clipping is exercised
    assert any(c["box"][0] == 0 and c["box"][1] < c["h"] for c in cases)
    assert any(c["box"][3] == c["w"] and c["box"][2] > 0 for c in cases)


def _run_op_cutmix(cases):
    """Our operator on the cases of one (h, w): own image 0, partner 1; returns masks, weights."""
    h, w, n = cases[0]["h"], cases[0]["w"], len(cases)
    images = np.concatenate([np.zeros((n, h, w, 1), np.uint8), np.ones((n, h, w, 1), np.uint8)])
    lambdas = np.array([[c["lam"]] for c in cases] * 2, np.float32)
    centers = np.array([c["center"] for c in cases] * 2, np.int32)
    partners = np.concatenate([np.arange(n, 2 * n), np.arange(n)]).astype(np.int32)
    [(mixed, weights, _, _)] = run_multimix(
        images, [np.array(i, np.int32) for i in range(2 * n)], k=1, mode="cutmix", layout="HWC",
        arg_inputs={"lambdas": lambdas, "partners": partners, "centers": centers})
    return mixed[:n, 0, :, :, 0] == 1, weights[:n, 0]


@pytest.mark.parametrize("implementation", ["op", "torch"])
def test_cutmix_box_and_weight_equal_the_original(implementation):
    """Where our side equals the original's (the module docstring), our box and label weight
    are the original's exactly, given the corresponding ratio (1 - lam) and centre."""
    cases = cutmix_cases()
    same = [c for c in cases if c["our_side"] == c["orig_side"]]
    assert len(same) >= 15 and len({(c["h"], c["w"]) for c in same}) == 4
    by_shape = {}
    for c in cases:
        by_shape.setdefault((c["h"], c["w"]), []).append(c)
    checked = 0
    for (h, w), group in by_shape.items():
        if implementation == "op":
            masks, weights = _run_op_cutmix(group)
        else:
            lam = torch.tensor([[c["lam"]] for c in group], dtype=torch.float32)
            ctr = torch.tensor([c["center"] for c in group])
            masks = cutmix_masks(h, w, lam, ctr)[:, 0].numpy()
            weights = masks.reshape(len(group), -1).sum(1) / (h * w)
        for c, mask, weight in zip(group, masks, weights):
            y0, y1, x0, x1 = (*placed(c["center"][0], c["our_side"][0], h),
                              *placed(c["center"][1], c["our_side"][1], w))
            assert box_of(mask) == as_box((y0, y1, x0, x1))  # our rule, every case
            np.testing.assert_allclose(weight, (y1 - y0) * (x1 - x0) / (h * w), rtol=0, atol=1e-6)
            if c["our_side"] == c["orig_side"]:
                assert box_of(mask) == as_box(c["box"]), c
                np.testing.assert_allclose(weight, c["weight"], rtol=0, atol=1e-6)
                checked += 1
    assert checked == len(same)


def test_cutmix_partner_fills_the_box_as_the_original():
    """The original pastes input[rand_index] into the box: the partner is inside, as ours."""
    c = next(c for c in cutmix_cases() if c["our_side"] == c["orig_side"] and 0 < c["weight"] < 1)
    h, w = c["h"], c["w"]
    x = torch.stack([torch.zeros(1, h, w), torch.ones(1, h, w)])
    res = multimix_batch(x, torch.arange(2), k=1, mode="cutmix", layout="CHW",
                         lambdas=[[c["lam"]]] * 2, partners=[1, 0], centers=[c["center"]] * 2)
    y0, y1, x0, x1 = c["box"]
    expected = torch.zeros(h, w)
    expected[y0:y1, x0:x1] = 1.0
    torch.testing.assert_close(res.images[0, 0, 0], expected)
    np.testing.assert_allclose(float(res.weights[0, 0]), c["weight"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# FMix noise map

def normalise(m: np.ndarray) -> np.ndarray:
    """The original's min-max normalisation (make_low_freq_image)."""
    m = m - m.min()
    return m / m.max()


def ours_given_parts(monkeypatch, h: int, w: int, parts: np.ndarray) -> np.ndarray:
    """sampling.fmix_scores with its Gaussian draw replaced by `parts` (1, 2, h, w//2 + 1)."""
    real_randn = torch.randn

    def fake_randn(shape, *args, **kwargs):
        shape = tuple(shape)
        assert shape == parts.shape, (shape, parts.shape)  # what our formula draws
        return torch.from_numpy(parts.copy()).to(kwargs.get("dtype") or torch.float64)

    monkeypatch.setattr(torch, "randn", fake_randn)
    try:
        out = sampling.fmix_scores(1, h, w, generator=torch.Generator().manual_seed(0))
    finally:
        monkeypatch.setattr(torch, "randn", real_randn)
    assert out.shape == (1, h, w) and out.dtype == torch.float32
    return out[0].double().numpy()


@pytest.mark.parametrize("path", FMIX_FILES, ids=lambda p: p.stem)
def test_fmix_frequencies_and_scale_are_the_originals(path):
    g = load(path)
    h, w = (int(v) for v in g["shape"])
    nkx = w // 2 + 1  # the rfft grid; the original's fftfreqnd keeps one more column for odd w
    expected = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    np.testing.assert_allclose(g["freqs"][:, :nkx], expected, rtol=0, atol=1e-15)
    scale = g["spectrum"][0, ..., 0] / g["gaussian_parts"][0, ..., 0]
    np.testing.assert_allclose(scale, 1.0 / np.maximum(g["freqs"], 1.0 / max(h, w)) ** 3, rtol=1e-12)


@pytest.mark.parametrize("path", FMIX_FILES, ids=lambda p: p.stem)
def test_fmix_map_given_the_same_gaussian_parts_is_the_originals(path, monkeypatch):
    g = load(path)
    h, w = (int(v) for v in g["shape"])
    nkx = w // 2 + 1
    gauss = g["gaussian_parts"][0]                           # (h, w', 2): real, imaginary
    parts = np.stack([gauss[:, :nkx, 0], gauss[:, :nkx, 1]])[None]
    ours = ours_given_parts(monkeypatch, h, w, parts)
    np.testing.assert_allclose(normalise(ours), g["intended_map"], rtol=0, atol=2e-6)
    # the same top-n order, so the same masks at every count
    np.testing.assert_array_equal(np.argsort(-ours, axis=None, kind="stable")[: h * w // 2],
                                  np.argsort(-g["intended_map"], axis=None, kind="stable")[: h * w // 2])


@pytest.mark.parametrize("path", FMIX_FILES, ids=lambda p: p.stem)
def test_fmix_released_map_is_an_irfft_of_rows_0_and_1(path, monkeypatch):
    """The documented difference: the released make_low_freq_image equals the irfft of the spectrum
    whose complex values come from frequency rows 0 and 1; fed that spectrum, our irfft gives it."""
    g = load(path)
    h, w = (int(v) for v in g["shape"])
    nkx = w // 2 + 1
    s = g["spectrum"][0]                                     # (h, w', 2)
    rows = min(h, s.shape[1])
    effective = np.zeros((h, nkx), complex)
    effective[:rows, :2] = (s[0, :rows, :] + 1j * s[1, :rows, :])[:, :2]
    np.testing.assert_allclose(normalise(np.fft.irfftn(effective, (h, w), axes=(0, 1))), g["low_freq_image"],
                               rtol=0, atol=1e-12)
    assert np.abs(g["low_freq_image"] - g["intended_map"]).max() > 0.05  # really another map
    scale = 1.0 / np.maximum(np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w) ** 2),
                             1.0 / max(h, w)) ** 3
    parts = np.stack([effective.real / scale, effective.imag / scale])[None]
    np.testing.assert_allclose(normalise(ours_given_parts(monkeypatch, h, w, parts)),
                               g["low_freq_image"], rtol=0, atol=2e-6)


# ---------------------------------------------------------------------------------------------
# FMix threshold

def original_mask_for(g: dict, j: int, count: int) -> np.ndarray:
    """The original binarise_mask of lambdas[j], in the branch (ceil / floor) that gives `count`."""
    lam_hw = float(g["lambdas"][j]) * g["low_freq_image"].size
    assert count in (math.floor(lam_hw), math.ceil(lam_hw)), (count, lam_hw)
    mask = g["binarised_ceil"][j] if count == math.ceil(lam_hw) else g["binarised_floor"][j]
    assert mask.sum() == count
    return mask.astype(bool)


@pytest.mark.parametrize("path", FMIX_FILES, ids=lambda p: p.stem)
def test_fmix_threshold_equals_the_originals_binarise_mask(path):
    g = load(path)
    h, w = (int(v) for v in g["shape"])
    scores = g["low_freq_image"].astype(np.float32)
    order = np.argsort(g["lambdas"], kind="stable")
    lams = g["lambdas"][order].astype(np.float32)
    k = len(lams)
    counts = [int(round(float(lam) * h * w)) for lam in lams]

    # torch side
    masks = fmix_masks(torch.from_numpy(scores)[None], torch.from_numpy(lams)[None])[0].numpy()
    # the operator, scores given: own image 0, partner 1
    images = np.stack([np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)])
    [(mixed, weights, _, _)] = run_multimix(
        images, [np.array(0, np.int32), np.array(1, np.int32)], k=k, mode="fmix", layout="HW",
        arg_inputs={"lambdas": np.stack([lams, lams]), "partners": np.array([1, 0], np.int32),
                    "fmix_scores": np.stack([scores, scores])})
    for s, j in enumerate(order):
        expected = original_mask_for(g, j, counts[s])
        np.testing.assert_array_equal(masks[s], expected)
        np.testing.assert_array_equal(mixed[0, s] == 1, expected)
        assert weights[0, s] == np.float32(counts[s] / (h * w))
        assert abs(weights[0, s] - g["lambdas"][j]) <= 0.5 / (h * w) + 1e-7  # the original's weight

    # both branches of the original occur in the fixture, and ours is the nearer one
    lam_hw = g["lambdas"] * h * w
    assert (np.ceil(lam_hw) != np.floor(lam_hw)).any()


@pytest.mark.parametrize("path", FMIX_FILES, ids=lambda p: p.stem)
def test_fmix_sample_mask_end_to_end(path):
    """The original's sample_mask (lam, map, coin) and ours with that lam and map: the same mask
    whenever its coin picked the count ours rounds to (every recorded case)."""
    g = load(path)
    h, w = (int(v) for v in g["shape"])
    lam = float(g["sample_lam"])
    took_ceil = float(g["sample_python_draw"]) > 0.5
    assert g["sample_mask"].sum() == (math.ceil if took_ceil else math.floor)(lam * h * w)
    count = int(round(float(np.float32(lam)) * h * w))
    assert count == g["sample_mask"].sum()
    ours = fmix_masks(torch.from_numpy(g["low_freq_image"].astype(np.float32))[None],
                      torch.tensor([[lam]], dtype=torch.float32))[0, 0].numpy()
    np.testing.assert_array_equal(ours, g["sample_mask"].astype(bool))
